"""What the API and the worker agree on: task names, and one typed message per task kind.

Each message is built and parsed here only: `args()` is its positional layout on the
wire (Celery tasks take plain JSON), `from_args(...)` reads it back, and `summary()` is
what logs and Flower show instead of the input rows. The API enqueues by name, so it
never imports the worker or any ML library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self

import orjson

from queueing.packed_rows import ClaimedRows, PackedRows

PREDICT_TASK = "serving.predict"
PREDICT_CHUNK_TASK = "serving.predict_chunk"
PREPARE_JOB_TASK = "serving.prepare_job"
FINALIZE_JOB_TASK = "serving.finalize_job"
CALLBACK_TASK = "serving.deliver_callback"
SHADOW_TASK = "serving.shadow_predict"
# Readiness: a round trip through a queue proves a worker consumes, not only lives.
PING_TASK = "serving.ping"


class HasMetadata(Protocol):
    model_type: str
    version: str
    sha256: str


@dataclass(frozen=True)
class Artifact:
    """The exact model a task runs: a version and the checksum it was accepted with."""

    model_type: str
    version: str
    sha256: str

    @classmethod
    def of(cls, meta: HasMetadata) -> Artifact:
        return cls(meta.model_type, meta.version, meta.sha256)

    @property
    def labels(self) -> tuple[str, str]:
        return (self.model_type, self.version)


@dataclass(frozen=True)
class Segment:
    """One request inside a batch: its id, how many of the batch's rows are its own,
    when the API received it, and whose it is (the tenant's digest; its log row's owner).

    With a `cache_key`, the worker writes the request's result into the prediction cache
    for `cache_ttl` seconds, in the script that stores the task's result
    (worker.result_backend), so the API need not: the API asks for it only when the cache
    and the results share one Redis."""

    request_id: str
    n_rows: int
    received_at: float
    owner: str = ""
    cache_key: str = ""
    cache_ttl: int = 0

    def wire(self) -> list[Any]:
        head = [self.request_id, self.n_rows, self.received_at, self.owner]
        # Appended, so a worker of an earlier release reads the first four and ignores them.
        return [*head, self.cache_key, self.cache_ttl] if self.cache_key else head

    @classmethod
    def from_wire(cls, s: Sequence[Any]) -> Segment:
        # A segment of three came from an API of an earlier release: it has no owner.
        owner = str(s[3]) if len(s) > 3 else ""
        if len(s) > 5 and s[4]:
            return cls(str(s[0]), int(s[1]), float(s[2]), owner, str(s[4]), int(s[5]))
        return cls(str(s[0]), int(s[1]), float(s[2]), owner)


@dataclass(frozen=True)
class PredictBatch:
    """Synchronous requests for one model version, predicted together."""

    NAME: ClassVar[str] = PREDICT_TASK
    artifact: Artifact
    # The batch's rows: packed float64 values for a model of float features
    # (queueing.packed_rows, in a msgpack body), else one JSON text. Either way the
    # worker's main process, which decodes every message (Celery's strategy reads the
    # payload), never parses them; the pool process reads them once. A big batch's
    # packed rows wait in Redis instead (ClaimedRows; queueing.claims).
    rows_data: str | PackedRows | ClaimedRows
    segments: tuple[Segment, ...]

    @property
    def serializer(self) -> str:
        """The body's kombu serializer: msgpack carries packed rows as raw bytes."""
        return "msgpack" if isinstance(self.rows_data, PackedRows) else "json"

    def args(self) -> list[Any]:
        a, data = self.artifact, self.rows_data
        segments = [s.wire() for s in self.segments]
        rows = data if isinstance(data, str) else data.wire()
        return [a.model_type, a.version, a.sha256, rows, segments]

    @classmethod
    def from_args(
        cls, model_type: str, version: str, sha256: str, rows: Any, segments: list[Any]
    ) -> Self:
        data: str | PackedRows | ClaimedRows
        if isinstance(rows, dict):
            data = (
                ClaimedRows.from_wire(rows) if rows.get("claimed") else PackedRows.from_wire(rows)
            )
        else:
            # Rows as lists (not text) came from an API of an earlier release.
            data = rows if isinstance(rows, str) else orjson.dumps(rows).decode()
        parsed = tuple(Segment.from_wire(s) for s in segments)
        return cls(Artifact(model_type, version, sha256), data, parsed)

    @staticmethod
    def claims_rows(args: Sequence[Any]) -> bool:
        """Whether a predict task's arguments (as `args()` lays them out) claim rows
        left in Redis, read without parsing the rest."""
        rows = args[3] if len(args) > 3 else None
        return isinstance(rows, dict) and bool(rows.get("claimed"))

    def matrix(self) -> Any:
        """The rows as the worker's model takes them: packed rows as a float64 matrix read
        in place (PackedRows.matrix), JSON rows as lists."""
        if isinstance(self.rows_data, PackedRows):
            return self.rows_data.matrix()
        return self.rows()

    def rows(self) -> list[list[Any]]:
        if isinstance(self.rows_data, ClaimedRows):
            raise ValueError("the rows are claimed: redeem them first (queueing.claims)")
        if isinstance(self.rows_data, PackedRows):
            return self.rows_data.rows()
        decoded: list[list[Any]] = orjson.loads(self.rows_data)
        return decoded

    @property
    def request_ids(self) -> str:
        return ",".join(s.request_id for s in self.segments)

    def summary(self) -> str:
        n_rows = sum(s.n_rows for s in self.segments)
        return (
            f"({self.artifact.model_type!r}, {self.artifact.version!r}, "
            f"<{n_rows} rows of {len(self.segments)} requests>)"
        )


