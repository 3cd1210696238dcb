"""MicroBatcher's logic in isolation: a fake dispatch stands in for the queue, so each
test can see exactly which requests went out together and answer or fail each batch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from common.batching import MicroBatcher, Request
from common.errors import InvalidInput, PredictionTimeout
from common.registry import ModelMetadata
from common.request_results import CACHE_WRITTEN


def meta(model_type: str = "xgboost", version: str = "1", sha: str = "a") -> ModelMetadata:
    return ModelMetadata(
        model_type=model_type,
        version=version,
        framework="xgboost",
        artifact_format="xgboost-ubj",
        sha256=sha * 64,
        features=[{"name": "x"}],
        classes=["no", "yes"],
        created_at=datetime.now(UTC),
    )


class FakeQueue:
    """Records every batch; answers each row with a label naming the batch's model and
    the row's own value, once `release` is set (so batches can be held in flight)."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.batches: list[tuple[tuple[str, str, str], list[Request]]] = []
        self.release = asyncio.Event()
        self.fail_on = fail_on

    async def dispatch(self, m: ModelMetadata, requests: list[Request]) -> dict[str, Any]:
        self.batches.append(((m.model_type, m.version, m.sha256[0]), requests))
        await self.release.wait()
        rows = [row for request in requests for row in request.rows]
        if self.fail_on is not None and [self.fail_on] in rows:
            raise InvalidInput("the worker refused this batch")
        labels = [f"{m.model_type}/{m.version}:{row[0]}" for row in rows]
        return {"labels": labels, "probabilities": [[1 - row[0], row[0]] for row in rows]}


def batcher(q: FakeQueue, max_rows: int = 100, in_flight: int = 1, wait: float = 0.05) -> Any:
    return MicroBatcher(q.dispatch, max_rows=max_rows, max_wait=wait, max_in_flight=in_flight)


def test_an_idle_lane_sends_at_once_without_waiting() -> None:
    async def scenario() -> tuple[dict[str, Any], float]:
        q = FakeQueue()
        q.release.set()
        b = batcher(q, wait=5.0)  # a wait that would show if an idle request waited
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await b.predict(meta(), "r1", [[0.25]], 0.0)
        return result, loop.time() - started

    result, seconds = asyncio.run(scenario())
    assert result == {"labels": ["xgboost/1:0.25"], "probabilities": [[0.75, 0.25]]}
    assert seconds < 1.0


def test_requests_gathered_while_a_task_is_out_each_get_their_own_rows() -> None:
    async def scenario() -> tuple[FakeQueue, list[dict[str, Any]]]:
        q = FakeQueue()
        b = batcher(q, in_flight=1)
        first = asyncio.ensure_future(b.predict(meta(), "r0", [[0.0]], 0.0))
        await asyncio.sleep(0)  # r0 is out; the next ones gather behind it
        rest = [
            asyncio.ensure_future(b.predict(meta(), f"r{i}", [[i / 10]] * i, 0.0))
            for i in range(1, 5)
        ]
        await asyncio.sleep(0)
        q.release.set()
        return q, await asyncio.gather(first, *rest)

    q, results = asyncio.run(scenario())
    assert [len(requests) for _, requests in q.batches] == [1, 4]
    assert [r.request_id for r in q.batches[1][1]] == ["r1", "r2", "r3", "r4"]
    for i, result in enumerate(results):
        rows = max(i, 1)
        assert result["labels"] == [f"xgboost/1:{i / 10}"] * rows
        assert result["probabilities"] == [[1 - i / 10, i / 10]] * rows


def test_a_batch_never_mixes_model_versions_or_artifacts() -> None:
    models = [
        meta("xgboost", "1"),
        meta("xgboost", "2"),
        meta("lr", "1"),
        meta("xgboost", "1", "b"),
    ]

    async def scenario() -> tuple[FakeQueue, list[dict[str, Any]]]:
        q = FakeQueue()
        b = batcher(q, in_flight=1)
        calls = [
            asyncio.ensure_future(b.predict(models[i % 4], f"r{i}", [[i / 100]], 0.0))
            for i in range(40)
        ]
        await asyncio.sleep(0.01)
        q.release.set()
        return q, await asyncio.gather(*calls)

    q, results = asyncio.run(scenario())
    for key, requests in q.batches:
        assert {int(r.request_id[1:]) % 4 for r in requests} == {
            [(m.model_type, m.version, m.sha256[0]) for m in models].index(key)
        }
    assert len(q.batches) == 8  # per lane: the first alone, then the other nine together
    for i, result in enumerate(results):
        m = models[i % 4]
        assert result["labels"] == [f"{m.model_type}/{m.version}:{i / 100}"]


