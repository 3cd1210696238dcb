"""With no worker consuming: health says so, /predict answers 504 with the task id at its
deadline, and the queued task still runs and logs once a worker comes back."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from api.examples import EXAMPLE_ROW
from tests.integration.stack import Stack, scrape, total

pytestmark = pytest.mark.integration


def test_past_the_deadline_the_request_becomes_a_job(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("stalled", predict_timeout_seconds=1.5)
    worker = next(p for p in stack.processes if p.name.startswith("worker"))
    worker.stop()
    with stack.client() as client:
        # GET / checks at most once a second: its answer from before the stop may stand
        # that long, never longer.
        stopped = time.monotonic()
        while (health := client.get("/")).status_code == 200 and time.monotonic() < stopped + 3:
            time.sleep(0.1)
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "redis": True, "worker": False}
        started = time.monotonic()
        response = client.post("/predict", json={"input_data": EXAMPLE_ROW})
        waited = time.monotonic() - started
        assert response.status_code == 202, response.text
        assert 1.4 < waited < 5
        job = response.json()
        assert job["status"] == "queued" and response.headers["location"] == job["status_url"]
        queue = scrape(stack.url + "/metrics")
        assert total(queue, "serving_queue_depth") == 1
        assert 1.4 < total(queue, "serving_queue_oldest_task_age_seconds") < 30
        assert client.get(job["status_url"]).json()["status"] == "queued"
        stack.start_worker("worker-again")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = client.get(job["status_url"]).json()
            if done["status"] != "queued":
                break
            time.sleep(0.2)
        # The new worker's other pool process loads the model on its first request, which
        # on a loaded machine can outlast the 1.5 s deadline: that answer is a 202 again.
        deadline = time.monotonic() + 30
        while (
            again := client.post("/predict", json={"input_data": EXAMPLE_ROW})
        ).status_code == 202:
            assert time.monotonic() < deadline, again.text
        assert again.status_code == 200, again.text
        sync = again.json()
        logs = client.get("/logs", params={"n_limit": 10}).json()
    assert done["status"] == "succeeded", done
    assert done["result"]["predictions"] == sync["predictions"]
    mine = [e for e in logs if e["request_id"] == job["job_id"]]
    assert len(mine) == 1 and mine[0]["status"] == "ok"
