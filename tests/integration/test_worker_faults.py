"""Worker faults mid-prediction, with real processes: a pool process or a whole worker
killed, a model past the time limits, a worker asked to stop. A synchronous request still
gets its answer (or a clear error), exactly once, and is logged exactly once."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery.utils import worker_direct

from api.examples import EXAMPLE_ROW
from common.cache import notify_registry_changed
from common.training import TrainedModel
from dev.services import ManagedProcess, wait_until
from queueing.config import restore_sweep_seconds
from queueing.messages import PING_TASK
from tests.integration.slow_models import SlowModel, calls
from tests.integration.stack import ADMIN_KEY, Stack
from worker.celery_app import create_celery

pytestmark = pytest.mark.integration

SLOW_SECONDS = 1.5  # the "slow" model: well inside the soft limit
# The pool can take up to 5 s to notice a killed pool process (billiard's periodic
# maintain_pool; the exit sentinel does not always catch it): the hard limit must be
# longer, or the dead process's task ends as a time limit instead of running again.
SOFT_LIMIT, HARD_LIMIT = 6.0, 8.0
VISIBILITY = 10  # seconds before an unacknowledged message is delivered again
PROBABILITIES = {"malignant": 0.25, "benign": 0.75}  # what SlowModel answers


@pytest.fixture(scope="module")
def faults(
    make_stack: Callable[..., Stack], demo_models: dict[str, TrainedModel]
) -> Iterator[Stack]:
    """Two workers (two pool processes each) and three pickled models of SlowModel:
    "slow" (answers after SLOW_SECONDS), "sleepy" (a minute: the soft limit stops it)
    and "stuck" (never returns: the hard limit kills its process)."""
    stack = make_stack(
        "faults",
        workers=2,
        allow_unsafe_pickle=True,
        cache_ttl_seconds=0,  # every request reaches a worker
        task_soft_time_limit_seconds=SOFT_LIMIT,
        task_time_limit_seconds=HARD_LIMIT,
        broker_visibility_timeout_seconds=VISIBILITY,
        predict_timeout_seconds=40,  # longer than any redelivery here: no 202 fallback
    )
    registry = stack.registry()
    for model_type, seconds in [("slow", SLOW_SECONDS), ("sleepy", 60.0), ("stuck", None)]:
        metadata = demo_models["xgboost"].metadata | {
            "model_type": model_type,
            "artifact_format": "pickle",
        }
        registry.publish(metadata, pickle.dumps(SlowModel(marker(stack, model_type), seconds)))
    notify_registry_changed(stack.settings)
    yield stack
    stack.stop()  # its workers are of no use to later modules


def marker(stack: Stack, model_type: str) -> Path:
    return stack.tmp / f"{model_type}.calls"


def predict(stack: Stack, model_type: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    with stack.client() as client:
        response = client.post(f"/predict/{model_type}/1", json={"input_data": EXAMPLE_ROW})
    return response, time.monotonic() - started


def in_background(pool: ThreadPoolExecutor, stack: Stack, model_type: str) -> Future[Any]:
    return pool.submit(predict, stack, model_type)


def wait_for_call(stack: Stack, model_type: str, number: int, timeout: float = 30) -> int:
    """The process id of the model's call `number` (1-based), once it has started."""
    deadline = time.monotonic() + timeout
    while len(found := calls(marker(stack, model_type))) < number:
        assert time.monotonic() < deadline, f"{model_type} call {number} never started"
        time.sleep(0.01)
    return found[number - 1]


def live_workers(stack: Stack) -> list[ManagedProcess]:
    return [p for p in stack.processes if p.name.startswith("worker") and p.alive()]


def pool_processes(worker_pid: int) -> list[int]:
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def worker_of(stack: Stack, pool_pid: int) -> ManagedProcess:
    return next(p for p in live_workers(stack) if pool_pid in pool_processes(p.pid))


