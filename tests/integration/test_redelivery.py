"""A prediction task delivered twice (as after a worker crash) logs one row."""

from __future__ import annotations

import time
import uuid

import pytest

from api.examples import EXAMPLE_ROW
from common.prediction_log import PredictionLogRepo, create_log_engine
from queueing.messages import PREDICT_TASK
from tests.integration.stack import Stack
from worker.celery_app import create_celery

pytestmark = pytest.mark.integration


def test_same_request_twice_is_logged_once(stack: Stack) -> None:
    settings = stack.settings
    meta = stack.registry().metadata("xgboost", "1")
    request_id = uuid.uuid4().hex
    rows = [[EXAMPLE_ROW[f.name] for f in meta.features]]
    args = ["xgboost", "1", meta.sha256, rows, [[request_id, 1, time.time()]]]
    app = create_celery(settings)
    try:
        results = [
            app.send_task(PREDICT_TASK, args=args, queue=settings.task_queue) for _ in range(2)
        ]
        outputs = [r.get(timeout=30) for r in results]  # a test may block; a request may not
    finally:
        app.close()
    assert outputs[0] == outputs[1]
    repo = PredictionLogRepo(create_log_engine(settings.database_url))
    logged = [e for e in repo.newest(200) if e.request_id == request_id]
    assert len(logged) == 1
    assert logged[0].output == outputs[0]
