"""The per-key count of unfinished jobs, kept by the job scripts in a real Redis: a job
is refused past the limit, and every way a job ends (succeeded, failed, cancelled, swept,
expired) gives its place back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis

from common.errors import JobStalled
from common.jobs import AsyncJobStore, JobState, JobStore
from tests.common.jobs.test_model import new_job

TTL = 600
T = TypeVar("T")


def run_async(redis_url: str, prefix: str, work: Callable[[AsyncJobStore], Awaitable[T]]) -> T:
    """Runs `work` with an AsyncJobStore inside an event loop of its own."""

    async def scenario() -> T:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/0")
        try:
            return await work(AsyncJobStore(client, prefix, TTL))
        finally:
            await client.aclose()

    return asyncio.run(scenario())


def create_all(
    redis_url: str, prefix: str, ids: list[str], limit: int | None, owner: str = "o1"
) -> list[int | None]:
    async def work(store: AsyncJobStore) -> list[int | None]:
        return [await store.create(new_job(job_id=i, owner=owner), limit) for i in ids]

    return run_async(redis_url, prefix, work)


def active(redis_url: str, prefix: str, owner: str = "o1", limit: int = 3) -> int:
    async def work(store: AsyncJobStore) -> int:
        return await store.active_jobs(owner, limit)

    return run_async(redis_url, prefix, work)


def test_a_key_past_its_limit_is_refused_and_nothing_is_written(
    sync_redis: redis.Redis, redis_url: str, prefix: str
) -> None:
    outcomes = create_all(redis_url, prefix, ["a", "b", "c", "d"], limit=3)

    assert outcomes == [None, None, None, 3]
    assert not sync_redis.exists(f"{prefix}job:d")
    assert sync_redis.zscore(f"{prefix}jobs:active", "d") is None
    assert active(redis_url, prefix) == 3
    # Another key has a count of its own.
    assert create_all(redis_url, prefix, ["x"], limit=3, owner="o2") == [None]


def test_every_end_gives_a_place_back(sync_redis: redis.Redis, redis_url: str, prefix: str) -> None:
    store = JobStore(sync_redis, prefix, TTL)
    ids = ["done", "failed", "cancelled", "swept", "expired"]
    assert create_all(redis_url, prefix, ids, limit=5) == [None] * 5
    assert create_all(redis_url, prefix, ["refused"], limit=5) == [5]

    # new_job has 3 chunks of 12 rows: recording them all succeeds the job.
    for i, n in enumerate([5, 5, 2]):
        store.record("done", i, {"labels": ["x"] * n, "probabilities": [[1.0]] * n}, n, 1001.0)
    assert store.move("failed", JobState.FAILED, 1002.0)
    assert store.move("cancelled", JobState.CANCELLED, 1003.0)
    stalled = JobStalled("no progress")
    assert store.move("swept", JobState.FAILED, 1004.0, error=stalled, stalled_before=2000.0)
    sync_redis.delete(f"{prefix}job:expired")  # what job_ttl_seconds does to its hash

    assert [store.get(i).state for i in ids[:4]] == [  # type: ignore[union-attr]
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.FAILED,
    ]
    # The four that ended through the scripts left the set at once; the expired one
    # only once the count matters (at the limit).
    assert sync_redis.smembers(f"{prefix}jobs:active:o1") == {b"expired"}
    assert create_all(redis_url, prefix, [f"n{i}" for i in range(5)], limit=5) == [None] * 5
    assert create_all(redis_url, prefix, ["n5"], limit=5) == [5]
    assert b"expired" not in sync_redis.smembers(f"{prefix}jobs:active:o1")


def test_without_a_limit_a_job_is_counted_but_never_refused(redis_url: str, prefix: str) -> None:
    # A deferred prediction becomes a job this way: it was accepted as a prediction.
    assert create_all(redis_url, prefix, ["a", "b"], limit=2) == [None, None]
    assert create_all(redis_url, prefix, ["deferred"], limit=None) == [None]
    assert active(redis_url, prefix, limit=2) == 3
    assert create_all(redis_url, prefix, ["c"], limit=2) == [3]


def test_racing_submissions_never_pass_the_limit(redis_url: str, prefix: str) -> None:
    async def work(store: AsyncJobStore) -> list[Any]:
        jobs = [store.create(new_job(job_id=f"j{i}"), 4) for i in range(20)]
        return list(await asyncio.gather(*jobs))

    outcomes = run_async(redis_url, prefix, work)

    assert outcomes.count(None) == 4
    assert sorted(o for o in outcomes if o is not None) == [4] * 16
    assert active(redis_url, prefix, limit=4) == 4
