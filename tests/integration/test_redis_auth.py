"""Redis with an ACL user and a password, given through settings (issue 6, "Also").

The private Redis refuses unauthenticated clients (its default user is off) and lets the
`serving` user run everything but the dangerous commands (FLUSHALL, CONFIG, KEYS, ...).
Broker, result backend and cache sit in three databases, to show they separate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from dev.services import ManagedProcess, free_port, start_redis
from tests.integration.stack import Stack
from tests.integration.test_jobs import rows

pytestmark = pytest.mark.integration

USER = "serving"
PASSWORD = "s3cret:with@odd/chars"


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    acl = [
        "--user", "default", "off",
        "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all", "-@dangerous",
    ]  # fmt: skip
    proc: ManagedProcess
    proc, _ = start_redis(tmp_path / "redis", port, extra_args=acl)
    yield port
    proc.stop()


def test_stack_runs_on_a_redis_with_an_acl_user(
    make_stack: Callable[..., Stack], acl_redis: int
) -> None:
    base = f"redis://127.0.0.1:{acl_redis}"
    anonymous = redis.Redis(port=acl_redis)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    stack = make_stack(
        "acl",
        redis_url=f"{base}/0",
        result_backend_url=f"{base}/1",
        cache_url=f"{base}/2",
        redis_username=USER,
        redis_password=PASSWORD,
    )
    _, data = rows(3, 0.123)
    with stack.client() as client:
        first = client.post("/predict", json={"input_data": data})
        again = client.post("/predict", json={"input_data": data})
        job = client.post("/jobs", json={"input_data": data})
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 30
        while client.get(job.json()["status_url"]).json()["status"] != "succeeded":
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.1)
        health = client.get("/")
    assert first.status_code == 200, first.text
    assert again.json()["cached"] is True and first.json()["cached"] is False
    assert health.status_code == 200 and health.json()["worker"] is True

    def keys(db: int) -> list[str]:
        conn = redis.Redis(port=acl_redis, db=db, username=USER, password=PASSWORD)
        return [key.decode() for key in conn.scan_iter(count=1000)]

    assert any(key.startswith("_kombu.binding.") for key in keys(0))
    assert any(key.startswith("celery-task-meta-") for key in keys(1))
    assert any(key.startswith("acl:") for key in keys(2))
    assert not any(key.startswith("celery-task-meta-") for key in keys(2))
    assert PASSWORD not in stack.logs_text()
    stack.stop()  # while its Redis still runs: a worker without one waits out its grace
