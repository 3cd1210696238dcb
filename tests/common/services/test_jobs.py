"""JobService against a real Redis and a real local store; the dispatcher is a recorder
(the unit under test is the service's logic, not the queue), which can be told to fail."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from common.errors import BackendUnavailable, JobConflict, JobNotFound
from common.jobs import AsyncJobStore, JobState
from common.registry import Registry
from common.services.jobs import JobService
from common.services.models import ModelService
from common.services.requests import Idempotency, JobRequest
from common.settings import Settings
from common.store import LocalStore
from common.tenancy import Tenant
from tests.common.conftest import MetaFactory

ROW = {"alpha": 1.0, "beta": 2.0}


class RecordingDispatcher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.fail = False

    async def send_chunks(self, job_id: str, meta: Any, chunks: list[Any]) -> None:
        if self.fail:
            raise BackendUnavailable("the task queue (broker) is unavailable: refused")
        self.sent.append(("chunks", (job_id, [len(c) for c in chunks])))

    async def send_prepare(self, job_id: str) -> None:
        self.sent.append(("prepare", job_id))

    async def send_callback(self, job_id: str) -> None:
        self.sent.append(("callback", job_id))

    async def result_of(self, task_id: str, timeout: float) -> Any:
        return None

    async def keep_result(self, task_id: str, seconds: int) -> None:
        self.sent.append(("keep", task_id))


Build = Callable[[], Any]


@pytest.fixture
def service(tmp_path: Path, redis_url: str, meta_fields: MetaFactory) -> Build:
    """Builds the service inside a test's event loop (redis.asyncio's connections belong
    to one loop); `run` closes its client after the scenario."""
    registry = Registry(LocalStore(tmp_path / "store"))
    registry.publish(meta_fields(), b"artifact", activate=True, make_default=True)
    settings = Settings(
        local_store_path=tmp_path / "store",
        job_chunk_rows=2,
        callback_secret="callback-secret-for-tests",
    )
    prefix = f"svc{uuid.uuid4().hex[:8]}:"

    def build() -> tuple[JobService, RecordingDispatcher]:
        client = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/0")
        dispatcher = RecordingDispatcher()
        models = ModelService(settings, registry, client)
        return JobService(
            settings, AsyncJobStore(client, prefix, 600), models, dispatcher
        ), dispatcher

    return build


def run(build: Build, scenario: Callable[[JobService, RecordingDispatcher], Any]) -> Any:
    async def main() -> Any:
        jobs, dispatcher = build()
        try:
            return await scenario(jobs, dispatcher)
        finally:
            await jobs.store.client.aclose()

    return asyncio.run(main())


def request(**overrides: Any) -> JobRequest:
    fields: dict[str, Any] = {"tenant": Tenant("o1"), "model_type": None, "version": None}
    return JobRequest(**(fields | {"input_data": [ROW] * 5} | overrides))


def test_rows_are_split_into_chunks_and_queued(service: Build) -> None:
    async def scenario(jobs: JobService, dispatcher: RecordingDispatcher) -> Any:
        status = await jobs.submit(request())
        return status, dispatcher.sent

    status, sent = run(service, scenario)

    assert status.status == "queued" and status.progress.rows_total == 5
    assert sent == [("chunks", (status.job_id, [2, 2, 1]))]


def test_a_job_that_could_not_be_queued_fails_and_binds_no_key(service: Build) -> None:
    keyed = request(idempotency=Idempotency("nightly", "digest-1"))

    async def scenario(jobs: JobService, dispatcher: RecordingDispatcher) -> Any:
        dispatcher.fail = True
        with pytest.raises(BackendUnavailable):
            await jobs.submit(keyed)
        dispatcher.fail = False
        retried = await jobs.submit(keyed)
        again = await jobs.submit(keyed)
        return retried, again, dispatcher.sent

    retried, again, sent = run(service, scenario)

    # The retry made a new job that was queued; the failed one holds no key.
    assert sent == [("chunks", (retried.job_id, [2, 2, 1]))]
    assert again.job_id == retried.job_id


def test_a_failed_publish_leaves_its_job_failed_not_queued(service: Build) -> None:
    async def scenario(jobs: JobService, dispatcher: RecordingDispatcher) -> Any:
        dispatcher.fail = True
        with pytest.raises(BackendUnavailable):
            await jobs.submit(request())
        client, ops = jobs.store.client, jobs.store.ops
        index = await client.zrange(ops.active_key, 0, -1)
        keys = [k.decode() async for k in client.scan_iter(ops.job_key("*"))]
        return [await jobs.store.get(k.rsplit(":", 1)[1]) for k in keys], index

    found, index = run(service, scenario)

    assert [job.state for job in found] == [JobState.FAILED]
    assert found[0].error["type"] == "backend_unavailable"
    assert index == []  # not left for the sweeper either


def test_the_same_key_with_another_body_conflicts(service: Build) -> None:
    async def scenario(jobs: JobService, _: RecordingDispatcher) -> None:
        await jobs.submit(request(idempotency=Idempotency("k", "digest-1")))
        with pytest.raises(JobConflict, match="another body"):
            await jobs.submit(request(idempotency=Idempotency("k", "digest-2")))

    run(service, scenario)


def test_another_owner_never_sees_a_job(service: Build) -> None:
    async def scenario(jobs: JobService, _: RecordingDispatcher) -> None:
        status = await jobs.submit(request())
        with pytest.raises(JobNotFound):
            await jobs.status(Tenant("o2"), status.job_id)
        with pytest.raises(JobNotFound):
            await jobs.cancel(Tenant("o2"), status.job_id)
        seen = await jobs.status(Tenant("o2", admin=True), status.job_id)
        assert seen.job_id == status.job_id  # an admin key sees every key's jobs

    run(service, scenario)


def test_cancelling_tells_the_callback_once(service: Build) -> None:
    async def scenario(jobs: JobService, dispatcher: RecordingDispatcher) -> Any:
        status = await jobs.submit(request(callback_url="https://example.test/cb"))
        cancelled = await jobs.cancel(Tenant("o1"), status.job_id)
        with pytest.raises(JobConflict, match="already ended"):
            await jobs.cancel(Tenant("o1"), status.job_id)
        return cancelled, dispatcher.sent

    cancelled, sent = run(service, scenario)

    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert [kind for kind, _ in sent] == ["chunks", "callback"]


def test_results_of_an_unfinished_job_conflict(service: Build) -> None:
    async def scenario(jobs: JobService, _: RecordingDispatcher) -> None:
        status = await jobs.submit(request())
        with pytest.raises(JobConflict, match="is queued"):
            await jobs.results_page(Tenant("o1"), status.job_id, 0, 10)

    run(service, scenario)


def test_an_input_object_job_is_prepared_by_a_worker(service: Build) -> None:
    owner = "0123456789abcdef01234567"  # a key's digest: its uploads are uploads/<owner>/

    async def scenario(jobs: JobService, dispatcher: RecordingDispatcher) -> Any:
        jobs.uploads.store.put(f"uploads/{owner}/a.csv", b"alpha,beta\n1,2\n")
        named = request(tenant=Tenant(owner), input_data=None, input_object="a.csv")
        status = await jobs.submit(named)
        return status, dispatcher.sent

    status, sent = run(service, scenario)

    assert sent == [("prepare", status.job_id)]
    assert status.input_object == f"uploads/{owner}/a.csv"
    assert status.output_object is None  # not yet
