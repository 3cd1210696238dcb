"""Models: which exist and which serve, the input schema of each, and their deletion."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.cache import models_epoch_key, notify_registry_changed, purge_predictions
from common.catalog import CatalogCache
from common.errors import BackendUnavailable, ModelNotFound
from common.registry import (
    Catalog,
    ModelMetadata,
    Registry,
    artifact_deleted_error,
    check_name,
)
from common.schemas import InputValidator
from common.settings import Settings


class ModelService:
    def __init__(self, settings: Settings, registry: Registry, cache: aioredis.Redis) -> None:
        self.settings = settings
        self.registry = registry
        self.cache = cache
        self.catalog_cache = CatalogCache(
            registry, settings.registry_cache_seconds, settings.max_rows_per_request
        )

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

    async def metadata(self, model_type: str, version: str) -> ModelMetadata:
        """A version's metadata, even if its artifact was deleted since (a job ran on it)."""
        return (await self.catalog_cache.get()).resolve(model_type, version)

    def validator(self, meta: ModelMetadata) -> InputValidator:
        return self.catalog_cache.validator(meta)

    def location(self, key: str) -> str:
        """Where a caller fetches an object of the store (a presigned URL, a file URI)."""
        return self.registry.store.location(key, self.settings.job_ttl_seconds)

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
