"""`task_context`: what a task's failure does to its message."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis
from celery.exceptions import Reject

from common.errors import InvalidInput
from common.observability import request_id_var
from worker import limits as tasks
from worker.base import redelivered_id


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "REQUEUE_PAUSE_SECONDS", 0)


@pytest.mark.parametrize(
    "error", [redis.ConnectionError("refused"), redis.TimeoutError("timed out")]
)
def test_lost_redis_requeues_the_task(error: redis.RedisError) -> None:
    with pytest.raises(Reject) as caught, tasks.task_context("req-1"):
        raise error
    assert caught.value.requeue is True
    assert caught.value.reason is error


def test_domain_errors_fail_the_task_as_they_are() -> None:
    with pytest.raises(InvalidInput), tasks.task_context("req-2"):
        raise InvalidInput("bad row")


def test_request_id_is_set_inside_and_restored_after() -> None:
    before = request_id_var.get()
    with tasks.task_context("req-3"):
        assert request_id_var.get() == "req-3"
    assert request_id_var.get() == before


@pytest.mark.parametrize(
    ("delivery_info", "expected"),
    [
        ({"redelivered": True, "routing_key": "q"}, "task-1"),
        ({"redelivered": False}, None),
        ({}, None),
        (None, None),
    ],
)
def test_only_redelivered_tasks_are_counted(delivery_info: object, expected: str | None) -> None:
    task = SimpleNamespace(request=SimpleNamespace(id="task-1", delivery_info=delivery_info))
    assert redelivered_id(task) == expected
