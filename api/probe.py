"""`GET /`'s health check, computed at most once a second per API process however often
it is called: it pings Redis and broadcasts a control ping to the workers, which must not
be something an unauthenticated caller can make the API do at will."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Check = Callable[[], Awaitable[tuple[bool, bool]]]


@dataclass
class HealthProbe:
    max_age: float = 1.0
    _checked_at: float = float("-inf")
    _result: tuple[bool, bool] = (False, False)
    _running: asyncio.Task[tuple[bool, bool]] | None = None

    async def status(self, check: Check) -> tuple[bool, bool]:
        """(Redis answers, a worker answers), from a check at most `max_age` old; calls
        that arrive while a check runs share it."""
        if time.monotonic() - self._checked_at < self.max_age:
            return self._result
        if self._running is None:
            self._running = asyncio.ensure_future(check())
            self._running.add_done_callback(self._done)
        return await asyncio.shield(self._running)

    def _done(self, task: asyncio.Task[tuple[bool, bool]]) -> None:
        self._running = None
        if not task.cancelled() and task.exception() is None:
            self._result, self._checked_at = task.result(), time.monotonic()
