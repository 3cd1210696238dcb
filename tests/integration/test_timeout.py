"""With no worker consuming: health says so, /predict answers 504 with the task id at its
deadline, and the queued task still runs and logs once a worker comes back."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from api.examples import EXAMPLE_ROW
from tests.integration.stack import Stack, scrape, total

pytestmark = pytest.mark.integration


def test_deadline_gives_504_and_the_task_survives(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("stalled", predict_timeout_seconds=1.5)
    worker = next(p for p in stack.processes if p.name.startswith("worker"))
    worker.stop()
    with stack.client() as client:
        health = client.get("/")
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "redis": True, "worker": False}
        started = time.monotonic()
        response = client.post("/predict", json={"input_data": EXAMPLE_ROW})
        waited = time.monotonic() - started
        assert response.status_code == 504, response.text
        error = response.json()["error"]
        assert error["type"] == "prediction_timeout"
        assert error["details"]["task_id"] in error["message"]
        assert 1.4 < waited < 5
        request_id = error["details"]["request_id"]
        queue = scrape(stack.url + "/metrics")
        assert total(queue, "serving_queue_depth") == 1
        assert 1.4 < total(queue, "serving_queue_oldest_task_age_seconds") < 30
        stack.start_worker("worker-again")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            logs = client.get("/logs", params={"n_limit": 10}).json()
            if [e for e in logs if e["request_id"] == request_id]:
                break
            time.sleep(0.2)
    mine = [e for e in logs if e["request_id"] == request_id]
    assert len(mine) == 1 and mine[0]["status"] == "ok"
