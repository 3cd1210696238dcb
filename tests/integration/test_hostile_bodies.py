"""Hostile bodies: each gets a 4xx whose message names what is wrong, the big ones are
refused before they are read, and the API answers normally afterwards."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from api.examples import EXAMPLE_ROW
from tests.integration.stack import READER_KEY, Stack

pytestmark = pytest.mark.integration

ROUTES = ["/predict/xgboost/1", "/jobs"]
GOOD = {"input_data": EXAMPLE_ROW}


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def post(stack: Stack, path: str, content: bytes, **headers: str) -> httpx.Response:
    with stack.client() as client:
        return client.post(
            path, content=content, headers={"Content-Type": "application/json", **headers}
        )


def with_value(feature: str, literal: bytes) -> bytes:
    """A body with one feature's value written as raw JSON text (NaN is no Python float)."""
    rest = orjson.dumps({k: v for k, v in EXAMPLE_ROW.items() if k != feature})
    return b'{"input_data": {' + orjson.dumps(feature) + b": " + literal + b", " + rest[1:] + b"}"


def api_pid(stack: Stack) -> int:
    return next(p for p in stack.processes if p.name == "api").pid


@pytest.fixture(autouse=True)
def still_answers(stack: Stack) -> Iterator[None]:
    yield
    with stack.client() as client:
        response = client.post("/predict/xgboost/1", json=GOOD)
    assert response.status_code == 200, f"the API stopped answering: {response.text}"


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    ("literal", "needle"),
    [
        (b"NaN", "NaN"),
        (b"Infinity", "Infinity"),
        (b"-Infinity", "Infinity"),
        (b"1e400", "infinity"),
        (b"-1e400", "infinity"),
    ],
)
def test_nan_and_infinity_are_refused_by_name(
    stack: Stack, path: str, literal: bytes, needle: str
) -> None:
    response = post(stack, path, with_value("mean area", literal))
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "malformed_body"
    assert needle in error["message"], error


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    ("literal", "needle"),
    [
        (b'"12.5"', "mean area: Input should be a valid number"),
        (b'"abc"', "mean area: Input should be a valid number"),
        (b"true", "mean area: Input should be a valid number"),
        (b"null", "mean area: Input should be a valid number"),
        (b"[1.0]", "mean area: Input should be a valid number"),
        (b'{"x": 1}', "mean area: Input should be a valid number"),
        (b"1.5e308", "mean area: out of range: beyond ±3.4028235e+38"),
        (b"-1.7e308", "mean area: out of range: beyond ±3.4028235e+38"),
    ],
)
def test_wrong_values_in_numeric_features_are_422(
    stack: Stack, path: str, literal: bytes, needle: str
) -> None:
    response = post(stack, path, with_value("mean area", literal))
    assert response.status_code == 422, response.text
    assert needle in error_of(response)["message"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (b"[" * 100_000, 400, "depth"),
        (b'{"a":' * 100_000, 400, "depth"),
        (b'{"input_data": ' + b"[" * 1000 + b"]" * 1000 + b"}", 422, "input_data"),
        (b"", 400, "empty"),
        (b"   \n ", 400, "not valid JSON"),
        (b"42", 422, "JSON object"),
        (b'"input_data"', 422, "JSON object"),
        (b"null", 422, "JSON object"),
        (b"true", 422, "JSON object"),
        (b"[]", 422, "JSON object"),
        (b"\xef\xbb\xbf" + orjson.dumps(GOOD), 400, "BOM"),
        (b'{"input_data": {"\xff\xfe": 1.0}}', 400, "UTF-8"),
        (b'{"input_data": {"\\ud800": 1.0}}', 400, "surrogate"),
        (orjson.dumps(GOOD)[:-5], 400, "not valid JSON"),
        (orjson.dumps(GOOD) + b"}", 400, "not valid JSON"),
    ],
)
def test_malformed_json_is_4xx_naming_the_problem(
    stack: Stack, path: str, content: bytes, status: int, needle: str
) -> None:
    response = post(stack, path, content)
    assert response.status_code == status, response.text
    assert needle in error_of(response)["message"]


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (orjson.dumps(GOOD)[:-5], 400, "not valid JSON"),
        (b'{"input_data": {}, "extra": 1}', 422, "unknown fields"),
        (orjson.dumps(GOOD), 404, "nosuchmodel"),
    ],
)
def test_a_body_s_own_problem_is_named_before_an_unknown_model(
    stack: Stack, content: bytes, status: int, needle: str
) -> None:
    """The body is decoded once its version is known (common/exact_body.py), but what is
    wrong with the body itself still comes first, as when it was parsed first."""
    response = post(stack, "/predict/nosuchmodel", content)
    assert response.status_code == status, response.text
    assert needle in error_of(response)["message"]


def test_deep_nesting_with_an_idempotency_key_is_422(stack: Stack) -> None:
    content = b'{"input_data": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    response = post(stack, "/jobs", content, **{"Idempotency-Key": "deep"})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    "key",
    ["\u0000", "\u202emean area", "mean\u200barea", "\U0001f4a9" * 50, "\ufffd", "é" * 300],
)
def test_unicode_garbage_in_keys_is_an_unknown_feature(stack: Stack, path: str, key: str) -> None:
    response = post(stack, path, orjson.dumps({"input_data": EXAMPLE_ROW | {key: 1.0}}))
    assert response.status_code == 422, response.text
    message = error_of(response)["message"]
    assert "unknown feature" in message
    assert key[:20] in message