def test_batches_stay_within_max_rows() -> None:
    async def scenario() -> FakeQueue:
        q = FakeQueue()
        b = batcher(q, max_rows=10, in_flight=1)
        calls = [
            asyncio.ensure_future(b.predict(meta(), f"r{i}", [[0.5]] * 4, 0.0)) for i in range(7)
        ]
        await asyncio.sleep(0)
        q.release.set()
        await asyncio.gather(*calls)
        return q

    q = asyncio.run(scenario())
    sizes = [sum(len(r.rows) for r in requests) for _, requests in q.batches]
    assert sum(sizes) == 28 and max(sizes) <= 10


def test_a_failed_batch_fails_its_own_requests_only() -> None:
    async def scenario() -> list[Any]:
        q = FakeQueue(fail_on=0.9)
        b = batcher(q, in_flight=1)
        first = asyncio.ensure_future(b.predict(meta(), "ok0", [[0.1]], 0.0))
        await asyncio.sleep(0)
        doomed = [asyncio.ensure_future(b.predict(meta(), "bad", [[0.9]], 0.0))]
        doomed.append(asyncio.ensure_future(b.predict(meta(), "with-bad", [[0.2]], 0.0)))
        other = asyncio.ensure_future(b.predict(meta("lr"), "other", [[0.3]], 0.0))
        await asyncio.sleep(0)
        q.release.set()
        return await asyncio.gather(first, *doomed, other, return_exceptions=True)

    ok, bad, with_bad, other = asyncio.run(scenario())
    assert ok["labels"] == ["xgboost/1:0.1"]
    assert isinstance(bad, InvalidInput) and isinstance(with_bad, InvalidInput)
    assert other["labels"] == ["lr/1:0.3"]


def test_a_timeout_names_each_request_and_its_rows_in_the_task() -> None:
    async def timeout(m: ModelMetadata, requests: list[Request]) -> dict[str, Any]:
        raise PredictionTimeout("no result", {"task_id": "t1"})

    async def scenario() -> list[Any]:
        b = MicroBatcher(timeout, max_rows=100, max_wait=0.01, max_in_flight=0)
        calls = [
            asyncio.ensure_future(b.predict(meta(), f"r{i}", [[0.5]] * (i + 1), 0.0))
            for i in range(3)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    errors = asyncio.run(scenario())
    assert [e.details for e in errors] == [
        {"task_id": "t1", "request_id": "r0", "offset": 0, "rows": 1},
        {"task_id": "t1", "request_id": "r1", "offset": 1, "rows": 2},
        {"task_id": "t1", "request_id": "r2", "offset": 3, "rows": 3},
    ]


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_at_most_max_in_flight_tasks_per_lane_are_out(in_flight: int) -> None:
    async def scenario() -> int:
        q = FakeQueue()
        b = batcher(q, in_flight=in_flight, wait=10.0)
        calls = [asyncio.ensure_future(b.predict(meta(), f"r{i}", [[0.5]], 0.0)) for i in range(20)]
        await asyncio.sleep(0.01)
        out = len(q.batches)
        q.release.set()
        await asyncio.gather(*calls)
        return out

    assert asyncio.run(scenario()) == in_flight


@pytest.mark.parametrize("written", [True, False])
def test_each_request_learns_whether_the_worker_cached_its_result(written: bool) -> None:
    async def scenario() -> tuple[FakeQueue, list[dict[str, Any]]]:
        q = FakeQueue()
        dispatch = q.dispatch

        async def caching(m: ModelMetadata, requests: list[Request]) -> dict[str, Any]:
            result = await dispatch(m, requests)
            return {**result, CACHE_WRITTEN: True} if written else result

        b = MicroBatcher(caching, max_rows=100, max_wait=0.05, max_in_flight=1)
        first = asyncio.ensure_future(b.predict(meta(), "r0", [[0.0]], 0.0, cache_key="k0"))
        await asyncio.sleep(0)
        rest = [
            asyncio.ensure_future(b.predict(meta(), f"r{i}", [[i / 10]], 0.0, cache_key=f"k{i}"))
            for i in (1, 2)
        ]
        await asyncio.sleep(0)
        q.release.set()
        return q, await asyncio.gather(first, *rest)

    q, results = asyncio.run(scenario())
    assert [r.cache_key for _, requests in q.batches for r in requests] == ["k0", "k1", "k2"]
    for i, result in enumerate(results):
        assert result["labels"] == [f"xgboost/1:{i / 10}"]
        assert result.get(CACHE_WRITTEN, False) is written
