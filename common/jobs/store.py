"""Where jobs live: Redis (the result backend's, which must not evict keys).

`JobOps` builds every command once (script, keys, arguments); `JobStore` runs them on a
synchronous client (workers), `AsyncJobStore` on redis.asyncio (front ends). Reads never
write: a job moves only by a worker, a cancel, a submission, or the sweeper.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from common.errors import ServingError
from common.jobs import scripts
from common.jobs.model import Job, JobState, NewJob, sources_of

T = TypeVar("T")
Script = str
Command = tuple[Script, list[str], list[Any]]


@dataclass(frozen=True)
class JobOps:
    prefix: str
    ttl: int

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def chunk_key(self, job_id: str, index: int) -> str:
        return f"{self.prefix}job:{job_id}:chunk:{index}"

    @property
    def active_key(self) -> str:
        return f"{self.prefix}jobs:active"

    def owner_key(self, owner: str) -> str:
        """The owner's unfinished jobs (the scripts derive it from the active index)."""
        return f"{self.active_key}:{owner}"

    def idempotency_key(self, owner: str, key: str) -> str:
        return f"{self.prefix}job-idem:{owner}:{key}"

    def create(self, job: NewJob, limit: int | None) -> Command:
        keys = [self.job_key(job.job_id), self.active_key, self.owner_key(job.owner)]
        fields = [item for pair in job.to_hash().items() for item in pair]
        args = [self.ttl, job.created_at, limit or 0, self.prefix + "job:", *fields]
        return scripts.CREATE, keys, args

    def active(self, owner: str, limit: int) -> Command:
        return scripts.ACTIVE, [self.owner_key(owner)], [self.prefix + "job:", limit]

    @property
    def expiring_key(self) -> str:
        """Store objects that die with their job (results, a job body's upload): a sorted
        set of object key -> when to delete it, swept by the workers' housekeeping."""
        return f"{self.prefix}objects:expiring"

    def record(
        self, job_id: str, index: int, result: dict[str, Any], n_rows: int, now: float
    ) -> Command:
        keys = [self.job_key(job_id), self.active_key, self.chunk_key(job_id, index)]
        return scripts.RECORD_CHUNK, keys, [orjson.dumps(result), n_rows, now, self.ttl]

    def move(
        self,
        job_id: str,
        target: JobState,
        now: float,
        error: ServingError | None = None,
        stalled_before: float | None = None,
    ) -> Command:
        error_json = orjson.dumps(error.to_dict()).decode() if error is not None else ""
        stale = "" if stalled_before is None else repr(stalled_before)
        args = [target.value, now, error_json, stale, *sources_of(target)]
        return scripts.TRANSITION, [self.job_key(job_id), self.active_key], args

    def size(self, job_id: str, chunk_sizes: Sequence[int], chunk_rows: int, now: float) -> Command:
        """`chunk_sizes`: each chunk's row count, in order."""
        keys = [self.job_key(job_id), self.active_key]
        starts = list(itertools.accumulate(chunk_sizes, initial=0))[:-1]
        uniform = all(n == chunk_rows for n in chunk_sizes[:-1])
        encoded = "" if uniform else orjson.dumps(starts).decode()
        return scripts.SIZE, keys, [sum(chunk_sizes), len(chunk_sizes), chunk_rows, now, encoded]

    def stalled(self, stalled_before: float, limit: int = 100) -> Command:
        return scripts.STALLED, [self.active_key], [stalled_before, self.prefix + "job:", limit]

    def page_keys(self, job: Job, offset: int, limit: int) -> tuple[list[str], int, int]:
        """The chunk keys holding rows [offset, offset + limit), and where those rows
        start and stop in the chunks' concatenation."""
        end = min(offset + limit, job.n_rows)
        if end <= offset:
            return [], 0, 0
        starts = job.chunk_starts
        if starts is None:
            size = job.chunk_rows
            first, last = offset // size, (end - 1) // size
            first_start = first * size
        else:
            first = bisect.bisect_right(starts, offset) - 1
            last = bisect.bisect_right(starts, end - 1) - 1
            first_start = starts[first]
        keys = [self.chunk_key(job.job_id, i) for i in range(first, last + 1)]
        start = offset - first_start
        return keys, start, start + (end - offset)


