"""A real Prometheus scrapes the API's and the worker's /metrics and sees exactly the
predictions sent; the project's alert rules evaluate without error on the live series."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.examples import EXAMPLE_ROW
from dev.prometheus import start_prometheus
from tests.integration.stack import Stack, scrape, total

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
SENT = 7
POLL_SECONDS = 30


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(prometheus + "/api/v1/query", params={"query": promql}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def value(prometheus: str, promql: str) -> float | None:
    """The single sample of an instant query, or None when it has no result yet."""
    result = query(prometheus, promql)
    return float(result[0]["value"][1]) if result else None


def poll(check: Callable[[], bool], what: str, timeout: float = POLL_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout:.0f} s")
        time.sleep(0.25)


def test_prometheus_sees_the_predictions_sent(stack: Stack, tmp_path: Path) -> None:
    api_target = stack.url.removeprefix("http://")
    worker_port = stack.fields.get("worker_metrics_port")
    targets = {"api": [api_target]}
    if worker_port:
        targets["worker"] = [f"127.0.0.1:{worker_port}"]
    # The shared stack has served other tests: count from what its counters say now.
    api_before = scrape(stack.url + "/metrics")
    predictions_before = total(api_before, "serving_predictions_total", status="ok")
    tasks_before = (
        total(scrape(f"http://127.0.0.1:{worker_port}/metrics"), "serving_tasks_total")
        if worker_port
        else 0.0
    )

    # Cache misses all: a feature value no other test sends, different in every request.
    base = random.uniform(600.0, 1400.0)
    rows = [EXAMPLE_ROW | {"mean area": round(base + i * 0.37, 4)} for i in range(SENT)]
    with stack.client() as client:
        for row in rows:
            response = client.post("/predict/xgboost/1", json={"input_data": row})
            assert response.status_code == 200, response.text
            assert response.json()["cached"] is False

    proc, prometheus = start_prometheus(
        tmp_path / "prometheus", targets, scrape_interval="1s", rule_files=[ALERTS]
    )
    try:
        for job in targets:
            poll(lambda job=job: value(prometheus, f'up{{job="{job}"}}') == 1, f"{job} up")

        predictions = 'sum(serving_predictions_total{model_type="xgboost",version="1",status="ok"})'
        # Other model labels may carry earlier tests' counts; the baseline is over all.
        expected = predictions_before + SENT
        poll(
            lambda: value(prometheus, 'sum(serving_predictions_total{status="ok"})') == expected,
            f"sum(serving_predictions_total) == {expected}",
        )
        assert (value(prometheus, predictions) or 0) >= SENT
        # Read at scrape time from the broker: the queue gauges the alerts use are there.
        queue = stack.fields["task_queue"]
        assert value(prometheus, f'serving_queue_depth{{queue="{queue}"}}') is not None
        assert value(prometheus, f'serving_queue_oldest_task_age_seconds{{queue="{queue}"}}') == 0
        # The latency histogram the p99 alert reads, under its route label.
        assert (
            value(
                prometheus,
                'sum(serving_http_request_duration_seconds_count{route="/predict/{model_type}/{version}"})',
            )
            or 0
        ) >= SENT

        if worker_port:
            expected_tasks = tasks_before + SENT
            poll(
                lambda: value(prometheus, "sum(serving_tasks_total)") == expected_tasks,
                f"sum(serving_tasks_total) == {expected_tasks}",
            )
            ok = 'sum(serving_tasks_total{model_type="xgboost",version="1",status="ok"})'
            assert (value(prometheus, ok) or 0) >= SENT

        # The alert rules run on the live series without error (bad label matching, say,
        # shows only at evaluation), and none fires on this healthy stack.
        def rules_evaluated() -> bool:
            groups = httpx.get(prometheus + "/api/v1/rules", timeout=10).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return bool(rules) and all(rule["health"] != "unknown" for rule in rules)

        poll(rules_evaluated, "alert rules evaluated")
        groups = httpx.get(prometheus + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
        assert {name: rule["health"] for name, rule in rules.items()} == dict.fromkeys(
            rules, "ok"
        ), {name: rule.get("lastError") for name, rule in rules.items()}
        assert {"WorkerOffline", "HighErrorRatio", "QueueBacklogOld"} <= set(rules)
        firing = [
            alert["labels"]["alertname"]
            for rule in rules.values()
            for alert in rule["alerts"]
            if alert["state"] == "firing"
        ]
        assert firing == []
    finally:
        proc.stop()

    if not worker_port:
        pytest.skip(
            "the stack has no worker_metrics_port field: the worker's /metrics was not "
            "scraped (the API part passed)"
        )
