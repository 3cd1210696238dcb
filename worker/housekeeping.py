"""Periodic work every worker runs in its main process, one worker at a time: the job
sweeper (ends jobs that stalled, settles deferred predictions whose front end is gone,
deletes the store objects of expired jobs: results, a job body's upload), draining the
prediction log's spool into the database once it takes writes again, and deleting log
rows past `log_retention_days`.

A thread started once the pool has forked, instead of Celery beat: nothing extra to
deploy or keep single, since a Redis lock lets only one worker sweep at a time however
many run, and a worker that dies mid-sweep frees the lock when it expires.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from common import metrics
from common.errors import JobStalled
from common.jobs.deferred import deferred_outcome
from common.prediction_log import purge_older_than
from common.settings import Settings
from queueing.results import decode, result_key
from worker.base import Resources, build_resources

log = logging.getLogger(__name__)
RETENTION_EVERY_SECONDS = 3600.0


def sweep_jobs(resources: Resources, settings: Settings, now: float) -> int:
    """End every job with no progress for `job_stall_seconds`; how many it handled."""
    jobs, runner = resources.jobs, resources.runner
    before = now - settings.job_stall_seconds
    handled = 0
    for job_id in jobs.stalled(before):
        job = jobs.get(job_id)
        if job is None or job.ended:
            continue
        if job.task_id is not None:
            result = decode(jobs.client.get(result_key(job.task_id)))
            if result is not None:
                outcome = deferred_outcome(job, result)
                if outcome.error is not None:
                    runner.fail(job_id, outcome.error)
                else:
                    jobs.record(job_id, 0, outcome.rows, job.n_rows, now)
                metrics.JOBS_SWEPT.labels("settled").inc()
                handled += 1
                continue
        error = JobStalled(
            f"the job made no progress for {settings.job_stall_seconds} s; it was ended",
            {"state": job.state.value, "rows_done": job.rows_done, "rows_total": job.n_rows},
        )
        if runner.fail(job_id, error, stalled_before=before):
            metrics.JOBS_SWEPT.labels("stalled").inc()
            handled += 1
    return handled


class Housekeeping:
    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self._stop = threading.Event()
        self._resources: Resources | None = None
        self._lock_key = f"{settings.cache_prefix}housekeeping-lock"
        self._purged_at = 0.0

    def run(self) -> None:
        while not self._stop.wait(self.settings.job_sweep_seconds):
            try:
                self.once(time.time())
            except Exception:
                log.exception("housekeeping failed; trying again next round")

    def once(self, now: float) -> None:
        if self._resources is None:
            self._resources = build_resources(self.app, self.settings)
        client = self._resources.jobs.client
        lease = max(1, int(self.settings.job_sweep_seconds * 3))
        if not client.set(self._lock_key, b"1", nx=True, ex=lease):
            return  # another worker's turn
        try:
            self._round(self._resources, now)
        finally:
            client.delete(self._lock_key)

    def _round(self, resources: Resources, now: float) -> None:
        swept = sweep_jobs(resources, self.settings, now)
        if swept:
            log.info("sweeper: ended or settled %d stalled jobs", swept)
        expired = resources.runner.expire_objects(now)
        if expired:
            log.info("sweeper: %d objects of expired jobs deleted from the store", expired)
        drained = resources.log.drain()
        if drained:
            log.info("prediction log: %d spooled rows written to the database", drained)
        resources.log.backlog()  # sets serving_log_backlog_rows
        days = self.settings.log_retention_days
        if days and now - self._purged_at >= RETENTION_EVERY_SECONDS:
            self._purged_at = now
            purged = purge_older_than(resources.log_repo, days)
            if purged:
                log.info("prediction log: %d rows older than %d days deleted", purged, days)

    def prepare(self) -> None:
        """Build the resources in the main process's main thread, before the thread
        starts: built in the thread, their first imports (boto3's takes a second) could
        be under way when the pool forks a replacement for a killed process, and the
        child would inherit the import's lock held, and hang on its first task."""
        try:
            self._resources = build_resources(self.app, self.settings)
        except Exception:  # Redis or the store down at start: the thread tries again
            log.exception("housekeeping could not build its resources yet")

    def stop(self) -> None:
        self._stop.set()


def run_housekeeping_when_ready(app: Celery, settings: Settings) -> None:
    keeper = Housekeeping(app, settings)

    @worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def start(**_: Any) -> None:
        keeper.prepare()
        threading.Thread(target=keeper.run, name="housekeeping", daemon=True).start()

    @worker_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def stop(**_: Any) -> None:
        keeper.stop()
