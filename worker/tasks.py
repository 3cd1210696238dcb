"""Thin, explicitly named tasks: decode JSON arguments, call `common/`, return JSON."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from celery import Celery
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure

from common import callbacks, job_objects, metrics
from common.cache import models_epoch_key
from common.db import PredictionLogRepo, create_log_engine, create_tables
from common.errors import (
    CallbackFailed,
    InvalidInput,
    PredictionTimeLimit,
    ServingError,
    WorkerCrashed,
)
from common.jobs import TERMINAL, WorkerJobs
from common.observability import request_id_var
from common.protocol import (
    CALLBACK_TASK,
    PING_TASK,
    PREDICT_CHUNK_TASK,
    PREDICT_TASK,
    PREPARE_JOB_TASK,
)
from common.registry import Registry
from common.settings import Settings
from common.store import ObjectMissing, create_store
from worker.model_cache import ModelCache

log = logging.getLogger(__name__)
REQUEUE_PAUSE_SECONDS = 1.0


@dataclass
class ProcessState:
    """What one worker process holds; built lazily after fork, never in the parent."""

    pid: int
    models: ModelCache
    log_repo: PredictionLogRepo
    jobs: WorkerJobs


class WorkerRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._state: ProcessState | None = None

    def state(self) -> ProcessState:
        if self._state is None or self._state.pid != os.getpid():
            if self._state is not None:
                # Built in the parent (see record_hard_time_limit) and inherited through
                # fork: leave the parent's database connections to the parent.
                self._state.log_repo.engine.dispose(close=False)
            self._state = self._build()
        return self._state

    def _build(self) -> ProcessState:
        from threadpoolctl import threadpool_limits

        # One BLAS/OpenMP thread per process: prefork children must not oversubscribe.
        threadpool_limits(limits=self.settings.model_threads)
        settings = self.settings
        cache_redis = redis.Redis.from_url(
            settings.effective_cache_url, socket_timeout=2, socket_connect_timeout=2
        )
        epoch_key = models_epoch_key(settings.cache_prefix)
        engine = create_log_engine(settings.database_url)
        create_tables(engine)
        models = ModelCache(
            Registry(create_store(settings)),
            settings,
            read_epoch=lambda: cache_redis.get(epoch_key),  # type: ignore[arg-type, return-value]
        )
        results_redis = redis.Redis.from_url(
            settings.effective_result_backend_url, socket_timeout=5, socket_connect_timeout=2
        )
        jobs = WorkerJobs(results_redis, settings.cache_prefix, settings.job_ttl_seconds)
        return ProcessState(os.getpid(), models, PredictionLogRepo(engine), jobs)

    def predict_chunk(
        self,
        job_id: str,
        index: int,
        model_type: str,
        version: str,
        sha256: str,
        rows: list[list[Any]],
        task_id: str | None = None,
    ) -> str:
        """One chunk of a job; the worker that records the last chunk finishes the job."""
        state = self.state()
        if state.jobs.status(job_id) in (None, *TERMINAL):
            return "ignored"  # expired, cancelled or failed: no work to do
        state.jobs.start(job_id, time.time())
        labels = (model_type, version)
        try:
            with soft_time_limit_as_error(self.settings):
                self._check_attempts(state, task_id)
                model = state.models.get(model_type, version, sha256)
                started = time.perf_counter()
                result = model.predict(rows)
            metrics.INFERENCE_DURATION.labels(*labels).observe(time.perf_counter() - started)
        except ServingError as exc:
            metrics.TASK_FAILURES.labels(*labels, exc.type).inc()
            self._fail_job(state, job_id, exc)
            raise
        outcome = state.jobs.record(job_id, index, orjson.dumps(result), len(rows), time.time())
        metrics.TASKS.labels(*labels, "ok").inc()
        if outcome == "finished":
            info = state.jobs.info(job_id)
            if "input_object" in info:
                self._write_results_object(state, job_id, info)
            metrics.JOBS.labels("succeeded").inc()
            state.log_repo.record([self._job_entry(state, job_id, None)])
            self.job_ended(job_id)
        return outcome

    def _check_attempts(self, state: ProcessState, task_id: str | None) -> None:
        """Called with the id of a redelivered task only (`redelivered_id`): a first
        delivery costs no Redis round trip and leaves no key. Counted before the work,
        so a run that kills the process still counts."""
        if task_id is None:
            return
        attempts = state.jobs.count_attempt(task_id) + 1  # the first run was not counted
        if attempts > self.settings.task_max_attempts:
            raise WorkerCrashed(
                f"this task ended its worker process {attempts - 1} times (a crash or the "
                "out-of-memory killer, e.g. in the model's code); giving up",
                {"task_id": task_id, "attempts": attempts - 1},
            )

    def _fail_job(self, state: ProcessState, job_id: str, exc: ServingError) -> None:
        if state.jobs.fail(job_id, orjson.dumps(exc.to_dict()).decode(), time.time()):
            metrics.JOBS.labels("failed").inc()
            state.log_repo.record([self._job_entry(state, job_id, exc)])
            self.job_ended(job_id)

    def _write_results_object(self, state: ProcessState, job_id: str, info: dict[str, str]) -> None:
        registry = state.models.registry
        meta = registry.metadata(info["model_type"], info["version"])
        labels, probabilities = state.jobs.all_results(job_id, int(info["n_chunks"]))
        key = job_objects.output_key(info["input_object"])
        registry.store.put(key, job_objects.results_csv(meta, labels, probabilities))
        state.jobs.succeed_with_object(job_id, key, time.time())

    def prepare_job(
        self, job_id: str, input_object: str, model_type: str, version: str, sha256: str
    ) -> int:
        """Read a job's CSV object, size the job and queue its chunks; the chunk count."""
        state = self.state()
        if state.jobs.status(job_id) in (None, *TERMINAL):
            return 0
        registry = state.models.registry
        try:
            meta = registry.metadata(model_type, version)
            try:
                data = registry.store.get(input_object)
            except ObjectMissing:
                raise InvalidInput(f"no object {input_object!r} in the store") from None
            rows = job_objects.parse_csv(data, meta, self.settings.job_max_rows)
        except ServingError as exc:
            self._fail_job(state, job_id, exc)
            return 0
        size = self.settings.job_chunk_rows
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        state.jobs.prepare(job_id, len(rows), len(chunks), size)
        for index, chunk in enumerate(chunks):
            self.send_chunk([job_id, index, model_type, version, sha256, chunk])
        return len(chunks)

    def send_chunk(self, args: list[Any]) -> None:
        """Queue one chunk task (set by register_tasks)."""

    def job_ended(self, job_id: str) -> None:
        """Queue the job's callback, if it asked for one (set by register_tasks)."""

    def deliver_callback(self, job_id: str) -> int | None:
        state = self.state()
        info = state.jobs.info(job_id)
        secret = self.settings.callback_secret
        if not info.get("callback_url") or secret is None:
            return None  # expired, or no callback asked for
        body = orjson.dumps(callbacks.job_payload(info))
        return callbacks.deliver(info["callback_url"], body, secret.get_secret_value())

    @staticmethod
    def _job_entry(state: ProcessState, job_id: str, error: ServingError | None) -> dict[str, Any]:
        """The job's one log row: its size and where its results are, not the rows."""
        info = state.jobs.info(job_id)
        created = float(info.get("created_at", time.time()))
        return {
            "request_id": job_id,
            "created_at": datetime.now(UTC),
            "model_type": info.get("model_type", ""),
            "version": info.get("version", ""),
            "n_rows": int(info.get("n_rows", 0)),
            "input": {"job_id": job_id, "rows": int(info.get("n_rows", 0))},
            "output": None if error else {"results": f"/jobs/{job_id}/results"},
            "latency_ms": max(0.0, (time.time() - created) * 1000),
            "cached": False,
            "status": "ok" if error is None else "error",
            "error": None if error is None else f"{error.type}: {error.message}",
            "worker": f"{socket.gethostname()}:{os.getpid()}",
        }

    def predict(
        self,
        model_type: str,
        version: str,
        sha256: str,
        rows: list[list[Any]],
        segments: list[list[Any]],
        task_id: str | None = None,
    ) -> dict[str, Any]:
        """Predict a batch; `segments` are the requests it holds: [request_id, n_rows,
        received_at], in order. Each request gets its own log row."""
        state = self.state()
        started = time.perf_counter()
        labels = (model_type, version)
        now = time.time()
        for _, _, received_at in segments:
            metrics.TASK_QUEUE_WAIT.labels(*labels).observe(max(0.0, now - received_at))
        try:
            with soft_time_limit_as_error(self.settings):
                self._check_attempts(state, task_id)
                model = state.models.get(model_type, version, sha256)
                inference_started = time.perf_counter()
                result = model.predict(rows)
            metrics.INFERENCE_DURATION.labels(*labels).observe(
                time.perf_counter() - inference_started
            )
        except ServingError as exc:
            state.log_repo.record(self._entries(labels, rows, segments, None, exc))
            metrics.TASK_FAILURES.labels(*labels, exc.type).inc()
            metrics.TASKS.labels(*labels, "error").inc()
            raise
        entries = self._entries(labels, rows, segments, result, None)
        state.log_repo.record(entries)
        metrics.TASKS.labels(*labels, "ok").inc()
        metrics.TASK_DURATION.labels(*labels).observe(time.perf_counter() - started)
        return result

    def record_hard_time_limit(self, task_name: str, args: list[Any]) -> None:
        """In the worker's main process: the pool killed a task's process at the hard
        time limit, so the task logged nothing. Log its requests, or fail its job."""
        exc = PredictionTimeLimit.after(self.settings.task_time_limit_seconds, hard=True)
        state = self.state()
        if task_name == PREDICT_TASK:
            model_type, version, _, rows, segments = args
            rows = decode_rows(rows)
            labels = (model_type, version)
            state.log_repo.record(self._entries(labels, rows, segments, None, exc))
            metrics.TASKS.labels(*labels, "error").inc()
        else:
            job_id, _, model_type, version = args[:4]
            labels = (model_type, version)
            self._fail_job(state, job_id, exc)
        metrics.TASK_FAILURES.labels(*labels, exc.type).inc()

    @staticmethod
    def _entries(
        labels: tuple[str, str],
        rows: list[list[Any]],
        segments: list[list[Any]],
        result: dict[str, Any] | None,
        error: ServingError | None,
    ) -> list[dict[str, Any]]:
        """One log row per request of the batch, with its own slice of inputs and outputs."""
        finished, worker = time.time(), f"{socket.gethostname()}:{os.getpid()}"
        entries, start = [], 0
        for request_id, n_rows, received_at in segments:
            end = start + n_rows
            inputs = rows[start:end]
            entries.append(
                {
                    "request_id": request_id,
                    "created_at": datetime.now(UTC),
                    "model_type": labels[0],
                    "version": labels[1],
                    "n_rows": n_rows,
                    "input": inputs,  # in feature order; GET /logs names the features
                    "output": None
                    if result is None
                    else {
                        "labels": result["labels"][start:end],
                        "probabilities": result["probabilities"][start:end],
                    },
                    "latency_ms": max(0.0, (finished - received_at) * 1000),
                    "cached": False,
                    "status": "ok" if error is None else "error",
                    "error": None if error is None else f"{error.type}: {error.message}",
                    "worker": worker,
                }
            )
            start = end
        return entries


