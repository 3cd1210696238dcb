"""A job's status document: the one rendering, for `GET /jobs/{id}` and for callbacks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from common.jobs.model import Job, JobState
from common.schemas import PredictResponse


class Progress(BaseModel):
    rows_done: int
    rows_total: int


class JobStatus(BaseModel):
    job_id: str
    status: str
    model_type: str
    version: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    status_url: str
    results_url: str
    result: PredictResponse | None = None
    error: dict[str, Any] | None = None
    input_object: str | None = None
    output_object: str | None = None
    output_location: str | None = None  # a presigned URL (S3) or a file URI


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def job_status(
    job: Job, output_location: str | None = None, result: PredictResponse | None = None
) -> JobStatus:
    """`output_location` and `result` are for a succeeded job only: where its results
    object is, and its results inline (small jobs)."""
    done = job.state is JobState.SUCCEEDED
    return JobStatus(
        job_id=job.job_id,
        status=job.state.value,
        model_type=job.model_type,
        version=job.version,
        created_at=datetime.fromtimestamp(job.created_at, UTC),
        started_at=_time(job.started_at),
        finished_at=_time(job.finished_at),
        progress=Progress(rows_done=job.rows_done, rows_total=job.n_rows),
        status_url=f"/jobs/{job.job_id}",
        results_url=f"/jobs/{job.job_id}/results",
        result=result if done else None,
        error=job.error,
        input_object=job.input_object,
        output_object=job.output_object if done else None,
        output_location=output_location if done else None,
    )
