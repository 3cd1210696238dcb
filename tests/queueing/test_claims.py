"""The claim check: a big batch's packed rows wait in Redis under the task's id and its
message carries only their dtype and shape; small batches and JSON rows stay inline."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import redis

from common.errors import PredictionFailed
from queueing.claims import CLAIM_MIN_BYTES, ClaimedRowsStore, claim, claim_key, redeem
from queueing.messages import Artifact, PredictBatch, Segment
from queueing.packed_rows import ClaimedRows, PackedRows, pack

FEATURES = 30
BIG = CLAIM_MIN_BYTES // (8 * FEATURES) + 1  # the fewest rows that are claimed


def batch(n_rows: int, as_json: bool = False) -> PredictBatch:
    rows = [[float(i * FEATURES + j) for j in range(FEATURES)] for i in range(n_rows)]
    data = orjson.dumps(rows).decode() if as_json else PackedRows(pack(rows), FEATURES)
    segments = (Segment("a", 1, 1.5, "o"), Segment("b", n_rows - 1, 1.5, "o"))
    return PredictBatch(Artifact("xgboost", "1", "a" * 64), data, segments)


def test_a_big_batch_s_message_carries_its_shape_and_not_its_rows() -> None:
    message = batch(BIG)
    claimed, data = claim(message)
    assert isinstance(message.rows_data, PackedRows) and data == message.rows_data.data
    wire = claimed.args()[3]
    assert wire == {"dtype": "<f8", "shape": [BIG, FEATURES], "claimed": True}
    parsed = PredictBatch.from_args(*claimed.args())
    assert parsed.rows_data == ClaimedRows(BIG, FEATURES) and parsed.segments == message.segments
    assert claimed.serializer == "json"  # nothing binary is left to pack
    with pytest.raises(ValueError, match="claimed"):
        parsed.rows()


def test_small_batches_and_json_rows_travel_inline() -> None:
    for message in (batch(BIG - 1), batch(BIG, as_json=True)):
        assert claim(message) == (message, None)


@pytest.mark.parametrize(
    "wire",
    [
        {"dtype": "<f4", "shape": [2, 3], "claimed": True},
        {"dtype": "<f8", "shape": [0, 3], "claimed": True},
        {"dtype": "<f8", "shape": [2], "claimed": True},
    ],
)
def test_a_claim_of_another_dtype_or_shape_is_refused(wire: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PredictBatch.from_args("xgboost", "1", "sha", wire, [])


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_the_worker_redeems_the_rows_and_releases_them_once_answered(
    client: redis.Redis,
) -> None:
    store, message = ClaimedRowsStore(client, "test-claims:"), batch(BIG)
    claimed, data = claim(message)
    assert data is not None
    client.set(claim_key("test-claims:", "task-1"), data)

    redeemed = store.redeem(PredictBatch.from_args(*claimed.args()), "task-1")
    assert redeemed.matrix().tolist() == message.matrix().tolist()
    assert store.redeem(message, "task-1") is message  # inline rows need no Redis

    store.release("task-2", claimed.args())  # another task's key stays
    assert client.exists(claim_key("test-claims:", "task-1"))
    store.release("task-1", message.args())  # an inline message deletes nothing
    assert client.exists(claim_key("test-claims:", "task-1"))
    store.release("task-1", claimed.args())
    assert not client.exists(claim_key("test-claims:", "task-1"))


@pytest.mark.parametrize("held", [None, b"\0" * 8], ids=["nothing", "other bytes"])
def test_rows_that_are_gone_fail_the_prediction_clearly(
    client: redis.Redis, held: bytes | None
) -> None:
    key = claim_key("test-claims:", "task-3")
    if held is not None:
        client.set(key, held)
    claimed, _ = claim(batch(BIG))
    with pytest.raises(PredictionFailed, match="no longer in Redis"):
        ClaimedRowsStore(client, "test-claims:").redeem(claimed, "task-3")
    client.delete(key)


def test_claimed_rows_of_a_shape_that_the_bytes_cannot_hold_are_refused() -> None:
    claimed, data = claim(batch(BIG))
    assert data is not None
    assert redeem(claimed, data[:-8]) is None
    assert redeem(claimed, data) == PredictBatch(
        claimed.artifact, PackedRows(data, FEATURES), claimed.segments
    )
