"""Rolling versions out: aliases, traffic splits and shadows (admin), and the shadow
report. Every change is written to registry.json and announced, so every API process
serves by it within a second (the registry notification), with no restart."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Engine

from common.cache import notify_registry_changed
from common.errors import InvalidInput, ModelNotFound
from common.prediction_log.shadow_report import shadow_report
from common.registry import Catalog, Registry, RegistryState, check_name
from common.rollout import CHAMPION, Rollout, ShadowRule, check_alias, check_split
from common.services.models import ModelService, same_features
from common.settings import Settings


class RolloutService:
    def __init__(
        self, settings: Settings, registry: Registry, models: ModelService, log_engine: Engine
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.models = models
        self.log_engine = log_engine

    async def state(self, model_type: str) -> dict[str, Any]:
        catalog = await self.models.catalog()
        versions = self._versions(catalog, model_type)
        return describe(catalog.state, model_type, versions)

    async def set_alias(self, model_type: str, alias: str, version: str) -> dict[str, Any]:
        versions = self._versions(await self._fresh(), model_type)
        self._known(model_type, version, versions)
        if alias == CHAMPION:  # the active version, by another name
            state = await asyncio.to_thread(self.registry.activate, model_type, version)
        else:
            check_alias(alias, versions)
            rollout = await self._rollout(model_type)
            rollout.aliases[alias] = version
            state = await self._save(model_type, rollout)
        await self._announce()
        return describe(state, model_type, versions)

    async def delete_alias(self, model_type: str, alias: str) -> dict[str, Any]:
        versions = self._versions(await self._fresh(), model_type)
        rollout = await self._rollout(model_type)
        if rollout.aliases.pop(alias, None) is None:
            raise ModelNotFound(f"{model_type!r} has no alias {alias!r}")
        state = await self._save(model_type, rollout)
        await self._announce()
        return describe(state, model_type, versions)

    async def set_traffic(self, model_type: str, weights: dict[str, int] | None) -> dict[str, Any]:
        versions = self._versions(await self._fresh(), model_type)
        rollout = await self._rollout(model_type)
        rollout.traffic = {} if weights is None else check_split(weights, versions)
        state = await self._save(model_type, rollout)
        await self._announce()
        return describe(state, model_type, versions)

    async def set_shadow(self, model_type: str, rule: ShadowRule | None) -> dict[str, Any]:
        catalog = await self._fresh()
        versions = self._versions(catalog, model_type)
        if rule is not None:
            self._known(model_type, rule.version, versions)
            active = catalog.resolve(model_type, None)
            if not same_features(catalog.resolve(model_type, rule.version), active):
                raise InvalidInput(
                    f"{model_type} v{rule.version} takes other features than the active "
                    f"v{active.version}: a shadow scores the same rows"
                )
        rollout = await self._rollout(model_type)
        rollout.shadow = rule
        state = await self._save(model_type, rollout)
        await self._announce()
        return describe(state, model_type, versions)

    async def shadow_report(self, model_type: str, limit: int) -> dict[str, Any]:
        self._versions(await self.models.catalog(), model_type)
        return await asyncio.to_thread(shadow_report, self.log_engine, model_type, limit)

    async def _fresh(self) -> Catalog:
        """The store's registry now: a change builds on what another process wrote."""
        return await self.models.catalog_cache.reread(min_age=0)

    async def _rollout(self, model_type: str) -> Rollout:
        state = await asyncio.to_thread(self.registry.state)
        return state.rollout(model_type).model_copy(deep=True)

    async def _save(self, model_type: str, rollout: Rollout) -> RegistryState:
        return await asyncio.to_thread(self.registry.save_rollout, model_type, rollout)

    async def _announce(self) -> None:
        self.models.registry_changed()
        await asyncio.to_thread(notify_registry_changed, self.settings)

    @staticmethod
    def _versions(catalog: Catalog, model_type: str) -> list[str]:
        """The type's versions that serve (a deleted artifact's version takes no traffic)."""
        check_name(model_type, "model type")
        metas = catalog.models.get(model_type)
        if not metas:
            raise ModelNotFound(f"unknown model type {model_type!r}")
        return [m.version for m in metas if m.artifact_deleted_at is None]

    @staticmethod
    def _known(model_type: str, version: str, versions: list[str]) -> None:
        check_name(version, "version")
        if version not in versions:
            raise ModelNotFound(
                f"unknown version {version!r} of {model_type!r}; versions: {versions}"
            )


def describe(state: RegistryState, model_type: str, versions: list[str]) -> dict[str, Any]:
    rollout = state.rollout(model_type)
    active = state.active_by_type.get(model_type) or (versions[-1] if versions else None)
    return {
        "model_type": model_type,
        "versions": versions,
        "aliases": {CHAMPION: active, **rollout.aliases},
        "traffic": rollout.traffic or None,
        "shadow": rollout.shadow.model_dump() if rollout.shadow else None,
    }
