"""A synchronous prediction past its deadline, kept as a job: what its task's result
means for it. Used by the front end that deferred it and by the workers' sweeper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from common.errors import ServingError
from common.jobs.model import Job


class FinalResult(Protocol):
    """A task's final result (queueing.results.TaskResult)."""

    @property
    def succeeded(self) -> bool: ...

    @property
    def result(self) -> Any: ...

    def error(self) -> ServingError: ...


@dataclass(frozen=True)
class DeferredOutcome:
    rows: dict[str, list[Any]]
    error: ServingError | None = None


def deferred_outcome(job: Job, task: FinalResult) -> DeferredOutcome:
    """The job's own rows of the batch's result, or the error the batch ended with."""
    if not task.succeeded:
        return DeferredOutcome({}, task.error())
    start, stop = job.task_offset, job.task_offset + job.n_rows
    rows = {name: task.result[name][start:stop] for name in ("labels", "probabilities")}
    return DeferredOutcome(rows)
