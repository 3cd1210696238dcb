"""Thin, explicitly named tasks: decode the message, call a service, return JSON.

Every kind counts its attempts (`ServingTask.check_attempts`) and stops at
`task_max_attempts`: a message whose run kills its process is never redelivered forever.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import orjson
from celery import Celery, states
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_failure

from common import callbacks
from common.errors import (
    CallbackFailed,
    InvalidInput,
    PredictionTimeLimit,
    ServingError,
    StoreUnavailable,
)
from common.jobs import job_status
from common.request_results import CACHE_WRITTEN, split
from common.settings import Settings
from queueing.messages import (
    CALLBACK_TASK,
    FINALIZE_JOB_TASK,
    PING_TASK,
    PREDICT_CHUNK_TASK,
    PREDICT_TASK,
    PREPARE_JOB_TASK,
    SHADOW_TASK,
    JobChunk,
    PredictBatch,
    Segment,
    ShadowPredict,
)
from worker.base import ServingTask
from worker.limits import task_context
from worker.result_backend import CACHE_WRITES

log = logging.getLogger(__name__)
FINALIZE_RETRIES = 4
RESULT_REPR_CHARS = 256


def predict(task: ServingTask, *args: Any) -> dict[str, Any]:
    message = PredictBatch.from_args(*args)
    # Every log line of the task carries its requests' ids.
    with task_context(message.request_ids):
        inference = task.resources.inference
        try:
            message = task.resources.claims.redeem(message, task.request.id)
        except ServingError as exc:
            inference.fail(message.artifact, [], message.segments, exc)  # no rows to log
            raise
        rows = message.matrix()
        try:
            task.check_attempts()
        except ServingError as exc:
            inference.fail(message.artifact, rows, message.segments, exc)
            raise
        stored: dict[str, Any] = {}

        def answer(result: dict[str, Any]) -> None:
            # Stored, cached and published to the API before the rows are logged. Celery
            # stores a prediction's failures only (register_tasks).
            stored.update(with_cache_writes(task, message.segments, result))
            backend, request = task.backend, task.request
            backend.store_result(request.id, stored, states.SUCCESS, request=request)

        inference.predict(message.artifact, rows, message.segments, answer)
        return stored


def with_cache_writes(
    task: ServingTask, segments: Sequence[Segment], result: dict[str, Any]
) -> dict[str, Any]:
    """The result to store, with the cache writes its script makes set on the request."""
    if not task.settings.worker_writes_cache:
        return result  # this worker's results are not where the cache is
    writes = cache_writes(segments, result)
    if not writes:
        return result
    # Written with the result, by the script that stores it (worker.result_backend).
    setattr(task.request, CACHE_WRITES, writes)
    return {**result, CACHE_WRITTEN: True}


def cache_writes(segments: Sequence[Segment], result: dict[str, Any]) -> list[Any]:
    """The prediction cache's entries the API asked for: each request's own result, as
    the API would write it (PredictionService), under the key it gave."""
    owns = split(result, (s.n_rows for s in segments))
    return [
        (s.cache_key, s.cache_ttl, orjson.dumps(own))
        for s, own in zip(segments, owns, strict=True)
        if s.cache_key and s.cache_ttl > 0
    ]


def shadow_predict(task: ServingTask, *args: Any) -> None:
    message = ShadowPredict.from_args(*args)
    with task_context(message.primary_request_id):
        task.check_attempts()
        task.resources.inference.shadow(
            message.artifact, message.rows(), message.segment, message.primary_request_id
        )


def _out_of_attempts(task: ServingTask, job_id: str) -> bool:
    """True, with the job failed, if this task's runs have crashed too often."""
    try:
        task.check_attempts()
    except ServingError as exc:
        task.resources.runner.fail(job_id, exc)
        return True
    return False


def predict_chunk(task: ServingTask, *args: Any) -> str:
    chunk = JobChunk.from_args(*args)
    with task_context(chunk.job_id):
        if _out_of_attempts(task, chunk.job_id):
            return "failed"
        return task.resources.runner.run_chunk(
            chunk.job_id, chunk.index, chunk.artifact, chunk.rows, chunk.source
        )


def prepare_job(task: ServingTask, job_id: str) -> int:
    with task_context(job_id):
        if _out_of_attempts(task, job_id):
            return 0
        return task.resources.runner.prepare(job_id)


def finalize_job(task: ServingTask, job_id: str) -> bool:
    with task_context(job_id):
        if _out_of_attempts(task, job_id):
            return False
        last = task.request.retries >= FINALIZE_RETRIES
        return task.resources.runner.finalize(job_id, last_attempt=last)