def decode_outcome(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def join_chunks(raws: Iterable[bytes | None], start: int, stop: int) -> dict[str, list[Any]]:
    labels: list[Any] = []
    probabilities: list[Any] = []
    for raw in raws:
        if raw is None:
            raise LookupError("a chunk of the job's results has expired")
        chunk = orjson.loads(raw)
        labels.extend(chunk["labels"])
        probabilities.extend(chunk["probabilities"])
    return {"labels": labels[start:stop], "probabilities": probabilities[start:stop]}


class JobStore:
    """Synchronous, for the workers."""

    def __init__(self, client: Any, prefix: str, ttl: int) -> None:
        self.client, self.ops = client, JobOps(prefix, ttl)
        self._scripts: dict[str, Any] = {}

    def _run(self, command: Command) -> Any:
        source, keys, args = command
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script(keys=keys, args=args)

    def get(self, job_id: str) -> Job | None:
        raw = self.client.hgetall(self.ops.job_key(job_id))
        return Job.from_hash(raw) if raw else None

    def record(
        self, job_id: str, index: int, result: dict[str, Any], n_rows: int, now: float
    ) -> str:
        return decode_outcome(self._run(self.ops.record(job_id, index, result, n_rows, now)))

    def move(self, job_id: str, target: JobState, now: float, **options: Any) -> bool:
        return bool(self._run(self.ops.move(job_id, target, now, **options)))

    def size(self, job_id: str, chunk_sizes: Sequence[int], chunk_rows: int, now: float) -> bool:
        return bool(self._run(self.ops.size(job_id, chunk_sizes, chunk_rows, now)))

    def stalled(self, stalled_before: float) -> list[str]:
        return [decode_outcome(i) for i in self._run(self.ops.stalled(stalled_before))]

    def results(self, job: Job, offset: int, limit: int) -> dict[str, list[Any]]:
        keys, start, stop = self.ops.page_keys(job, offset, limit)
        return join_chunks(self.client.mget(keys) if keys else [], start, stop)

    def expire_object(self, key: str, at: float) -> None:
        self.client.zadd(self.ops.expiring_key, {key: at})

    def due_objects(self, now: float, limit: int) -> list[str]:
        raw = self.client.zrangebyscore(self.ops.expiring_key, "-inf", now, start=0, num=limit)
        return [decode_outcome(key) for key in raw]

    def forget_objects(self, keys: Sequence[str]) -> None:
        if keys:
            self.client.zrem(self.ops.expiring_key, *keys)

    def count_attempt(self, task_id: str) -> int:
        """How many times this task has started (kept for a day)."""
        key = f"{self.ops.prefix}attempts:{task_id}"
        with self.client.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, 24 * 3600)
            attempts, _ = pipe.execute()
        return int(attempts)


class AsyncJobStore:
    """redis.asyncio, for the front ends."""

    def __init__(self, client: Any, prefix: str, ttl: int) -> None:
        self.client, self.ops = client, JobOps(prefix, ttl)
        self._scripts: dict[str, Any] = {}

    async def _run(self, command: Command) -> Any:
        source, keys, args = command
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return await script(keys=keys, args=args)

    async def create(self, job: NewJob, limit: int | None = None) -> int | None:
        """None once the job is created; if its owner already has `limit` unfinished
        jobs, their number, and nothing is written. Without a limit it always counts."""
        active = int(await self._run(self.ops.create(job, limit)))
        return active or None

    async def active_jobs(self, owner: str, limit: int) -> int:
        """The owner's unfinished jobs: exact from `limit` up, at most an over-count
        below it (jobs that expired unfinished are dropped only at the limit)."""
        return int(await self._run(self.ops.active(owner, limit)))

    async def get(self, job_id: str) -> Job | None:
        raw = await self.client.hgetall(self.ops.job_key(job_id))
        return Job.from_hash(raw) if raw else None

    async def record(
        self, job_id: str, index: int, result: dict[str, Any], n_rows: int, now: float
    ) -> str:
        return decode_outcome(await self._run(self.ops.record(job_id, index, result, n_rows, now)))

    async def move(self, job_id: str, target: JobState, now: float, **options: Any) -> bool:
        return bool(await self._run(self.ops.move(job_id, target, now, **options)))

    async def results(self, job: Job, offset: int, limit: int) -> dict[str, list[Any]]:
        keys, start, stop = self.ops.page_keys(job, offset, limit)
        return join_chunks(await self.client.mget(keys) if keys else [], start, stop)

    async def expire_object(self, key: str, at: float) -> None:
        await self.client.zadd(self.ops.expiring_key, {key: at})

    async def idempotent_job(self, owner: str, key: str) -> tuple[str, str] | None:
        """(job id, body digest) that an earlier submission with this key bound."""
        raw = await self.client.get(self.ops.idempotency_key(owner, key))
        if not raw:
            return None
        job_id, _, digest = (raw.decode() if isinstance(raw, bytes) else raw).partition("|")
        return job_id, digest

    async def bind_idempotency(self, owner: str, key: str, digest: str, job_id: str) -> bool:
        """Bind the key to a job that is published; False if another submission won."""
        name = self.ops.idempotency_key(owner, key)
        return bool(await self.client.set(name, f"{job_id}|{digest}", nx=True, ex=self.ops.ttl))


def chunks_of(rows: list[T], size: int) -> list[list[T]]:
    """Rows split into consecutive chunks of at most `size`: the one splitting rule."""
    return [rows[i : i + size] for i in range(0, len(rows), size)]
