"""Run rows through a loaded model, for the workers: a batch of synchronous requests
(each logged on its own row) or a job's chunk. No Celery here: the worker's tasks decode
their message and call these."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from common import metrics
from common.errors import PredictionFailed, ServingError
from common.log_rows import batch_rows, shadow_of
from common.runtimes import LoadedModel, Rows


class Models(Protocol):
    def get(self, model_type: str, version: str, sha256: str) -> LoadedModel: ...


class LogSink(Protocol):
    def record(self, entries: list[dict[str, Any]]) -> None:
        """Write log rows; never fails a prediction for the database's sake."""


class BatchSegment(Protocol):
    @property
    def request_id(self) -> str: ...
    @property
    def n_rows(self) -> int: ...
    @property
    def received_at(self) -> float: ...
    @property
    def owner(self) -> str: ...


def as_serving_error(exc: BaseException) -> ServingError:
    """Any failure as a domain error that names what went wrong without foreign text
    (a model library's message can hold input values or paths)."""
    if isinstance(exc, ServingError):
        return exc
    return PredictionFailed(f"the worker failed with {type(exc).__name__}")


# Turns the worker's time limits into domain errors (worker.limits); none outside Celery.
Guard = Callable[[], AbstractContextManager[None]]


def run_model(
    models: Models, artifact: Any, rows: Rows, guard: Guard = contextlib.nullcontext
) -> dict[str, Any]:
    """The model's labels and probabilities for `rows`; any error as a ServingError."""
    try:
        with guard():
            model = models.get(artifact.model_type, artifact.version, artifact.sha256)
            started = time.perf_counter()
            result = model.predict(rows)
    except ServingError:
        raise
    except Exception as exc:
        raise as_serving_error(exc) from exc
    metrics.INFERENCE_DURATION.labels(*artifact.labels).observe(time.perf_counter() - started)
    return result


class BatchInference:
    def __init__(self, models: Models, log: LogSink, guard: Guard = contextlib.nullcontext) -> None:
        self.models = models
        self.log = log
        self.guard = guard

    def predict(
        self,
        artifact: Any,
        rows: Rows,
        segments: Sequence[BatchSegment],
        answer: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Predict a batch; each request gets its own log row, failed or not. The log
        never fails the answer (the sink spools what the database refuses).

        `answer`, if given, delivers the result before the rows are logged: the callers
        need not wait for the log, and the rows are still written before the task ends
        (and so before its message is acknowledged)."""
        labels = artifact.labels
        started, now = time.perf_counter(), time.time()
        for segment in segments:
            metrics.TASK_QUEUE_WAIT.labels(*labels).observe(max(0.0, now - segment.received_at))
        try:
            result = run_model(self.models, artifact, rows, self.guard)
        except ServingError as exc:
            self.fail(artifact, rows, segments, exc)
            raise
        if answer is not None:
            answer(result)
        self.log.record(batch_rows(labels, rows, segments, result, None))
        metrics.TASKS.labels(*labels, "ok").inc()
        metrics.TASK_DURATION.labels(*labels).observe(time.perf_counter() - started)
        return result

    def shadow(self, artifact: Any, rows: Rows, segment: BatchSegment, primary_id: str) -> None:
        """Score a request again on the shadow version and log it as the shadow of
        `primary_id`; a failure is logged too, and goes no further (nobody waits)."""
        try:
            result = run_model(self.models, artifact, rows, self.guard)
            error = None
        except ServingError as exc:
            result, error = None, exc
        entries = batch_rows(artifact.labels, rows, [segment], result, error)
        self.log.record([entry | shadow_of(primary_id) for entry in entries])
        metrics.TASKS.labels(*artifact.labels, "ok" if error is None else "error").inc()

    def fail(
        self,
        artifact: Any,
        rows: Rows,
        segments: Sequence[BatchSegment],
        error: ServingError,
    ) -> None:
        """Log every request of a batch that ended with `error` (its time limit, its
        attempts, the model)."""
        self.log.record(batch_rows(artifact.labels, rows, segments, None, error))
        metrics.TASK_FAILURES.labels(*artifact.labels, error.type).inc()
        metrics.TASKS.labels(*artifact.labels, "error").inc()
