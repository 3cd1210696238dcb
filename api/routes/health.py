"""GET / (public: Redis and a live worker; which part is down only for a valid key),
GET /ready (a worker consumes: a ping task round trip) and GET /healthz (liveness of the
API process, public)."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from redis.exceptions import RedisError

from api.deps import ReaderDep, Services, ServicesDep, key_of, role_for_key
from api.responses import errors
from common.errors import ServingError

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str
    # Which part is down: shown to a valid key only.
    redis: bool | None = None
    worker: bool | None = None


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


async def backend_status(services: Services) -> tuple[bool, bool]:
    """Whether Redis answers and a worker does, checked at most once a second."""

    async def check() -> tuple[bool, bool]:
        redis_ok = await _redis_ok(services)
        return redis_ok, redis_ok and await asyncio.to_thread(_worker_answers, services)

    return await services.health.status(check)


@router.get(
    "/",
    status_code=200,
    response_model=Health,
    response_model_exclude_none=True,
    summary="Health of Redis and workers (no key needed)",
    description="Public, for load balancers and uptime probes: `status` is `ok` or "
    "`degraded`, checked at most once a second per API process. With a valid key "
    "(`X-API-Key`, or `api_key`), also which part is down.",
    responses={503: {"model": Health, "description": "Redis or every worker is down"}},
)
async def health(services: ServicesDep, request: Request, response: Response) -> Health:
    redis_ok, worker = await backend_status(services)
    if not (redis_ok and worker):
        response.status_code = 503
    status = "ok" if worker else "degraded"
    if role_for_key(services.settings, key_of(request)) is None:
        return Health(status=status)
    return Health(status=status, redis=redis_ok, worker=worker)


class Readiness(BaseModel):
    ready: bool
    worker: str | None = None  # the node name of the worker that answered
    round_trip_ms: float | None = None
    problem: str | None = None


@router.get(
    "/ready",
    status_code=200,
    response_model=Readiness,
    summary="Readiness: a worker consumed a ping task and answered",
    description="Sends a no-op task through the prediction queue and waits for its "
    "result, so it proves the whole path (broker, a worker consuming, the result "
    "backend), where `GET /` only asks whether a worker process is alive. It waits "
    "behind queued work: a saturated queue reads as not ready.",
    responses={
        **errors(401),
        503: {"model": Readiness, "description": "No worker answered in time"},
    },
)
async def ready(services: ServicesDep, response: Response, _: ReaderDep) -> Readiness:
    timeout = services.settings.readiness_timeout_seconds
    started = time.perf_counter()
    try:
        answer = await services.dispatcher.ping(timeout)
    except TimeoutError:
        problem = f"no worker answered a ping task within {timeout:g} s"
    except ServingError as exc:
        problem = exc.message
    else:
        took = round((time.perf_counter() - started) * 1000, 2)
        return Readiness(ready=True, worker=str(answer.get("worker")), round_trip_ms=took)
    response.status_code = 503
    return Readiness(ready=False, problem=problem)


@router.get("/healthz", status_code=200, summary="Liveness (no key needed)")
async def liveness() -> dict[str, str]:
    return {"status": "alive"}
