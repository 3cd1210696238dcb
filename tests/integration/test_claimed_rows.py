"""A big batch's rows through the claim check (queueing/claims.py): stored in the result
backend's Redis before the task is queued, read by the worker, deleted once answered."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import numpy as np
import pytest
import redis

from common.prediction_log import PredictionLogRepo, create_log_engine
from common.training import TrainedModel, breast_cancer
from queueing.claims import CLAIM_MIN_BYTES
from queueing.messages import PREDICT_TASK
from tests.integration.stack import Stack
from worker.celery_app import create_celery

pytestmark = pytest.mark.integration
N_ROWS = CLAIM_MIN_BYTES // (8 * 30) + 20  # a batch of one request, claimed


def claims_seen(client: redis.Redis, prefix: str, stop: threading.Event, out: list[Any]) -> None:
    """Every command on a claimed-rows key, from MONITOR, until `stop` (and a command
    after it, which wakes the monitor)."""
    with client.monitor() as monitor:
        while not stop.is_set():
            command = monitor.next_command()
            if f"{prefix}claimed-rows:" in command["command"]:
                out.append(command["command"].split()[0].upper())


def test_a_big_request_s_rows_are_claimed_read_once_and_deleted(
    stack: Stack, demo_models: dict[str, TrainedModel]
) -> None:
    x, _, names, _ = breast_cancer()
    sample = np.resize(x, (N_ROWS, x.shape[1]))
    sample[:, 0] += np.arange(N_ROWS) * 1e-7 + 0.123  # never sent before: a cache miss
    body = {"input_data": [dict(zip(names, map(float, row), strict=True)) for row in sample]}
    settings, prefix = stack.settings, stack.settings.cache_prefix
    monitor = redis.Redis.from_url(settings.effective_result_backend_url, socket_timeout=30)
    other = redis.Redis.from_url(settings.effective_result_backend_url)
    seen: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=claims_seen, args=(monitor, prefix, stop, seen))
    watcher.start()
    time.sleep(0.3)  # MONITOR is on before the request
    try:
        with stack.client() as client:
            response = client.post("/predict/xgboost", json=body)
        deadline = time.monotonic() + 10
        while "UNLINK" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)  # deleted after the result is stored: after the answer
    finally:
        stop.set()
        other.ping()  # wakes the monitor to see `stop`
        watcher.join()
        monitor.close()

    assert response.status_code == 200, response.text
    expected = demo_models["xgboost"].estimator.predict_proba(sample)
    classes = [str(c) for c in demo_models["xgboost"].metadata["classes"]]
    predictions = response.json()["predictions"]
    got = [[p["probabilities"][c] for c in classes] for p in predictions]
    assert np.abs(np.array(got) - expected).max() < 1e-6
    assert seen == ["SET", "GET", "UNLINK"]  # stored by the API, read once, then deleted
    assert not list(other.scan_iter(match=f"{prefix}claimed-rows:*"))
    other.close()
    # logged as the float64 bytes the worker read, not as JSON text (common/tables.py)
    [logged] = [e for e in stack_log(stack) if e.request_id == response.json()["request_id"]]
    assert logged.input is None and logged.input_packed == sample.tobytes()


def claimed_args(meta: Any, request_id: str, rows: list[list[float]]) -> list[Any]:
    wire = {"dtype": "<f8", "shape": [len(rows), len(rows[0])], "claimed": True}
    return ["xgboost", "1", meta.sha256, wire, [[request_id, len(rows), time.time(), "owner"]]]


def test_a_batch_whose_claimed_rows_are_gone_fails_clearly_and_is_logged(
    stack: Stack,
) -> None:
    settings = stack.settings
    meta = stack.registry().metadata("xgboost", "1")
    x, _, _, _ = breast_cancer()
    rows = (np.resize(x, (N_ROWS, x.shape[1])) + 0.5).tolist()
    request_id = uuid.uuid4().hex
    app = create_celery(settings)
    try:
        done = app.send_task(
            PREDICT_TASK, args=claimed_args(meta, request_id, rows), queue=settings.task_queue
        )
        with pytest.raises(Exception, match="no longer in Redis") as failure:
            done.get(timeout=30)
    finally:
        app.close()
    assert type(failure.value).__name__ == "PredictionFailed"
    [logged] = [e for e in stack_log(stack) if e.request_id == request_id]
    assert logged.status == "error" and "no longer in Redis" in (logged.error or "")
    assert logged.input == [] and logged.n_rows == N_ROWS


def stack_log(stack: Stack) -> list[Any]:
    return PredictionLogRepo(create_log_engine(stack.settings.database_url)).newest(200)
