"""Asynchronous prediction jobs: the typed job and its states (`model`), its transitions
as Redis scripts (`scripts`), where it is kept (`store`) and its status document
(`view`)."""

from common.jobs.model import TERMINAL, Job, JobState, NewJob
from common.jobs.store import AsyncJobStore, JobStore, chunks_of
from common.jobs.view import JobStatus, Progress, job_status

__all__ = [
    "TERMINAL",
    "AsyncJobStore",
    "Job",
    "JobState",
    "JobStatus",
    "JobStore",
    "NewJob",
    "Progress",
    "chunks_of",
    "job_status",
]
