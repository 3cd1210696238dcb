"""Fast paths: a request the fast path accepts skips FastAPI's solving; one it declines
gets FastAPI's own handling, errors included; the OpenAPI operation is unchanged."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response

from api.fast_route import FastPathRoute, fast_path
from api.routes import predictions, v2
from common.services.job_limits import IDEMPOTENCY_KEY_MAX_CHARS
from common.settings import Settings

solved: list[str] = []


async def counted() -> str:
    solved.append("dependency")
    return "solved"


async def accept_when_asked(request: Request) -> Response | None:
    if request.headers.get("x-fast") != "yes":
        return None
    return Response(b"fast", media_type="text/plain")


def make_app() -> FastAPI:
    router = APIRouter(route_class=FastPathRoute)

    @router.post("/marked")
    @fast_path(accept_when_asked)
    async def marked(
        value: Annotated[str, Depends(counted)],
        x_fast: Annotated[str | None, Header(max_length=3)] = None,
    ) -> dict[str, Any]:
        return {"value": value, "x_fast": x_fast}

    @router.post("/plain")
    async def plain(value: Annotated[str, Depends(counted)]) -> dict[str, str]:
        return {"value": value}

    app = FastAPI()
    app.include_router(router)
    return app


class Client:
    """Requests to the app in process, through httpx's ASGI transport."""

    def __init__(self) -> None:
        self.app = make_app()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
                return await c.request(method, path, **kwargs)

        return asyncio.run(call())

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)


@pytest.fixture
def client() -> Client:
    solved.clear()
    return Client()


def test_an_accepted_request_is_answered_without_solving_anything(client: Client) -> None:
    response = client.post("/marked", headers={"x-fast": "yes"})
    assert (response.status_code, response.text) == (200, "fast")
    assert solved == []


def test_a_declined_request_gets_fastapis_handler(client: Client) -> None:
    response = client.post("/marked", headers={"x-fast": "no"})
    assert response.json() == {"value": "solved", "x_fast": "no"}
    assert solved == ["dependency"]
    # FastAPI's own validation answers what the fast path declined.
    refused = client.post("/marked", headers={"x-fast": "much too long"})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["header", "x-fast"]


def test_an_unmarked_endpoint_is_a_plain_api_route(client: Client) -> None:
    assert client.post("/plain", headers={"x-fast": "yes"}).json() == {"value": "solved"}
    assert solved == ["dependency"]


def test_the_marked_operation_is_documented_from_its_signature(client: Client) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/marked"]["post"]
    assert [p["name"] for p in operation["parameters"]] == ["x-fast"]
    assert operation["parameters"][0]["schema"]["anyOf"][0]["maxLength"] == 3


# /predict's fast path declines, before reading the body, whatever FastAPI must refuse.
READER = "a-reader-key-of-some-length"


def predict_request(path: str, params: dict[str, str], headers: dict[str, str]) -> Request:
    async def receive() -> dict[str, Any]:
        raise AssertionError("the fast path read the body of a request it declined")

    services = SimpleNamespace(settings=Settings(api_keys=[READER]))
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "path_params": params,
        "app": SimpleNamespace(state=SimpleNamespace(services=services)),
    }
    return Request(scope, receive)


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({}, {}),
        ({}, {"X-API-Key": "not-the-key"}),
        ({}, {"Authorization": f"Basic {READER}"}),
        ({"model_type": "../etc"}, {"X-API-Key": READER}),
        ({"model_type": "x" * 65}, {"X-API-Key": READER}),
        ({"model_type": "xgboost", "version": ".1"}, {"X-API-Key": READER}),
        ({"model_type": "xgboost\n"}, {"X-API-Key": READER}),
        (
            {},
            {"X-API-Key": READER, "Idempotency-Key": "k" * (IDEMPOTENCY_KEY_MAX_CHARS + 1)},
        ),
    ],
)
def test_predicts_fast_path_declines_what_fastapi_refuses(
    params: dict[str, str], headers: dict[str, str]
) -> None:
    request = predict_request("/predict", params, headers)
    assert asyncio.run(predictions._fast(request)) is None


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"model_name": "xgboost"}, {"Authorization": "Bearer not-the-key"}),
        ({"model_name": "x/y"}, {"Authorization": f"Bearer {READER}"}),
        ({"model_name": "xgboost", "model_version": "-1"}, {"X-API-Key": READER}),
    ],
)
def test_inferences_fast_path_declines_what_fastapi_refuses(
    params: dict[str, str], headers: dict[str, str]
) -> None:
    request = predict_request("/v2/models/x/infer", params, headers)
    assert asyncio.run(v2._fast_infer(request)) is None
