"""Every route of the app, from its route table: without a valid key 401, a predict key
on an admin route 403. A new route is in the matrix the moment it exists; one that is
public or admin-only must be added to PUBLIC or ADMIN below, on purpose."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from api.examples import EXAMPLE_ROW
from api.main import create_app
from common.settings import Settings
from tests.integration.stack import ADMIN_KEY, READER_KEY, Stack

pytestmark = pytest.mark.integration

# Health for load balancers, liveness and metrics for orchestrators and Prometheus; the
# API's description.
PUBLIC = {
    "GET /",
    "GET /healthz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /docs",
    "GET /docs/oauth2-redirect",
    "GET /redoc",
    "GET /v2/health/live",
    "GET /v2/health/ready",
}
ADMIN = {
    "DELETE /delete-models",
    "PUT /models/{model_type}/aliases/{alias}",
    "DELETE /models/{model_type}/aliases/{alias}",
    "PUT /models/{model_type}/traffic",
    "DELETE /models/{model_type}/traffic",
    "PUT /models/{model_type}/shadow",
    "DELETE /models/{model_type}/shadow",
    "GET /models/{model_type}/shadow/report",
}
# A plausible value for every path parameter; a new parameter needs one here.
PATH_VALUES = {
    "model_type": "xgboost",
    "version": "1",
    "job_id": "0123456789abcdef" * 2,
    "name": "input.csv",
    "model_name": "xgboost",
    "model_version": "1",
    "alias": "challenger",
}


def route_table() -> list[str]:
    """'METHOD /path/{param}' for every route the app serves (HEAD of GET aside)."""
    app = create_app(Settings(api_keys=[], admin_api_keys=[]))
    return sorted(
        f"{method} {context.path}"
        for context in iter_route_contexts(app.routes)
        for method in context.methods or ()
        if method != "HEAD"
    )


ROUTES = route_table()
PROTECTED = [route for route in ROUTES if route not in PUBLIC]
READER_ROUTES = [route for route in PROTECTED if route not in ADMIN]

Send = Callable[..., httpx.Response]


def sender(stack: Stack, route: str) -> Send:
    method, template = route.split(" ", 1)
    path = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], template)

    def send(headers: dict[str, str] | None = None, **kwargs: object) -> httpx.Response:
        with stack.client(None) as client:
            return client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

    return send


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# Ways to come without a valid key: none, wrong ones, near misses, the stored digest,
# and the right key in a header the API does not read.
NO_VALID_KEY: list[dict[str, object]] = [
    {},
    {"headers": {"X-API-Key": ""}},
    {"headers": {"X-API-Key": "wrong-key"}},
    {"headers": {"X-API-Key": READER_KEY + "x"}},
    {"headers": {"X-API-Key": READER_KEY.upper()}},
    {"headers": {"X-API-Key": digest(READER_KEY)}},
    {"headers": {"X-API-Key": digest(ADMIN_KEY)}},
    {"headers": {"Authorization": "Bearer wrong-key"}},
    {"headers": {"Authorization": f"Basic {READER_KEY}"}},  # a scheme it does not read
    {"params": {"api_key": "wrong-key"}},
    {"params": {"api_key": ADMIN_KEY[:-1]}},
    # a body, good or broken, is never looked at before the key
    {"headers": {"Content-Type": "application/json"}, "content": b'{"input_data": {}}'},
    {"headers": {"Content-Type": "application/json"}, "content": b"{not json"},
]


def test_the_route_table_is_the_served_api(stack: Stack) -> None:
    with stack.client() as client:
        spec = client.get("/openapi.json").json()
    documented = {
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        for method in operations
    }
    assert documented <= set(ROUTES)
    assert set(ROUTES) - documented == PUBLIC - documented  # only FastAPI's docs are hidden
    assert set(ROUTES) >= PUBLIC | ADMIN
    assert {"POST /predict", "POST /jobs", "GET /logs"} <= set(PROTECTED)  # the table is real
    for route in documented:
        method, path = route.split(" ", 1)
        security = spec["paths"][path][method.lower()].get("security")
        assert bool(security) == (route not in PUBLIC), f"{route}: security is {security}"


def error_type(route: str, response: httpx.Response) -> str:
    """The error's type; under /v2 the protocol's `{"error": "<message>"}` has none, so
    the message says which."""
    error = response.json()["error"]
    if not route.split(" ", 1)[1].startswith("/v2"):
        return error["type"]  # type: ignore[no-any-return]
    assert isinstance(error, str), response.text
    return "not_authenticated" if "API key is required" in error else "forbidden"


@pytest.mark.parametrize("route", PROTECTED)
def test_no_valid_key_is_401(stack: Stack, route: str) -> None:
    send = sender(stack, route)
    for way in NO_VALID_KEY:
        response = send(**way)
        assert response.status_code == 401, f"{route} with {way}: {response.text}"
        assert error_type(route, response) == "not_authenticated"


@pytest.mark.parametrize("route", sorted(ADMIN))
def test_a_predict_key_on_an_admin_route_is_403(stack: Stack, route: str) -> None:
    send = sender(stack, route)
    for way in [{"headers": {"X-API-Key": READER_KEY}}, {"params": {"api_key": READER_KEY}}]:
        response = send(**way)
        assert response.status_code == 403, f"{route} with {way}: {response.text}"
        assert error_type(route, response) == "forbidden"


@pytest.mark.parametrize("route", READER_ROUTES)
def test_predict_and_admin_keys_pass_on_every_other_route(stack: Stack, route: str) -> None:
    """Past authentication: whatever the route answers next (an empty body is a 400),
    never 401, 403 or a 5xx."""
    send = sender(stack, route)
    ways = [{"X-API-Key": key} for key in (READER_KEY, ADMIN_KEY)]
    for headers in [*ways, {"Authorization": f"Bearer {READER_KEY}"}]:
        response = send(headers=headers)
        assert response.status_code not in (401, 403), f"{route}: {response.text}"
        assert response.status_code < 500, f"{route}: {response.text}"


@pytest.mark.parametrize("route", sorted(PUBLIC))
def test_public_routes_need_no_key_and_ignore_a_wrong_one(stack: Stack, route: str) -> None:
    send = sender(stack, route)
    for way in [{}, {"headers": {"X-API-Key": "wrong-key"}}]:
        assert send(**way).status_code == 200, f"{route} with {way}"


def test_a_good_body_with_a_predict_key_is_answered(stack: Stack) -> None:
    """The matrix sends empty bodies to reader routes; this is the 200 beside them."""
    with stack.client(READER_KEY) as client:
        assert client.post("/predict", json={"input_data": EXAMPLE_ROW}).status_code == 200
