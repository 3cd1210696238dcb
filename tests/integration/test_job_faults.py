"""No job hangs: every way a job's work can fail ends it `failed` with a clear error, or
`succeeded` where a retry can finish it, within `SERVING_JOB_STALL_SECONDS` plus one sweep
at the latest. Real stacks: API, Celery workers, Redis, S3 server."""

from __future__ import annotations

import os
import pickle
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from api.examples import EXAMPLE_ROW
from common.cache import notify_registry_changed
from common.training import TrainedModel, breast_cancer
from dev.services import wait_until
from tests.integration.slow_models import RaisingModel
from tests.integration.stack import Stack
from tests.integration.uploads import put_upload

pytestmark = pytest.mark.integration

# Above what a restarted pool takes to run a redelivered task on a loaded 2-core machine.
STALL, SWEEP = 8, 0.5


def wait_status(client: httpx.Client, url: str, timeout: float) -> tuple[dict[str, Any], float]:
    """The job's status once it has ended, and how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        body = client.get(url).json()
        if body["status"] in {"succeeded", "failed", "cancelled"}:
            return body, time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"job {url} still {body['status']} after {timeout} s: it hangs")


@pytest.fixture(scope="module")
def faults(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(
        "jobfaults",
        allow_unsafe_pickle=True,
        job_stall_seconds=STALL,
        job_sweep_seconds=SWEEP,
        task_max_attempts=1,
        job_chunk_rows=2000,
    )


def in_process(model: TrainedModel) -> float:
    """The demo xgboost model's probability of "malignant" for EXAMPLE_ROW, in-process."""
    _, _, names, _ = breast_cancer()
    row = np.array([[EXAMPLE_ROW[name] for name in names]])
    return float(model.estimator.predict_proba(row)[0, 0])


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def csv_rows(n: int) -> bytes:
    x, _, names, _ = breast_cancer()
    picked = x[np.arange(n) % len(x)]
    lines = [",".join(names)] + [",".join(map(repr, map(float, row))) for row in picked]
    return ("\n".join(lines) + "\n").encode()


def test_a_model_error_fails_the_job_without_its_text(
    faults: Stack, demo_models: dict[str, TrainedModel]
) -> None:
    metadata = demo_models["xgboost"].metadata | {
        "model_type": "raising",
        "artifact_format": "pickle",
    }
    faults.registry().publish(metadata, pickle.dumps(RaisingModel("s3cr3t-value")))
    notify_registry_changed(faults.settings)
    with faults.client() as client:
        job = client.post("/jobs", json={"input_data": [EXAMPLE_ROW] * 3, "model_type": "raising"})
        assert job.status_code == 202, job.text
        done, took = wait_status(client, job.json()["status_url"], 30)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "prediction_failed"
    assert "ValueError" in done["error"]["message"]
    assert "s3cr3t" not in str(done)
    assert took < STALL  # ended by the chunk itself, not by the sweeper


def test_chunks_that_never_run_end_the_job_at_the_stall_limit(faults: Stack) -> None:
    """The job's tasks are lost (a broker without persistence restarted, say): the sweeper
    fails it once it has made no progress for the stall limit."""
    worker = next(p for p in faults.processes if p.name.startswith("worker") and p.alive())
    worker.stop()
    # The earlier test's chunk may still have been finishing when its job ended: the
    # group's SIGTERM then killed its pool process and the message went back to the
    # queue, to be ignored (its job ended) by the next worker. Not this test's chunk.
    faults.purge_queue(faults.settings.effective_job_queue)
    with faults.client() as client:
        job = client.post("/jobs", json={"input_data": [EXAMPLE_ROW] * 2}).json()
        purged = faults.purge_queue(faults.settings.effective_job_queue)
        faults.start_worker(f"worker-swept-{faults.name}")  # first: the next tests need one
        assert purged == 1  # the chunk is gone
        done, _ = wait_status(client, job["status_url"], STALL + 30)
    assert done["status"] == "failed", done
    lived = seconds_between(done["created_at"], done["finished_at"])
    # Not before the stall limit; within it plus a sweep, plus the new worker's start.
    assert STALL <= lived <= STALL + SWEEP + 15, lived
    assert done["error"]["type"] == "job_stalled"
    assert f"no progress for {STALL} s" in done["error"]["message"]
    assert done["error"]["details"]["rows_done"] == 0


