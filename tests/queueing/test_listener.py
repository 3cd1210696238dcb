"""The result listener survives what comes on its channels: payloads that are not results
are counted and skipped, and a loop that ends by an error is started again.

The Redis client here is a fake on purpose: these tests make the loop fail in ways a
real Redis cannot be made to (tests/integration/test_listener_garbage.py sends garbage
through a real one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from prometheus_client import REGISTRY

from queueing import listener as listener_module
from queueing.listener import ResultListener
from queueing.results import RESULT_KEY_PREFIX, TaskResult


def skipped(reason: str) -> float:
    value = REGISTRY.get_sample_value("serving_result_messages_skipped_total", {"reason": reason})
    return value or 0.0


def restarts() -> float:
    return REGISTRY.get_sample_value("serving_result_listener_restarts_total") or 0.0


def pmessage(task_id: str, data: Any) -> dict[str, Any]:
    channel = (RESULT_KEY_PREFIX + task_id).encode()
    return {"type": "pmessage", "pattern": b"p", "channel": channel, "data": data}


SUCCESS = orjson.dumps({"status": "SUCCESS", "result": {"labels": ["a"]}})
GARBAGE = [
    b"not json at all",
    b"\xff\xfe\x00binary",
    b'["a", "list", "not", "a", "record"]',
    b'{"status": ["unhashable"]}',
    b'{"status": "STARTED"}',
    b"[" * 5000,  # deeper than orjson reads
    b'"' + b"x" * 5_000_000 + b'"',  # large, and valid JSON
]


class FakePubSub:
    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages
        self.closed = False

    async def psubscribe(self, *_: str) -> None: ...

    async def subscribe(self, *_: str) -> None: ...

    async def listen(self) -> AsyncIterator[Any]:
        for message in self.messages:
            yield message
        await asyncio.Event().wait()  # stays subscribed, as a real one does

    async def aclose(self) -> None:
        self.closed = True


class FakeClient:
    """Its first `failures` subscriptions raise an error no branch of the loop expects."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.messages: list[Any] = []
        self.subscriptions: list[FakePubSub] = []

    def pubsub(self, **_: Any) -> FakePubSub:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("a bug no branch foresaw")
        self.subscriptions.append(FakePubSub(self.messages))
        return self.subscriptions[-1]

    async def get(self, _: str) -> None:
        return None


def test_payloads_that_are_not_results_are_counted_and_skipped() -> None:
    async def scenario() -> tuple[TaskResult, bool]:
        listener = ResultListener(FakeClient(0))  # type: ignore[arg-type]
        task_id = listener.new_task_id()
        future = listener.expect(task_id)
        for data in GARBAGE:
            listener._dispatch_safely(pmessage(task_id, data))
        garbage_resolved = future.done()
        listener._dispatch_safely(pmessage(listener.new_task_id(), SUCCESS))  # nobody waits
        listener._dispatch_safely({"type": "message", "channel": b"nobody", "data": b"x"})
        listener._dispatch_safely("not even a dict")
        listener._dispatch_safely({"type": "pmessage"})  # no channel, no data
        listener._dispatch_safely(pmessage(task_id, SUCCESS))
        return await asyncio.wait_for(future, 1), garbage_resolved

    before = {r: skipped(r) for r in ("not_a_result", "unawaited", "unknown_channel")}
    before_other = skipped("not_a_message") + skipped("failed")

    result, garbage_resolved = asyncio.run(scenario())

    assert not garbage_resolved
    assert result == TaskResult("SUCCESS", {"labels": ["a"]})
    assert skipped("not_a_result") - before["not_a_result"] == len(GARBAGE)
    assert skipped("unawaited") - before["unawaited"] == 2  # and the one with no channel
    assert skipped("unknown_channel") - before["unknown_channel"] == 1
    assert skipped("not_a_message") + skipped("failed") - before_other == 1


def test_a_loop_that_fails_is_started_again_and_then_delivers(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(listener_module, "RESTART_FIRST_SECONDS", 0.01)
    client = FakeClient(failures=3)

    async def scenario() -> TaskResult:
        listener = ResultListener(client)  # type: ignore[arg-type]
        task_id = listener.new_task_id()
        future = listener.expect(task_id)
        client.messages.append(pmessage(task_id, SUCCESS))
        await listener.start(timeout=5)
        try:
            return await asyncio.wait_for(future, 5)
        finally:
            await listener.stop()

    before = restarts()

    result = asyncio.run(scenario())

    assert result.succeeded and result.result == {"labels": ["a"]}
    assert restarts() - before == 3
    assert len(client.subscriptions) == 1 and client.subscriptions[0].closed


def test_a_callback_that_raises_on_recovery_restarts_the_loop(monkeypatch: Any) -> None:
    monkeypatch.setattr(listener_module, "RESTART_FIRST_SECONDS", 0.01)
    client = FakeClient(failures=0)
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("the first notification handler call fails")

    async def scenario() -> None:
        listener = ResultListener(client)  # type: ignore[arg-type]
        listener.on_message("registry", flaky)
        await listener.start(timeout=5)
        for _ in range(100):
            if len(client.subscriptions) == 2:
                break
            await asyncio.sleep(0.01)
        await listener.stop()

    before = restarts()

    asyncio.run(scenario())

    assert restarts() - before == 1
    assert len(calls) == 2  # called again once the loop was back
    assert [s.closed for s in client.subscriptions] == [True, True]
