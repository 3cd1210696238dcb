"""One key cannot exhaust the service: past `max_jobs_per_key` unfinished jobs a key's
submissions get 429 (naming the limit, with Retry-After) until one of its jobs ends, and
past `max_job_submissions_in_flight` bodies being read an API process answers 429 at once.
The job counts live in Redis; the jobs stay queued here because the stack's worker is
stopped, until a test starts one again."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from api.examples import EXAMPLE_ROW
from tests.integration.stack import ADMIN_KEY, READER_KEY, Stack, scrape, total

pytestmark = pytest.mark.integration

OTHER_KEY = "second-reader-key-for-the-limits"
PER_KEY = 3
JOB = {"input_data": [EXAMPLE_ROW], "model_type": "xgboost"}


@pytest.fixture(scope="module")
def limited(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    stack = make_stack(
        "limits",
        api_keys=f"{READER_KEY},{OTHER_KEY}",
        max_jobs_per_key=PER_KEY,
        max_job_submissions_in_flight=1,
        predict_timeout_seconds=1.5,
    )
    for worker in [p for p in stack.processes if p.name.startswith("worker")]:
        worker.stop()  # jobs stay queued: they count until a worker ends them
    yield stack


def submit(stack: Stack, key: str, **headers: str) -> httpx.Response:
    with stack.client(key, headers=headers) as client:
        return client.post("/jobs", json=JOB)


def refused(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_a_key_past_its_limit_waits_for_one_of_its_jobs_to_end(limited: Stack) -> None:
    accepted = [submit(limited, READER_KEY) for _ in range(PER_KEY)]
    assert [r.status_code for r in accepted] == [202] * PER_KEY

    error = refused(submit(limited, READER_KEY))
    past = submit(limited, READER_KEY)
    assert error["type"] == "too_many_jobs"
    assert "already has 3 jobs queued or running; the limit is 3 per key" in error["message"]
    assert error["details"] == {"max_jobs_per_key": 3, "active_jobs": 3, "retry_after_seconds": 5}
    assert past.headers["retry-after"] == "5"
    # The same prediction as a job (Prefer: respond-async) counts the same way.
    with limited.client() as client:
        asynchronous = client.post(
            "/predict/xgboost",
            json={"input_data": EXAMPLE_ROW},
            headers={"Prefer": "respond-async"},
        )
    assert refused(asynchronous)["type"] == "too_many_jobs"
    # Another key has a count of its own.
    assert submit(limited, OTHER_KEY).status_code == 202

    # Cancelled: its place is free at once.
    with limited.client() as client:
        assert client.delete(accepted[0].json()["status_url"]).status_code == 200
    assert submit(limited, READER_KEY).status_code == 202
    assert refused(submit(limited, READER_KEY))["details"]["active_jobs"] == 3

    # A synchronous prediction past its deadline becomes a job: never refused, counted.
    with limited.client() as client:
        deferred = client.post(
            "/predict/xgboost", json={"input_data": EXAMPLE_ROW | {"mean radius": 3.0}}
        )
    assert deferred.status_code == 202, deferred.text
    assert refused(submit(limited, READER_KEY))["details"]["active_jobs"] == 4

    # A worker again: every job succeeds, and every place with it.
    limited.start_worker("worker-again-limits")
    with limited.client() as client:
        urls = [r.json()["status_url"] for r in accepted[1:]] + [deferred.json()["status_url"]]
        assert [wait_for_end(client, url) for url in urls] == ["succeeded"] * 3
    assert [submit(limited, READER_KEY).status_code for _ in range(PER_KEY)] == [202] * PER_KEY
    rejected = scrape(limited.url + "/metrics")
    assert total(rejected, "serving_jobs_rejected_total", reason="jobs_per_key") == 5


def wait_for_end(client: httpx.Client, url: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = str(client.get(url).json()["status"])
        if state not in {"queued", "running"}:
            return state
        time.sleep(0.2)
    raise AssertionError(f"{url} did not end in {timeout} s")


def test_one_process_reads_at_most_its_limit_of_submissions_at_once(limited: Stack) -> None:
    body = orjson.dumps(JOB | {"model_type": "logistic_regression"})
    with socket.create_connection(("127.0.0.1", limited.port), timeout=30) as slow:
        # A submission whose body is still coming: it holds the process's only slot.
        slow.sendall(
            f"POST /jobs HTTP/1.1\r\nHost: api\r\nX-API-Key: {ADMIN_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:20]
        )
        time.sleep(0.5)  # the API has read its head and started on the body
        started = time.monotonic()
        at_once = submit(limited, OTHER_KEY)
        waited = time.monotonic() - started
        with limited.client(OTHER_KEY, headers={"Prefer": "respond-async"}) as client:
            asynchronous = client.post("/predict/xgboost", json={"input_data": EXAMPLE_ROW})
        slow.sendall(body[20:])
        answer = http.client.HTTPResponse(slow)
        answer.begin()
        held_status = answer.status

    error = refused(at_once)
    assert waited < 1.0, f"the refusal took {waited:.2f} s: it was queued"
    assert error["type"] == "overloaded"
    assert "already reading 1 job submissions, its limit" in error["message"]
    assert error["details"] == {"max_job_submissions_in_flight": 1, "retry_after_seconds": 1}
    assert at_once.headers["retry-after"] == "1"
    assert refused(asynchronous)["type"] == "overloaded"
    assert held_status == 202  # the held submission itself went through
    assert submit(limited, ADMIN_KEY).status_code == 202  # and the slot is free again
    samples = scrape(limited.url + "/metrics")
    assert total(samples, "serving_jobs_rejected_total", reason="submissions_in_flight") == 2


@pytest.mark.parametrize("route", ["/jobs", "/predict/xgboost", "/predict"])
def test_an_idempotency_key_over_200_characters_is_refused(limited: Stack, route: str) -> None:
    headers = {"Idempotency-Key": "k" * 201, "Prefer": "respond-async"}
    with limited.client(ADMIN_KEY, headers=headers) as client:
        response = client.post(route, json=JOB if route == "/jobs" else {"input_data": EXAMPLE_ROW})

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "idempotency-key" in error["message"].lower() and "200" in error["message"]


def test_an_idempotency_key_of_200_characters_is_taken(limited: Stack) -> None:
    headers = {"Idempotency-Key": "k" * 200, "Prefer": "respond-async"}
    with limited.client(ADMIN_KEY, headers=headers) as client:
        first = client.post("/predict/xgboost", json={"input_data": EXAMPLE_ROW})
        again = client.post("/predict/xgboost", json={"input_data": EXAMPLE_ROW})

    assert first.status_code == 202, first.text
    assert again.json()["job_id"] == first.json()["job_id"]
