"""Jobs, for the front ends: submit, read, cancel, page the results; and synchronous
predictions past their deadline, which become jobs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from common import metrics, results_csv
from common.errors import BackendUnavailable, JobConflict, JobNotFound
from common.job_inputs import output_key
from common.jobs import AsyncJobStore, Job, JobState, JobStatus, NewJob, chunks_of, job_status
from common.jobs.deferred import deferred_outcome
from common.observability import new_id
from common.registry import ModelMetadata
from common.schemas import PredictResponse
from common.services.job_limits import JobLimits, check_idempotency_key
from common.services.models import ModelService
from common.services.predictions import render_predictions
from common.services.requests import JobRequest
from common.services.uploads import UploadService
from common.settings import Settings
from common.tenancy import Tenant

log = logging.getLogger(__name__)
CSV_PAGE_ROWS = 5000


class JobDispatcher(Protocol):
    async def send_chunks(
        self, job_id: str, meta: ModelMetadata, chunks: list[list[list[Any]]]
    ) -> None: ...
    async def send_prepare(self, job_id: str) -> None: ...
    async def send_callback(self, job_id: str) -> None: ...
    async def result_of(self, task_id: str, timeout: float) -> Any:
        """The task's final result (queueing.results.TaskResult), or None in time."""

    async def keep_result(self, task_id: str, seconds: int) -> None:
        """Keep the task's stored result this long (a deferred prediction's job)."""


