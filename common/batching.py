"""Adaptive micro-batching: concurrent requests for one model version share one task.

A request is sent at once while fewer than `max_in_flight` tasks of its model version
are out, so an idle system never waits. Past that, requests gather until a task comes
back, the batch reaches `max_rows`, or `max_wait` passes, and then go as one task that
the worker predicts in one vectorized call. Each caller gets its own rows back.
Validation and the cache come before: an invalid request never joins a batch, and a
batch never mixes model versions (one lane per type, version and checksum).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from common import metrics
from common.errors import PredictionTimeout
from common.registry import ModelMetadata
from common.request_results import CACHE_WRITTEN, split


@dataclass
class Request:
    request_id: str
    rows: list[list[Any]]
    received_at: float
    future: asyncio.Future[dict[str, Any]]
    # The rows as the task carries them (PredictDispatcher.encode_rows), when the caller
    # has them already: packed float64 values, or JSON text.
    encoded: bytes = b""
    owner: str = ""  # the tenant whose request this is: its log row is theirs
    cache_key: str = ""  # where the worker caches the result; empty: the API caches it


Dispatch = Callable[[ModelMetadata, list[Request]], Awaitable[dict[str, Any]]]


class MicroBatcher:
    def __init__(
        self, dispatch: Dispatch, max_rows: int, max_wait: float, max_in_flight: int
    ) -> None:
        self.dispatch = dispatch
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.max_in_flight = max_in_flight
        self._lanes: dict[tuple[str, str, str], _Lane] = {}

    async def predict(
        self,
        meta: ModelMetadata,
        request_id: str,
        rows: list[list[Any]],
        received_at: float,
        encoded: bytes = b"",
        owner: str = "",
        cache_key: str = "",
    ) -> dict[str, Any]:
        """The request's own result; with CACHE_WRITTEN set if the worker cached it."""
        key = (meta.model_type, meta.version, meta.sha256)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(self, meta)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        lane.add(Request(request_id, rows, received_at, future, encoded, owner, cache_key))
        return await future


class _Lane:
    """The requests of one model version: those waiting, and how many tasks are out."""

    def __init__(self, batcher: MicroBatcher, meta: ModelMetadata) -> None:
        self.batcher = batcher
        self.meta = meta
        self.waiting: list[Request] = []
        self.waiting_rows = 0
        self.in_flight = 0
        self.timer: asyncio.TimerHandle | None = None

    def add(self, request: Request) -> None:
        limits = self.batcher
        if self.waiting and self.waiting_rows + len(request.rows) > limits.max_rows:
            self.flush()  # keep batches within max_rows
        self.waiting.append(request)
        self.waiting_rows += len(request.rows)
        if self.in_flight < limits.max_in_flight or self.waiting_rows >= limits.max_rows:
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(limits.max_wait, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.waiting:
            return
        batch, self.waiting, self.waiting_rows = self.waiting, [], 0
        self.in_flight += 1
        metrics.BATCH_SIZE.labels(self.meta.model_type, self.meta.version).observe(len(batch))
        asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[Request]) -> None:
        try:
            result = await self.batcher.dispatch(self.meta, batch)
        except PredictionTimeout as exc:
            offset = 0
            for request in batch:
                details = {
                    **(exc.details or {}),
                    "request_id": request.request_id,
                    "offset": offset,
                    "rows": len(request.rows),
                }
                _fail(request, PredictionTimeout(exc.message, details))
                offset += len(request.rows)
        except Exception as exc:
            for request in batch:
                _fail(request, exc)
        else:
            _hand_out(batch, result)
        finally:
            self.in_flight -= 1
            if self.waiting:
                self.flush()  # a slot is free: send what gathered meanwhile


def _fail(request: Request, exc: BaseException) -> None:
    if not request.future.done():
        request.future.set_exception(exc)


def _hand_out(batch: list[Request], result: dict[str, Any]) -> None:
    written = bool(result.get(CACHE_WRITTEN))
    for request, own in zip(batch, split(result, (len(r.rows) for r in batch)), strict=True):
        if not request.future.done():
            request.future.set_result({**own, CACHE_WRITTEN: True} if written else own)
