"""A bound on the synchronous predictions one API process keeps waiting on the workers.

Each waiting request holds its connection, its rows and a coroutine until a worker
answers; with slow models and many callers that grows without bound, and every caller
past what the workers can drain only waits out its deadline. Past the limit a request is
refused at once (429 with `Retry-After`), so callers back off or go elsewhere.

Only requests that go to a worker take a slot: a cache hit costs nothing to answer, and a
job (`Prefer: respond-async`, POST /jobs) returns at once. The API's event loop is one
thread, so a plain counter is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from common.errors import TooManyRequests


class InFlightLimit:
    def __init__(self, limit: int, retry_after_seconds: int = 1) -> None:
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        self.in_flight = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot while the block runs; TooManyRequests when none is free."""
        if self.in_flight >= self.limit:
            raise TooManyRequests.at_limit(self.limit, self.retry_after_seconds)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