def ensure_two_workers(stack: Stack) -> None:
    """Replace workers an earlier test ended; return once each new one takes tasks."""
    for _ in range(2 - len(live_workers(stack))):
        name = f"worker{len(stack.processes)}-{stack.name}"
        stack.start_worker(name)
        app = create_celery(stack.settings)
        try:
            node = f"{name}@{socket.gethostname()}"
            app.send_task(PING_TASK, queue=worker_direct(node)).get(timeout=60)
        finally:
            app.close()
    assert len(live_workers(stack)) == 2


def log_rows(stack: Stack, request_id: str, wait: float = 0) -> list[dict[str, Any]]:
    """The request's log rows; waits up to `wait` s for the first one to appear."""
    deadline = time.monotonic() + wait
    with stack.client(ADMIN_KEY) as client:
        while True:
            rows = client.get("/logs", params={"n_limit": 200}).json()
            mine = [row for row in rows if row["request_id"] == request_id]
            if mine or time.monotonic() >= deadline:
                return mine
            time.sleep(0.1)


def assert_answered_once(stack: Stack, response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"][0]["probabilities"] == PROBABILITIES
    rows = log_rows(stack, response.headers["x-request-id"])
    assert len(rows) == 1 and rows[0]["status"] == "ok", rows
    assert rows[0]["model_type"] == "slow"


def test_a_pool_process_killed_mid_prediction(faults: Stack) -> None:
    """SIGKILL of the pool process running the prediction: the worker puts the task
    back on the queue (reject_on_worker_lost) and another pool process answers it."""
    ensure_two_workers(faults)
    before = len(calls(marker(faults, "slow")))
    with ThreadPoolExecutor(1) as pool:
        pending = in_background(pool, faults, "slow")
        victim = wait_for_call(faults, "slow", before + 1)
        worker = worker_of(faults, victim)
        os.kill(victim, signal.SIGKILL)
        response, took = pending.result(timeout=60)
    assert_answered_once(faults, response)
    assert took < HARD_LIMIT + 10
    runs = calls(marker(faults, "slow"))[before:]
    assert len(runs) == 2 and runs[0] == victim and runs[1] != victim  # ran again, once
    assert worker.alive() and victim not in pool_processes(worker.pid)  # replaced


def test_past_the_time_limits_a_clear_error_then_the_worker_serves_on(faults: Stack) -> None:
    """ "sleepy" is stopped by the soft limit (an exception inside the task); "stuck"
    ignores it and its process is killed at the hard limit. Both answer 504 with a
    time-limit error, are logged once as errors and are not run again."""
    ensure_two_workers(faults)
    lost_before = faults.logs_text().count("WorkerLostError")
    with ThreadPoolExecutor(2) as pool:
        sleepy_pending = in_background(pool, faults, "sleepy")
        stuck_pending = in_background(pool, faults, "stuck")
        (sleepy, sleepy_took), (stuck, stuck_took) = (
            sleepy_pending.result(timeout=60),
            stuck_pending.result(timeout=60),
        )
    assert sleepy.status_code == 504, sleepy.text
    assert sleepy.json()["error"] == {
        "type": "time_limit_exceeded",
        "message": f"the prediction ran past the time limit of {SOFT_LIMIT:g} s and was stopped",
        "details": {"time_limit_seconds": SOFT_LIMIT, "limit": "soft"},
    }
    assert stuck.status_code == 504, stuck.text
    assert stuck.json()["error"] == {
        "type": "time_limit_exceeded",
        "message": f"the prediction ran past the hard time limit of {HARD_LIMIT:g} s; its "
        "worker process was killed",
        "details": {"time_limit_seconds": HARD_LIMIT, "limit": "hard"},
    }
    assert SOFT_LIMIT <= sleepy_took < SOFT_LIMIT + 10
    assert HARD_LIMIT <= stuck_took < HARD_LIMIT + 10  # not a hang until the deadline
    stuck_pid = calls(marker(faults, "stuck"))[-1]

    # The workers keep serving: a normal prediction, and the slow model.
    with ThreadPoolExecutor(4) as pool:
        after = [in_background(pool, faults, m) for m in ("xgboost", "slow", "slow")]
        answers = [pending.result(timeout=60)[0] for pending in after]
    assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]

    for response, limit in [(sleepy, "soft"), (stuck, "hard")]:
        rows = log_rows(faults, response.headers["x-request-id"], wait=10)
        assert len(rows) == 1, rows
        assert rows[0]["status"] == "error" and rows[0]["output"] is None
        assert rows[0]["error"].startswith("time_limit_exceeded: the prediction ran past the")
        assert ("hard" in rows[0]["error"]) == (limit == "hard")
    # Acknowledged, not put back on the queue: no second run of either, and no
    # WorkerLostError for the killed process (a lost worker would requeue the task).
    assert len(calls(marker(faults, "sleepy"))) == 1
    assert calls(marker(faults, "stuck")) == [stuck_pid]
    # The pool reaps the killed process on its own schedule (up to a few seconds).
    wait_until(
        lambda: all(stuck_pid not in pool_processes(w.pid) for w in live_workers(faults)),
        15,
        "the pool to replace the process it killed",
    )
    assert faults.logs_text().count("WorkerLostError") == lost_before
    assert len(live_workers(faults)) == 2


