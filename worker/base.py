"""The base class of every task: what one worker process holds, built lazily after fork.

Celery instantiates a task once per process, so per-process resources live on it
(Celery's "Instantiation" pattern, as in its `DatabaseTask._db` example). They are built
on first use inside the pool process, never in the parent before fork: XGBoost loaded
there can hang the children, and database connections must not be shared.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import redis
from celery import Task

from common.cache import models_epoch_key
from common.errors import WorkerCrashed
from common.heap import settle_heap
from common.jobs import Job, JobStore
from common.prediction_log import (
    DATABASE_ERRORS,
    LogSink,
    LogSpool,
    PredictionLogRepo,
    create_log_engine,
    create_tables,
)
from common.registry import Registry
from common.services.inference import BatchInference
from common.services.job_runner import JobRunner
from common.settings import Settings
from common.store import create_store
from queueing.claims import ClaimedRowsStore
from queueing.dispatcher import TaskPublisher, publish
from queueing.messages import (
    CALLBACK_TASK,
    FINALIZE_JOB_TASK,
    PREDICT_TASK,
    Artifact,
    JobChunk,
    JobStep,
)
from worker.limits import soft_time_limit_as_error
from worker.model_cache import ModelCache

log = logging.getLogger(__name__)


@dataclass
class Resources:
    pid: int
    models: ModelCache
    log_repo: PredictionLogRepo
    log: LogSink  # what the database refuses waits in Redis, never fails a prediction
    jobs: JobStore
    inference: BatchInference
    runner: JobRunner
    claims: ClaimedRowsStore  # a big batch's rows, left in Redis by the API


class CeleryJobQueue:
    """The job runner's next steps, as tasks on the job and callback queues."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app, self.tasks = app, TaskPublisher(settings)

    def send_chunk(
        self, job: Job, index: int, rows: list[list[Any]] | None, source: dict[str, Any] | None
    ) -> None:
        artifact = Artifact(job.model_type, job.version, job.sha256)
        publish(self.app, self.tasks.chunk(JobChunk(job.job_id, index, artifact, rows, source)))

    def send_finalize(self, job_id: str) -> None:
        publish(self.app, self.tasks.step(JobStep(FINALIZE_JOB_TASK, job_id)))

    def send_callback(self, job_id: str) -> None:
        publish(self.app, self.tasks.step(JobStep(CALLBACK_TASK, job_id)))


class ServingTask(Task):  # type: ignore[misc]
    """Set `settings` on a subclass (worker.tasks.register_tasks)."""

    settings: ClassVar[Settings]
    _resources: Resources | None = None

    @property
    def resources(self) -> Resources:
        if self._resources is None or self._resources.pid != os.getpid():
            if self._resources is not None:
                # Built in the parent (a hard time limit is handled there) and inherited
                # through fork: leave the parent's database connections to the parent.
                self._resources.log_repo.engine.dispose(close=False)
            # On the base class: every task of the process shares one set.
            ServingTask._resources = build_resources(
                self.app, self.settings, database_may_be_down=True
            )
            settle_heap()  # the process's own startup, frozen too (common/heap.py)
        assert self._resources is not None
        return self._resources

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        # Celery calls this once the result is stored (not for a task sent back to the
        # queue): no run of this task needs its claimed rows any more.
        if self.name == PREDICT_TASK:
            self.resources.claims.release(task_id, args)

    def check_attempts(self) -> None:
        """Refuse a task whose runs have ended its worker process too often.

        Counted only for a redelivered message (a crash, a lost connection, the
        visibility timeout: kombu marks every restored one), so a first delivery costs
        no Redis round trip; counted before the work, so a run that kills the process
        still counts."""
        task_id = redelivered_id(self)
        if task_id is None:
            return
        attempts = self.resources.jobs.count_attempt(task_id) + 1
        if attempts > self.settings.task_max_attempts:
            raise WorkerCrashed(
                f"this task ended its worker process {attempts - 1} times (a crash or the "
                "out-of-memory killer, e.g. in the model's code); giving up",
                {"task_id": self.request.id, "attempts": attempts - 1},
            )


def redelivered_id(task: Any) -> str | None:
    """The task's id if its message came back to the queue, else None."""
    info = task.request.delivery_info or {}
    return task.request.id if info.get("redelivered") else None


def build_resources(app: Any, settings: Settings, database_may_be_down: bool = False) -> Resources:
    """A process's resources; `database_may_be_down` for a pool process, built on its
    first task: it predicts even while the log's database is down (its rows spool), as
    the main process's housekeeping checked the schema at the worker's start."""
    from threadpoolctl import threadpool_limits

    # One BLAS/OpenMP thread per process: prefork children must not oversubscribe.
    threadpool_limits(limits=settings.model_threads)
    cache_redis = redis.Redis.from_url(
        settings.effective_cache_url, socket_timeout=2, socket_connect_timeout=2
    )
    epoch_key = models_epoch_key(settings.cache_prefix)
    engine = create_log_engine(settings.database_url)
    try:
        create_tables(engine)
    except DATABASE_ERRORS as exc:
        if not database_may_be_down:
            raise
        log.warning("the prediction log's schema was not checked (%s); rows spool", exc)
    registry = Registry(create_store(settings))
    models = ModelCache(
        registry,
        settings,
        read_epoch=lambda: cache_redis.get(epoch_key),  # type: ignore[arg-type, return-value]
    )
    results_redis = redis.Redis.from_url(
        settings.effective_result_backend_url, socket_timeout=5, socket_connect_timeout=2
    )
    jobs = JobStore(results_redis, settings.cache_prefix, settings.job_ttl_seconds)
    repo = PredictionLogRepo(engine)
    sink = LogSink(repo, LogSpool(results_redis, settings.cache_prefix))
    guard = lambda: soft_time_limit_as_error(settings)  # noqa: E731
    runner = JobRunner(
        settings,
        jobs,
        models,
        registry,
        sink,
        CeleryJobQueue(app, settings),
        guard=guard,
    )
    inference = BatchInference(models, sink, guard)
    claims = ClaimedRowsStore(results_redis, settings.cache_prefix)
    return Resources(os.getpid(), models, repo, sink, jobs, inference, runner, claims)