def test_a_preparation_that_kills_its_process_is_capped(faults: Stack) -> None:
    """SIGKILL of the pool process reading a job's input object: with one attempt allowed,
    the redelivered preparation ends the job `worker_crashed` instead of looping."""
    key = put_upload(faults, "big.csv", csv_rows(200_000))
    worker = next(p for p in faults.processes if p.name.startswith("worker") and p.alive())
    with faults.client() as client:
        job = client.post("/jobs", json={"input_object": key}).json()
        deadline = time.monotonic() + 30
        while client.get(job["status_url"]).json()["status"] != "running":
            assert time.monotonic() < deadline, "the preparation never started"
            time.sleep(0.01)
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
        done, _ = wait_status(client, job["status_url"], STALL + 60)
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "worker_crashed"
    assert done["progress"]["rows_total"] == 0  # it never got past reading the object


def logged(client: httpx.Client, request_id: str) -> bool:
    rows = client.get("/logs", params={"request_id": request_id}).json()
    return any(row["status"] == "ok" for row in rows)


def test_a_deferred_prediction_outlives_celerys_result_expiry(
    make_stack: Callable[..., Stack], demo_models: dict[str, TrainedModel]
) -> None:
    """Past its deadline a prediction becomes a job; its task's result stays as long as
    the job, not Celery's `result_expires`, and the job succeeds without being polled."""
    stack = make_stack("deferred", predict_timeout_seconds=1.0, result_expires_seconds=2)
    worker = next(p for p in stack.processes if p.name.startswith("worker"))
    worker.stop()
    results = redis.Redis.from_url(stack.settings.effective_result_backend_url)
    try:
        with stack.client() as client:
            response = client.post("/predict", json={"input_data": EXAMPLE_ROW})
            assert response.status_code == 202, response.text
            job = response.json()
            stack.start_worker("worker-back")
            # Once the task has run (its result written; a worker's start takes seconds on
            # a loaded machine), then past result_expires, with nobody polling.
            wait_until(lambda: logged(client, job["job_id"]), 30, "the task's log row")
            time.sleep(3)
            done = client.get(job["status_url"]).json()
        task_ids = [k.decode() for k in results.scan_iter("celery-task-meta-*")]
        ttls = [results.ttl(k) for k in task_ids]
    finally:
        results.close()
    assert done["status"] == "succeeded", done
    assert done["result"]["predictions"][0]["probabilities"]["malignant"] == pytest.approx(
        in_process(demo_models["xgboost"]), rel=1e-6
    )
    assert max(ttls) > 3600  # the deferred task's result: kept with its job


def test_a_deferred_prediction_whose_api_is_gone_is_settled_by_the_sweeper(
    make_stack: Callable[..., Stack],
) -> None:
    # Long enough for the restarted worker to run the task first: a deferred job whose
    # task is still queued at the stall limit is ended like any other.
    stall = 20
    stack = make_stack(
        "orphan", predict_timeout_seconds=1.0, job_stall_seconds=stall, job_sweep_seconds=SWEEP
    )
    worker = next(p for p in stack.processes if p.name.startswith("worker"))
    worker.stop()
    with stack.client() as client:
        job = client.post("/predict", json={"input_data": EXAMPLE_ROW}).json()
    api = next(p for p in stack.processes if p.name == "api")
    api.stop()  # the process that would have recorded the result
    stack.start_worker("worker-back")
    results = redis.Redis.from_url(stack.settings.effective_result_backend_url)
    try:
        wait_until(lambda: any(results.scan_iter("celery-task-meta-*")), stall - 5, "the task")
    finally:
        results.close()
    stack.start_api()
    with stack.client() as client:
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        done, _ = wait_status(client, job["status_url"], stall + 30)
    assert done["status"] == "succeeded", done
    assert len(done["result"]["predictions"]) == 1
    assert seconds_between(done["created_at"], done["finished_at"]) >= stall  # the sweeper
