"""The fast paths' own lane: the hot routes answered without the router and the
middleware FastAPI puts in front of every route.

api/fast_route.py took FastAPI's per-request solving off the routes with a fast path.
What was still in front of them, on `POST /predict` at c=64: the router's matching
(FastAPI 0.165 recounts its included routers' versions and walks the route contexts for
each request), its exception and telemetry middlewares, and the request wrapper's exit
stacks, about a sixth of the API's samples. `FastLane` sits inside Observability (request
id, metrics, access log) and in front of all that. A request for a route with a fast path
goes straight to the fast path; an error the fast path raises is answered by the app's
own handler for its type, found as Starlette's ExceptionMiddleware finds it. A request
the fast path declines (having read nothing) goes on to FastAPI unchanged, so every
refusal there is still FastAPI's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import iter_route_contexts
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api.fast_route import FastPath, fast_path_of

Handler = Callable[[Request, Exception], Any]  # a Response, or one to await


def lane_routes(app: FastAPI) -> list[tuple[Route, FastPath]]:
    """Every route with a fast path, served as the router would serve it: the same path
    (no prefix or dependencies added where it was included) and the same methods."""
    found: list[tuple[Route, FastPath]] = []
    for context in iter_route_contexts(app.routes):
        route = context.route
        path = fast_path_of(route)
        if path is not None and isinstance(route, Route) and route.path == context.path:
            found.append((route, path))
    return found


class FastLane:
    """ASGI middleware: `app.add_middleware(FastLane, fastapi_app=app)`, inside
    Observability (added before it)."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._routes: list[tuple[Route, FastPath]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self._routes is None:  # the middleware stack is built once every route is in
            self._routes = lane_routes(self.fastapi_app)
        for route, path in self._routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)  # in place, as the router does: Observability reads
                scope["route"] = route  # the route's path for its metrics' labels
                await self._serve(path, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, path: FastPath, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await path(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:  # as Starlette calls a plain function
                response = await run_in_threadpool(handler, request, exc)
        if response is None:
            await self.app(scope, receive, send)  # declined: FastAPI's own handling
            return
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Handler | None:
        """The app's handler for the exception's class or its nearest base, as
        Starlette's ExceptionMiddleware looks it up."""
        handlers: dict[Any, Handler] = dict(self.fastapi_app.exception_handlers)
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None
