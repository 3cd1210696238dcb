"""GET / (health of Redis and the workers) and GET /healthz (liveness, public)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from pydantic import BaseModel
from redis.exceptions import RedisError

from api.deps import ReaderDep, Services, ServicesDep

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str
    redis: bool
    worker: bool


async def _redis_ok(services: Services) -> bool:
    try:
        return bool(await asyncio.wait_for(services.cache.ping(), 2))
    except (RedisError, OSError, TimeoutError):
        return False


def _worker_answers(services: Services) -> bool:
    try:
        # limit=1: return as soon as one worker replies instead of waiting out the timeout
        return bool(services.producer.control.ping(timeout=1.0, limit=1))
    except Exception as exc:  # kombu raises assorted errors when the broker is down
        log.warning("worker ping failed: %s", exc)
        return False


@router.get(
    "/",
    status_code=200,
    response_model=Health,
    summary="Health of Redis and workers",
    responses={503: {"model": Health, "description": "Redis or every worker is down"}},
)
async def health(services: ServicesDep, response: Response, _: ReaderDep) -> Health:
    redis_ok = await _redis_ok(services)
    worker = redis_ok and await asyncio.to_thread(_worker_answers, services)
    if not (redis_ok and worker):
        response.status_code = 503
    return Health(status="ok" if worker else "degraded", redis=redis_ok, worker=worker)


@router.get("/healthz", status_code=200, summary="Liveness (no key needed)")
async def liveness() -> dict[str, str]:
    return {"status": "alive"}
