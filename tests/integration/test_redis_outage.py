"""Redis going away and coming back (issue 6, scenarios 4 and 5).

Each test runs its own Redis with an fsynced append-only file, as the compose file's does,
so a restart on the same port and folder keeps the queue and the jobs: what the test
checks is the stack, not Redis' durability."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from common.training import TrainedModel
from dev.services import ManagedProcess, free_port, start_redis, wait_until
from tests.integration.stack import Stack, stack_fields
from tests.integration.test_jobs import rows

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 4.0
# Fast failure while Redis is down: a refused connection, plus the producer's retries.
FAST = 3.0


class PrivateRedis:
    """A Redis that can be stopped and started again on the same port and folder."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: ManagedProcess | None = None

    def start(self) -> None:
        self.proc, _ = start_redis(self.work_dir, self.port, appendonly=True)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path / "redis")
    yield redis
    redis.stop()


# A visibility timeout short enough that a task caught by the outage is redelivered within
# the test; the time limits stay above Celery's own retries of a result write (~20 s).
LIMITS = {
    "task_soft_time_limit_seconds": 25,
    "task_time_limit_seconds": 30,
    "broker_visibility_timeout_seconds": 32,
    "predict_timeout_seconds": 6,
    "job_chunk_rows": 250,
}
JOB_ROWS = 5000  # 20 chunks each: the outage finds them queued or running


class SyncLoad(threading.Thread):
    """Sync predictions with distinct rows, one after another, recording what came back."""

    def __init__(self, stack: Stack, offset: float) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.offset = offset
        self.stopping = threading.Event()
        self.answers: list[tuple[float, int, float]] = []  # (sent at, status, seconds)
        self.deferred: list[str] = []  # status URLs of requests that became jobs (202)

    def run(self) -> None:
        with self.stack.client() as client:
            n = 0
            while not self.stopping.is_set():
                n += 1
                _, data = rows(1, self.offset + n * 1e-3)
                sent = time.monotonic()
                try:
                    response = client.post("/predict", json={"input_data": data})
                    status = response.status_code
                    if status == 202:
                        self.deferred.append(response.json()["status_url"])
                except httpx.HTTPError:
                    status = 0  # no answer at all: what the test forbids
                self.answers.append((sent, status, time.monotonic() - sent))

    def stop(self) -> list[tuple[float, int, float]]:
        self.stopping.set()
        self.join(60)
        return self.answers


def wait_for_job(client: httpx.Client, url: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        response = client.get(url)
        if response.status_code == 200:
            body = response.json()
            if body["status"] in {"succeeded", "failed", "cancelled"}:
                return body
        time.sleep(0.2)
    raise AssertionError(f"job {url} not finished after {timeout} s: {body}")


def test_redis_restart_under_load(
    make_stack: Callable[..., Stack], private_redis: PrivateRedis
) -> None:
    private_redis.start()
    stack = make_stack("outage", redis_url=private_redis.url, **LIMITS)
    with stack.client() as client:
        accepted = []
        for i in range(3):
            _, data = rows(JOB_ROWS, 0.31 + i)
            submitted = client.post("/jobs", json={"input_data": data})
            assert submitted.status_code == 202, submitted.text
            accepted.append(submitted.json()["status_url"])
        loads = [SyncLoad(stack, 0.71 + i * 0.01) for i in range(4)]
        for load in loads:
            load.start()
        time.sleep(0.3)
        before = [client.get(url).json()["progress"]["rows_done"] for url in accepted]
        private_redis.stop()
        down_at = time.monotonic()
        during: list[tuple[str, int, float]] = []
        while time.monotonic() - down_at < OUTAGE_SECONDS:
            for method, path, body in (
                ("POST", "/predict", {"input_data": rows(1, 0.91 + len(during))[1]}),
                ("POST", "/jobs", {"input_data": rows(3, 0.93)[1]}),
                ("GET", "/", None),
            ):
                sent = time.monotonic()
                response = client.request(method, path, json=body)
                during.append((path, response.status_code, time.monotonic() - sent))
                if path == "/" and sent - down_at < 1.1:
                    continue  # GET / may answer its check of up to a second ago
                assert response.status_code == 503, (path, response.text)
                assert response.json().get("error", {}).get("type", "degraded") in {
                    "backend_unavailable",
                    "degraded",
                }

        private_redis.start()
        up_at = time.monotonic()
        wait_until(lambda: client.get("/").status_code == 200, 30, "workers consuming again")
        _, data = rows(1, 0.97)
        after = client.post("/predict", json={"input_data": data})
        back_in = time.monotonic() - up_at
        answers = [answer for load in loads for answer in load.stop()]
        _, data = rows(250, 0.99)
        late = client.post("/jobs", json={"input_data": data})
        assert late.status_code == 202, late.text
        accepted.append(late.json()["status_url"])
        accepted.extend(url for load in loads for url in load.deferred)
        # A chunk caught mid-run by the outage comes back after the visibility timeout.
        finished = [wait_for_job(client, url, 60) for url in accepted]

    assert after.status_code == 200, after.text
    assert back_in < 30
    slowest = max(seconds for _, _, seconds in during)
    assert slowest < FAST, during
    statuses = {status for _, status, _ in answers}
    assert statuses <= {200, 202, 503}, answers
    assert all(seconds < LIMITS["predict_timeout_seconds"] + FAST for _, _, seconds in answers)
    assert [job["status"] for job in finished] == ["succeeded"] * len(accepted), finished
    assert [job["progress"] for job in finished[:4]] == [
        {"rows_done": n, "rows_total": n} for n in (JOB_ROWS, JOB_ROWS, JOB_ROWS, 250)
    ]
    print(
        f"outage: {len(during)} requests, slowest {slowest * 1000:.0f} ms; predictions "
        f"again {back_in:.1f} s after Redis; load: {len(answers)} requests, "
        f"{sorted(statuses)}; {len(accepted)} jobs all succeeded (rows done at the "
        f"outage: {before})"
    )


def test_services_started_before_redis_connect_when_it_arrives(
    tmp_path: Path,
    redis_url: str,
    s3_endpoint: str,
    demo_models: dict[str, TrainedModel],
    private_redis: PrivateRedis,
) -> None:
    fields = stack_fields("early", redis_url, s3_endpoint, tmp_path, 0)
    stack = Stack("early", fields | {"redis_url": private_redis.url}, tmp_path)
    stack.publish_demo(demo_models)
    stack.start_worker("worker-early")
    try:
        stack.start_api()
        wait_until(lambda: _answers(stack), 30, "the API without Redis")
        with stack.client() as client:
            assert client.get("/").status_code == 503
            refused = client.post("/predict", json={"input_data": rows(1, 0.5)[1]})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["type"] == "backend_unavailable"
            time.sleep(2)
            assert all(proc.alive() for proc in stack.processes), stack.logs_text()[-3000:]

            private_redis.start()
            wait_until(lambda: client.get("/").status_code == 200, 30, "stack after Redis")
            _, data = rows(2, 0.55)
            answer = client.post("/predict", json={"input_data": data})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 2
    finally:
        stack.stop()


def _answers(stack: Stack) -> bool:
    try:
        httpx.get(stack.url + "/healthz", timeout=2)
        return True
    except httpx.HTTPError:
        return False