@contextlib.contextmanager
def task_context(request_id: str) -> Iterator[None]:
    """Log lines carry `request_id`; losing Redis mid-task puts the task back on the queue.

    A task that cannot reach Redis (job state, cache, attempt counter) has not done its
    work: it is rejected with requeue, never acknowledged as failed, so it runs again once
    Redis is back (or, if the broker is gone too, after the visibility timeout). Every
    task is idempotent, so a run that got halfway is harmless."""
    token = request_id_var.set(request_id)
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("Redis unavailable (%s); the task goes back to the queue", exc)
        time.sleep(REQUEUE_PAUSE_SECONDS)  # no hot loop while only the backend is down
        raise Reject(exc, requeue=True) from exc
    finally:
        request_id_var.reset(token)


def decode_rows(rows: list[list[Any]] | str) -> list[list[Any]]:
    """A predict task's rows: a JSON text from the API (api/dispatch.py, rows_text), or
    lists from an API of an earlier release."""
    if isinstance(rows, str):
        decoded: list[list[Any]] = orjson.loads(rows)
        return decoded
    return rows


def redelivered_id(task: Any) -> str | None:
    """The task's id if its message came back to the queue (a crash, a lost connection,
    the visibility timeout: kombu marks every restored message), else None."""
    info = task.request.delivery_info or {}
    return task.request.id if info.get("redelivered") else None


