"""`create_app(settings)`: the FastAPI application, its lifespan and its one error handler."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from api.deps import Services
from api.docs import install_docs
from api.fast_lane import FastLane
from api.middleware import Observability
from api.routes import cards, health, jobs, logs, metrics, models, predictions, rollout, uploads, v2
from common.cache import PredictionCache, registry_channel
from common.errors import BackendUnavailable, ServingError
from common.heap import settle_heap
from common.jobs import AsyncJobStore
from common.observability import configure_logging
from common.oip.metadata import SERVER_VERSION
from common.prediction_log import (
    BackgroundLogWriter,
    LogSpool,
    PredictionLogRepo,
    create_log_engine,
    create_tables,
)
from common.registry import Registry
from common.services.cards import CardService
from common.services.jobs import JobService
from common.services.logs import LogService
from common.services.models import ModelService
from common.services.predictions import PredictionService
from common.services.rollout import RolloutService
from common.services.uploads import UploadService
from common.settings import Settings, get_settings
from common.store import create_store
from queueing.config import broker_is_amqp
from queueing.dispatcher import CeleryDispatcher, create_producer
from queueing.listener import ResultListener

log = logging.getLogger("api")

DESCRIPTION = """Predictions from scikit-learn and XGBoost models, served through a queue.

Send `X-API-Key` with every request. Inputs are validated against the model's metadata:
`GET /models/{model_type}/{version}` shows the exact input schema of a version."""


# Connections per Redis client of an API process. redis-py's default pool refuses a
# command past 100 connections ("Too many connections"), so a burst of concurrent
# requests got 503s; this pool makes the extra commands wait for a free connection
# (a command takes well under a millisecond) for at most REDIS_POOL_WAIT_SECONDS.
REDIS_POOL_SIZE = 100
REDIS_POOL_WAIT_SECONDS = 5.0


def redis_client(url: str, **options: Any) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_POOL_SIZE,
        timeout=REDIS_POOL_WAIT_SECONDS,
        socket_connect_timeout=2,
        **options,
    )
    return aioredis.Redis.from_pool(pool)


def build_services(settings: Settings) -> tuple[Services, ResultListener]:
    cache = redis_client(settings.effective_cache_url, socket_timeout=5, health_check_interval=30)
    results = redis_client(settings.effective_result_backend_url, health_check_interval=30)
    # /metrics reads a Redis broker's queues with this client; RabbitMQ's over AMQP.
    broker = (
        None
        if broker_is_amqp(settings)
        else redis_client(settings.effective_broker_url, socket_timeout=5)
    )
    registry = Registry(create_store(settings))
    engine = create_log_engine(settings.database_url)
    create_tables(engine)
    repo = PredictionLogRepo(engine)
    # Cache hits the database refuses wait in Redis, where the workers drain them.
    writer = BackgroundLogWriter(
        repo, LogSpool.from_settings(settings), max_rows=settings.log_queue_max_rows
    )
    producer = create_producer(settings)
    listener = ResultListener(results)
    dispatcher = CeleryDispatcher(producer, listener, settings, broker)
    models_ = ModelService(settings, registry, cache)
    job_store = AsyncJobStore(results, settings.cache_prefix, settings.job_ttl_seconds)
    uploads_ = UploadService(settings, registry.store)  # the uploads share the models' store
    jobs_ = JobService(settings, job_store, models_, dispatcher, uploads_)
    predictions_ = PredictionService(
        settings,
        models_,
        PredictionCache(cache, settings.cache_ttl_seconds),
        dispatcher,
        writer,
        defer=jobs_.defer,
    )
    listener.on_message(registry_channel(settings.cache_prefix), models_.registry_changed)
    services = Services(
        settings,
        models_,
        predictions_,
        jobs_,
        dispatcher,
        cache,
        broker,
        producer,
        repo,
        writer,
        logs=LogService(settings, repo, writer, models_),
        uploads=uploads_,
        rollout=RolloutService(settings, registry, models_, engine),
        cards=CardService(models_, registry.store),
    )
    return services, listener


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services, listener = build_services(settings)
        if not settings.api_key_sha256 and not settings.admin_api_key_sha256:
            log.warning("no API keys configured: every request will get 401")
        await listener.start()
        app.state.services = services
        settle_heap()  # after startup: the collector skips what it built (common/heap.py)
        try:
            yield
        finally:
            await listener.stop()
            services.log_writer.close()
            await services.cache.aclose()
            if services.broker is not None:
                await services.broker.aclose()
            await listener.client.aclose()

    app = FastAPI(
        title="Model serving",
        version=SERVER_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        # api/docs.py serves both pages from local files instead of a CDN.
        docs_url=None,
        redoc_url=None,
        # FastAPI's native OpenTelemetry hooks stay off: the service's telemetry is its
        # Prometheus metrics and its logs, and with the hooks on, every request asked
        # OpenTelemetry for its three providers (os.environ lookups; 3% of the API's CPU).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    # rollout before models: GET /models/{type}/rollout would read as a version there.
    # cards too: GET /models/{type}/compare.
    for module in (health, predictions, jobs, uploads, rollout, cards, models, logs, metrics, v2):
        app.include_router(module.router)
    install_docs(app)
    install_error_handlers(app)
    app.add_middleware(FastLane, fastapi_app=app)  # the hot routes' own lane (api/fast_lane.py)
    app.add_middleware(Observability)  # added last: the outermost, around the lane too
    return app


def _error(
    request: Request, status: int, type_: str, message: str, details: Any = None
) -> JSONResponse:
    if v2.speaks_protocol(request.url.path):
        return JSONResponse(v2.error_body(message), status_code=status)
    body: dict[str, Any] = {"type": type_, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods of every documented operation whose path template matches `path`."""
    methods: set[str] = set()
    for template, operations in app.openapi()["paths"].items():
        pattern = "[^/]+".join(map(re.escape, re.split(r"\{[^/}]+\}", template)))
        if re.fullmatch(pattern, path):
            methods.update(method.upper() for method in operations)
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        response = _error(request, exc.status, exc.type, exc.message, exc.details)
        response.headers.update(exc.headers())  # e.g. a 429's Retry-After
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"location": ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in exc.errors()
        ]
        message = "; ".join(f"{d['location']}: {d['problem']}" for d in details)
        return _error(request, 422, "invalid_request", message, details)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        response = _error(request, exc.status_code, "http_error", str(exc.detail))
        response.headers.update(exc.headers or {})
        # RFC 9110: a 405's `Allow` lists every method of the resource. Starlette's names
        # only the first route that matched the path (GET of GET and DELETE /jobs/{id}).
        if exc.status_code == 405 and (
            methods := _allowed_methods(request.app, request.scope["path"])
        ):
            response.headers["Allow"] = ", ".join(methods)
        return response

    @app.exception_handler(RedisError)
    @app.exception_handler(OperationalError)
    async def backend_down(request: Request, exc: Exception) -> JSONResponse:
        # Redis (broker, results, cache or job state) unreachable from any code path:
        # a quick 503 the caller can retry, never a 500 or a hang.
        log.warning("backend unavailable on %s %s: %s", request.method, request.url.path, exc)
        return await serving_error(request, BackendUnavailable(f"Redis is unavailable: {exc}"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(request, 500, "internal_error", "internal error; see the server log")


def app_factory() -> FastAPI:
    """For `python -m api`: runs in each uvicorn worker process."""
    settings = get_settings()
    configure_logging("api", settings.log_level, settings.log_format)
    return create_app(settings)
