"""The job: its states, the transitions between them, and its typed record.

    queued ──> running ──> succeeded
       │          │
       └──────────┴──────> failed | cancelled

A job is queued when accepted, running once a worker starts its first piece (preparing
its input object or predicting a chunk), and ends succeeded when every chunk is recorded
(and, for an input object, once its results object is written), failed (with an error),
or cancelled. The transitions run in Redis as scripts (`common.jobs.scripts`), so two
workers never disagree; this module is the typed view of what the scripts keep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
# Every allowed move; the scripts refuse any other (a failed job never succeeds later).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, *TERMINAL}),
    JobState.RUNNING: TERMINAL,
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def sources_of(target: JobState) -> list[str]:
    """The states a job may move to `target` from."""
    return [state.value for state, targets in TRANSITIONS.items() if target in targets]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _float(fields: Mapping[str, str], name: str) -> float | None:
    value = fields.get(name)
    return float(value) if value else None


@dataclass(frozen=True)
class Job:
    job_id: str
    owner: str
    model_type: str
    version: str
    sha256: str
    state: JobState
    n_rows: int
    n_chunks: int
    chunk_rows: int
    rows_done: int
    chunks_done: int
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: dict[str, Any] | None = None
    callback_url: str | None = None
    input_object: str | None = None
    output_object: str | None = None
    # A synchronous prediction past its deadline: the task whose result it waits for,
    # and where its rows start in that task's batch.
    task_id: str | None = None
    task_offset: int = 0
    # Where each chunk's rows start, when chunks differ in size (an input object's slices
    # are cut short past a byte limit); None when every chunk but the last is full.
    chunk_starts: tuple[int, ...] | None = None

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Job:
        f = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            job_id=f["job_id"],
            owner=f.get("owner", ""),
            model_type=f["model_type"],
            version=f["version"],
            sha256=f.get("sha256", ""),
            state=JobState(f["status"]),
            n_rows=int(f.get("n_rows", 0)),
            n_chunks=int(f.get("n_chunks", 0)),
            chunk_rows=int(f.get("chunk_rows", 0)),
            rows_done=int(f.get("rows_done", 0)),
            chunks_done=int(f.get("chunks_done", 0)),
            created_at=float(f["created_at"]),
            updated_at=_float(f, "updated_at") or float(f["created_at"]),
            started_at=_float(f, "started_at"),
            finished_at=_float(f, "finished_at"),
            error=orjson.loads(f["error"]) if f.get("error") else None,
            callback_url=f.get("callback_url") or None,
            input_object=f.get("input_object") or None,
            output_object=f.get("output_object") or None,
            task_id=f.get("task_id") or None,
            task_offset=int(f.get("task_offset", 0)),
            chunk_starts=tuple(orjson.loads(f["chunk_starts"])) if f.get("chunk_starts") else None,
        )

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL

    @property
    def sized(self) -> bool:
        """Whether its chunks are known: at once for inline rows, after the input object
        was read for an object job."""
        return self.n_chunks > 0


@dataclass(frozen=True)
class NewJob:
    """What a front end knows of a job it accepts."""

    job_id: str
    owner: str
    model_type: str
    version: str
    sha256: str
    n_rows: int
    n_chunks: int
    chunk_rows: int
    created_at: float
    callback_url: str | None = None
    input_object: str | None = None
    output_object: str | None = None
    task_id: str | None = None
    task_offset: int = 0

    def to_hash(self) -> dict[str, str | int | float]:
        fields: dict[str, str | int | float] = {
            "job_id": self.job_id,
            "owner": self.owner,
            "model_type": self.model_type,
            "version": self.version,
            "sha256": self.sha256,
            "status": JobState.QUEUED.value,
            "n_rows": self.n_rows,
            "n_chunks": self.n_chunks,
            "chunk_rows": self.chunk_rows,
            "rows_done": 0,
            "chunks_done": 0,
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "task_offset": self.task_offset,
        }
        optional = {
            "callback_url": self.callback_url,
            "input_object": self.input_object,
            "output_object": self.output_object,
            "task_id": self.task_id,
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
        return fields
