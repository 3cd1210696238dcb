"""JobRunner on a real Redis and a real local store; the model and the task queue are
stand-ins (the unit is the runner's lifecycle: every failure ends the job, every end is
told once)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from common.errors import StoreUnavailable
from common.jobs import AsyncJobStore, JobState, JobStore, NewJob
from common.registry import ModelMetadata, Registry
from common.services.job_runner import JobRunner
from common.settings import Settings
from common.store import LocalStore
from common.tenancy import owner_of
from queueing.messages import Artifact
from tests.common.conftest import MetaFactory
from tests.common.services.fakes import Model, Models


class Recorder:
    """The log sink and the job queue: what the runner told them."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.sent: list[tuple[str, Any]] = []

    def record(self, entries: list[dict[str, Any]]) -> None:
        self.rows.extend(entries)

    def send_chunk(self, job: Any, index: int, rows: Any, source: Any) -> None:
        self.sent.append(("chunk", (index, source["n_rows"] if source else len(rows))))

    def send_finalize(self, job_id: str) -> None:
        self.sent.append(("finalize", job_id))

    def send_callback(self, job_id: str) -> None:
        self.sent.append(("callback", job_id))


@pytest.fixture
def setup(
    tmp_path: Path, redis_url: str, meta_fields: MetaFactory
) -> tuple[Registry, ModelMetadata, JobStore, str, str]:
    registry = Registry(LocalStore(tmp_path / "store"))
    meta = registry.publish(meta_fields(), b"artifact", activate=True)
    url = redis_url.rsplit("/", 1)[0] + "/0"
    prefix = f"run{uuid.uuid4().hex[:8]}:"
    return registry, meta, JobStore(redis.Redis.from_url(url), prefix, 600), url, prefix


def create(url: str, prefix: str, meta: ModelMetadata, **fields: Any) -> str:
    job = NewJob(
        job_id=uuid.uuid4().hex[:16],
        owner="o",
        model_type=meta.model_type,
        version=meta.version,
        sha256=meta.sha256,
        created_at=1000.0,
        **({"n_rows": 2, "n_chunks": 1, "chunk_rows": 5} | fields),
    )

    async def run() -> None:
        client = aioredis.Redis.from_url(url)
        await AsyncJobStore(client, prefix, 600).create(job)
        await client.aclose()

    asyncio.run(run())
    return job.job_id


OWNER = owner_of("reader-key-for-tests")


def upload(name: str) -> str:
    return f"uploads/{OWNER}/{name}"


def object_job(
    url: str, prefix: str, meta: ModelMetadata, name: str, n_rows: int = 0, suffix: str = "csv"
) -> str:
    """A job of the upload `<name>.<suffix>` (its results `results/<name>.<suffix>`), sized
    (`n_rows`) or not yet (0)."""
    return create(
        url,
        prefix,
        meta,
        n_rows=n_rows,
        n_chunks=1 if n_rows else 0,
        input_object=upload(f"{name}.{suffix}"),
        output_object=f"results/{name}.{suffix}",
    )


def runner(
    registry: Registry, meta: ModelMetadata, jobs: JobStore, model: Model, recorder: Recorder
) -> JobRunner:
    settings = Settings(job_chunk_rows=2, local_store_path=registry.store.root)  # type: ignore[attr-defined]
    return JobRunner(settings, jobs, Models(model), registry, recorder, recorder)


def test_a_model_error_fails_the_job_once_and_tells_its_end(setup: Any) -> None:
    registry, meta, jobs, url, prefix = setup
    recorder = Recorder()
    job_id = create(url, prefix, meta, callback_url="https://example.test/cb")
    run = runner(registry, meta, jobs, Model(meta, KeyError("/etc/secret")), recorder)

    outcome = run.run_chunk(job_id, 0, Artifact.of(meta), [[1.0, 2.0], [3.0, 4.0]], None)

    job = jobs.get(job_id)
    assert outcome == "failed" and job is not None and job.state is JobState.FAILED
    assert job.error == {"type": "prediction_failed", "message": "the worker failed with KeyError"}
    assert recorder.sent == [("callback", job_id)]
    assert [(r["request_id"], r["status"]) for r in recorder.rows] == [(job_id, "error")]
    # A redelivered chunk of the failed job does nothing more.
    assert run.run_chunk(job_id, 0, Artifact.of(meta), [[1.0, 2.0]], None) == "ignored"
    assert len(recorder.rows) == 1


def test_an_object_job_is_planned_into_slices_of_the_chunk_size(setup: Any) -> None:
    registry, meta, jobs, url, prefix = setup
    registry.store.put(upload("a.csv"), b"id,alpha,beta\n1,1,2\n2,3,4\n3,5,6\n")
    recorder = Recorder()
    job_id = object_job(url, prefix, meta, "a")
    run = runner(registry, meta, jobs, Model(meta), recorder)

    assert run.prepare(job_id) == 2
    assert [kind for kind, _ in recorder.sent] == ["chunk", "chunk"]
    assert [size for _, (_, size) in recorder.sent] == [2, 1]


