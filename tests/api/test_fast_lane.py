"""FastLane: a route with a fast path is answered without the router; what the fast path
declines, and every other request, goes to FastAPI; an error gets the app's handler."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.fast_lane import FastLane, lane_routes
from api.fast_route import FastPathRoute, fast_path
from api.main import create_app
from common.settings import Settings


class Refused(Exception):
    pass


class Unhandled(Exception):
    pass


async def fast(request: Request) -> Response | None:
    mode = request.headers.get("x-mode")
    if mode == "decline":
        return None
    if mode == "refuse":
        raise Refused("no")
    if mode == "crash":
        raise Unhandled("boom")
    item = request.path_params["item"]
    return Response(f"fast {item}".encode(), media_type="text/plain")


def make_app() -> FastAPI:
    router = APIRouter(route_class=FastPathRoute)

    @router.post("/items/{item}")
    @fast_path(fast)
    async def slow_item(item: str) -> dict[str, str]:
        return {"slow": item}

    @router.post("/plain")
    async def plain() -> dict[str, str]:
        return {"plain": "yes"}

    app = FastAPI()
    app.include_router(router)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"refused": str(exc)}, status_code=409)

    return app


class Recorder:
    """ASGI middleware: the paths it was called with, and the route each ended with."""

    def __init__(self, app: ASGIApp, calls: list[str], routes: list[str | None]) -> None:
        self.app, self.calls, self.routes = app, calls, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append(scope.get("path", ""))
        await self.app(scope, receive, send)
        self.routes.append(getattr(scope.get("route"), "path", None))


class Lane:
    """Observability's place (outer) > FastLane > the rest of FastAPI (inner), recorded."""

    def __init__(self) -> None:
        self.app = make_app()
        self.inner_calls: list[str] = []
        self.outer_routes: list[str | None] = []
        self.app.add_middleware(Recorder, calls=self.inner_calls, routes=[])
        self.app.add_middleware(FastLane, fastapi_app=self.app)
        self.app.add_middleware(Recorder, calls=[], routes=self.outer_routes)

    def post(self, path: str, mode: str = "") -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
                return await c.post(path, headers={"x-mode": mode})

        return asyncio.run(call())


@pytest.fixture
def lane() -> Lane:
    return Lane()


def test_a_fast_route_is_answered_without_the_router(lane: Lane) -> None:
    response = lane.post("/items/7")
    assert (response.status_code, response.text) == (200, "fast 7")
    assert lane.inner_calls == []
    assert lane.outer_routes == ["/items/{item}"]  # metrics' label, seen from outside


def test_what_the_fast_path_declines_goes_to_fastapi(lane: Lane) -> None:
    response = lane.post("/items/7", mode="decline")
    assert response.json() == {"slow": "7"}
    assert lane.inner_calls == ["/items/7"]


def test_other_routes_and_methods_go_to_fastapi(lane: Lane) -> None:
    assert lane.post("/plain").json() == {"plain": "yes"}
    assert lane.post("/nowhere").status_code == 404
    assert lane.inner_calls == ["/plain", "/nowhere"]


def test_an_error_of_the_fast_path_gets_the_apps_handler(lane: Lane) -> None:
    response = lane.post("/items/7", mode="refuse")
    assert (response.status_code, response.json()) == (409, {"refused": "no"})
    assert lane.inner_calls == []


def test_an_error_without_a_handler_propagates(lane: Lane) -> None:
    with pytest.raises(Unhandled):
        lane.post("/items/7", mode="crash")


def test_the_api_lane_holds_exactly_its_fast_routes() -> None:
    app = create_app(Settings(api_keys=[], admin_api_keys=[]))
    paths: list[Any] = sorted(route.path for route, _ in lane_routes(app))
    assert paths == [
        "/predict",
        "/predict/{model_type}",
        "/predict/{model_type}/{version}",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
    ]