def deliver_callback(task: ServingTask, job_id: str) -> int | None:
    """POST the job's final status; a failed delivery is retried (Celery's backoff) and
    never changes the job."""
    with task_context(job_id):
        try:
            task.check_attempts()
        except ServingError:
            log.warning("callback of job %s given up: its runs crashed", job_id)
            return None
        job = task.resources.jobs.get(job_id)
        secret = task.settings.callback_secret
        if job is None or not job.callback_url or secret is None:
            return None  # expired, or no callback asked for
        location = task.resources.runner.output_location(job)
        body = job_status(job, location).model_dump_json().encode()
        return _deliver(task.settings, job.callback_url, body, secret.get_secret_value())


def _deliver(settings: Settings, url: str, body: bytes, secret: str) -> int | None:
    try:
        return callbacks.deliver(
            url, body, secret, settings.callback_timeout_seconds, settings.callback_allowed_networks
        )
    except InvalidInput as exc:
        # The address is refused (its DNS changed since the job was submitted, or the
        # allowed networks did): another attempt would be refused too, so none is made.
        log.warning("callback not delivered, and not retried: %s", exc)
        return None


def ping(task: ServingTask) -> dict[str, Any]:
    # Readiness: answering proves this worker takes tasks from a queue and runs them.
    return {"worker": task.request.hostname, "pid": os.getpid()}


def register_tasks(app: Celery, settings: Settings) -> None:
    base = type("Task", (ServingTask,), {"settings": settings})
    # A prediction stores its own result, before logging its rows (predict); Celery
    # stores a failure. Celery reprs every result for its log line and event (Flower
    # shows it): at its 1,024 characters that cost 155 us for a 20-row batch, at 256 32 us.
    app.task(
        name=PREDICT_TASK,
        bind=True,
        base=base,
        ignore_result=True,
        store_errors_even_if_ignored=True,
        resultrepr_maxsize=RESULT_REPR_CHARS,
    )(predict)
    app.task(name=PREDICT_CHUNK_TASK, bind=True, base=base)(predict_chunk)
    app.task(name=SHADOW_TASK, bind=True, base=base, ignore_result=True)(shadow_predict)
    app.task(name=PREPARE_JOB_TASK, bind=True, base=base)(prepare_job)
    app.task(
        name=FINALIZE_JOB_TASK,
        bind=True,
        base=base,
        autoretry_for=(StoreUnavailable,),
        retry_backoff=True,
        max_retries=FINALIZE_RETRIES,
    )(finalize_job)
    app.task(
        name=CALLBACK_TASK,
        bind=True,
        base=base,
        autoretry_for=(CallbackFailed,),
        retry_backoff=True,  # 1, 2, 4, ... seconds, with jitter, capped at 10 minutes
        retry_backoff_max=600,
        max_retries=settings.callback_max_attempts - 1,
    )(deliver_callback)
    app.task(name=PING_TASK, bind=True, base=base)(ping)
    _record_hard_time_limits(app)


def _record_hard_time_limits(app: Celery) -> None:
    @task_failure.connect(weak=False)  # type: ignore[untyped-decorator]
    def on_hard_time_limit(
        sender: Any = None,
        task_id: str = "",
        exception: BaseException | None = None,
        args: Any = None,
        **_: Any,
    ) -> None:
        # Sent in the main process after the pool killed the task's process; the task's
        # message is acknowledged (acks_on_timeout), so it does not run again.
        if not isinstance(exception, TimeLimitExceeded) or getattr(sender, "app", None) is not app:
            return
        try:
            record_hard_time_limit(sender, task_id, list(args))
        except Exception:
            log.exception("could not record the hard time limit of %s", sender.name)


def record_hard_time_limit(task: ServingTask, task_id: str, args: list[Any]) -> None:
    """The pool killed a task's process at the hard time limit, so the task logged
    nothing: log its requests, or fail its job."""
    exc = PredictionTimeLimit.after(task.settings.task_time_limit_seconds, hard=True)
    resources = task.resources
    if task.name == PREDICT_TASK:
        message = PredictBatch.from_args(*args)
        try:
            rows = resources.claims.redeem(message, task_id).rows()
        except ServingError:
            rows = []  # its claimed rows are gone: the requests are logged without them
        resources.inference.fail(message.artifact, rows, message.segments, exc)
        resources.claims.release(task_id, args)  # the acknowledged message never runs again
    elif task.name == PREDICT_CHUNK_TASK:
        resources.runner.fail(JobChunk.from_args(*args).job_id, exc)
    elif task.name in {PREPARE_JOB_TASK, FINALIZE_JOB_TASK}:
        resources.runner.fail(str(args[0]), exc)
