"""One shared Redis subscription per front-end process.

Results: every task id this process creates starts with its own prefix, so a single
pattern subscription receives exactly its results, with no subscribe per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common import metrics
from common.observability import IdSource
from queueing.results import RESULT_KEY_PREFIX, TaskResult, decode, result_key

log = logging.getLogger(__name__)
# The loop, if it ever ends, starts again after this, doubling up to the most.
RESTART_FIRST_SECONDS = 0.1
RESTART_MAX_SECONDS = 5.0


class ResultListener:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.prefix = uuid.uuid4().hex[:12] + "-"
        self._ids = IdSource()
        self.extra_channels: dict[str, Callable[[], None]] = {}
        self._pattern = f"{RESULT_KEY_PREFIX}{self.prefix}*"
        # Several may wait for one task: the requests of a batch that became jobs.
        self._waiting: dict[str, set[asyncio.Future[TaskResult]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def on_message(self, channel: str, callback: Callable[[], None]) -> None:
        """Call `callback` on every message on `channel` (subscribed when started)."""
        self.extra_channels[channel] = callback

    def new_task_id(self) -> str:
        return self.prefix + self._ids()

    async def start(self, timeout: float = 2.0) -> None:
        """Subscribe in the background; wait briefly so the first requests find it ready.

        Not needed for correctness (results stored before the subscription are read back
        once it is made), so an API started before Redis serves its 503s at once."""
        self._task = asyncio.create_task(self._supervise(), name="result-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def expect(self, task_id: str) -> asyncio.Future[TaskResult]:
        """Register before sending the task, so an early result is never missed."""
        future: asyncio.Future[TaskResult] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(task_id, set()).add(future)
        return future

    def forget(self, task_id: str, future: asyncio.Future[TaskResult]) -> None:
        waiting = self._waiting.get(task_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiting[task_id]

    async def wait(
        self, task_id: str, future: asyncio.Future[TaskResult], timeout: float
    ) -> dict[str, Any]:
        """The task's JSON result, or the domain error it raised; TimeoutError."""
        return (await self.wait_final(task_id, future, timeout)).value()

    async def wait_final(
        self, task_id: str, future: asyncio.Future[TaskResult], timeout: float
    ) -> TaskResult:
        try:
            result: TaskResult | None = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            # A message may have been lost on a reconnect: the stored result is the truth.
            result = await self.stored(task_id)
            if result is None:
                raise
        finally:
            self.forget(task_id, future)
        assert result is not None
        return result

    async def stored(self, task_id: str) -> TaskResult | None:
        """The task's stored final result, if it has one (None too if Redis is down)."""
        try:
            raw = await self.client.get(result_key(task_id))
        except RedisError:
            return None
        return decode(raw)

    async def _supervise(self) -> None:
        """The subscription loop, for the process's lifetime: every waiting request
        depends on it, so whatever ends it (an error no branch foresaw) is logged,
        counted, and the loop starts again after a backoff."""
        delay = RESTART_FIRST_SECONDS
        while True:
            started = time.monotonic()
            try:
                await self._run()
                log.error("the result listener's loop returned; starting it again")
            except Exception:
                log.exception("the result listener's loop failed; starting it again")
            metrics.RESULT_LISTENER_RESTARTS.inc()
            if time.monotonic() - started > RESTART_MAX_SECONDS:
                delay = RESTART_FIRST_SECONDS  # it ran a good while: not a tight failure loop
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX_SECONDS)

    async def _run(self) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self._pattern)
                if self.extra_channels:
                    await pubsub.subscribe(*self.extra_channels)
                self._ready.set()
                await self._recover_missed()
                async for message in pubsub.listen():
                    self._dispatch_safely(message)
            except (RedisError, OSError) as exc:
                log.warning("result subscription lost (%s); reconnecting", exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(0.5)

    def _dispatch_safely(self, message: Any) -> None:
        """A message that cannot be used is logged, counted and skipped: it must never
        end the subscription, or every waiting request would sit out its deadline."""
        try:
            skipped = self._dispatch(message)
        except Exception:
            log.exception("skipped a message the result listener could not handle")
            skipped = "failed"
        if skipped is not None:
            metrics.RESULT_MESSAGES_SKIPPED.labels(skipped).inc()

    def _dispatch(self, message: Any) -> str | None:
        """Hand the message to whoever waits for it; None, or why it was skipped."""
        if not isinstance(message, dict):
            return "not_a_message"
        channel = _text(message.get("channel"))
        if message.get("type") == "message":
            callback = self.extra_channels.get(channel)
            if callback is None:
                return "unknown_channel"
            callback()
            return None
        if message.get("type") != "pmessage":
            return "not_a_message"
        waiting = self._waiting.get(channel.removeprefix(RESULT_KEY_PREFIX))
        if not waiting:
            return "unawaited"  # its request gave up (or it is not a task's at all)
        result = _decoded(message.get("data"))
        if result is None:
            log.warning("skipped a message on %r that is not a final result", channel[:200])
            return "not_a_result"
        _resolve(waiting, result)
        return None

    async def _recover_missed(self) -> None:
        for task_id, waiting in list(self._waiting.items()):
            result = await self.stored(task_id)
            if result is not None:
                _resolve(waiting, result)
        for callback in self.extra_channels.values():
            callback()  # notifications may have been missed while disconnected


def _resolve(waiting: set[asyncio.Future[TaskResult]], result: TaskResult) -> None:
    for future in list(waiting):
        if not future.done():
            future.set_result(result)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _decoded(data: Any) -> TaskResult | None:
    """A final result, or None for anything else: not JSON, binary, another shape."""
    return decode(data) if isinstance(data, bytes | str) else None
