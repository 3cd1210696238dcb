"""Celery's result record, decoded in one place: by the API's listener, by the jobs that
settle a deferred prediction, and by the worker's sweeper.

Celery's Redis backend stores a task's result as JSON under `celery-task-meta-<id>` and
publishes it on a channel of the same name. A record that is not JSON, or not a final
state, is treated as no result yet: one bad message must never stop a listener.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from common import errors

log = logging.getLogger(__name__)

RESULT_KEY_PREFIX = "celery-task-meta-"
# While this key exists, the task's result is kept as long as it does (a deferred
# prediction's job needs the result for the job's whole lifetime, not Celery's hour).
KEEP_KEY_PREFIX = "celery-task-keep-"
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


def result_key(task_id: str) -> str:
    return RESULT_KEY_PREFIX + task_id


def keep_key(task_id: str) -> str:
    return KEEP_KEY_PREFIX + task_id


@dataclass(frozen=True)
class TaskResult:
    """A task's final state: its JSON result, or the domain error it ended with."""

    status: str
    result: Any

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"

    def value(self) -> dict[str, Any]:
        """The task's JSON result, or raise the domain error it ended with; never a
        Celery state or foreign text."""
        if self.succeeded:
            return self.result  # type: ignore[no-any-return]
        raise self.error()

    def error(self) -> errors.ServingError:
        failure = self.result if isinstance(self.result, dict) else {}
        if self.status == "FAILURE" and "exc_type" in failure:
            return errors.from_task_failure(
                str(failure["exc_type"]), failure.get("exc_message"), failure.get("exc_module")
            )
        return errors.PredictionFailed("the prediction task was cancelled or lost")


def decode(raw: bytes | str | None) -> TaskResult | None:
    """The final result in a stored or published record, else None (none yet, not final,
    or not a record at all)."""
    if raw is None:
        return None
    try:
        meta = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("ignored a result record that is not JSON (%d bytes)", len(raw))
        return None
    status = meta.get("status") if isinstance(meta, dict) else None
    if not isinstance(status, str) or status not in FINAL_STATES:
        return None  # also a status of another type (a list is not even hashable)
    return TaskResult(status, meta.get("result"))
