"""worker.result_backend on a real Redis: one round trip per result, published to the
API's channel, and a success that a later run of the same task never overwrites."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import redis
from celery import states

from common.settings import Settings
from worker.celery_app import create_celery
from worker.result_backend import CACHE_WRITES, ResultBackend

pytestmark = pytest.mark.integration


def calls(client: redis.Redis, name: str) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


@pytest.fixture
def backend(redis_db_url: str) -> Iterator[ResultBackend]:
    settings = Settings(redis_url=redis_db_url, result_expires_seconds=120)
    app = create_celery(settings)
    assert isinstance(app.backend, ResultBackend)
    yield app.backend
    app.backend.client.connection_pool.disconnect()


@pytest.fixture
def client(redis_db_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_db_url) as client:
        yield client


def stored(client: redis.Redis, task_id: str) -> dict[str, Any]:
    return orjson.loads(client.get(f"celery-task-meta-{task_id}"))  # type: ignore[arg-type]


def test_a_result_is_stored_and_published_in_one_script_call(
    backend: ResultBackend, client: redis.Redis
) -> None:
    listener = client.pubsub()
    listener.subscribe("celery-task-meta-t1")
    listener.get_message(timeout=1)  # the subscribe confirmation
    backend.store_result("warm-up", None, states.SUCCESS)  # loads the script into Redis
    names = ("evalsha", "eval", "multi", "exec", "setex")
    before = {name: calls(client, name) for name in names}

    backend.store_result("t1", {"labels": ["a"]}, states.SUCCESS)

    sent = {name: calls(client, name) - before[name] for name in names}
    # Celery's own backend sends GET, then MULTI, SETEX, PUBLISH, EXEC: two round trips.
    # Here one script call does it all (Redis counts the GET, SET and PUBLISH it makes too).
    assert sent == {"evalsha": 1, "eval": 0, "multi": 0, "exec": 0, "setex": 0} or sent == {
        "evalsha": 0,
        "eval": 1,
        "multi": 0,
        "exec": 0,
        "setex": 0,
    }
    meta = stored(client, "t1")
    assert (meta["status"], meta["result"], meta["task_id"]) == ("SUCCESS", {"labels": ["a"]}, "t1")
    assert 100 < client.ttl("celery-task-meta-t1") <= 120
    message = listener.get_message(timeout=2)
    assert message is not None and orjson.loads(message["data"])["status"] == "SUCCESS"
    assert backend.get_task_meta("t1")["result"] == {"labels": ["a"]}  # Celery reads it back
    listener.close()


def test_a_later_run_never_overwrites_a_success(
    backend: ResultBackend, client: redis.Redis
) -> None:
    backend.store_result("t2", {"labels": ["first"]}, states.SUCCESS)
    backend.store_result("t2", RuntimeError("a rerun failed"), states.FAILURE)
    backend.store_result("t2", {"labels": ["second"]}, states.SUCCESS)
    assert stored(client, "t2")["result"] == {"labels": ["first"]}


def test_a_failure_can_be_replaced_by_a_later_success(
    backend: ResultBackend, client: redis.Redis
) -> None:
    backend.store_result("t3", RuntimeError("first run failed"), states.FAILURE)
    assert stored(client, "t3")["status"] == "FAILURE"
    backend.store_result("t3", {"labels": ["b"]}, states.SUCCESS)
    assert stored(client, "t3")["result"] == {"labels": ["b"]}


def test_a_success_writes_the_cache_entries_its_request_carries_before_the_publish(
    backend: ResultBackend, client: redis.Redis
) -> None:
    listener = client.pubsub()
    listener.subscribe("celery-task-meta-t4")
    listener.get_message(timeout=1)
    request = SimpleNamespace(**{CACHE_WRITES: [("pred:a", 300, b'{"a":1}'), ("pred:b", 60, b"2")]})

    backend.store_result("t4", {"labels": ["a", "b"]}, states.SUCCESS, request=request)

    message = listener.get_message(timeout=2)
    assert message is not None and orjson.loads(message["data"])["status"] == "SUCCESS"
    assert (client.get("pred:a"), client.get("pred:b")) == (b'{"a":1}', b"2")
    assert 290 < client.ttl("pred:a") <= 300 and 50 < client.ttl("pred:b") <= 60
    listener.close()


def test_no_cache_entry_is_written_for_a_failure_or_over_a_success(
    backend: ResultBackend, client: redis.Redis
) -> None:
    failed = SimpleNamespace(**{CACHE_WRITES: [("pred:c", 300, b"failed")]})
    backend.store_result("t5", RuntimeError("the model failed"), states.FAILURE, request=failed)
    assert client.get("pred:c") is None

    backend.store_result("t6", {"labels": ["first"]}, states.SUCCESS)
    rerun = SimpleNamespace(**{CACHE_WRITES: [("pred:d", 300, b"rerun")]})
    backend.store_result("t6", {"labels": ["rerun"]}, states.SUCCESS, request=rerun)
    assert client.get("pred:d") is None  # the first run's answer stands, and only it
    assert stored(client, "t6")["result"] == {"labels": ["first"]}
