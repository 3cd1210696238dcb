"""Predictions: validate, look up the cache, micro-batch the misses to the workers, log
the hits. A prediction past its deadline becomes a job (`JobService.defer`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError

from common import metrics
from common.admission import InFlightLimit
from common.batching import MicroBatcher, Request
from common.cache import PredictionCache, prediction_key
from common.errors import (
    BackendUnavailable,
    PredictionDeferred,
    PredictionTimeout,
    ServingError,
    TooManyRequests,
)
from common.log_rows import log_row
from common.observability import new_id, request_id_var
from common.registry import ModelMetadata
from common.request_results import CACHE_WRITTEN
from common.services.models import ModelService
from common.services.requests import PredictRequest, RawBody
from common.settings import Settings

log = logging.getLogger(__name__)


class PredictDispatcher(Protocol):
    def encode_rows(self, meta: ModelMetadata, rows: list[list[Any]]) -> bytes:
        """The rows as a task carries them: the batcher joins these, the cache keys by them."""

    async def predict_batch(self, meta: ModelMetadata, requests: list[Request]) -> dict[str, Any]:
        """Run one batch of requests for one model version; the rows' results."""

    async def send_shadow(
        self, meta: ModelMetadata, primary_id: str, owner: str, rows_json: bytes, n_rows: int
    ) -> None:
        """Queue the rows to be scored and logged on the shadow version `meta`."""


class LogWriter(Protocol):
    async def put(self, entry: dict[str, Any]) -> None:
        """Queue a log row; waits (never blocking the loop) while the queue is full."""


# Turns a prediction past its deadline into a job: (owner, meta, details, received_at).
Defer = Callable[[str, ModelMetadata, dict[str, Any], float], Awaitable[Any]]


@dataclass
class Outcome:
    """A finished prediction: the model's raw result, ready to render for a caller."""

    request_id: str
    meta: ModelMetadata
    result: dict[str, Any]
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.meta.model_type,
            "version": self.meta.version,
            "predictions": render_predictions(self.meta, self.result),
            "cached": self.cached,
            "request_id": self.request_id,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def render_predictions(meta: ModelMetadata, result: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per row: its label and its probability of each class."""
    classes = list(map(str, meta.classes))
    rows = zip(result["labels"], result["probabilities"], strict=True)
    if len(classes) == 2:  # binary, the usual: a dict display, no zip per row
        first, second = classes  # a row of another length fails to unpack: ValueError
        return [
            {"label": label, "probabilities": {first: p0, second: p1}} for label, (p0, p1) in rows
        ]
    return [
        {"label": label, "probabilities": dict(zip(classes, probs, strict=True))}
        for label, probs in rows
    ]


class PredictionService:
    def __init__(
        self,
        settings: Settings,
        models: ModelService,
        cache: PredictionCache,
        dispatcher: PredictDispatcher,
        log_writer: LogWriter,
        defer: Defer,
    ) -> None:
        self.settings = settings
        self.models = models
        self.cache = cache
        self.batcher = MicroBatcher(
            dispatcher.predict_batch,
            max_rows=settings.batch_max_rows,
            max_wait=settings.batch_max_wait_ms / 1000,
            max_in_flight=settings.batch_max_in_flight,
        )
        self.log_writer = log_writer
        self.defer = defer
        self.dispatcher = dispatcher
        self._shadows: set[asyncio.Task[None]] = set()
        self.admission = InFlightLimit(settings.max_in_flight_predictions)
        self.worker_caches = settings.worker_writes_cache

    async def predict(self, request: PredictRequest) -> Outcome:
        """A prediction; past the deadline it becomes a job to poll (PredictionDeferred
        carries the job's status) instead of an error."""
        received_at = time.time()
        try:
            meta = await self.models.route(request.model_type, request.version, request.owner)
        except ServingError:
            if isinstance(request.input_data, RawBody):
                request.input_data.input_data()  # a malformed body is named before the model
            raise
        rows = await self.models.validate(meta, request.input_data, None, request.body_bytes)
        request_id = request_id_var.get() or new_id()
        labels = (meta.model_type, meta.version)
        # Encoded once: for the cache key, and as the rows the task carries.
        encoded = self.dispatcher.encode_rows(meta, rows)
        scope = request.owner if self.settings.cache_scope == "key" else None
        key = prediction_key(self.settings.cache_prefix, meta, encoded, scope)
        cached = await self._cache_get(key)
        metrics.CACHE_LOOKUPS.labels(*labels, "miss" if cached is None else "hit").inc()
        if cached is not None:
            result = orjson.loads(cached)
            await self.log_writer.put(
                log_row(
                    request_id,
                    labels,
                    len(rows),
                    rows,
                    result,
                    received_at,
                    cached=True,
                    owner=request.owner,
                )
            )
        else:
            result = await self._from_workers(
                request.owner, meta, request_id, rows, encoded, received_at, key
            )
            # Cached by the worker, unless not asked to or of an earlier release.
            if not result.pop(CACHE_WRITTEN, False):
                self.cache.put(key, orjson.dumps(result))
        metrics.PREDICTIONS.labels(*labels, "ok").inc()
        metrics.PREDICTION_ROWS.labels(*labels).inc(len(rows))
        if (shadow := await self.models.shadow_of(meta)) is not None:
            self._shadow(shadow, request_id, request.owner, orjson.dumps(rows), len(rows))
        return Outcome(request_id, meta, result, cached=cached is not None)

    def _shadow(
        self, meta: ModelMetadata, primary_id: str, owner: str, encoded: bytes, n_rows: int
    ) -> None:
        """Queued after the answer is ready, in a task of its own: the caller never waits
        for it, and its failure (the broker down) costs only the shadow row."""

        async def send() -> None:
            try:
                await self.dispatcher.send_shadow(meta, primary_id, owner, encoded, n_rows)
            except ServingError as exc:
                log.warning("shadow of %s not queued: %s", primary_id, exc.message)
                metrics.SHADOWS.labels(meta.model_type, meta.version, "not_queued").inc()
            else:
                metrics.SHADOWS.labels(meta.model_type, meta.version, "queued").inc()

        task = asyncio.create_task(send())
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _from_workers(
        self,
        owner: str,
        meta: ModelMetadata,
        request_id: str,
        rows: list[list[Any]],
        encoded: bytes,
        received_at: float,
        cache_key: str,
    ) -> dict[str, Any]:
        labels = (meta.model_type, meta.version)
        worker_key = cache_key if self.worker_caches else ""
        try:
            # Only a request that goes to a worker takes a slot: hits cost nothing.
            with self.admission.slot(), metrics.PREDICTIONS_IN_FLIGHT.track_inprogress():
                return await self.batcher.predict(
                    meta, request_id, rows, received_at, encoded, owner, worker_key
                )
        except TooManyRequests as exc:
            metrics.PREDICTIONS.labels(*labels, exc.type).inc()
            metrics.PREDICTIONS_REJECTED.labels(*labels).inc()
            raise
        except PredictionTimeout as exc:
            metrics.PREDICTIONS.labels(*labels, exc.type).inc()
            job = await self.defer(owner, meta, exc.details, received_at)
            raise PredictionDeferred(exc.message, job) from None
        except ServingError as exc:
            metrics.PREDICTIONS.labels(*labels, exc.type).inc()
            raise

    async def _cache_get(self, key: str) -> bytes | None:
        try:
            return await self.cache.get(key)
        except RedisError as exc:
            raise BackendUnavailable(
                f"the prediction cache (Redis) is unavailable: {exc}"
            ) from None
