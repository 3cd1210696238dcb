"""Bad requests get a clear 4xx naming what is wrong; never a 500."""

from __future__ import annotations

import pytest

from api.examples import EXAMPLE_ROW
from tests.integration.stack import ADMIN_KEY, READER_KEY, Stack

pytestmark = pytest.mark.integration

GOOD = {"input_data": EXAMPLE_ROW}


def error_of(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def test_query_parameter_key_is_accepted(stack: Stack) -> None:
    with stack.client(None) as client:
        response = client.post("/predict/xgboost/1", params={"api_key": READER_KEY}, json=GOOD)
    assert response.status_code == 200


def test_reader_key_on_admin_route_is_403(stack: Stack) -> None:
    with stack.client(READER_KEY) as client:
        response = client.delete("/delete-models")
    assert response.status_code == 403
    assert error_of(response)["type"] == "forbidden"
    assert stack.registry().catalog().resolve("xgboost", "1").artifact_deleted_at is None


def test_admin_key_may_predict(stack: Stack) -> None:
    with stack.client(ADMIN_KEY) as client:
        assert client.post("/predict/xgboost/1", json=GOOD).status_code == 200


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/predict/no_such_model", "unknown model type 'no_such_model'"),
        ("/predict/xgboost/999", "unknown version or alias '999' of 'xgboost'"),
    ],
)
def test_unknown_model_or_version_is_404_listing_what_exists(
    stack: Stack, path: str, needle: str
) -> None:
    with stack.client() as client:
        response = client.post(path, json=GOOD)
    assert response.status_code == 404
    error = error_of(response)
    assert needle in str(error["message"])
    assert "1" in error["details"]["available"]["xgboost"]  # type: ignore[index]


def without(feature: str) -> dict[str, float]:
    return {k: v for k, v in EXAMPLE_ROW.items() if k != feature}


@pytest.mark.parametrize(
    ("input_data", "needle"),
    [
        (without("mean radius"), "mean radius: missing"),
        (EXAMPLE_ROW | {"colour": 1.0}, "colour: unknown feature"),
        (EXAMPLE_ROW | {"mean area": "big"}, "mean area: Input should be a valid number"),
        (EXAMPLE_ROW | {"mean area": True}, "mean area: Input should be a valid number"),
        (EXAMPLE_ROW | {"mean area": None}, "mean area"),
        ([EXAMPLE_ROW, without("worst area")], "row 1: worst area: missing"),
        ([], "empty list"),
        ("a string", "must be an object"),
    ],
)
def test_invalid_input_is_422_naming_the_feature(
    stack: Stack, input_data: object, needle: str
) -> None:
    with stack.client() as client:
        response = client.post("/predict/xgboost/1", json={"input_data": input_data})
    assert response.status_code == 422, response.text
    assert needle in str(error_of(response)["message"])


@pytest.mark.parametrize(
    ("content", "status", "kind"),
    [
        (b"{not json", 400, "malformed_body"),
        (b"", 400, "malformed_body"),
        (b'{"rows": []}', 422, "invalid_input"),
        (b'{"input_data": {}, "extra": 1}', 422, "invalid_input"),
        (b"[1, 2, 3]", 422, "invalid_input"),
        (b'{"input_data": {"mean radius": NaN}}', 400, "malformed_body"),
    ],
)
def test_malformed_bodies_are_4xx(stack: Stack, content: bytes, status: int, kind: str) -> None:
    with stack.client() as client:
        response = client.post(
            "/predict", content=content, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == status, response.text
    assert error_of(response)["type"] == kind


def test_oversized_body_is_413(stack: Stack) -> None:
    too_big = b'{"input_data": [' + b"1," * (stack.settings.max_body_bytes // 2) + b"1]}"
    with stack.client() as client:
        response = client.post("/predict", content=too_big)
    assert response.status_code == 413
    assert error_of(response)["type"] == "body_too_large"


def test_too_many_rows_is_422(stack: Stack) -> None:
    rows = [EXAMPLE_ROW] * (stack.settings.max_rows_per_request + 1)
    with stack.client() as client:
        response = client.post("/predict/xgboost/1", json={"input_data": rows})
    assert response.status_code == 422
    assert "too many rows" in str(error_of(response)["message"])


@pytest.mark.parametrize(
    "path",
    ["/predict/..", "/predict/xgboost/..%2F..%2Fetc", "/predict/%2e%2e/1", "/models/xgboost/a%2Fb"],
)
def test_path_traversal_names_are_refused(stack: Stack, path: str) -> None:
    with stack.client() as client:
        response = client.post(path, json=GOOD) if "predict" in path else client.get(path)
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize("n_limit", ["0", "-1", "1001", "ten"])
def test_logs_limit_out_of_range_is_422(stack: Stack, n_limit: str) -> None:
    with stack.client() as client:
        response = client.get("/logs", params={"n_limit": n_limit})
    assert response.status_code == 422
    assert "n_limit" in str(error_of(response)["message"])
