"""Prometheus counters are exact across 2 API processes and 2 worker pool processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import pytest

from api.examples import EXAMPLE_ROW
from tests.integration.stack import READER_KEY, Stack, scrape, total

pytestmark = pytest.mark.integration

MISSES, HITS = 30, 10


async def send(url: str, bodies: list[dict[str, object]]) -> list[int]:
    async def one(body: dict[str, object]) -> int:
        # A connection each, so the kernel spreads them over both API processes.
        async with httpx.AsyncClient(
            base_url=url, headers={"X-API-Key": READER_KEY}, timeout=60
        ) as client:
            return (await client.post("/predict/xgboost/1", json=body)).status_code

    return list(await asyncio.gather(*(one(body) for body in bodies)))


def posting_api_processes(stack: Stack) -> set[int]:
    """The API processes that have answered a POST, from the API's access log."""
    lines = (stack.tmp / "api.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return {
        e["pid"]
        for e in entries
        if e.get("logger") == "api.access" and e["message"].startswith("POST")
    }


def test_counters_are_exact_across_processes(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("metrics", api_processes=2)
    # The kernel hands connections to whichever API process accepts first, and now and
    # then gives one process a whole burst: send misses in bursts until both have served.
    misses: list[dict[str, object]] = []
    while len(posting_api_processes(stack)) < 2 and len(misses) < 10 * MISSES:
        burst = [
            {"input_data": EXAMPLE_ROW | {"mean area": 900.0 + len(misses) + i}}
            for i in range(MISSES)
        ]
        assert asyncio.run(send(stack.url, burst)) == [200] * MISSES
        misses += burst
    n_misses = len(misses)
    hits = [misses[i % 3] for i in range(HITS)]
    assert asyncio.run(send(stack.url, hits)) == [200] * HITS

    api = scrape(stack.url + "/metrics")
    worker = scrape(f"http://127.0.0.1:{stack.fields['worker_metrics_port']}/metrics")
    assert total(api, "serving_predictions_total", status="ok") == n_misses + HITS
    assert total(api, "serving_cache_lookups_total", result="miss") == n_misses
    assert total(api, "serving_cache_lookups_total", result="hit") == HITS
    assert total(api, "serving_prediction_rows_total") == n_misses + HITS
    assert (
        total(
            api,
            "serving_http_requests_total",
            route="/predict/{model_type}/{version}",
            status="200",
        )
        == n_misses + HITS
    )
    assert (
        total(
            api,
            "serving_http_request_duration_seconds_count",
            route="/predict/{model_type}/{version}",
        )
        == n_misses + HITS
    )
    # Misses go to the workers in batches: every request is in exactly one task.
    tasks = total(api, "serving_batch_size_requests_count")
    assert total(api, "serving_batch_size_requests_sum") == n_misses
    assert 1 <= tasks <= n_misses
    assert total(worker, "serving_tasks_total", status="ok") == tasks
    assert total(worker, "serving_inference_duration_seconds_count") == tasks
    assert total(worker, "serving_task_queue_wait_seconds_count") == n_misses
    assert 1 <= total(worker, "serving_models_loaded") <= 2  # one per pool process that served

    # The counts above add up over processes: both API processes and both pool
    # processes did serve.
    assert len(posting_api_processes(stack)) == 2
    with stack.client() as client:
        logs = client.get("/logs", params={"n_limit": 100}).json()
    assert len({entry["worker"] for entry in logs if not entry["cached"]}) == 2


def test_jobs_are_counted_by_status(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("jobmetrics")
    with stack.client() as client:
        ok = client.post("/jobs", json={"input_data": [EXAMPLE_ROW]}).json()
        doomed = client.post("/jobs", json={"input_data": [EXAMPLE_ROW] * 20_000}).json()
        client.delete(doomed["status_url"])
        deadline = time.monotonic() + 30
        while client.get(ok["status_url"]).json()["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    api = scrape(stack.url + "/metrics")
    worker = scrape(f"http://127.0.0.1:{stack.fields['worker_metrics_port']}/metrics")
    assert total(api, "serving_jobs_total", status="submitted") == 2
    assert total(api, "serving_jobs_total", status="cancelled") == 1
    assert total(worker, "serving_jobs_total", status="succeeded") == 1
    assert total(worker, "serving_jobs_total", status="failed") == 0
