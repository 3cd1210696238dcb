"""Celery configuration as plain data, shared by the worker and the API's producer.

Each side builds its own `Celery` object from it (the API without a result backend: it
awaits results on Redis itself, and a producer-side backend would subscribe to every
task's channel).
"""

from __future__ import annotations

from typing import Any

from common.settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.effective_broker_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
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
        # Task events for Flower (and anyone else watching the broker).
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_soft_time_limit": settings.task_soft_time_limit_seconds,
        "task_time_limit": settings.task_time_limit_seconds,
        "result_expires": settings.result_expires_seconds,
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
        "broker_connection_retry_on_startup": True,
        # A worker never gives up on the broker (Celery's default stops after 100 tries):
        # it reconnects, at most 30 s apart, whenever Redis comes back.
        "broker_connection_max_retries": None,
        # Not Celery 6's True: cancelling a task on a lost broker connection first marks
        # it for retry in the result backend, which is the same Redis and just as gone; the
        # cancel then fails after killing the pool process, and the task is acknowledged
        # as revoked: lost (celery#7185; seen in test_redis_outage). Left running, it is
        # delivered again (at the latest after the visibility timeout); runs are idempotent.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
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
    }


def restore_sweep_seconds(settings: Settings) -> int:
    """How often a worker looks for unacknowledged messages past the visibility timeout."""
    return max(1, min(10, settings.broker_visibility_timeout_seconds // 10))


def worker_queues(settings: Settings) -> list[str]:
    """The queues a worker consumes, most urgent first (see `queue_order_strategy`):
    synchronous predictions, then job work. Never callbacks: a receiver that is slow to
    answer would hold a pool process a prediction is waiting for."""
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
