"""The Celery configuration for a RabbitMQ broker (`SERVING_BROKER_URL=amqp://...`):
quorum queues, publisher confirms, retries routed to their own queues, and none of the
Redis transport's options."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from celery.utils import worker_direct
from celery.utils.quorum_queues import detect_quorum_queues

from common.settings import Settings
from queueing.config import broker_is_amqp, broker_url, celery_config
from queueing.messages import CALLBACK_TASK, FINALIZE_JOB_TASK, PREDICT_TASK

AMQP = "amqp://serving:secret@rabbit:5672/serving"


def amqp_settings(**fields: Any) -> Settings:
    return Settings(broker_url=AMQP, task_queue="predictions", **fields)


def app_of(settings: Settings) -> Celery:
    app = Celery("test", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


@pytest.mark.parametrize(
    ("url", "amqp"),
    [
        (None, False),  # the broker is redis_url
        ("redis://cache:6379/1", False),
        ("amqp://rabbit//", True),
        ("amqps://rabbit:5671//", True),
        ("pyamqp://rabbit//", True),
    ],
)
def test_the_broker_kind_comes_from_the_url_scheme(url: str | None, amqp: bool) -> None:
    assert broker_is_amqp(Settings(broker_url=url)) is amqp


def test_redis_credentials_are_never_added_to_an_amqp_url() -> None:
    settings = amqp_settings(redis_password="redis-only")
    assert broker_url(settings) == AMQP
    assert celery_config(settings)["broker_url"] == AMQP
    # A Redis broker URL still gets them.
    redis = Settings(broker_url="redis://cache:6379/1", redis_password="redis-only")
    assert celery_config(redis)["broker_url"] == "redis://:redis-only@cache:6379/1"


def test_confirms_on_and_no_redis_transport_options() -> None:
    config = celery_config(amqp_settings())

    assert config["broker_transport_options"] == {"confirm_publish": True}
    # The running tasks' messages are back on their queues once the connection is lost.
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert config["task_acks_late"] is True and config["task_reject_on_worker_lost"] is True


def test_the_three_queues_are_quorum_queues_on_topic_exchanges() -> None:
    queues = celery_config(amqp_settings())["task_queues"]

    names = ["predictions", "predictions.jobs", "predictions.callbacks"]
    assert [q.name for q in queues] == names
    assert [q.routing_key for q in queues] == names
    assert all(q.queue_arguments == {"x-queue-type": "quorum"} for q in queues)
    assert all(q.durable and not q.auto_delete and not q.exclusive for q in queues)
    # Topic, so native delayed delivery can bind them (it skips direct exchanges).
    assert [(q.exchange.name, q.exchange.type) for q in queues] == [(n, "topic") for n in names]


def test_queues_named_alike_are_declared_once() -> None:
    settings = amqp_settings(job_queue="predictions", callback_queue="callbacks")
    assert [q.name for q in celery_config(settings)["task_queues"]] == ["predictions", "callbacks"]


def test_celery_sees_quorum_queues_and_keeps_the_direct_queue_classic() -> None:
    app = app_of(amqp_settings())

    # Celery then turns global QoS off (quorum queues refuse it) and sets up delayed delivery.
    assert detect_quorum_queues(app, "amqp") == (True, "predictions")
    direct = worker_direct("worker@host")
    assert direct.name == "worker@host.dq2" and not direct.queue_arguments
    assert app.amqp.queues["predictions.callbacks"].queue_arguments == {"x-queue-type": "quorum"}


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        (CALLBACK_TASK, "predictions.callbacks"),
        (FINALIZE_JOB_TASK, "predictions.jobs"),
        (PREDICT_TASK, "predictions"),  # the default queue; always sent with its queue
    ],
)
def test_a_retry_without_a_queue_is_routed_to_its_tasks_queue(task: str, queue: str) -> None:
    """A retry carries only the message's exchange and routing key; Celery's router
    would add the default queue, and delayed delivery routes by that queue's key."""
    app = app_of(amqp_settings())
    options = app.amqp.router.route({"exchange": "x", "routing_key": "y"}, task)
    assert options["queue"].name == queue


def test_an_explicit_queue_wins_over_the_routes() -> None:
    app = app_of(amqp_settings())
    options = app.amqp.router.route({"queue": "predictions"}, CALLBACK_TASK)
    assert options["queue"].name == "predictions"


def test_redis_gets_no_amqp_options() -> None:
    config = celery_config(Settings())

    assert "task_queues" not in config and "task_routes" not in config
    assert "confirm_publish" not in config["broker_transport_options"]
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is False
