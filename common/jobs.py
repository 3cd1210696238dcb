"""Asynchronous prediction jobs: their state in Redis, shared by the API and the worker.

A job's rows are split into chunks, each a task; workers record a chunk's results once
(a redelivered chunk is counted once), and the worker that records the last chunk
finishes the job. All keys expire `job_ttl_seconds` after the job was created.

Keys (under the cache prefix): `job:<id>` a hash of the job's state, `job:<id>:chunk:<i>`
a chunk's results as JSON, `job-idem:<owner>:<idempotency key>` the job a key made.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson

from common import errors
from common.errors import JobConflict, JobNotFound
from common.protocol import RESULT_KEY_PREFIX

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL = ("succeeded", "failed", "cancelled")


def job_key(prefix: str, job_id: str) -> str:
    return f"{prefix}job:{job_id}"


def chunk_key(prefix: str, job_id: str, index: int) -> str:
    return f"{prefix}job:{job_id}:chunk:{index}"


def idempotency_key(prefix: str, owner: str, key: str) -> str:
    return f"{prefix}job-idem:{owner}:{key}"


# KEYS: job hash, chunk key. ARGV: chunk JSON, chunk row count, now, ttl.
# Returns "finished" to the one caller that completes the job, else "counted",
# "duplicate" (chunk already recorded) or "ignored" (job gone or already ended).
RECORD_CHUNK = """
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or status == 'succeeded' or status == 'failed' or status == 'cancelled' then
  return 'ignored'
end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[4]) then
  return 'duplicate'
end
redis.call('HINCRBY', KEYS[1], 'rows_done', ARGV[2])
local done = redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
if done >= tonumber(redis.call('HGET', KEYS[1], 'n_chunks')) then
  -- A job read from an object stays running until its results object is written.
  if redis.call('HEXISTS', KEYS[1], 'input_object') == 0 then
    redis.call('HSET', KEYS[1], 'status', 'succeeded', 'finished_at', ARGV[3])
  end
  return 'finished'
end
return 'counted'
"""

# KEYS: job hash. ARGV: new status, now, error JSON ('' for none), allowed statuses...
# Moves a job to a new status only from one of the allowed ones; returns 1 if it did.
TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
for i = 4, #ARGV do
  if status == ARGV[i] then
    if ARGV[1] == 'running' then
      redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2])
    else
      redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2])
    end
    if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
    return 1
  end
end
return 0
"""


def decode_hash(raw: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


class WorkerJobs:
    """The worker's side: mark a job running, record a chunk, fail a job (sync Redis)."""

    def __init__(self, client: Any, prefix: str, ttl: int) -> None:
        self.client, self.prefix, self.ttl = client, prefix, ttl
        self._record = client.register_script(RECORD_CHUNK)
        self._transition = client.register_script(TRANSITION)

    def count_attempt(self, task_id: str) -> int:
        """How many times this task has started (kept for a day)."""
        key = f"{self.prefix}attempts:{task_id}"
        with self.client.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, 24 * 3600)
            attempts, _ = pipe.execute()
        return int(attempts)

    def status(self, job_id: str) -> str | None:
        raw = self.client.hget(job_key(self.prefix, job_id), "status")
        return raw.decode() if isinstance(raw, bytes) else raw

    def start(self, job_id: str, now: float) -> None:
        self._transition(keys=[job_key(self.prefix, job_id)], args=["running", now, "", "queued"])

    def record(self, job_id: str, index: int, result_json: bytes, n_rows: int, now: float) -> str:
        keys = [job_key(self.prefix, job_id), chunk_key(self.prefix, job_id, index)]
        outcome = self._record(keys=keys, args=[result_json, n_rows, now, self.ttl])
        return outcome.decode() if isinstance(outcome, bytes) else str(outcome)

    def fail(self, job_id: str, error_json: str, now: float) -> bool:
        moved = self._transition(
            keys=[job_key(self.prefix, job_id)],
            args=["failed", now, error_json, "queued", "running"],
        )
        return bool(moved)

    def info(self, job_id: str) -> dict[str, str]:
        return decode_hash(self.client.hgetall(job_key(self.prefix, job_id)))

    def prepare(self, job_id: str, n_rows: int, n_chunks: int, chunk_rows: int) -> None:
        """Size a job whose rows were read by the worker (an input object)."""
        self.client.hset(
            job_key(self.prefix, job_id),
            mapping={"n_rows": n_rows, "n_chunks": n_chunks, "chunk_rows": chunk_rows},
        )

    def all_results(self, job_id: str, n_chunks: int) -> tuple[list[Any], list[Any]]:
        labels: list[Any] = []
        probabilities: list[Any] = []
        keys = [chunk_key(self.prefix, job_id, i) for i in range(n_chunks)]
        for raw in self.client.mget(keys):
            chunk = orjson.loads(raw)
            labels.extend(chunk["labels"])
            probabilities.extend(chunk["probabilities"])
        return labels, probabilities

    def succeed_with_object(self, job_id: str, output_object: str, now: float) -> None:
        self.client.hset(job_key(self.prefix, job_id), "output_object", output_object)
        self._transition(
            keys=[job_key(self.prefix, job_id)], args=["succeeded", now, "", "running"]
        )