def test_sigterm_lets_the_running_prediction_finish(faults: Stack) -> None:
    """SIGTERM to a worker's main process mid-prediction: a warm shutdown. The running
    task finishes and is acknowledged (run once), the worker exits cleanly, and
    requests sent meanwhile are answered by the other worker."""
    ensure_two_workers(faults)
    before = len(calls(marker(faults, "slow")))
    with ThreadPoolExecutor(1) as pool:
        pending = in_background(pool, faults, "slow")
        running_in = wait_for_call(faults, "slow", before + 1)
        worker = worker_of(faults, running_in)
        os.kill(worker.pid, signal.SIGTERM)
        meanwhile, _ = predict(faults, "xgboost")
        response, _ = pending.result(timeout=60)
    assert_answered_once(faults, response)
    assert meanwhile.status_code == 200, meanwhile.text
    assert calls(marker(faults, "slow"))[before:] == [running_in]  # not run again
    assert worker.popen is not None
    assert worker.popen.wait(timeout=HARD_LIMIT + 20) == 0


@pytest.mark.redis_broker_only(
    "Redis's visibility timeout; test_rabbitmq_broker.py kills a whole worker on RabbitMQ"
)
def test_a_whole_worker_killed_mid_prediction(faults: Stack) -> None:
    """SIGKILL of a worker's main process and its pool processes (a node lost): nothing
    acknowledges or restores the message, so it stays in the broker's unacked set until
    it is VISIBILITY seconds old; then the surviving worker's sweep delivers it again."""
    ensure_two_workers(faults)
    before = len(calls(marker(faults, "slow")))
    with ThreadPoolExecutor(1) as pool:
        pending = in_background(pool, faults, "slow")
        victim = wait_for_call(faults, "slow", before + 1)
        worker = worker_of(faults, victim)
        survivor = next(p for p in live_workers(faults) if p is not worker)
        children = pool_processes(worker.pid)
        killed_at = time.monotonic()
        os.kill(worker.pid, signal.SIGKILL)
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        response, took = pending.result(timeout=90)
        redelivered_after = time.monotonic() - killed_at
    assert_answered_once(faults, response)
    # Within the visibility timeout, one sweep and the run, plus a margin for a busy host.
    assert redelivered_after < VISIBILITY + restore_sweep_seconds(faults.settings) + 10
    assert took >= VISIBILITY  # it waited for the visibility timeout: no early duplicate
    runs = calls(marker(faults, "slow"))[before:]
    assert len(runs) == 2 and runs[0] == victim
    assert runs[1] in pool_processes(survivor.pid)  # the survivor ran it
    assert not worker.alive()
