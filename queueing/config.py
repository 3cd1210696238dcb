"""Celery configuration as plain data, shared by the worker and the API's producer.

Each side builds its own `Celery` object from it (the API without a result backend: it
awaits results on Redis itself, and a producer-side backend would subscribe to every
task's channel). The broker is Redis, or RabbitMQ when `SERVING_BROKER_URL` is an
`amqp://` URL; results, the cache and job state stay on Redis either way.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kombu.entity import Exchange, Queue

from common.settings import Settings
from queueing.messages import CALLBACK_TASK, FINALIZE_JOB_TASK
from queueing.redis_transport import TRANSPORT_PATH

AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})


def broker_is_amqp(settings: Settings) -> bool:
    return urlsplit(settings.broker_url or "").scheme in AMQP_SCHEMES


def broker_url(settings: Settings) -> str:
    """An AMQP URL as written (`redis_username` and `redis_password` are Redis's
    credentials; RabbitMQ's go in the URL), a Redis URL with them added."""
    if broker_is_amqp(settings):
        assert settings.broker_url is not None
        return settings.broker_url
    return settings.effective_broker_url


def celery_config(settings: Settings) -> dict[str, Any]:
    broker = amqp_options(settings) if broker_is_amqp(settings) else redis_options(settings)
    return {
        "broker_url": broker_url(settings),
        "task_serializer": "json",
        "result_serializer": "json",
        # msgpack: predictions of float features carry their rows packed, as raw bytes
        # (queueing.packed_rows); everything else is JSON.
        "accept_content": ["json", "msgpack"],
        "result_accept_content": ["json"],
        "task_default_queue": settings.task_queue,
        # Acknowledged after it ran, reserved one at a time: a crashed worker's task goes
        # back to the queue instead of being lost.
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        # A pool process killed mid-task (OOM, SIGKILL) puts its task back on the queue
        # instead of acknowledging it as failed. Tasks are idempotent: a chunk or a
        # request is recorded once however often it runs.
        "task_reject_on_worker_lost": True,
        # Task events only while someone watches: Flower enables them in the workers
        # itself (`enable_events`, every 5 s); SERVING_TASK_EVENTS=true sends them always.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "task_soft_time_limit": settings.task_soft_time_limit_seconds,
        "task_time_limit": settings.task_time_limit_seconds,
        "result_expires": settings.result_expires_seconds,
        "broker_connection_retry_on_startup": True,
        # A worker never gives up on the broker (Celery's default stops after 100 tries):
        # it reconnects, at most 30 s apart, whenever the broker comes back.
        "broker_connection_max_retries": None,
        # Each worker also consumes its own queue (`<node name>.dq2`), so a health check
        # can send a ping task to one particular worker (`python -m worker.ping`).
        "worker_direct": True,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.1,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        **broker,
    }


def redis_options(settings: Settings) -> dict[str, Any]:
    scheme = urlsplit(settings.effective_broker_url).scheme
    # One client per channel, not one per acknowledgement (queueing.redis_transport).
    transport = {"broker_transport": TRANSPORT_PATH} if scheme == "redis" else {}
    return {
        **transport,
        # A message that a worker took and never acknowledged (the whole worker was
        # killed, or its host died) goes back to the queue once it is `visibility_timeout`
        # old, when a live worker next sweeps the broker's unacked set. kombu sweeps every
        # `unacked_restore_interval` s but scans only on every `unacked_restore_throttle`-th
        # sweep: 10 x 10 s by default, so up to 100 s late. Sweep every tenth of the
        # visibility timeout (1 to 10 s), scanning each time: one ZRANGE per worker.
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout_seconds,
            "unacked_restore_interval": restore_sweep_seconds(settings),
            "unacked_restore_throttle": 1,
            # Consume the queues in the order the worker lists them (`worker_queues`):
            # a waiting synchronous prediction is always taken before the next job chunk.
            # kombu's default, round robin, alternates between them.
            "queue_order_strategy": "priority",
        },
        # Not Celery 6's True: cancelling a task on a lost broker connection first marks
        # it for retry in the result backend, which is the same Redis and just as gone; the
        # cancel then fails after killing the pool process, and the task is acknowledged
        # as revoked: lost (celery#7185; seen in test_redis_outage). Left running, it is
        # delivered again (at the latest after the visibility timeout); runs are idempotent.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def amqp_options(settings: Settings) -> dict[str, Any]:
    """RabbitMQ: quorum queues (replicated, durable), publisher confirms, and none of
    the Redis transport's options (RabbitMQ tracks unacknowledged messages itself: a
    consumer's closed connection returns them at once, no visibility timeout)."""
    return {
        # basic.publish waits for the broker's confirm: a task the API was told is
        # queued is on the queue's quorum, not in a socket buffer.
        "broker_transport_options": {"confirm_publish": True},
        "task_queues": amqp_queues(settings),
        # A Celery retry (finalize's, a callback's backoff) carries no queue of its own:
        # with native delayed delivery it would go to the default (prediction) queue.
        "task_routes": {
            FINALIZE_JOB_TASK: {"queue": settings.effective_job_queue},
            CALLBACK_TASK: {"queue": settings.effective_callback_queue},
        },
        # Celery 6's default: a lost connection has already returned the running tasks'
        # messages to their queues (RabbitMQ requeues a closed channel's deliveries), so
        # they are stopped rather than run twice at once; the result backend, on Redis,
        # is still there to record the cancel.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
    }


def amqp_queues(settings: Settings) -> list[Queue]:
    """The prediction, job and callback queues as quorum queues. Each has a topic
    exchange of its own, so Celery's native delayed delivery (used by the retries'
    countdown: a quorum queue has no global QoS to hold delayed messages in the worker)
    can route a delayed task back to it. Never the workers' direct queues, which Celery
    declares itself (classic queues)."""
    names = dict.fromkeys(
        [settings.task_queue, settings.effective_job_queue, settings.effective_callback_queue]
    )
    return [_quorum_queue(name) for name in names]


def _quorum_queue(name: str) -> Queue:
    exchange = Exchange(name, type="topic")  # type: ignore[no-untyped-call]
    arguments = {"x-queue-type": "quorum"}
    return Queue(name, exchange, routing_key=name, queue_arguments=arguments)  # type: ignore[no-untyped-call]


def restore_sweep_seconds(settings: Settings) -> int:
    """How often a worker looks for unacknowledged messages past the visibility timeout."""
    return max(1, min(10, settings.broker_visibility_timeout_seconds // 10))


def worker_queues(settings: Settings) -> list[str]:
    """The queues a worker consumes, most urgent first (see `queue_order_strategy`):
    synchronous predictions, then job work. Never callbacks: a receiver that is slow to
    answer would hold a pool process a prediction is waiting for. (RabbitMQ has no such
    order: each queue is a consumer of its own, served as messages arrive.)"""
    return [settings.task_queue, settings.effective_job_queue]


def callback_worker_options(settings: Settings) -> list[str]:
    """`celery worker` options of the callback worker (`python -m worker --callbacks`):
    the callback queue alone, on threads, since a delivery mostly waits on the network.
    With `worker_prefetch_multiplier` 1 it reserves at most `callback_concurrency`
    deliveries, each acknowledged once done (`task_acks_late`)."""
    return [
        "-Q",
        settings.effective_callback_queue,
        "--pool",
        "threads",
        "--concurrency",
        str(settings.callback_concurrency),
    ]
