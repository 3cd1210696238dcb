"""The protocol-neutral prediction core: resolve, validate, cache, dispatch, log.

HTTP (api/) is one front for it; how a task reaches a worker is injected (`Dispatcher`),
so this module knows neither FastAPI nor Celery.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common import metrics
from common.admission import InFlightLimit
from common.batching import MicroBatcher, Request
from common.cache import (
    PredictionCache,
    models_epoch_key,
    notify_registry_changed,
    prediction_key,
    prediction_pattern,
)
from common.callbacks import check_callback_url
from common.catalog import CatalogCache
from common.db import BackgroundLogWriter
from common.errors import (
    BackendUnavailable,
    InvalidInput,
    ModelNotFound,
    PredictionDeferred,
    PredictionTimeout,
    ServingError,
    TooManyRequests,
)
from common.jobs import JobBook
from common.observability import new_id, request_id_var
from common.registry import ModelMetadata, Registry, artifact_deleted_error, check_name
from common.settings import Settings
from common.store import check_key


class Dispatcher(Protocol):
    async def predict_batch(self, meta: ModelMetadata, requests: list[Request]) -> dict[str, Any]:
        """Run one batch of requests for one model version; the rows' results."""

    async def send_chunks(
        self, job_id: str, meta: ModelMetadata, chunks: list[list[list[Any]]]
    ) -> None:
        """Queue a job's chunks; workers record their results in the job's state."""

    async def send_callback(self, job_id: str) -> None:
        """Queue the delivery of a job's final status to its callback URL."""

    async def send_prepare(self, job_id: str, input_object: str, meta: ModelMetadata) -> None:
        """Queue the reading of a job's input object, which then queues its chunks."""

    async def ping(self, timeout: float) -> dict[str, Any]:
        """A no-op task through the queue; what the worker answered, or TimeoutError."""


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
    classes = [str(c) for c in meta.classes]
    return [
        {"label": label, "probabilities": dict(zip(classes, probs, strict=True))}
        for label, probs in zip(result["labels"], result["probabilities"], strict=True)
    ]


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        cache: aioredis.Redis,
        dispatcher: Dispatcher,
        log_writer: BackgroundLogWriter,
        results: aioredis.Redis,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.catalog = CatalogCache(
            registry, settings.registry_cache_seconds, settings.max_rows_per_request
        )
        self.cache = cache
        self.predictions = PredictionCache(cache, settings.cache_ttl_seconds)
        self.jobs = JobBook(
            results, settings.cache_prefix, settings.job_ttl_seconds, settings.job_chunk_rows
        )
        self.dispatcher = dispatcher
        self.batcher = MicroBatcher(
            dispatcher.predict_batch,
            max_rows=settings.batch_max_rows,
            max_wait=settings.batch_max_wait_ms / 1000,
            max_in_flight=settings.batch_max_in_flight,
        )
        self.log_writer = log_writer
        self.admission = InFlightLimit(settings.max_in_flight_predictions)

    async def resolve(self, model_type: str | None, version: str | None) -> ModelMetadata:
        if model_type is not None:
            check_name(model_type, "model type")
        if version is not None:
            check_name(version, "version")
        try:
            meta = (await self.catalog.get()).resolve(model_type, version)
        except ModelNotFound:
            # Published since the last read (by a tool that did not notify us)? Look again.
            meta = (await self.catalog.reread()).resolve(model_type, version)
        if meta.artifact_deleted_at is not None:
            raise artifact_deleted_error(meta)
        return meta

    async def predict(
        self, model_type: str | None, version: str | None, payload: Any, owner: str | None = None
    ) -> Outcome:
        """A prediction; past the deadline, with an `owner`, it becomes a job to poll
        (PredictionDeferred carries the job) instead of an error."""
        received_at = time.time()
        input_data = _input_data(payload, allowed={"input_data"})
        meta = await self.resolve(model_type, version)
        rows = self.catalog.validator(meta).validate(input_data)
        request_id = request_id_var.get() or new_id()
        labels = (meta.model_type, meta.version)
        # Encoded once: for the cache key, and as the rows the task carries.
        encoded = orjson.dumps(rows)
        key = prediction_key(self.settings.cache_prefix, meta, encoded)
        cached = await self._cache_get(key)
        metrics.CACHE_LOOKUPS.labels(*labels, "miss" if cached is None else "hit").inc()
        if cached is not None:
            result = orjson.loads(cached)
            self._log_hit(request_id, meta, rows, result, received_at)
        else:
            try:
                # Only a request that goes to a worker takes a slot: hits cost nothing.
                with self.admission.slot(), metrics.PREDICTIONS_IN_FLIGHT.track_inprogress():
                    result = await self.batcher.predict(
                        meta, request_id, rows, received_at, encoded
                    )
            except TooManyRequests as exc:
                metrics.PREDICTIONS.labels(*labels, exc.type).inc()
                metrics.PREDICTIONS_REJECTED.labels(*labels).inc()
                raise
            except PredictionTimeout as exc:
                metrics.PREDICTIONS.labels(*labels, exc.type).inc()
                if owner is None:
                    raise
                job = await self.jobs.defer(owner, meta, exc.details, received_at)
                metrics.JOBS.labels("submitted").inc()
                raise PredictionDeferred(exc.message, job) from None
            except ServingError as exc:
                metrics.PREDICTIONS.labels(*labels, exc.type).inc()
                raise
            self.predictions.put(key, orjson.dumps(result))
        metrics.PREDICTIONS.labels(*labels, "ok").inc()
        metrics.PREDICTION_ROWS.labels(*labels).inc(len(rows))
        return Outcome(request_id, meta, result, cached=cached is not None)

    async def _cache_get(self, key: str) -> bytes | None:
        try:
            return await self.predictions.get(key)
        except RedisError as exc:
            raise BackendUnavailable(
                f"the prediction cache (Redis) is unavailable: {exc}"
            ) from None

    def _log_hit(
        self,
        request_id: str,
        meta: ModelMetadata,
        rows: list[list[Any]],
        result: dict[str, Any],
        received_at: float,
    ) -> None:
        self.log_writer.submit(
            {
                "request_id": request_id,
                "created_at": datetime.now(UTC),
                "model_type": meta.model_type,
                "version": meta.version,
                "n_rows": len(rows),
                "input": rows,  # in feature order, as the workers log them
                "output": result,
                "latency_ms": (time.time() - received_at) * 1000,
                "cached": True,
                "status": "ok",
                "error": None,
                "worker": None,
            }
        )

    async def delete_models(self) -> dict[str, Any]:
        deleted = await asyncio.to_thread(self.registry.delete_artifacts)
        prefix = self.settings.cache_prefix
        purged = 0
        try:
            await self.cache.incr(models_epoch_key(prefix))
            batch: list[bytes] = []
            async for key in self.cache.scan_iter(match=prediction_pattern(prefix), count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    purged += await self.cache.unlink(*batch)
                    batch.clear()
            if batch:
                purged += await self.cache.unlink(*batch)

        except RedisError as exc:
            raise BackendUnavailable(
                f"artifacts deleted, but Redis failed while purging the cache: {exc}"
            ) from None
        finally:
            self.catalog.invalidate()
        await asyncio.to_thread(notify_registry_changed, self.settings)
        return {
            "deleted": [{"model_type": m.model_type, "version": m.version} for m in deleted],
            "purged_cache_entries": purged,
        }

    async def submit_job(
        self,
        owner: str,
        model_type: str | None,
        version: str | None,
        payload: Any,
        idempotency: tuple[str, str] | None = None,
    ) -> dict[str, str]:
        """Validate and queue a job of inline rows (split into chunks here) or of a CSV
        object in the model store (read and split by a worker); `idempotency` is
        (key, body digest)."""
        extra = self._job_options(payload)
        meta = await self.resolve(
            model_type or payload.get("model_type"), version or payload.get("version")
        )
        size = self.settings.job_chunk_rows
        if "input_object" in payload:
            key = payload["input_object"]
            if not isinstance(key, str):
                raise InvalidInput("input_object must be the key of a CSV object in the store")
            chunks, n_rows, extra["input_object"] = [], 0, check_key(key)
        else:
            rows = self.catalog.validator(meta).validate(
                payload["input_data"], self.settings.job_max_rows
            )
            chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
            n_rows = len(rows)
        job_id = new_id()
        if idempotency is not None:
            earlier = await self.jobs.claim_idempotency(owner, *idempotency, job_id)
            if earlier is not None:
                return await self.jobs.get(owner, earlier)
        await self.jobs.create(job_id, owner, meta, n_rows, len(chunks), size, time.time(), **extra)
        if "input_object" in extra:
            await self.dispatcher.send_prepare(job_id, extra["input_object"], meta)
        else:
            await self.dispatcher.send_chunks(job_id, meta, chunks)
        metrics.JOBS.labels("submitted").inc()
        return await self.jobs.get(owner, job_id)

    def _job_options(self, payload: Any) -> dict[str, Any]:
        allowed = {"input_data", "input_object", "model_type", "version", "callback_url"}
        if not isinstance(payload, dict):
            raise InvalidInput("the body must be a JSON object")
        if unknown := sorted(set(payload) - allowed):
            raise InvalidInput(f"unknown fields in the body: {unknown}")
        if ("input_data" in payload) == ("input_object" in payload):
            raise InvalidInput(
                'send either "input_data" (rows) or "input_object" (the key of a CSV '
                "object in the model store)"
            )
        for field in ("model_type", "version"):
            if not isinstance(payload.get(field, ""), str):
                raise InvalidInput(f"{field} must be a string")
        if "callback_url" not in payload:
            return {}
        if self.settings.callback_secret is None:
            raise InvalidInput(
                "this server signs no callbacks (SERVING_CALLBACK_SECRET is not set); "
                "poll the job instead"
            )
        return {"callback_url": check_callback_url(payload["callback_url"])}

    async def cancel_job(self, owner: str, job_id: str) -> dict[str, str]:
        info = await self.jobs.cancel(owner, job_id, time.time())
        metrics.JOBS.labels("cancelled").inc()
        if info.get("callback_url"):
            await self.dispatcher.send_callback(job_id)
        return info

    async def job_meta(self, info: dict[str, str]) -> ModelMetadata:
        """The metadata a job ran with, even if its artifact was deleted since."""
        return (await self.catalog.get()).resolve(info["model_type"], info["version"])


def _input_data(payload: Any, allowed: set[str]) -> Any:
    if not isinstance(payload, dict) or "input_data" not in payload:
        raise InvalidInput('the body must be a JSON object with an "input_data" field')
    if extra := sorted(set(payload) - allowed):
        raise InvalidInput(f"unknown fields in the body: {extra}")
    return payload["input_data"]