class JobService:
    def __init__(
        self,
        settings: Settings,
        store: AsyncJobStore,
        models: ModelService,
        dispatcher: JobDispatcher,
        uploads: UploadService | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.dispatcher = dispatcher
        # The store's callers' objects: what a job's input_object may name, and the
        # presigned URL of its results (the models' store by default).
        self.uploads = uploads or UploadService(settings, models.registry.store)
        self._settling: set[asyncio.Task[None]] = set()
        self.limits = JobLimits(settings, store)

    def submission_slot(self) -> AbstractContextManager[None]:
        """Held by a front end while it reads, parses and submits one job (a 429 past
        max_job_submissions_in_flight in this process)."""
        return self.limits.submission_slot()

    async def submit(self, request: JobRequest) -> JobStatus:
        check_idempotency_key(request.idempotency)
        meta = await self.models.resolve(request.model_type, request.version)
        if request.idempotency is not None:
            earlier = await self._earlier(request)
            if earlier is not None:
                return await self.render(earlier)
        await self.limits.check_room(request.owner)  # before the rows are validated
        job, chunks = await self._new_job(request, meta)
        await self.limits.create(job)
        await self._publish(job, meta, chunks)
        metrics.JOBS.labels("submitted").inc()
        if request.idempotency is not None:
            return await self._bind(request, job)
        return await self.render_id(job.job_id)

    async def _bind(self, request: JobRequest, job: NewJob) -> JobStatus:
        """Bind the Idempotency-Key to the job just published, unless a concurrent
        submission with the same key was bound first: then that one's job is the answer."""
        assert request.idempotency is not None
        key, digest = request.idempotency.key, request.idempotency.body_digest
        if not await self.store.bind_idempotency(request.owner, key, digest, job.job_id):
            await self.store.move(job.job_id, JobState.CANCELLED, time.time())
            earlier = await self._earlier(request)
            if earlier is not None:
                return await self.render(earlier)
        return await self.render_id(job.job_id)

    async def _earlier(self, request: JobRequest) -> Job | None:
        """The job an earlier submission with this Idempotency-Key made (if it lives)."""
        assert request.idempotency is not None
        bound = await self.store.idempotent_job(request.owner, request.idempotency.key)
        if bound is None:
            return None
        job_id, digest = bound
        if digest != request.idempotency.body_digest:
            raise JobConflict(
                f"Idempotency-Key {request.idempotency.key!r} was used for another body; "
                "use a new key",
                {"job_id": job_id},
            )
        return await self.store.get(job_id)

    async def _new_job(
        self, request: JobRequest, meta: ModelMetadata
    ) -> tuple[NewJob, list[list[list[Any]]]]:
        size, job_id = self.settings.job_chunk_rows, new_id()
        if request.input_object is not None:
            chunks: list[list[list[Any]]] = []
            n_rows, source = 0, await self.uploads.resolve(request.tenant, request.input_object)
        else:
            rows = await self.models.validate(
                meta, request.input_data, self.settings.job_max_rows, request.body_bytes
            )
            chunks = chunks_of(rows, size)
            n_rows, source = len(rows), None
        job = NewJob(
            job_id=job_id,
            owner=request.owner,
            model_type=meta.model_type,
            version=meta.version,
            sha256=meta.sha256,
            n_rows=n_rows,
            n_chunks=len(chunks),
            chunk_rows=size,
            created_at=time.time(),
            callback_url=request.callback_url,
            input_object=source,
            output_object=output_key(job_id, source) if source else None,
        )
        return job, chunks

    async def _publish(self, job: NewJob, meta: ModelMetadata, chunks: list[Any]) -> None:
        """Queue the job's work; if that fails, the job ends failed (never a job that
        waits forever for tasks that were never sent) and the caller gets the 503."""
        try:
            if job.input_object is not None:
                await self.dispatcher.send_prepare(job.job_id)
            else:
                await self.dispatcher.send_chunks(job.job_id, meta, chunks)
        except BackendUnavailable as exc:
            try:
                await self.store.move(job.job_id, JobState.FAILED, time.time(), error=exc)
            except Exception:
                log.warning("could not fail job %s, which was never queued", job.job_id)
            raise

    async def get(self, tenant: Tenant, job_id: str) -> Job:
        job = await self.store.get(job_id)
        if job is None or not tenant.sees(job.owner):
            raise JobNotFound(f"no job {job_id!r} (unknown, expired, or another key's)")
        return job

    async def status(self, tenant: Tenant, job_id: str) -> JobStatus:
        return await self.render(await self.get(tenant, job_id), tenant)

    async def render_id(self, job_id: str) -> JobStatus:
        """The status of a job this request just made (so it is the caller's own)."""
        job = await self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r} (expired at once: check job_ttl_seconds)")
        return await self.render(job)

    async def render(self, job: Job, viewer: Tenant | None = None) -> JobStatus:
        """`viewer` None: the job's owner (its submission). Only the owner gets a
        presigned URL of the results object: an admin reads the results by the API."""
        if job.state is not JobState.SUCCEEDED:
            return job_status(job)
        owner = viewer is None or viewer.owner == job.owner
        location = self.uploads.presign(job.output_object) if job.output_object and owner else None
        result = None
        if job.n_rows <= self.settings.job_inline_result_rows:
            meta = await self.models.metadata(job.model_type, job.version)
            rows = await self.store.results(job, 0, job.n_rows)
            result = PredictResponse(
                model_type=meta.model_type,
                version=meta.version,
                cached=False,
                request_id=job.job_id,
                predictions=render_predictions(meta, rows),
            )
        return job_status(job, location, result)

    async def cancel(self, tenant: Tenant, job_id: str) -> JobStatus:
        job = await self.get(tenant, job_id)
        if not await self.store.move(job_id, JobState.CANCELLED, time.time()):
            raise JobConflict(f"job {job_id} has already ended ({job.state.value})")
        metrics.JOBS.labels("cancelled").inc()
        if job.callback_url:
            await self.dispatcher.send_callback(job_id)
        return await self.status(tenant, job_id)

    async def finished(self, tenant: Tenant, job_id: str) -> tuple[Job, ModelMetadata]:
        job = await self.get(tenant, job_id)
        if job.state is not JobState.SUCCEEDED:
            raise JobConflict(f"job {job_id} is {job.state.value}; results exist once it succeeded")
        return job, await self.models.metadata(job.model_type, job.version)

    async def results_page(
        self, tenant: Tenant, job_id: str, offset: int, limit: int
    ) -> tuple[Job, list[dict[str, Any]]]:
        job, meta = await self.finished(tenant, job_id)
        page = await self.store.results(job, offset, limit)
        return job, render_predictions(meta, page)

    async def results_csv(self, tenant: Tenant, job_id: str) -> AsyncIterator[str]:
        """All of a job's results as CSV text, a page at a time (checked before the first)."""
        job, meta = await self.finished(tenant, job_id)

        async def lines() -> AsyncIterator[str]:
            yield results_csv.header(meta)
            for offset in range(0, job.n_rows, CSV_PAGE_ROWS):
                page = await self.store.results(job, offset, CSV_PAGE_ROWS)
                yield results_csv.rows(page, offset)

        return lines()

    async def defer(
        self, owner: str, meta: ModelMetadata, details: dict[str, Any], received_at: float
    ) -> JobStatus:
        """A synchronous prediction past its deadline becomes a job for the same rows: its
        result is its slice of the task's result. This process records it when it comes;
        if this process is gone by then, the workers' sweeper does."""
        task_id = str(details["task_id"])
        job = NewJob(
            job_id=str(details["request_id"]),
            owner=owner,
            model_type=meta.model_type,
            version=meta.version,
            sha256=meta.sha256,
            n_rows=int(details["rows"]),
            n_chunks=1,
            chunk_rows=int(details["rows"]),
            created_at=received_at,
            task_id=task_id,
            task_offset=int(details["offset"]),
        )
        await self.store.create(job)
        await self.dispatcher.keep_result(task_id, self.settings.job_ttl_seconds)
        metrics.JOBS.labels("submitted").inc()
        settle = asyncio.create_task(self._settle_when_done(job.job_id, task_id))
        self._settling.add(settle)
        settle.add_done_callback(self._settling.discard)
        return await self.render_id(job.job_id)

    async def _settle_when_done(self, job_id: str, task_id: str) -> None:
        try:
            result = await self.dispatcher.result_of(task_id, self.settings.job_stall_seconds)
            job = await self.store.get(job_id)
            if result is None or job is None:
                return  # the sweeper settles or ends it
            outcome = deferred_outcome(job, result)
            if outcome.error is not None:
                await self.store.move(job_id, JobState.FAILED, time.time(), error=outcome.error)
            else:
                await self.store.record(job_id, 0, outcome.rows, job.n_rows, time.time())
        except Exception:
            log.exception("could not settle deferred job %s; the sweeper will", job_id)
