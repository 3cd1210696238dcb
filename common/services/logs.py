"""The prediction log, for the front ends: a tenant's rows, a capped page at a time."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from common.errors import Forbidden
from common.prediction_log import BackgroundLogWriter, PredictionLogRepo
from common.prediction_log.query import LogPage, LogQuery, read_page
from common.services.models import ModelService
from common.settings import Settings


class LogService:
    def __init__(
        self,
        settings: Settings,
        repo: PredictionLogRepo,
        writer: BackgroundLogWriter,
        models: ModelService,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.writer = writer
        self.models = models

    async def page(self, query: LogQuery) -> LogPage:
        """A page of the tenant's own rows (an admin's: everyone's, or one owner's).
        Read and encoded in a thread: a page can be megabytes."""
        tenant = query.tenant
        if query.owner is not None and not tenant.sees(query.owner):
            raise Forbidden("only admin keys read other keys' rows (the owner filter)")
        if not tenant.admin:
            query = replace(query, owner=tenant.owner)
        # Rows this process logged in the background (cache hits) are written first.
        await asyncio.to_thread(self.writer.flush)
        catalog = await self.models.catalog()

        def names(model_type: str, version: str) -> list[str] | None:
            meta = catalog.find(model_type, version)
            return meta.feature_names if meta is not None else None

        return await asyncio.to_thread(
            read_page, self.repo.engine, query, self.settings.logs_max_response_bytes, names
        )
