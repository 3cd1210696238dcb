"""A job whose input is the request's own body (`POST /jobs` with a CSV or Parquet body):
stored as one of the caller's uploads under a generated name (`job-<id>.csv`), then
submitted exactly as a job naming that upload; the upload is deleted with the job."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterable

from common.jobs import JobStatus
from common.observability import new_id
from common.services.jobs import JobService
from common.services.requests import Idempotency, JobRequest
from common.services.uploads import MEDIA_TYPES, media_type_of

log = logging.getLogger(__name__)


async def submit_file(
    jobs: JobService,
    request: JobRequest,
    content_type: str,
    body: AsyncIterable[bytes],
    declared_bytes: int | None = None,
) -> JobStatus:
    # An unknown model or a wrong type is refused before a byte of the body is stored.
    await jobs.models.resolve(request.model_type, request.version)
    name = f"job-{new_id()}{MEDIA_TYPES[media_type_of(content_type)]}"
    # Past the job's own object limit the job would only fail: refuse it as the body.
    limit = jobs.settings.job_max_object_bytes
    stored = await jobs.uploads.put(request.tenant, name, content_type, body, declared_bytes, limit)
    key = stored.info.input_object
    try:
        await jobs.store.expire_object(key, time.time() + jobs.settings.job_ttl_seconds)
        idempotency = _with_body(request.idempotency, stored.sha256)
        status = await jobs.submit(
            dataclasses.replace(request, input_object=key, idempotency=idempotency)
        )
    except Exception:
        await _discard(jobs, key)
        raise
    if status.input_object != key:  # an earlier submission of the same body answered
        await _discard(jobs, key)
    return status


def _with_body(idempotency: Idempotency | None, body_sha256: str) -> Idempotency | None:
    """The Idempotency-Key bound to the parameters (as parsed) and to the body's bytes."""
    if idempotency is None:
        return None
    digest = hashlib.sha256(f"{idempotency.body_digest}:{body_sha256}".encode()).hexdigest()
    return Idempotency(idempotency.key, digest)


async def _discard(jobs: JobService, key: str) -> None:
    try:
        await jobs.uploads.discard(key)
    except Exception:  # the expiry sweep deletes it with the job's time anyway
        log.warning("could not delete the upload %r of a job that was not made", key)
