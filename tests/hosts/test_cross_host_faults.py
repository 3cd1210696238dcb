"""A worker host cut off (link down) while load runs, on the multi-host bed (dev/hosts):
its tasks are delivered again to the other hosts, every request is answered once, every
job completes, and PostgreSQL holds exactly one log row per request and per job."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from api.examples import EXAMPLE_ROW
from common.training import DEMO_TYPES, TrainedModel, train_demo
from dev.hosts.bed import KEY, BedPlan, TestBed, publish_models
from tests.hosts.models import Call, TracedModel, started_calls

pytestmark = pytest.mark.usefixtures("hosts_or_skip")

SECONDS_PER_CALL = 0.4
VISIBILITY = 10  # seconds before a message taken and never acknowledged is delivered again
SWEEP = 1  # how often the live workers look for such messages (queueing/config.py)
REQUESTS, CLIENTS = 90, 12
JOBS, JOB_ROWS, CHUNK_ROWS = 3, 30, 10
CUT = "worker1"


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    tmp = tmp_path_factory.mktemp("bed")
    plan = BedPlan(
        worker_hosts=3,
        worker_cpus=0.5,
        worker_concurrency=1,
        settings={
            "allow_unsafe_pickle": True,
            "cache_ttl_seconds": 0,  # every request reaches a worker
            "task_soft_time_limit_seconds": 6,
            "task_time_limit_seconds": 8,
            "broker_visibility_timeout_seconds": VISIBILITY,
            "predict_timeout_seconds": 60,  # longer than a redelivery: no 202 fallback
            "job_chunk_rows": CHUNK_ROWS,
        },
    )
    models = {model_type: train_demo(model_type) for model_type in DEMO_TYPES}
    publish = publish_models(models, extra=lambda registry: traced(registry, models, tmp))
    with TestBed(plan, work_dir=tmp) as bed:
        yield bed.start(publish)


def traced(registry: Any, models: dict[str, TrainedModel], tmp: Path) -> None:
    metadata = models["xgboost"].metadata | {"model_type": "traced", "artifact_format": "pickle"}
    registry.publish(metadata, pickle.dumps(TracedModel(tmp / "calls", SECONDS_PER_CALL)))


def rows(first: int, n: int) -> list[dict[str, float]]:
    """n rows, each with its own value of the first feature: calls tell them apart."""
    feature = next(iter(EXAMPLE_ROW))
    return [EXAMPLE_ROW | {feature: 1000.0 + first + i} for i in range(n)]


async def load(bed: TestBed) -> dict[str, Any]:
    """REQUESTS one-row predictions from CLIENTS connections, and JOBS jobs."""
    answers: list[tuple[int, str, Any]] = []
    numbers = iter(range(REQUESTS))
    headers = {"X-API-Key": KEY}
    async with httpx.AsyncClient(base_url=bed.api_url, headers=headers, timeout=90) as client:
        jobs = [await submit(client, rows(10_000 * (j + 1), JOB_ROWS)) for j in range(JOBS)]

        async def connection() -> None:
            for n in numbers:
                body = {"input_data": rows(n, 1)[0]}
                response = await client.post("/predict/traced/1", json=body)
                answers.append(
                    (
                        response.status_code,
                        response.headers.get("x-request-id", ""),
                        response.json(),
                    )
                )

        await asyncio.gather(*(connection() for _ in range(CLIENTS)))
        finished = [await wait_for_job(client, job["status_url"]) for job in jobs]
    return {"answers": answers, "jobs": finished}


async def submit(client: httpx.AsyncClient, data: list[dict[str, float]]) -> dict[str, Any]:
    body = {"input_data": data, "model_type": "traced", "version": "1"}
    response = await client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


async def wait_for_job(client: httpx.AsyncClient, url: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (await client.get(url)).json()
        if status["status"] in {"succeeded", "failed", "cancelled"}:
            return dict(status)
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never ended: {status}")


def test_a_host_cut_off_mid_load_loses_nothing_and_answers_once(bed: TestBed) -> None:
    marker = bed.work_dir / "calls"
    cut_pids = set(bed.caps[CUT].pids())
    outcome: dict[str, Any] = {}
    loader = threading.Thread(
        target=lambda: outcome.update(bed.run_on(bed.client, lambda: asyncio.run(load(bed)))),
        daemon=True,
    )
    loader.start()
    stranded = wait_for_a_call_on(marker, cut_pids)
    assert_only_bed_connections(bed, CUT)
    bed.cut(CUT)
    cut_at = time.monotonic()
    loader.join(240)
    assert not loader.is_alive(), "the load never finished"
    assert "answers" in outcome, outcome

    # Every request answered once, with the model's answer; every job completed.
    answers = outcome["answers"]
    assert len(answers) == REQUESTS
    assert all(status == 200 for status, _, _ in answers), [a for a in answers if a[0] != 200]
    assert all(
        body["predictions"][0]["probabilities"] == {"malignant": 0.25, "benign": 0.75}
        for _, _, body in answers
    )
    request_ids = [request_id for _, request_id, _ in answers]
    assert len(set(request_ids)) == REQUESTS
    for job in outcome["jobs"]:
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"rows_done": JOB_ROWS, "rows_total": JOB_ROWS}

    # The call the cut host was running started again on another host, once the message
    # was VISIBILITY s unacknowledged (live workers look every SWEEP s).
    again = [
        call
        for call in started_calls(marker)
        if call.value == stranded.value and call.pid not in cut_pids
    ]
    assert again, f"the call {stranded} was never delivered to another host"
    delay = again[0].at - stranded.at
    print(
        f"{CUT} cut off mid-call; its task started again on another host {delay:.1f} s "
        f"after it first started (visibility timeout {VISIBILITY} s); the load ended "
        f"{time.monotonic() - cut_at:.1f} s after the cut"
    )
    # From the call's start, not its delivery (it may have waited reserved): so not a full
    # VISIBILITY; at most a sweep or two late, with slack for a busy machine.
    assert VISIBILITY / 2 <= delay <= VISIBILITY + 3 * SWEEP + 5

    job_ids = [job["job_id"] for job in outcome["jobs"]]
    assert log_counts(bed, request_ids + job_ids) == {i: 1 for i in request_ids + job_ids}

    # Plugged back in, the cut host finishes what it held: nothing is answered or logged twice.
    bed.reconnect(CUT)
    back = time.monotonic()
    while bed.ping(CUT).returncode != 0:  # each ping waits for its answer a while
        assert time.monotonic() - back < 120, bed.processes[CUT].log_tail()
    print(f"{CUT} took tasks again {time.monotonic() - back:.1f} s after it was plugged back in")
    assert log_counts(bed, request_ids + job_ids) == {i: 1 for i in request_ids + job_ids}


def wait_for_a_call_on(marker: Path, pids: set[int], timeout: float = 60) -> Call:
    """The first call a process of `pids` started (it is running now: calls take a while)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine = [call for call in started_calls(marker) if call.pid in pids]
        if mine:
            return mine[-1]
        time.sleep(0.01)
    raise AssertionError(f"no call started on {CUT} within {timeout} s")