@pytest.mark.parametrize("path", ROUTES)
def test_unicode_garbage_as_a_top_level_field_is_named(stack: Stack, path: str) -> None:
    response = post(stack, path, orjson.dumps(GOOD | {"\u0000\u202e": 1}))
    assert response.status_code == 422, response.text
    assert "unknown fields" in error_of(response)["message"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_that_is_not_json_by_its_type_is_415(
    stack: Stack, path: str, content_type: str
) -> None:
    response = post(stack, path, orjson.dumps(GOOD), **{"Content-Type": content_type})
    assert response.status_code == 415, response.text
    error = error_of(response)
    assert error["type"] == "unsupported_media_type"
    assert "application/json" in error["message"] and content_type in error["message"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/vnd+json"]
)
def test_json_media_types_are_accepted(stack: Stack, content_type: str) -> None:
    response = post(
        stack, "/predict/xgboost/1", orjson.dumps(GOOD), **{"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text


def test_duplicate_keys_keep_the_last_value(stack: Stack) -> None:
    """RFC 8259 leaves duplicate names undefined; like Python's, JavaScript's and Go's
    parsers, the API keeps the last one, so the answer is that of the last value."""
    body = with_value("mean area", b'"not a number", "mean area": 1234.5')
    with stack.client() as client:
        expected = client.post(
            "/predict/xgboost/1", json={"input_data": EXAMPLE_ROW | {"mean area": 1234.5}}
        )
    response = post(stack, "/predict/xgboost/1", body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == expected.json()["predictions"]


def test_values_that_overflow_a_models_arithmetic_are_422_not_500(stack: Stack) -> None:
    """1.7e308 is a finite JSON number, but scikit-learn's scaler overflowed it to
    infinity and the worker failed (500) for every request batched with it."""
    for path in ["/predict/logistic_regression/1", "/jobs"]:
        content = with_value("worst area", b"1.7e308")
        if path == "/jobs":
            content = content[:-1] + b', "model_type": "logistic_regression"}'
        response = post(stack, path, content)
        assert response.status_code == 422, response.text
        assert "worst area: out of range" in error_of(response)["message"]


def raw_post(stack: Stack, path: str, head: str, body: bytes) -> tuple[int, dict[str, str]]:
    """Send a request's head and only `body`, then read the answer: an API that waited for
    the rest of the body would time out here."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=15) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: api\r\nX-API-Key: {READER_KEY}\r\n"
            f"Content-Type: application/json\r\n{head}\r\n".encode()
            + body
        )
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, orjson.loads(response.read())["error"]


def peak_rss_growth_mb(pid: int, action: Callable[[], None]) -> float:
    """How far the process's resident memory rose above its level before `action`."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets the peak (VmHWM) to now
    before = status_mb(pid, "VmRSS")
    action()
    return status_mb(pid, "VmHWM") - before


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


MILLION_ROWS_BYTES = 1_000_000 * (len(orjson.dumps(EXAMPLE_ROW)) + 1)


@pytest.mark.parametrize(
    ("path", "limit"), [("/predict/xgboost/1", "max_body_bytes"), ("/jobs", "job_max_body_bytes")]
)
def test_a_million_rows_declared_are_413_before_the_body_is_read(
    stack: Stack, path: str, limit: str
) -> None:
    outcome: list[tuple[int, dict[str, str]]] = []
    grew = peak_rss_growth_mb(
        api_pid(stack),
        lambda: outcome.append(
            raw_post(stack, path, f"Content-Length: {MILLION_ROWS_BYTES}\r\n", b'{"input_data": [')
        ),
    )
    status, error = outcome[0]
    assert status == 413, error
    assert error["type"] == "body_too_large"
    assert (
        f"{MILLION_ROWS_BYTES} bytes; the limit is {getattr(stack.settings, limit)}"
        in (error["message"])
    )
    assert grew < 20, f"the API grew by {grew:.0f} MB"


def test_a_chunked_body_over_the_limit_is_413_once_the_limit_is_passed(stack: Stack) -> None:
    limit = stack.settings.max_body_bytes
    data = b'{"input_data": [' + b"0," * (limit // 2)
    chunk = f"{len(data):x}\r\n".encode() + data + b"\r\n"  # and never the last chunk
    status, error = raw_post(stack, "/predict/xgboost/1", "Transfer-Encoding: chunked\r\n", chunk)
    assert status == 413, error
    assert error["message"] == f"the body exceeds the limit of {limit} bytes"


def test_a_million_small_rows_are_413_on_predict(stack: Stack) -> None:
    body = orjson.dumps({"input_data": [{}] * 1_000_000})
    assert len(body) > stack.settings.max_body_bytes
    response = post(stack, "/predict/xgboost/1", body)
    assert response.status_code == 413, response.text


def test_a_job_of_a_million_and_one_rows_is_422(stack: Stack) -> None:
    """Empty rows, so the body fits the job's byte limit and the row limit decides."""
    body = orjson.dumps({"input_data": [{}] * (stack.settings.job_max_rows + 1)})
    responses: list[httpx.Response] = []
    grew = peak_rss_growth_mb(api_pid(stack), lambda: responses.append(post(stack, "/jobs", body)))
    assert responses[0].status_code == 422, responses[0].text
    message = error_of(responses[0])["message"]
    assert f"too many rows: 1000001 > {stack.settings.job_max_rows}" in message
    print(f"API peak growth for a 1,000,001-row job body of {len(body)} bytes: {grew:.0f} MB")
    assert grew < 400, f"the API grew by {grew:.0f} MB"
