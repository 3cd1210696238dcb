"""What one key, or one API process, may have of jobs at once (issue 11: one key must
not exhaust the service).

Per API process: at most `max_job_submissions_in_flight` submissions being read, parsed
and validated at once (each holds its body, several times its size once parsed). Per key:
at most `max_jobs_per_key` jobs queued or running, counted in Redis by the job scripts
(common.jobs.scripts CREATE), so every API process sees one count. Past either, 429 with
Retry-After. A synchronous prediction past its deadline becomes a job that counts
towards its key's limit but is never refused: it was accepted as a prediction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from common import metrics
from common.admission import InFlightLimit
from common.errors import InvalidInput, TooManyJobs, TooManyRequests
from common.jobs import AsyncJobStore, NewJob
from common.services.requests import Idempotency
from common.settings import Settings

IDEMPOTENCY_KEY_MAX_CHARS = 200
# A key at its limit waits for one of its jobs to end: seconds, not milliseconds.
JOB_RETRY_AFTER_SECONDS = 5


class JobLimits:
    def __init__(self, settings: Settings, store: AsyncJobStore) -> None:
        self.per_key = settings.max_jobs_per_key
        self.store = store
        self._submissions = InFlightLimit(
            settings.max_job_submissions_in_flight, 1, TooManyRequests.submissions_at_limit
        )

    @contextmanager
    def submission_slot(self) -> Iterator[None]:
        """Held while one submission is read, parsed and submitted; when this process
        already holds its limit of them, a 429 before any byte of the body is read."""
        if self._submissions.full:
            metrics.JOBS_REJECTED.labels("submissions_in_flight").inc()
        with self._submissions.slot():
            yield

    async def check_room(self, owner: str) -> None:
        """Refuse a key already at its limit before its rows cost a validation;
        `create` checks again, atomically, when the job is made."""
        active = await self.store.active_jobs(owner, self.per_key)
        if active >= self.per_key:
            raise self._too_many(active)

    async def create(self, job: NewJob) -> None:
        """Store the job if its key is under its limit (TooManyJobs otherwise)."""
        active = await self.store.create(job, self.per_key)
        if active is not None:  # concurrent submissions took the last places meanwhile
            raise self._too_many(active)

    def _too_many(self, active: int) -> TooManyJobs:
        metrics.JOBS_REJECTED.labels("jobs_per_key").inc()
        return TooManyJobs.for_key(self.per_key, active, JOB_RETRY_AFTER_SECONDS)


def check_idempotency_key(idempotency: Idempotency | None) -> None:
    """Every front end's Idempotency-Key: at most IDEMPOTENCY_KEY_MAX_CHARS (it is kept
    in a Redis key's name for the job's lifetime)."""
    if idempotency is not None and len(idempotency.key) > IDEMPOTENCY_KEY_MAX_CHARS:
        raise InvalidInput(
            f"the Idempotency-Key header has {len(idempotency.key)} characters; "
            f"at most {IDEMPOTENCY_KEY_MAX_CHARS} are allowed"
        )