def assert_only_bed_connections(bed: TestBed, host: str) -> None:
    """The worker host's TCP connections go over the bridge, to the services host (Redis,
    S3, PostgreSQL): none to its own loopback, none anywhere else."""
    pid = bed.processes[host].pid
    table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    established = [line.split() for line in table if line.split()[3] == "01"]
    remotes = {_address(fields[2]) for fields in established}
    assert remotes, "the worker holds no connection at all"
    assert remotes <= {bed.services.address}, remotes


def _address(hex_address: str) -> str:
    """/proc/net/tcp's `0A4D000A:18EB` (little-endian IPv4, port) -> "10.77.0.10"."""
    packed = bytes.fromhex(hex_address.split(":")[0])
    return ".".join(str(b) for b in reversed(packed))


def log_counts(bed: TestBed, request_ids: list[str]) -> dict[str, int]:
    """Rows per request id in the bed's PostgreSQL, read from the services host."""

    def count() -> dict[str, int]:
        engine = sa.create_engine(bed.fields["database_url"])
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    sa.text(
                        "SELECT request_id, count(*) FROM prediction_log"
                        " WHERE request_id = ANY(:ids) GROUP BY request_id"
                    ),
                    {"ids": request_ids},
                )
                return {str(request_id): int(n) for request_id, n in found}
        finally:
            engine.dispose()

    return bed.run_on(bed.services, count)
