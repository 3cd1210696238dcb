"""Celery's result record, decoded in one place; one bad message never stops a listener."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aioredis

from common.errors import InvalidInput, PredictionFailed, PredictionTimeLimit
from queueing.listener import ResultListener
from queueing.results import decode, result_key


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"not json",
        b"[1, 2]",
        b'{"status": "STARTED"}',
        b"\xff",
        b'{"status": ["SUCCESS"]}',  # not hashable: `in FINAL_STATES` would raise
        b'{"status": 1}',
    ],
)
def test_what_is_not_a_final_record_is_no_result(raw: bytes | None) -> None:
    assert decode(raw) is None


def test_a_success_is_its_result() -> None:
    record = decode(orjson.dumps({"status": "SUCCESS", "result": {"labels": [1]}}))
    assert record is not None and record.value() == {"labels": [1]}


def test_a_failure_is_its_domain_error_and_nothing_foreign() -> None:
    ours = {
        "exc_type": "InvalidInput",
        "exc_message": ["bad row", None],
        "exc_module": "common.errors",
    }
    foreign = {"exc_type": "KeyError", "exc_message": ["/secret/path"], "exc_module": "builtins"}
    limit = {
        "exc_type": "TimeLimitExceeded",
        "exc_message": [60.0],
        "exc_module": "billiard.exceptions",
    }

    records = [
        decode(orjson.dumps({"status": "FAILURE", "result": r})) for r in (ours, foreign, limit)
    ]
    errors = [record.error() for record in records if record is not None]

    assert [type(e) for e in errors] == [InvalidInput, PredictionFailed, PredictionTimeLimit]
    assert errors[0].message == "bad row"
    assert errors[1].message == "the worker failed with KeyError"  # not its text
    revoked = decode(b'{"status": "REVOKED", "result": null}')
    assert revoked is not None and isinstance(revoked.error(), PredictionFailed)


def test_a_malformed_message_does_not_end_the_listener(redis_url: str) -> None:
    async def scenario() -> dict[str, object]:
        client = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/0")
        listener = ResultListener(client)
        await listener.start()
        try:
            first, second = listener.new_task_id(), listener.new_task_id()
            waiting = [listener.expect(first), listener.expect(second)]
            await client.publish(result_key(first), b"\x00 not json at all")
            await client.publish(result_key(first), b'{"status": "SUCCESS", "result": {"n": 1}}')
            await client.publish(result_key(second), b'{"status": "SUCCESS", "result": {"n": 2}}')
            results = [
                await listener.wait(t, f, 5) for t, f in zip((first, second), waiting, strict=True)
            ]
            return {"results": results, "alive": not listener._task.done()}  # type: ignore[union-attr]
        finally:
            await listener.stop()
            await client.aclose()

    outcome = asyncio.run(scenario())

    assert outcome == {"results": [{"n": 1}, {"n": 2}], "alive": True}


def test_every_waiter_of_a_task_gets_its_result(redis_url: str) -> None:
    """The requests of one batch that all passed their deadline each wait for the task."""

    async def scenario() -> list[object]:
        client = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/0")
        listener = ResultListener(client)
        await listener.start()
        try:
            task_id = listener.new_task_id()
            waiting = [listener.expect(task_id) for _ in range(3)]
            await client.publish(result_key(task_id), b'{"status": "SUCCESS", "result": {"n": 7}}')
            return [await listener.wait(task_id, future, 5) for future in waiting]
        finally:
            await listener.stop()
            await client.aclose()

    assert asyncio.run(scenario()) == [{"n": 7}] * 3