@contextlib.contextmanager
def soft_time_limit_as_error(settings: Settings) -> Iterator[None]:
    """Celery raises SoftTimeLimitExceeded inside a task past its soft time limit: it
    becomes a domain error, so the request is logged and answered as a time limit."""
    try:
        yield
    except SoftTimeLimitExceeded:
        raise PredictionTimeLimit.after(settings.task_soft_time_limit_seconds, hard=False) from None


def register_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    @app.task(name=PREDICT_TASK, bind=True)  # type: ignore[untyped-decorator]
    def predict(
        task: Any,
        model_type: str,
        version: str,
        sha256: str,
        rows: list[list[Any]] | str,
        segments: list[list[Any]],
    ) -> dict[str, Any]:
        # Every log line of the task carries its requests' ids.
        with task_context(",".join(str(segment[0]) for segment in segments)):
            return runtime.predict(
                model_type, version, sha256, decode_rows(rows), segments, redelivered_id(task)
            )

    @app.task(name=PREDICT_CHUNK_TASK, bind=True)  # type: ignore[untyped-decorator]
    def predict_chunk(
        task: Any,
        job_id: str,
        index: int,
        model_type: str,
        version: str,
        sha256: str,
        rows: list[list[Any]],
    ) -> str:
        with task_context(job_id):
            return runtime.predict_chunk(
                job_id, index, model_type, version, sha256, rows, redelivered_id(task)
            )

    @app.task(
        name=CALLBACK_TASK,
        autoretry_for=(CallbackFailed,),
        retry_backoff=True,  # 1, 2, 4, ... seconds, with jitter, capped at 10 minutes
        retry_backoff_max=600,
        max_retries=runtime.settings.callback_max_attempts - 1,
    )  # type: ignore[untyped-decorator]
    def deliver_callback(job_id: str) -> int | None:
        # A failed delivery is retried, and never changes the job's own status.
        with task_context(job_id):
            return runtime.deliver_callback(job_id)

    def queue_callback(job_id: str) -> None:
        if runtime.state().jobs.info(job_id).get("callback_url"):
            deliver_callback.apply_async(args=[job_id], queue=runtime.settings.task_queue)

    runtime.job_ended = queue_callback  # type: ignore[method-assign]

    @app.task(name=PREPARE_JOB_TASK)  # type: ignore[untyped-decorator]
    def prepare_job(
        job_id: str, input_object: str, model_type: str, version: str, sha256: str
    ) -> int:
        with task_context(job_id):
            return runtime.prepare_job(job_id, input_object, model_type, version, sha256)

    @app.task(name=PING_TASK, bind=True)  # type: ignore[untyped-decorator]
    def ping(task: Any) -> dict[str, Any]:
        # Readiness: answering proves this worker takes tasks from a queue and runs them.
        return {"worker": task.request.hostname, "pid": os.getpid()}

    def send_chunk(args: list[Any]) -> None:
        predict_chunk.apply_async(
            args=args,
            queue=runtime.settings.task_queue,
            ignore_result=True,
            argsrepr=f"({args[0]!r}, chunk {args[1]}, {args[2]!r}, {args[3]!r}, "
            f"<{len(args[5])} rows>)",
        )

    runtime.send_chunk = send_chunk  # type: ignore[method-assign]

    @task_failure.connect(weak=False)  # type: ignore[untyped-decorator]
    def on_hard_time_limit(
        sender: Any = None, exception: BaseException | None = None, args: Any = None, **_: Any
    ) -> None:
        # Sent in the main process after the pool killed the task's process; the task's
        # message is acknowledged (acks_on_timeout), so it does not run again.
        if not isinstance(exception, TimeLimitExceeded) or getattr(sender, "app", None) is not app:
            return
        if sender.name not in {PREDICT_TASK, PREDICT_CHUNK_TASK}:
            return
        try:
            runtime.record_hard_time_limit(sender.name, list(args))
        except Exception:
            log.exception("could not record the hard time limit of %s", sender.name)
