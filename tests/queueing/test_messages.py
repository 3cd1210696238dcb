"""The typed task messages: built and parsed in one place; a batch's rows as one JSON
text, or packed (tests/queueing/test_packed_rows.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from common.batching import Request
from queueing.dispatcher import predict_batch_message, rows_text
from queueing.messages import (
    CALLBACK_TASK,
    FINALIZE_JOB_TASK,
    Artifact,
    JobChunk,
    JobStep,
    PredictBatch,
    Segment,
)


def decode_rows(rows: Any) -> list[list[Any]]:
    return PredictBatch.from_args("xgboost", "1", "abc", rows, []).rows()


def request(rows: list[list[Any]], encoded: bool = True) -> Request:
    future: asyncio.Future[dict[str, Any]] = asyncio.Future(loop=asyncio.new_event_loop())
    future.get_loop().close()
    return Request("r", rows, 0.0, future, orjson.dumps(rows) if encoded else b"")


def feature(type_: str) -> SimpleNamespace:
    return SimpleNamespace(type=type_)


@pytest.mark.parametrize(
    "batch",
    [
        [[[1.5, 2.0]]],
        [[[1.5, 2.0], [3.0, -4.25]], [[5e-324, 1.7976931348623157e308]], [[0.1, 0.2]]],
        [[[1, True, 2.5]], [[0, False, -0.0]]],  # ints and bools stay what they are
    ],
)
def test_the_joined_text_decodes_to_every_row_in_order(batch: list[list[list[Any]]]) -> None:
    text = rows_text([request(rows) for rows in batch])
    assert isinstance(text, str)
    decoded = decode_rows(text)
    assert decoded == [row for rows in batch for row in rows]
    assert [type(v) for row in decoded for v in row] == [
        type(v) for rows in batch for row in rows for v in row
    ]


def test_a_request_without_its_encoding_is_encoded_here() -> None:
    text = rows_text([request([[1.0]], encoded=False), request([[2.0]])])
    assert decode_rows(text) == [[1.0], [2.0]]


def test_rows_from_an_earlier_api_pass_through() -> None:
    assert decode_rows([[1.0, 2.0]]) == [[1.0, 2.0]]


class Meta:
    model_type, version, sha256 = "xgboost", "3", "f" * 64
    features = [feature("float"), feature("int")]  # an int feature: rows go as JSON text


def test_a_predict_message_survives_its_wire_layout() -> None:
    requests = [request([[1.0, 2.0]]), request([[3.0, 4.0], [5.0, 6.0]])]
    message = predict_batch_message(Meta(), requests)
    assert message.serializer == "json" and isinstance(message.rows_data, str)

    parsed = PredictBatch.from_args(*message.args())

    assert parsed == message
    assert parsed.artifact == Artifact("xgboost", "3", "f" * 64)
    assert parsed.segments == (Segment("r", 1, 0.0), Segment("r", 2, 0.0))
    assert parsed.rows() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert parsed.summary() == "('xgboost', '3', <3 rows of 2 requests>)"


@pytest.mark.parametrize("source", [None, {"start": 10, "stop": 90, "n_rows": 7}])
def test_a_chunk_message_survives_its_wire_layout(source: dict[str, Any] | None) -> None:
    rows = [[1.0], [2.0]] if source is None else None
    chunk = JobChunk("job1", 4, Artifact("sklearn", "2", "e" * 64), rows, source)

    assert JobChunk.from_args(*chunk.args()) == chunk
    assert chunk.summary() == f"('job1', chunk 4, 'sklearn', '2', <{2 if rows else 7} rows>)"


def test_a_chunk_of_an_earlier_release_has_no_source() -> None:
    chunk = JobChunk.from_args("job1", 0, "xgboost", "1", "d" * 64, [[1.0]])
    assert (chunk.rows, chunk.source) == ([[1.0]], None)


def test_job_steps_are_only_the_known_ones() -> None:
    assert JobStep(CALLBACK_TASK, "j").args() == ["j"]
    assert JobStep(FINALIZE_JOB_TASK, "j").summary() == "('j')"
    with pytest.raises(ValueError, match="not a job step"):
        JobStep("serving.predict", "j")


def test_a_segment_carries_its_cache_key_only_when_the_worker_caches() -> None:
    cached = Segment("r1", 2, 1.5, "owner", "pred:key", 300)
    plain = Segment("r2", 1, 1.5, "owner")

    assert plain.wire() == ["r2", 1, 1.5, "owner"]  # what a worker of any release reads
    assert cached.wire() == ["r1", 2, 1.5, "owner", "pred:key", 300]
    assert Segment.from_wire(cached.wire()) == cached
    assert Segment.from_wire(["r3", 1, 0.0]) == Segment("r3", 1, 0.0)  # an earlier API's


def test_a_batch_asks_the_worker_to_cache_only_with_a_lifetime() -> None:
    requests = [request([[1.0, 2.0]]), request([[3.0, 4.0]])]
    requests[0].cache_key = "pred:first"

    with_ttl = predict_batch_message(Meta(), requests, cache_ttl=60)
    without = predict_batch_message(Meta(), requests, cache_ttl=0)

    assert [(s.cache_key, s.cache_ttl) for s in with_ttl.segments] == [("pred:first", 60), ("", 0)]
    assert PredictBatch.from_args(*with_ttl.args()) == with_ttl
    assert [(s.cache_key, s.cache_ttl) for s in without.segments] == [("", 0), ("", 0)]