def test_a_results_write_that_fails_is_retried_then_fails_the_job(setup: Any) -> None:
    registry, meta, jobs, url, prefix = setup
    recorder = Recorder()
    job_id = object_job(url, prefix, meta, "b", n_rows=1)
    run = runner(registry, meta, jobs, Model(meta), recorder)
    assert run.run_chunk(job_id, 0, Artifact.of(meta), [[1.0, 2.0]], None) == "finalize"
    # A directory where the results object goes: the local store cannot write it.
    (registry.store.root / "results" / "b.csv").mkdir(parents=True)  # type: ignore[attr-defined]

    with pytest.raises(StoreUnavailable, match=r"results/b\.csv"):
        run.finalize(job_id, last_attempt=False)
    assert jobs.get(job_id).state is JobState.RUNNING  # type: ignore[union-attr]
    assert run.finalize(job_id, last_attempt=True) is False

    job = jobs.get(job_id)
    assert job is not None and job.state is JobState.FAILED
    assert job.error is not None and job.error["type"] == "store_unavailable"
    assert recorder.sent == [("finalize", job_id)]


def test_a_redelivered_last_chunk_queues_the_results_write_again(setup: Any) -> None:
    registry, meta, jobs, url, prefix = setup
    recorder = Recorder()
    job_id = object_job(url, prefix, meta, "c", n_rows=1)
    run = runner(registry, meta, jobs, Model(meta), recorder)

    first = run.run_chunk(job_id, 0, Artifact.of(meta), [[1.0, 2.0]], None)
    again = run.run_chunk(job_id, 0, Artifact.of(meta), [[1.0, 2.0]], None)  # writer died
    assert (first, again) == ("finalize", "finalize")
    assert run.finalize(job_id, last_attempt=False) is True

    job = jobs.get(job_id)
    assert job is not None and job.state is JobState.SUCCEEDED
    assert registry.store.get("results/c.csv") == b"row,label,p_a,p_b\r\n0,a,0.5,0.5\r\n"
    assert [r["status"] for r in recorder.rows] == ["ok"]


def test_a_bad_line_fails_the_preparation_naming_it(setup: Any) -> None:
    registry, meta, jobs, url, prefix = setup
    registry.store.put(upload("d.csv"), b"alpha,beta\n1,2\n3,x\n")
    recorder = Recorder()
    job_id = object_job(url, prefix, meta, "d")

    assert runner(registry, meta, jobs, Model(meta), recorder).prepare(job_id) == 0

    job = jobs.get(job_id)
    assert job is not None and job.state is JobState.FAILED
    assert job.error is not None and "line 3" in job.error["message"]
    assert recorder.sent == []


def test_a_parquet_jobs_results_are_parquet_and_bound_to_expire_with_it(setup: Any) -> None:
    import pyarrow.parquet as pq

    registry, meta, jobs, url, prefix = setup
    recorder = Recorder()
    job_id = object_job(url, prefix, meta, "e", n_rows=3, suffix="parquet")
    run = runner(registry, meta, jobs, Model(meta), recorder)
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert run.run_chunk(job_id, 0, Artifact.of(meta), rows, None) == "finalize"

    assert run.finalize(job_id, last_attempt=False) is True

    with registry.store.open("results/e.parquet") as stream:
        table = pq.read_table(stream)
    assert table.to_pylist() == [{"row": i, "label": "a", "p_a": 0.5, "p_b": 0.5} for i in range(3)]
    # Deleted when the job expires: its creation (1000.0) plus the jobs' TTL.
    due_at = jobs.client.zscore(jobs.ops.expiring_key, "results/e.parquet")
    assert due_at == 1000.0 + Settings().job_ttl_seconds


def test_objects_are_deleted_once_due_and_one_that_fails_stays_due(setup: Any) -> None:
    registry, meta, jobs, _, _ = setup
    run = runner(registry, meta, jobs, Model(meta), Recorder())
    for name in ("x", "y"):
        registry.store.put(f"results/{name}.csv", b"row\n")
        jobs.expire_object(f"results/{name}.csv", {"x": 100.0, "y": 200.0}[name])
    (registry.store.root / "results" / "z.csv").mkdir()  # type: ignore[attr-defined]
    jobs.expire_object("results/z.csv", 120.0)  # a folder: the local store cannot delete it

    assert run.expire_objects(150.0) == 1
    assert registry.store.list("results") == ["results/y.csv"]
    assert jobs.due_objects(1e12, 10) == ["results/z.csv", "results/y.csv"]
    assert run.expire_objects(250.0) == 1
    assert registry.store.list("results") == []
    assert jobs.due_objects(1e12, 10) == ["results/z.csv"]  # tried again next round


def test_the_results_url_is_presigned_for_presign_seconds(setup: Any, s3_endpoint: str) -> None:
    from urllib.parse import parse_qs, urlparse

    from tests.common.test_store import make_s3_store

    _, meta, jobs, url, prefix = setup
    settings = Settings(presign_seconds=77)
    s3 = Registry(make_s3_store(s3_endpoint))
    run = JobRunner(settings, jobs, Models(Model(meta)), s3, Recorder(), Recorder())
    job = jobs.get(object_job(url, prefix, meta, "f", n_rows=1))
    assert job is not None

    location = run.output_location(job)

    assert location is not None and "/results/f.csv?" in location
    expires = int(parse_qs(urlparse(location).query)["Expires"][0])
    assert abs(expires - (time.time() + 77)) < 30
