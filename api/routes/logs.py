"""GET /logs: the newest prediction log rows."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ReaderDep, ServicesDep
from api.responses import errors
from common.schemas import LogEntry

router = APIRouter(tags=["logs"])

MAX_LOG_ROWS = 1000


@router.get(
    "/logs",
    status_code=200,
    response_model=list[LogEntry],
    responses=errors(401, 422),
    summary="Newest prediction log rows, newest first",
)
async def read_logs(
    services: ServicesDep,
    _: ReaderDep,
    n_limit: Annotated[int, Query(ge=1, le=MAX_LOG_ROWS, description="how many rows")] = 10,
) -> list[LogEntry]:
    # Rows this process logged in the background (cache hits) are written first.
    await asyncio.to_thread(services.log_writer.flush)
    rows = await asyncio.to_thread(services.log_repo.newest, n_limit)
    catalog = await services.models.catalog()
    entries = []
    for row in rows:
        meta = catalog.find(row.model_type, row.version)
        names = meta.feature_names if meta is not None else None
        entries.append(LogEntry.model_validate(row).name_inputs(names))
    return entries