class JobBook:
    """The API's side (async Redis): create, read, cancel jobs and page their results.

    Jobs belong to the API key that made them (`owner`, a digest of the key): any other
    key is told the job does not exist."""

    def __init__(self, client: Any, prefix: str, ttl: int, chunk_rows: int) -> None:
        self.client, self.prefix, self.ttl, self.chunk_rows = client, prefix, ttl, chunk_rows
        self._transition = client.register_script(TRANSITION)
        self._record = client.register_script(RECORD_CHUNK)

    async def claim_idempotency(
        self, owner: str, key: str, body_digest: str, job_id: str
    ) -> str | None:
        """The job an earlier submission with this key made, or None if this one is new.

        The same key with another body is a conflict."""
        name = idempotency_key(self.prefix, owner, key)
        value = f"{job_id}|{body_digest}"
        if await self.client.set(name, value, nx=True, ex=self.ttl):
            return None
        raw = await self.client.get(name)
        earlier_job, _, earlier_digest = (raw.decode() if raw else "|").partition("|")
        if earlier_digest != body_digest:
            raise JobConflict(
                f"Idempotency-Key {key!r} was used for another body; use a new key",
                {"job_id": earlier_job},
            )
        return earlier_job

    async def create(
        self,
        job_id: str,
        owner: str,
        meta: Any,
        n_rows: int,
        n_chunks: int,
        chunk_rows: int,
        created_at: float,
        **extra: Any,
    ) -> None:
        """A queued job for a model version; `extra` holds optional fields (callback_url,
        input_object, the task of a deferred request)."""
        fields = {
            "job_id": job_id,
            "model_type": meta.model_type,
            "version": meta.version,
            "sha256": meta.sha256,
            "n_rows": n_rows,
            "n_chunks": n_chunks,
            "chunk_rows": chunk_rows,
            "created_at": created_at,
            **extra,
        }
        name = job_key(self.prefix, job_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(
                name,
                mapping={
                    **fields,
                    "owner": owner,
                    "status": "queued",
                    "rows_done": 0,
                    "chunks_done": 0,
                },
            )
            pipe.expire(name, self.ttl)
            await pipe.execute()

    async def get(self, owner: str, job_id: str) -> dict[str, str]:
        info = decode_hash(await self.client.hgetall(job_key(self.prefix, job_id)))
        if not info or info.get("owner") != owner:
            raise JobNotFound(f"no job {job_id!r} (unknown, expired, or another key's)")
        if info["status"] == "queued" and "task_id" in info and await self.settle(job_id, info):
            return await self.get(owner, job_id)
        return info

    async def cancel(self, owner: str, job_id: str, now: float) -> dict[str, str]:
        info = await self.get(owner, job_id)
        moved = await self._transition(
            keys=[job_key(self.prefix, job_id)], args=["cancelled", now, "", "queued", "running"]
        )
        if not moved:
            raise JobConflict(f"job {job_id} has already ended ({info['status']})")
        return await self.get(owner, job_id)

    async def results(
        self, info: dict[str, str], job_id: str, offset: int, limit: int
    ) -> dict[str, list[Any]]:
        """Labels and probabilities of rows [offset, offset + limit), from their chunks."""
        size = int(info["chunk_rows"])
        end = min(offset + limit, int(info["n_rows"]))
        if end <= offset:
            return {"labels": [], "probabilities": []}
        first, last = offset // size, (end - 1) // size
        keys = [chunk_key(self.prefix, job_id, i) for i in range(first, last + 1)]
        labels: list[Any] = []
        probabilities: list[Any] = []
        for raw in await self.client.mget(keys):
            chunk = orjson.loads(raw)
            labels.extend(chunk["labels"])
            probabilities.extend(chunk["probabilities"])
        start = offset - first * size
        stop = start + (end - offset)
        return {"labels": labels[start:stop], "probabilities": probabilities[start:stop]}

    async def defer(
        self, owner: str, meta: Any, details: dict[str, Any], created_at: float
    ) -> dict[str, str]:
        """Turn a synchronous request past its deadline into a job: its result will be
        its slice of the task's result, picked up by whichever API process is asked."""
        job_id = details["request_id"]
        await self.create(
            job_id,
            owner,
            meta,
            details["rows"],
            1,
            details["rows"],
            created_at,
            task_id=details["task_id"],
            task_offset=details["offset"],
        )
        return await self.get(owner, job_id)

    async def settle(self, job_id: str, info: dict[str, str]) -> bool:
        """For a deferred request: record the task's result if it has one. True if done."""
        raw = await self.client.get(RESULT_KEY_PREFIX + info["task_id"])
        meta = orjson.loads(raw) if raw else {}
        now = time.time()
        if meta.get("status") == "SUCCESS":
            start, n = int(info["task_offset"]), int(info["n_rows"])
            part = {k: meta["result"][k][start : start + n] for k in ("labels", "probabilities")}
            await self._record(
                keys=[job_key(self.prefix, job_id), chunk_key(self.prefix, job_id, 0)],
                args=[orjson.dumps(part), n, now, self.ttl],
            )
            return True
        if meta.get("status") == "FAILURE":
            failure = meta.get("result") or {}
            error = errors.from_task_failure(
                str(failure.get("exc_type")), failure.get("exc_message"), failure.get("exc_module")
            )
            await self._transition(
                keys=[job_key(self.prefix, job_id)],
                args=["failed", now, orjson.dumps(error.to_dict()).decode(), "queued", "running"],
            )
            return True
        return False
