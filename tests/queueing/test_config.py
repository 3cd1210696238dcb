"""The Celery configuration built from settings: what redelivery and shutdown rely on."""

from __future__ import annotations

import pytest

from common.settings import Settings
from queueing.config import celery_config


def test_late_acks_survive_crashes_and_connection_loss() -> None:
    config = celery_config(Settings())

    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    # True would lose the running tasks when the broker's Redis (also the result
    # backend) goes away: see the comment in celery_config.
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is False


@pytest.mark.parametrize(
    ("visibility", "hard_limit", "sweep"), [(8, 4, 1), (60, 50, 6), (3600, 60, 10)]
)
def test_unacked_messages_are_swept_every_tenth_of_the_visibility_timeout(
    visibility: int, hard_limit: float, sweep: int
) -> None:
    settings = Settings(
        broker_visibility_timeout_seconds=visibility,
        task_time_limit_seconds=hard_limit,
        task_soft_time_limit_seconds=hard_limit,
    )

    options = celery_config(settings)["broker_transport_options"]

    # kombu scans on every sweep only with a throttle of 1 (its default, 10, makes
    # redelivery after a lost worker up to 100 s late).
    assert options == {
        "visibility_timeout": visibility,
        "unacked_restore_interval": sweep,
        "unacked_restore_throttle": 1,
        "queue_order_strategy": "priority",
    }


@pytest.mark.parametrize("events", [False, True])
def test_task_events_follow_the_setting_and_are_off_by_default(events: bool) -> None:
    assert celery_config(Settings())["worker_send_task_events"] is False

    config = celery_config(Settings(task_events=events))

    # Flower turns the workers' events on itself (tests/integration/test_flower.py).
    assert config["worker_send_task_events"] is events
    assert config["task_send_sent_event"] is events