@dataclass(frozen=True)
class ShadowPredict:
    """A request's rows scored again on the type's shadow version, off the answer's path:
    logged beside the primary's row (GET /models/{type}/shadow/report), never returned."""

    NAME: ClassVar[str] = SHADOW_TASK
    artifact: Artifact  # the shadow version
    rows_json: str
    segment: Segment  # the shadow row's own request id, and the request's owner
    primary_request_id: str

    def args(self) -> list[Any]:
        a, s = self.artifact, self.segment
        return [
            a.model_type,
            a.version,
            a.sha256,
            self.rows_json,
            s.wire(),
            self.primary_request_id,
        ]

    @classmethod
    def from_args(
        cls,
        model_type: str,
        version: str,
        sha256: str,
        rows_json: str,
        segment: list[Any],
        primary_request_id: str,
    ) -> Self:
        parsed = Segment.from_wire(segment)
        return cls(Artifact(model_type, version, sha256), rows_json, parsed, primary_request_id)

    def rows(self) -> list[list[Any]]:
        decoded: list[list[Any]] = orjson.loads(self.rows_json)
        return decoded

    def summary(self) -> str:
        a = self.artifact
        return (
            f"({a.model_type!r}, {a.version!r}, shadow of {self.primary_request_id!r}, "
            f"<{self.segment.n_rows} rows>)"
        )


@dataclass(frozen=True)
class JobChunk:
    """One chunk of a job: its rows inline, or a slice of the job's input object that the
    chunk reads itself (so an object's rows never pass through the broker)."""

    NAME: ClassVar[str] = PREDICT_CHUNK_TASK
    job_id: str
    index: int
    artifact: Artifact
    rows: list[list[Any]] | None = None
    source: dict[str, Any] | None = None  # an input object's slice: common.job_inputs

    def args(self) -> list[Any]:
        a = self.artifact
        return [self.job_id, self.index, a.model_type, a.version, a.sha256, self.rows, self.source]

    @classmethod
    def from_args(
        cls,
        job_id: str,
        index: int,
        model_type: str,
        version: str,
        sha256: str,
        rows: list[list[Any]] | None = None,
        source: dict[str, Any] | None = None,
    ) -> Self:
        return cls(job_id, int(index), Artifact(model_type, version, sha256), rows, source)

    @property
    def n_rows(self) -> int:
        if self.rows is not None:
            return len(self.rows)
        source = self.source or {}
        if "n_rows" in source:
            return int(source["n_rows"])
        return int(source.get("stop", 0)) - int(source.get("start", 0))

    def summary(self) -> str:
        a = self.artifact
        return (
            f"({self.job_id!r}, chunk {self.index}, {a.model_type!r}, {a.version!r}, "
            f"<{self.n_rows} rows>)"
        )


@dataclass(frozen=True)
class JobStep:
    """A step of a job that needs only its id: reading its input object, writing its
    results object, delivering its callback. The job's state holds the rest."""

    name: str
    job_id: str
    NAMES: ClassVar[frozenset[str]] = frozenset(
        {PREPARE_JOB_TASK, FINALIZE_JOB_TASK, CALLBACK_TASK}
    )

    def __post_init__(self) -> None:
        if self.name not in self.NAMES:
            raise ValueError(f"not a job step: {self.name}")

    def args(self) -> list[Any]:
        return [self.job_id]

    def summary(self) -> str:
        return f"({self.job_id!r})"


@dataclass(frozen=True)
class Outgoing:
    """A task ready to publish: its name, arguments, queue and Celery options."""

    name: str
    args: list[Any]
    queue: str
    options: dict[str, Any] = field(default_factory=dict)
