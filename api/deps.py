"""Typed dependencies: the services object and the two API-key roles."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated

import redis.asyncio as aioredis
from celery import Celery
from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from api.probe import HealthProbe
from common.errors import Forbidden, NotAuthenticated
from common.prediction_log import BackgroundLogWriter, PredictionLogRepo
from common.registry import MODEL_TYPE_PATTERN, VERSION_PATTERN
from common.services.cards import CardService
from common.services.jobs import JobService
from common.services.logs import LogService
from common.services.models import ModelService
from common.services.predictions import PredictionService
from common.services.rollout import RolloutService
from common.services.uploads import UploadService
from common.settings import Settings
from common.tenancy import Tenant, owner_of
from queueing.dispatcher import CeleryDispatcher


@dataclass
class Services:
    """What the routes call: the three services, and the health checks' connections."""

    settings: Settings
    models: ModelService
    predictions: PredictionService
    jobs: JobService
    dispatcher: CeleryDispatcher
    cache: aioredis.Redis
    broker: aioredis.Redis | None  # None with RabbitMQ: /metrics reads it over AMQP
    producer: Celery
    log_repo: PredictionLogRepo
    log_writer: BackgroundLogWriter
    logs: LogService
    uploads: UploadService
    rollout: RolloutService
    cards: CardService
    health: HealthProbe = field(default_factory=HealthProbe)


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a
# thread pool, which costs more than everything these functions do.
async def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


class Role(Enum):
    READER = "reader"
    ADMIN = "admin"


_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="API key; the `api_key` query parameter works too",
)
_query = APIKeyQuery(name="api_key", auto_error=False)
# Generic clients (tritonclient, KServe's SDK, gateways) send `Authorization: Bearer`.
_bearer = HTTPBearer(auto_error=False, description="the API key as a bearer token")


def role_for_key(settings: Settings, key: str | None) -> Role | None:
    """Compare the key's digest with every stored digest in constant time."""
    if not key:
        return None
    digest = hashlib.sha256(key.encode()).hexdigest().encode()
    admin = any([hmac.compare_digest(digest, h.encode()) for h in settings.admin_api_key_sha256])
    reader = any([hmac.compare_digest(digest, h.encode()) for h in settings.api_key_sha256])
    return Role.ADMIN if admin else Role.READER if reader else None


@dataclass(frozen=True)
class Caller:
    role: Role
    owner: str  # a digest of the caller's key: what its work belongs to, never the key

    @property
    def tenant(self) -> Tenant:
        return Tenant(self.owner, admin=self.role is Role.ADMIN)


def key_of(request: Request) -> str | None:
    """The key a request carries, wherever it carries it, in require_key's order: the
    header, the bearer token, the query (routes that need no key, and fast paths)."""
    bearer = request.headers.get("authorization", "")
    scheme, _, credentials = bearer.partition(" ")
    return (
        request.headers.get("x-api-key")
        or (credentials.strip() if scheme.lower() == "bearer" else None)
        or request.query_params.get("api_key")
    )


async def require_key(
    services: ServicesDep,
    header_key: Annotated[str | None, Security(_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    query_key: Annotated[str | None, Security(_query)],
) -> Caller:
    key = header_key or (bearer.credentials if bearer else None) or query_key
    caller = caller_for(services.settings, key)
    if caller is None:
        raise NotAuthenticated(
            "a valid API key is required (X-API-Key header, or Authorization: Bearer)"
        )
    return caller


def caller_for(settings: Settings, key: str | None) -> Caller | None:
    """Who holds `key`, or None for no key or an unknown one."""
    role = role_for_key(settings, key)
    return None if role is None or key is None else Caller(role, owner_of(key))


async def require_admin(caller: Annotated[Caller, Depends(require_key)]) -> Caller:
    if caller.role is not Role.ADMIN:
        raise Forbidden("this route needs an admin API key")
    return caller


ModelTypePath = Annotated[str, Path(pattern=MODEL_TYPE_PATTERN, examples=["xgboost"])]
VersionPath = Annotated[str, Path(pattern=VERSION_PATTERN, examples=["1"])]
ReaderDep = Annotated[Caller, Depends(require_key)]
AdminDep = Annotated[Caller, Depends(require_admin)]
