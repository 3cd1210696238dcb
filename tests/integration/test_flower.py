"""Flower against the test broker: a job's tasks are found through Flower's HTTP API."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from api.examples import EXAMPLE_ROW
from dev.flower import start_flower
from dev.services import free_port
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration
USER, PASSWORD = "ops", "flower-test-password"


@pytest.fixture
def flower(stack: Stack) -> Iterator[str]:
    proc, url = start_flower(
        stack.settings.effective_broker_url,
        free_port(),
        USER,
        PASSWORD,
        stack.tmp / "flower.log",
        env=stack.env,
    )
    yield url
    proc.stop()


def test_a_jobs_tasks_show_in_flower(stack: Stack, flower: str) -> None:
    """Workers send no task events of their own (SERVING_TASK_EVENTS is off): Flower
    turns them on, every 5 s, first 5 s after it starts. Jobs are sent until one shows."""
    assert not stack.settings.task_events
    assert httpx.get(flower + "/api/tasks").status_code == 401  # basic auth required
    sent: list[str] = []
    found: list[dict[str, object]] = []
    deadline = time.monotonic() + 40
    next_job = 0.0
    while not found and time.monotonic() < deadline:
        if time.monotonic() >= next_job:
            with stack.client() as client:
                job = client.post(
                    "/jobs", json={"input_data": [EXAMPLE_ROW | {"mean area": 1234.5}]}
                )
            sent.append(job.json()["job_id"])
            next_job = time.monotonic() + 2
        tasks = httpx.get(
            flower + "/api/tasks", params={"limit": 200}, auth=(USER, PASSWORD)
        ).json()
        found = [t for t in tasks.values() if any(j in str(t.get("args")) for j in sent)]
        time.sleep(0.2)
    assert found, f"none of the jobs' tasks ever showed in Flower: {sent}"
    task = found[0]
    assert task["name"] == "serving.predict_chunk"
    assert "<1 rows>" in str(task["args"])  # a summary, never the input rows
