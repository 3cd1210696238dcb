"""A job's work, for the workers: read its input object, predict its chunks, write its
results object, and end it. Any failure ends the job `failed`, with an error that names
what went wrong; a job never waits on work that will not come (the sweeper ends one that
stalls anyway)."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from typing import Any, Protocol

from redis.exceptions import RedisError

from common import metrics, results_csv
from common.errors import PredictionFailed, ServingError, StoreUnavailable
from common.job_inputs import InputPlan, input_format, plan_input, read_slice, slice_from_json
from common.jobs import Job, JobState, JobStore
from common.log_rows import log_row, worker_name
from common.registry import Registry
from common.services.inference import Guard, LogSink, Models, as_serving_error, run_model
from common.settings import Settings

log = logging.getLogger(__name__)
RESULTS_PAGE_ROWS = 5000


class JobQueue(Protocol):
    """How the runner queues a job's next steps (the worker's Celery glue)."""

    def send_chunk(
        self, job: Job, index: int, rows: list[list[Any]] | None, source: dict[str, Any] | None
    ) -> None: ...
    def send_finalize(self, job_id: str) -> None: ...
    def send_callback(self, job_id: str) -> None: ...


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        jobs: JobStore,
        models: Models,
        registry: Registry,
        log_sink: LogSink,
        queue: JobQueue,
        guard: Guard = contextlib.nullcontext,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.models = models
        self.registry = registry
        self.log = log_sink
        self.queue = queue
        self.guard = guard  # turns the worker's time limits into domain errors

    def _live(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        return None if job is None or job.ended else job

    def run_chunk(
        self,
        job_id: str,
        index: int,
        artifact: Any,
        rows: list[list[Any]] | None,
        source: dict[str, Any] | None,
    ) -> str:
        """Predict one chunk and record it once; what the record said."""
        job = self._live(job_id)
        if job is None:
            return "ignored"  # expired, cancelled or failed: no work to do
        if job.state is JobState.QUEUED:
            self.jobs.move(job_id, JobState.RUNNING, time.time())
        try:
            with self.guard():
                chunk_rows = rows if rows is not None else self._read(job, artifact, source)
            result = run_model(self.models, artifact, chunk_rows, self.guard)
        except RedisError:
            raise  # the task goes back to the queue (worker.tasks.task_context)
        except Exception as exc:
            error = as_serving_error(exc)
            metrics.TASK_FAILURES.labels(*artifact.labels, error.type).inc()
            self.fail(job_id, error)
            return "failed"
        n_rows = len(result["labels"])
        outcome = self.jobs.record(job_id, index, result, n_rows, time.time())
        metrics.TASKS.labels(*artifact.labels, "ok").inc()
        if outcome == "finished":
            self._ended(job_id, None)
        elif outcome == "finalize":
            self.queue.send_finalize(job_id)
        return outcome

    def _read(self, job: Job, artifact: Any, source: dict[str, Any] | None) -> list[list[Any]]:
        """A chunk's rows from its slice of the job's input object (the loaded model's
        metadata: no store read per chunk)."""
        if job.input_object is None or source is None:
            raise PredictionFailed(f"job {job.job_id}: a chunk with neither rows nor a slice")
        meta = self.models.get(artifact.model_type, artifact.version, artifact.sha256).meta
        return read_slice(self.registry.store, job.input_object, meta, slice_from_json(source))

    def prepare(self, job_id: str) -> int:
        """Read and check a job's input object as a stream, size the job and queue its
        chunks, each with its own slice of the object (no rows through the broker)."""
        job = self._live(job_id)
        if job is None or job.input_object is None:
            return 0
        self.jobs.move(job_id, JobState.RUNNING, time.time())
        try:
            with self.guard():
                plan = self._plan(job)
        except RedisError:
            raise
        except Exception as exc:
            self.fail(job_id, as_serving_error(exc))
            return 0
        sizes = [piece.n_rows for piece in plan.slices]
        if not self.jobs.size(job_id, sizes, self.settings.job_chunk_rows, time.time()):
            return 0  # cancelled meanwhile
        for index, piece in enumerate(plan.slices):
            self.queue.send_chunk(job, index, None, piece.to_json())
        return len(sizes)

    def _plan(self, job: Job) -> InputPlan:
        assert job.input_object is not None
        meta = self.registry.metadata(job.model_type, job.version)
        return plan_input(
            self.registry.store,
            job.input_object,
            meta,
            max_rows=self.settings.job_max_rows,
            chunk_rows=self.settings.job_chunk_rows,
            max_bytes=self.settings.job_max_object_bytes,
        )

    def finalize(self, job_id: str, last_attempt: bool) -> bool:
        """Write the results object of a job read from an input object, then end it
        succeeded. Idempotent: a rerun writes the same object again. A store failure
        is retried (StoreUnavailable) until `last_attempt`, which fails the job."""
        job = self._live(job_id)
        if job is None or job.output_object is None:
            return False
        try:
            with self.guard():
                self._write_results(job)
        except RedisError:
            raise
        except Exception as exc:
            error = as_serving_error(exc)
            if isinstance(error, StoreUnavailable) and not last_attempt:
                raise error from exc
            self.fail(job_id, error)
            return False
        if self.jobs.move(job_id, JobState.SUCCEEDED, time.time()):
            self._ended(job_id, None)
            return True
        return False

    def _write_results(self, job: Job) -> None:
        assert job.output_object is not None
        meta = self.registry.metadata(job.model_type, job.version)
        pages = (
            (offset, self.jobs.results(job, offset, RESULTS_PAGE_ROWS))
            for offset in range(0, job.n_rows, RESULTS_PAGE_ROWS)
        )
        # Bound for deletion before it is written, so no crash leaves one that outlives
        # its job; a rerun only sets the same time again.
        self.jobs.expire_object(job.output_object, job.created_at + self.settings.job_ttl_seconds)
        # Spooled to disk past 8 MiB and streamed to the store from there: a million rows
        # of results never sit in memory.
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as buffer:
            if input_format(job.output_object) == "parquet":
                from common import results_parquet

                results_parquet.write(meta, pages, buffer)
            else:
                for piece in results_csv.document(meta, pages):
                    buffer.write(piece.encode())
            buffer.seek(0)
            try:
                self.registry.store.put_file(job.output_object, buffer)  # type: ignore[arg-type]
            except Exception as exc:
                raise StoreUnavailable(
                    f"could not write the results object {job.output_object!r} "
                    f"({type(exc).__name__})"
                ) from exc

    def output_location(self, job: Job) -> str | None:
        """Where the job's owner fetches its results object (a presigned URL valid for
        `presign_seconds`, a file URI): for its callback, which goes to the owner."""
        if job.output_object is None:
            return None
        return self.registry.store.location(job.output_object, self.settings.presign_seconds)

    def expire_objects(self, now: float, limit: int = 500) -> int:
        """Delete the store objects whose job has expired (results, a job body's upload);
        how many. One that fails to go stays due, for the next round."""
        deleted: list[str] = []
        for key in self.jobs.due_objects(now, limit):
            try:
                self.registry.store.delete(key)
            except Exception as exc:
                log.warning("could not delete the expired object %r (%s)", key, type(exc).__name__)
                continue
            deleted.append(key)
        self.jobs.forget_objects(deleted)
        return len(deleted)

    def fail(self, job_id: str, error: ServingError, stalled_before: float | None = None) -> bool:
        """End a job failed with `error` (if it has not ended, and with `stalled_before`
        only if it made no progress since); True if this did."""
        moved = self.jobs.move(
            job_id, JobState.FAILED, time.time(), error=error, stalled_before=stalled_before
        )
        if not moved:
            return False
        self._ended(job_id, error)
        return True

    def _ended(self, job_id: str, error: ServingError | None) -> None:
        """The one place a job's end is told: its metric, its log row, its callback."""
        metrics.JOBS.labels("failed" if error else "succeeded").inc()
        job = self.jobs.get(job_id)
        if job is None:
            return
        output = None if error else {"results": f"/jobs/{job_id}/results"}
        inputs = {"job_id": job_id, "rows": job.n_rows}
        labels = (job.model_type, job.version)
        self.log.record(
            [
                log_row(
                    job_id,
                    labels,
                    job.n_rows,
                    inputs,
                    output,
                    job.created_at,
                    error=error,
                    worker=worker_name(),
                    owner=job.owner,
                    job_id=job_id,
                )
            ]
        )
        if job.callback_url:
            self.queue.send_callback(job_id)
