"""The job's transitions as Redis runs them (a real Redis): each move atomic, every
completion decided once, nothing left running."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from common.errors import InvalidInput, JobStalled
from common.jobs import AsyncJobStore, JobState, JobStore, NewJob
from tests.common.jobs.test_model import new_job

TTL = 600


def result(n: int, base: int = 0) -> dict[str, list[object]]:
    return {
        "labels": [f"l{base + i}" for i in range(n)],
        "probabilities": [[0.1 * i] for i in range(n)],
    }


@pytest.fixture
def store(sync_redis: redis.Redis, prefix: str) -> JobStore:
    return JobStore(sync_redis, prefix, TTL)


def create(redis_url: str, prefix: str, job: NewJob) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/0")
        await AsyncJobStore(client, prefix, TTL).create(job)
        await client.aclose()

    asyncio.run(run())


def test_chunks_are_counted_once_and_the_last_one_finishes(
    store: JobStore, redis_url: str, prefix: str
) -> None:
    create(redis_url, prefix, new_job(n_rows=12, n_chunks=3, chunk_rows=5))

    outcomes = [
        store.record("j1", 0, result(5), 5, 1001.0),
        store.record("j1", 0, result(5), 5, 1002.0),  # redelivered
        store.record("j1", 1, result(5, 5), 5, 1003.0),
        store.record("j1", 2, result(2, 10), 2, 1004.0),
        store.record("j1", 2, result(2, 10), 2, 1005.0),  # after the end
    ]

    assert outcomes == ["counted", "duplicate", "counted", "finished", "ignored"]
    job = store.get("j1")
    assert job is not None and job.state is JobState.SUCCEEDED
    assert (job.rows_done, job.chunks_done) == (12, 3)
    assert (job.started_at, job.finished_at) == (1001.0, 1004.0)
    assert store.results(job, 3, 6)["labels"] == ["l3", "l4", "l5", "l6", "l7", "l8"]
    assert store.stalled(10_000.0) == []  # ended: off the active index


def test_an_object_job_waits_for_its_results_object_even_when_redelivered(
    store: JobStore, redis_url: str, prefix: str
) -> None:
    create(
        redis_url,
        prefix,
        new_job(n_rows=0, n_chunks=0, input_object="a.csv", output_object="a.predictions.csv"),
    )
    assert store.record("j1", 0, result(3), 3, 1001.0) == "counted"  # not sized yet
    assert store.size("j1", [3], 5, 1002.0)

    # The chunk recorded before sizing counts once sizing is known, on its redelivery.
    assert store.record("j1", 0, result(3), 3, 1003.0) == "finalize"
    assert store.record("j1", 0, result(3), 3, 1004.0) == "finalize"  # the writer died
    job = store.get("j1")
    assert job is not None and job.state is JobState.RUNNING
    assert store.move("j1", JobState.SUCCEEDED, 1005.0)
    assert store.record("j1", 0, result(3), 3, 1006.0) == "ignored"


def test_an_ended_job_never_moves_again(store: JobStore, redis_url: str, prefix: str) -> None:
    create(redis_url, prefix, new_job())
    error = InvalidInput("line 3: alpha: 'x' is not a number")

    assert store.move("j1", JobState.FAILED, 1001.0, error=error)
    assert not store.move("j1", JobState.SUCCEEDED, 1002.0)
    assert not store.move("j1", JobState.CANCELLED, 1002.0)
    assert not store.move("j1", JobState.RUNNING, 1002.0)
    job = store.get("j1")
    assert job is not None and job.state is JobState.FAILED and job.finished_at == 1001.0
    assert job.error == {"type": "invalid_input", "message": "line 3: alpha: 'x' is not a number"}
    assert store.record("j1", 0, result(5), 5, 1003.0) == "ignored"


def test_the_sweeper_sees_only_jobs_without_progress(
    store: JobStore, redis_url: str, prefix: str
) -> None:
    create(redis_url, prefix, new_job(job_id="idle", created_at=1000.0))
    create(redis_url, prefix, new_job(job_id="busy", created_at=1000.0))
    create(redis_url, prefix, new_job(job_id="done", created_at=1000.0, n_chunks=1, n_rows=1))
    store.record("busy", 0, result(5), 5, 1500.0)
    store.record("done", 0, result(1), 1, 1500.0)

    assert store.stalled(1400.0) == ["idle"]
    assert sorted(store.stalled(1600.0)) == ["busy", "idle"]


def test_a_job_that_progressed_since_the_scan_is_not_failed_as_stalled(
    store: JobStore, redis_url: str, prefix: str
) -> None:
    create(redis_url, prefix, new_job(created_at=1000.0))
    assert store.stalled(1400.0) == ["j1"]
    store.record("j1", 0, result(5), 5, 1450.0)  # progress between the scan and the move

    assert not store.move(
        "j1", JobState.FAILED, 1460.0, error=JobStalled("x"), stalled_before=1400.0
    )
    assert store.move("j1", JobState.FAILED, 1560.0, error=JobStalled("x"), stalled_before=1500.0)


def test_an_expired_job_drops_off_the_index(
    store: JobStore, sync_redis: redis.Redis, redis_url: str, prefix: str
) -> None:
    create(redis_url, prefix, new_job(created_at=1000.0))
    sync_redis.delete(f"{prefix}job:j1")  # as when its TTL passes
    assert store.stalled(2000.0) == []
    assert sync_redis.zcard(f"{prefix}jobs:active") == 0


def test_an_idempotency_key_binds_once(redis_url: str, prefix: str) -> None:
    async def run() -> tuple[bool, bool, object]:
        client = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/0")
        jobs = AsyncJobStore(client, prefix, TTL)
        first = await jobs.bind_idempotency("o1", "k", "digest", "j1")
        second = await jobs.bind_idempotency("o1", "k", "digest", "j2")
        bound = await jobs.idempotent_job("o1", "k")
        await client.aclose()
        return first, second, bound

    assert asyncio.run(run()) == (True, False, ("j1", "digest"))


def test_chunks_of_unequal_sizes_page_by_their_starts(
    store: JobStore, redis_url: str, prefix: str
) -> None:
    create(redis_url, prefix, new_job(n_rows=0, n_chunks=0, input_object="a.csv"))
    assert store.size("j1", [5, 3, 4], 5, 1001.0)  # the second slice was cut short
    for index, (n, base) in enumerate([(5, 0), (3, 5), (4, 8)]):
        store.record("j1", index, result(n, base), n, 1002.0)
    job = store.get("j1")
    assert job is not None and job.chunk_starts == (0, 5, 8) and job.n_rows == 12

    assert store.results(job, 4, 6)["labels"] == [f"l{i}" for i in range(4, 10)]
    assert store.results(job, 8, 100)["labels"] == [f"l{i}" for i in range(8, 12)]
    assert store.results(job, 0, 12)["labels"] == [f"l{i}" for i in range(12)]
