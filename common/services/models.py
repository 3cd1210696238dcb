"""Models: which exist and which serve, the input schema of each, and their deletion."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common import metrics
from common.cache import models_epoch_key, notify_registry_changed, purge_predictions
from common.catalog import CatalogCache
from common.errors import BackendUnavailable, ModelNotFound, ServingError
from common.registry import (
    Catalog,
    ModelMetadata,
    Registry,
    artifact_deleted_error,
    check_name,
)
from common.rollout import pick, shadowed
from common.schemas import InputValidator
from common.services.requests import RawBody
from common.settings import Settings

# The rows of a body larger than this are validated on a thread: about 8 ms a MiB of
# rows on the fast path, 20 ms through pydantic (30 MB of rows: 0.24 s and 0.57 s),
# which the event loop's other requests would otherwise wait out.
OFF_LOOP_BYTES = 1024 * 1024


class ModelService:
    def __init__(self, settings: Settings, registry: Registry, cache: aioredis.Redis) -> None:
        self.settings = settings
        self.registry = registry
        self.cache = cache
        self.catalog_cache = CatalogCache(
            registry, settings.registry_cache_seconds, settings.max_rows_per_request
        )
        # Its own threads: big bodies never wait behind other blocking work, and at most
        # two validate at once (each holds its rows; the GIL shares one core anyway).
        self._validating = ThreadPoolExecutor(2, thread_name_prefix="validate")

    async def catalog(self) -> Catalog:
        return await self.catalog_cache.get()

    def registry_changed(self) -> None:
        """Told by a notification (or a local change) that the store's registry moved."""
        self.catalog_cache.invalidate()

    async def resolve(self, model_type: str | None, version: str | None) -> ModelMetadata:
        """The version a request names (or the active one), ready to serve."""
        if model_type is not None:
            check_name(model_type, "model type")
        if version is not None:
            check_name(version, "version")
        try:
            meta = (await self.catalog_cache.get()).resolve(model_type, version)
        except ModelNotFound:
            # Published since the last read (by a tool that did not notify us)? Look again.
            meta = (await self.catalog_cache.reread()).resolve(model_type, version)
        if meta.artifact_deleted_at is not None:
            raise artifact_deleted_error(meta)
        return meta

    async def route(self, model_type: str | None, version: str | None, owner: str) -> ModelMetadata:
        """The version a prediction goes to: the one named, else by the type's traffic
        split if it has one (sticky per caller key unless SERVING_TRAFFIC_STICKY is off),
        else the active one."""
        if version is None:
            catalog = await self.catalog_cache.get()
            default = catalog.state.active
            chosen_type = model_type or (default.model_type if default else None)
            traffic = catalog.state.rollout(chosen_type).traffic if chosen_type else {}
            if chosen_type and traffic:
                sticky = f"{owner}:{chosen_type}" if self.settings.traffic_sticky else None
                model_type, version = chosen_type, pick(traffic, sticky)
        return await self.resolve(model_type, version)

    async def shadow_of(self, meta: ModelMetadata) -> ModelMetadata | None:
        """The version this request is also scored on, if its type has a shadow, this
        request is in its share, and it still serves."""
        rule = (await self.catalog_cache.get()).state.rollout(meta.model_type).shadow
        if rule is None or not shadowed(rule, meta.version):
            return None
        try:
            shadow = await self.resolve(meta.model_type, rule.version)
        except ServingError:  # deleted since: the primary's answer goes on regardless
            return None
        # The rows are in this version's feature order: only a shadow with the same
        # features can score them (RolloutService refuses others against the active one).
        return shadow if same_features(shadow, meta) else None

    async def metadata(self, model_type: str, version: str) -> ModelMetadata:
        """A version's metadata, even if its artifact was deleted since (a job ran on it)."""
        return (await self.catalog_cache.get()).resolve(model_type, version)

    def validator(self, meta: ModelMetadata) -> InputValidator:
        return self.catalog_cache.validator(meta)

    async def validate(
        self, meta: ModelMetadata, input_data: Any, max_rows: int | None, body_bytes: int
    ) -> list[list[Any]]:
        """`input_data` as rows in feature order (InvalidInput naming what is wrong).

        A RawBody exactly right is decoded into rows on the loop, as orjson would parse
        it there (either holds the GIL throughout); another is parsed, then validated on
        a thread when its body was over OFF_LOOP_BYTES, on the loop (no hop) otherwise."""
        validator = self.validator(meta)
        if isinstance(input_data, RawBody):
            rows = validator.exact_rows(input_data.text, max_rows)
            if rows is not None:
                return rows
            input_data = input_data.input_data()
        if body_bytes <= OFF_LOOP_BYTES:
            return validator.validate(input_data, max_rows)
        metrics.OFF_LOOP_VALIDATIONS.inc()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._validating, validator.validate, input_data, max_rows
        )

    async def delete_models(self) -> dict[str, Any]:
        deleted = await asyncio.to_thread(self.registry.delete_artifacts)
        try:
            await self.cache.incr(models_epoch_key(self.settings.cache_prefix))
            purged = await purge_predictions(self.cache, self.settings.cache_prefix)
        except RedisError as exc:
            raise BackendUnavailable(
                f"artifacts deleted, but Redis failed while purging the cache: {exc}"
            ) from None
        finally:
            self.catalog_cache.invalidate()
        await asyncio.to_thread(notify_registry_changed, self.settings)
        return {
            "deleted": [{"model_type": m.model_type, "version": m.version} for m in deleted],
            "purged_cache_entries": purged,
        }


def same_features(first: ModelMetadata, second: ModelMetadata) -> bool:
    return [(f.name, f.type) for f in first.features] == [(f.name, f.type) for f in second.features]
