"""What every command is given: the settings, the output, and the domain's services built
as the API builds them, so the tool applies the same rules (rollout checks, the
registry notification) instead of a copy of them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import redis.asyncio as aioredis

from common.registry import Registry
from common.services.cards import CardService
from common.services.models import ModelService
from common.services.rollout import RolloutService
from common.settings import Settings
from common.store import create_store
from modelctl.output import Output

T = TypeVar("T")


@dataclass
class Context:
    settings: Settings
    output: Output

    @cached_property
    def registry(self) -> Registry:
        return Registry(create_store(self.settings))

    def rollout(self, call: Callable[[RolloutService], Awaitable[T]]) -> T:
        """`call` run on a RolloutService (asynchronous, as in the API) to its end."""
        from common.prediction_log import create_log_engine

        async def run(models: ModelService) -> T:
            engine = create_log_engine(self.settings.database_url)
            try:
                return await call(RolloutService(self.settings, self.registry, models, engine))
            finally:
                engine.dispose()

        return asyncio.run(self._with_models(run))

    def cards(self, call: Callable[[CardService], Awaitable[T]]) -> T:
        async def run(models: ModelService) -> T:
            return await call(CardService(models, self.registry.store))

        return asyncio.run(self._with_models(run))

    async def _with_models(self, run: Callable[[ModelService], Awaitable[T]]) -> T:
        # ModelService uses its Redis client only to purge the cache on deletion, which
        # no command does; the client connects on first use, so it never does here.
        cache = aioredis.Redis.from_url(self.settings.effective_cache_url)
        try:
            return await run(ModelService(self.settings, self.registry, cache))
        finally:
            await cache.aclose()
