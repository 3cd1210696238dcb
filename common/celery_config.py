"""Celery configuration as plain data, shared by the worker and the API's producer.

Kept free of Celery imports so `common/` stays framework-neutral; each side builds its
own `Celery` object from it (the API without a result backend: it awaits results on
Redis itself, and a producer-side backend would subscribe to every task's channel).
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


def use_orjson_codec() -> None:
    """Kombu's "json" codec, with orjson doing the work: the same JSON on the wire.

    The standard library's encoder was a third of the API's CPU on 1,000-row requests.
    Values orjson cannot encode, and payloads carrying kombu's type tags, go through
    kombu's own functions, so nothing Celery sends is encoded or decoded differently."""
    import orjson

    # kombu (Celery's messaging library, present on both sides) is imported here only,
    # when a side builds its Celery app, so importing common/ never pulls it in.
    from kombu.serialization import register
    from kombu.utils import json as kombu_json

    def dumps(value: Any) -> str:
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            return str(kombu_json.dumps(value))  # type: ignore[no-untyped-call]

    def loads(data: bytes | str | memoryview) -> Any:
        raw = bytes(data) if isinstance(data, memoryview) else data
        tagged = b'"__type__"' in raw if isinstance(raw, bytes) else '"__type__"' in raw
        return kombu_json.loads(raw) if tagged else orjson.loads(raw)  # type: ignore[no-untyped-call]

    register(  # type: ignore[no-untyped-call]
        "json", dumps, loads, content_type="application/json", content_encoding="utf-8"
    )
