"""Routes with a fast path: FastAPI documents them, and solves their parameters only for
the requests the fast path declines.

FastAPI solves every declared parameter and dependency on every request (the key's
three security schemes, the services, each header and path parameter). On `POST
/predict` at c=64 that was 13% of the API's samples, more than the route's own code. An
endpoint marked with `fast_path(...)` gets a plain function of the request instead, which
accepts the well-formed request (a valid key, every parameter within its declared
constraint) and answers it. Anything else it declines by returning None, and FastAPI's
own handler answers: its errors are FastAPI's, by construction, as the input
validator's fast path leaves every refusal to pydantic.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

from api.deps import Caller, Services, caller_for, key_of
from common.registry import MODEL_TYPE_PATTERN, VERSION_PATTERN

FastPath = Callable[[Request], Awaitable[Response | None]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
_ATTRIBUTE = "__serving_fast_path__"
MODEL_TYPE = re.compile(MODEL_TYPE_PATTERN)
VERSION = re.compile(VERSION_PATTERN)


def fast_path(path: FastPath) -> Callable[[Endpoint], Endpoint]:
    """Mark an endpoint (before the router's decorator): `path(request)` answers the
    requests it accepts; it returns None, having read nothing, for the others."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _ATTRIBUTE, path)
        return endpoint

    return mark


def fast_path_of(route: Any) -> FastPath | None:
    """The fast path of a route's endpoint, if it has one."""
    path: FastPath | None = getattr(getattr(route, "endpoint", None), _ATTRIBUTE, None)
    return path


class FastPathRoute(APIRoute):
    """An APIRoute whose endpoint may carry a fast path (`fast_path`); without one it is
    an APIRoute like any other. Its OpenAPI operation comes from the endpoint's
    signature either way."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        standard = super().get_route_handler()
        path = fast_path_of(self)
        if path is None:
            return standard

        async def handler(request: Request) -> Response:
            response = await path(request)
            return response if response is not None else await standard(request)

        return handler


def fast_caller(request: Request, **patterns: re.Pattern[str]) -> tuple[Services, Caller] | None:
    """The services and the caller, if the request holds a valid key (as require_key
    reads it) and each named path parameter present fully matches its declared pattern
    (so pydantic's check would pass too); None leaves the request to FastAPI."""
    services: Services = request.app.state.services
    caller = caller_for(services.settings, key_of(request))
    params = request.path_params
    for name, pattern in patterns.items():
        value = params.get(name)
        if value is not None and not pattern.fullmatch(value):
            return None
    return None if caller is None else (services, caller)
