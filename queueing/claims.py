"""A claim check for a big batch's packed rows: the rows wait in the result backend's
Redis under the task's id, and the task's message carries only their dtype and shape.

A 1,000-row batch is 240 KB of packed rows. Inline, the broker's copy of them was handled
again and again on the way to the model: base64 in the envelope (320 KB), the envelope
parsed and written back by kombu's own JSON in the worker's main process, which keeps
a copy of every unacknowledged message in Redis (another 320 KB written), then pickled
down the pipe to the pool process. Claimed, the message is a few hundred bytes, and the
pool process reads the rows with one GET of their raw bytes.

The API stores the rows before it publishes the task, so a worker never sees a task
whose rows are not there yet. They are deleted once the task's result is stored
(`ServingTask.after_return`): a message delivered again after its process died finds
them still there. They expire with the job a late prediction becomes
(`job_ttl_seconds`), so rows whose task never finished do not stay. Rows of another
kind (JSON text, for a model with an int or bool feature) and small batches travel
inline, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis

from common.errors import PredictionFailed
from common.float64_rows import ITEM_BYTES
from queueing.messages import PredictBatch
from queueing.packed_rows import ClaimedRows, PackedRows

log = logging.getLogger(__name__)
# A claim adds a SET, a GET and a DEL: smaller batches (64 KiB is 273 rows of 30 floats),
# one-row requests among them, travel inline as before.
CLAIM_MIN_BYTES = 64 * 1024


def claim_key(prefix: str, task_id: str) -> str:
    return f"{prefix}claimed-rows:{task_id}"


def claim(message: PredictBatch) -> tuple[PredictBatch, bytes | None]:
    """The message with its packed rows claimed, and the bytes to store under its key;
    the message as it is, and None, for rows that travel inline."""
    data = message.rows_data
    if not isinstance(data, PackedRows) or len(data.data) < CLAIM_MIN_BYTES:
        return message, None
    return replace(message, rows_data=ClaimedRows(data.n_rows, data.n_features)), data.data


def redeem(message: PredictBatch, data: bytes | None) -> PredictBatch | None:
    """The message with its claimed rows in place, from what their key held; None if it
    held nothing of their shape (expired, or deleted once a run's result was stored)."""
    claimed = message.rows_data
    if not isinstance(claimed, ClaimedRows):
        return message
    if data is None or len(data) != claimed.n_rows * claimed.n_features * ITEM_BYTES:
        return None
    return replace(message, rows_data=PackedRows(data, claimed.n_features))


class ClaimedRowsStore:
    """The worker's side, on the result backend's Redis: a message's claimed rows put back
    in place, and deleted once its task's result is stored."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def redeem(self, message: PredictBatch, task_id: str) -> PredictBatch:
        """The message with its rows in place (as it is if they were inline);
        PredictionFailed if they are gone. Raises Redis's errors (the task goes back to
        the queue: worker.limits)."""
        if not isinstance(message.rows_data, ClaimedRows):
            return message
        redeemed = redeem(message, self.client.get(claim_key(self.prefix, task_id)))  # type: ignore[arg-type]
        if redeemed is None:
            raise PredictionFailed(
                "the batch's rows were no longer in Redis (they are kept as long as a job, "
                "SERVING_JOB_TTL_SECONDS); send the request again"
            )
        return redeemed

    def release(self, task_id: str, args: Sequence[Any]) -> None:
        """Delete a predict task's claimed rows, if it had any: no run needs them once its
        result is stored. A failure here only leaves them to expire."""
        if not PredictBatch.claims_rows(args):
            return
        try:
            self.client.unlink(claim_key(self.prefix, task_id))
        except redis.RedisError as exc:
            log.warning("claimed rows of %s left to expire: %s", task_id, exc)
