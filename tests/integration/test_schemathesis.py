"""Schemathesis against the served OpenAPI schema, over HTTP, on a stack of its own:
without a key, with wrong keys, with the reader key and with the admin key.

Each run is the `schemathesis run` CLI in a subprocess (its pytest plugin does not work
with pytest 9.2), with every check but two: no 5xx, every status code documented, every
response's content type, headers and body as the schema says, bad input refused with a
4xx, undeclared methods answered 405 with `Allow`, a key always required where the
schema says so. Left out: `positive_data_acceptance`, because the request schema cannot
name a model's features (they are per model version, at GET /models/{type}/{version}),
so schema-valid rows of made-up features are rightly refused with 422; and
`use_after_free`, since DELETE /jobs/{id} cancels rather than deletes.

Five examples an operation in every run: the coverage phase, which tries each parameter's
boundaries and wrong types whatever that number, makes most of the cases (866 of 1,091
without a key). Fifteen for the reader key made some 1,830 cases where five make 1,393,
in 11 to 17 s where five took 7.5 to 10.5 s (measured on a 2-core machine).

Deterministic (`--generation-deterministic`: no random seed, no example database), and
run in a temporary directory so that neither Schemathesis' crash cache nor Hypothesis'
files land in the repository or replay an earlier run's cases.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.examples import EXAMPLE_ROW
from tests.integration.stack import ADMIN_KEY, READER_KEY, Stack
from tests.integration.test_auth_matrix import ADMIN

pytestmark = pytest.mark.integration

# `use_after_free` is left out too: DELETE /jobs/{id} cancels a job, which stays readable
# as `cancelled` until it expires (README, Jobs), where the check expects a 404.
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance,use_after_free"]


@pytest.fixture(scope="module")
def fuzz_stack(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    # Its own stack: the admin run deletes every artifact. No callback secret, so a
    # fuzzed callback_url is refused (422) and nothing is ever POSTed anywhere.
    stack = make_stack("fuzz", callback_secret=None)
    yield stack
    stack.stop()  # now rather than at the end of the session


def keyed_operations(stack: Stack) -> list[str]:
    """The operations the schema says need a key: all but GET /healthz and /metrics."""
    paths = httpx.get(f"{stack.url}/openapi.json", timeout=30).json()["paths"]
    return sorted(
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        for method, operation in operations.items()
        if operation.get("security")
    )


def schemathesis(stack: Stack, tmp_path: Path, max_examples: int, *options: str) -> dict[str, Any]:
    """One `schemathesis run`; its JSON report, after asserting that nothing failed."""
    (tmp_path / "schemathesis.toml").write_text("[cache]\nenabled = false\n")
    report = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--no-color",
        "run",
        f"{stack.url}/openapi.json",
        *CHECKS,
        "--max-examples",
        str(max_examples),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *options,
    ]
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    result: dict[str, Any] = json.loads(report.read_text())
    assert result["complete"] and result["stop_reason"] == "completed", output
    assert result["failures"] == [] and result["errors"] == [], output
    operations = result["operations"]
    assert operations["tested"] == operations["selected"] > 0, output
    print(f"{options}: {result['test_cases']['generated']} cases", file=sys.stderr)
    return result


def test_without_a_key(fuzz_stack: Stack, tmp_path: Path) -> None:
    result = schemathesis(fuzz_stack, tmp_path, 5, "--generation-with-security-parameters", "false")
    # every keyed operation answered nothing but 401
    assert sorted(result["warnings"]["missing_auth"]) == keyed_operations(fuzz_stack)
    assert result["test_cases"]["generated"] >= 300


def test_with_wrong_keys(fuzz_stack: Stack, tmp_path: Path) -> None:
    # Schemathesis makes up X-API-Key headers and api_key query parameters.
    result = schemathesis(fuzz_stack, tmp_path, 5)
    assert sorted(result["warnings"]["missing_auth"]) == keyed_operations(fuzz_stack)
    assert result["test_cases"]["generated"] >= 300


def test_with_the_reader_key(fuzz_stack: Stack, tmp_path: Path) -> None:
    result = schemathesis(fuzz_stack, tmp_path, 5, "--header", f"X-API-Key: {READER_KEY}")
    # the key works everywhere but on the admin routes
    assert sorted(result["warnings"]["missing_auth"]) == sorted(ADMIN)
    # the tenancy routes are in the schema, so in every run above
    new_routes = {"PUT /uploads/{name}", "GET /uploads", "DELETE /uploads/{name}", "GET /logs"}
    assert new_routes <= set(keyed_operations(fuzz_stack))
    print(f"\nreader key: {result['test_cases']['generated']} cases generated")
    assert result["test_cases"]["generated"] >= 700


def test_405_lists_every_method_of_the_path(fuzz_stack: Stack) -> None:
    """Regression: the error handler dropped Allow, and Starlette's named one route only."""
    with fuzz_stack.client() as client:
        for method, path, allowed in [
            ("OPTIONS", "/jobs/0123456789abcdef", "DELETE, GET"),
            ("PUT", "/predict/xgboost/1", "POST"),
            ("GET", "/delete-models", "DELETE"),
        ]:
            response = client.request(method, path)
            assert response.status_code == 405, response.text
            assert response.headers["allow"] == allowed
            assert response.json()["error"]["type"] == "http_error"


def test_a_missing_key_is_a_documented_401(fuzz_stack: Stack) -> None:
    """Regression: GET /ready answered 401 without documenting it. GET / is public, and
    documents no 401."""
    paths = httpx.get(f"{fuzz_stack.url}/openapi.json", timeout=30).json()["paths"]
    with fuzz_stack.client(key=None) as client:
        assert client.get("/ready").status_code == 401
        assert "401" in paths["/ready"]["get"]["responses"]
        assert client.get("/").status_code in (200, 503)
        assert "401" not in paths["/"]["get"]["responses"]


def test_the_fuzzed_stack_sends_no_callbacks(fuzz_stack: Stack) -> None:
    """What makes fuzzing callback_url safe: without a secret, no job takes one."""
    body = {"input_data": [EXAMPLE_ROW], "callback_url": "http://127.0.0.1:9/hook"}
    with fuzz_stack.client() as client:
        response = client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    assert "signs no callbacks" in response.json()["error"]["message"]


def test_with_the_admin_key(fuzz_stack: Stack, tmp_path: Path) -> None:
    # Last in this module. DELETE /delete-models gets its own run after the rest: once
    # the artifacts are gone, predictions rightly answer 503 (see test_delete_models),
    # which would read as server errors.
    admin = ("--header", f"X-API-Key: {ADMIN_KEY}")
    result = schemathesis(fuzz_stack, tmp_path, 5, *admin, "--exclude-path", "/delete-models")
    assert result["warnings"]["missing_auth"] == []
    print(f"\nadmin key: {result['test_cases']['generated']} cases generated")
    assert result["test_cases"]["generated"] >= 400
    deleted = schemathesis(fuzz_stack, tmp_path, 5, *admin, "--include-path", "/delete-models")
    assert deleted["warnings"]["missing_auth"] == []
    with fuzz_stack.client() as client:
        listing = client.get("/models").json()
    assert all(v["artifact_deleted"] for m in listing["models"] for v in m["versions"])
