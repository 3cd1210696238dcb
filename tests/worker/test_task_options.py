"""The prediction task's options: it stores its own answer before its log rows
(worker.tasks.predict), so Celery stores only its failures, and its result's repr (for
Celery's log line and Flower) is kept short."""

from __future__ import annotations

from celery.utils.saferepr import saferepr

from common.settings import Settings
from queueing.messages import PREDICT_TASK
from worker.celery_app import create_celery
from worker.tasks import RESULT_REPR_CHARS, register_tasks


def test_celery_stores_a_predictions_failures_only_and_reprs_it_short() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0")  # never connected to
    app = create_celery(settings)
    register_tasks(app, settings)
    task = app.tasks[PREDICT_TASK]

    assert (task.ignore_result, task.store_errors_even_if_ignored) == (True, True)
    assert task.resultrepr_maxsize == RESULT_REPR_CHARS
    batch = {"labels": ["malignant"] * 64, "probabilities": [[0.977492, 0.022508]] * 64}
    assert len(saferepr(batch, task.resultrepr_maxsize)) < 300
