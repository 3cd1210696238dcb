"""Bounds on the work one API process takes on at once.

Synchronous predictions waiting on the workers: each holds its connection, its rows and
a coroutine until a worker answers; with slow models and many callers that grows without
bound, and every caller past what the workers can drain only waits out its deadline.
Job submissions being read and parsed: each holds its body (up to job_max_body_bytes,
several times that once parsed) while it is validated. Past either limit a request is
refused at once (429 with `Retry-After`), so callers back off or go elsewhere.

Only predictions that go to a worker take a slot: a cache hit costs nothing to answer,
and a job (`Prefer: respond-async`, POST /jobs) returns at once. The API's event loop is
one thread, so a plain counter is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from common.errors import ServingError, TooManyRequests

# Builds the refusal from (limit, retry-after seconds).
Refusal = Callable[[int, int], ServingError]


class InFlightLimit:
    def __init__(
        self,
        limit: int,
        retry_after_seconds: int = 1,
        refusal: Refusal = TooManyRequests.at_limit,
    ) -> None:
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        self.refusal = refusal
        self.in_flight = 0

    @property
    def full(self) -> bool:
        return self.in_flight >= self.limit

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot while the block runs; the refusal (a 429) when none is free."""
        if self.full:
            raise self.refusal(self.limit, self.retry_after_seconds)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
