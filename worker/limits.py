"""What wraps every task's work: its request id in the logs, Redis outages sent back to
the queue, and Celery's soft time limit turned into a domain error."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import redis
from celery.exceptions import Reject, SoftTimeLimitExceeded

from common.errors import PredictionTimeLimit
from common.observability import request_id_var
from common.settings import Settings

log = logging.getLogger(__name__)
REQUEUE_PAUSE_SECONDS = 1.0


@contextlib.contextmanager
def task_context(request_id: str) -> Iterator[None]:
    """Log lines carry `request_id`; losing Redis mid-task puts the task back on the queue.

    A task that cannot reach Redis (job state, cache, attempt counter) has not done its
    work: it is rejected with requeue, never acknowledged as failed, so it runs again once
    Redis is back (or, if the broker is gone too, after the visibility timeout). Every
    task is idempotent, so a run that got halfway is harmless."""
    token = request_id_var.set(request_id)
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("Redis unavailable (%s); the task goes back to the queue", exc)
        time.sleep(REQUEUE_PAUSE_SECONDS)  # no hot loop while only the backend is down
        raise Reject(exc, requeue=True) from exc
    finally:
        request_id_var.reset(token)


@contextlib.contextmanager
def soft_time_limit_as_error(settings: Settings) -> Iterator[None]:
    """Celery raises SoftTimeLimitExceeded inside a task past its soft time limit: it
    becomes a domain error, so the request is logged and answered as a time limit."""
    try:
        yield
    except SoftTimeLimitExceeded:
        raise PredictionTimeLimit.after(settings.task_soft_time_limit_seconds, hard=False) from None
