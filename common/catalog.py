"""An in-process cache of the registry for the request path: no store reads per request.

Refreshed at once when told the registry changed (Redis notification or a local admin
action), and otherwise in the background once `registry_cache_seconds` have passed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from common.registry import Catalog, ModelMetadata, Registry
from common.schemas import InputValidator

log = logging.getLogger(__name__)


class CatalogCache:
    def __init__(self, registry: Registry, max_age: float, max_rows: int) -> None:
        self.registry = registry
        self.max_age = max_age
        self.max_rows = max_rows
        self._catalog: Catalog | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._validators: dict[tuple[str, str, str], InputValidator] = {}

    def invalidate(self) -> None:
        self._catalog = None

    async def get(self) -> Catalog:
        catalog = self._catalog
        if catalog is None:
            return await self._refresh(force=False)
        if time.monotonic() - self._loaded_at > self.max_age and self._background is None:
            # Stale but usable: answer now, reread the store off the request path.
            self._background = asyncio.create_task(self._refresh_in_background())
        return catalog

    async def reread(self, min_age: float = 1.0) -> Catalog:
        """Reread the store now, unless the copy is younger than `min_age` seconds
        (so a flood of requests for unknown models cannot hammer the store)."""
        if self._catalog is not None and time.monotonic() - self._loaded_at < min_age:
            return self._catalog
        return await self._refresh(force=True)

    def validator(self, meta: ModelMetadata) -> InputValidator:
        key = (meta.model_type, meta.version, meta.sha256)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = InputValidator(meta, self.max_rows)
        return validator

    async def _refresh(self, *, force: bool) -> Catalog:
        async with self._lock:
            if self._catalog is not None and not force:
                return self._catalog  # another request refreshed it while we waited
            catalog = await asyncio.to_thread(self.registry.catalog)
            self._catalog, self._loaded_at = catalog, time.monotonic()
            live = {
                (m.model_type, m.version, m.sha256)
                for metas in catalog.models.values()
                for m in metas
            }
            self._validators = {k: v for k, v in self._validators.items() if k in live}
            return catalog

    async def _refresh_in_background(self) -> None:
        try:
            await self._refresh(force=True)
        except Exception:
            log.exception("could not refresh the model registry; serving the last copy")
        finally:
            self._background = None
