"""Retention: delete prediction log rows older than a number of days, a batch at a time."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select

from common import metrics
from common.prediction_log.repo import PredictionLogRepo
from common.tables import PredictionLog

log = logging.getLogger(__name__)

# A writer waiting for SQLite's lock retries after sleeps of 1 ms growing to 100 ms: a
# batch that starts again at once can take the lock before it wakes, every time. A pause
# longer than the sleeps of a writer that waited one batch lets it in.
SQLITE_PAUSE_SECONDS = 0.05


def purge_older_than(
    engine_or_repo: Engine | PredictionLogRepo,
    days: int,
    batch_rows: int = 5000,
    now: datetime | None = None,
    *,
    pause_seconds: float | None = None,
) -> int:
    """Delete the rows whose created_at is more than `days` days before `now` (default:
    the current time); returns how many. `days == 0` keeps everything.

    Each batch of at most `batch_rows` rows is its own short transaction, so writers (on
    SQLite, a single one at a time) wait for one batch, never for the whole purge;
    `pause_seconds` between batches (default: SQLITE_PAUSE_SECONDS on SQLite, else none)."""
    if days < 0 or batch_rows < 1:
        raise ValueError(f"need days >= 0 and batch_rows >= 1, not {days} and {batch_rows}")
    if days == 0:
        return 0
    engine = engine_or_repo
    if isinstance(engine, PredictionLogRepo):
        engine = engine.engine
    if pause_seconds is None:
        pause_seconds = SQLITE_PAUSE_SECONDS if engine.dialect.name == "sqlite" else 0.0
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    # Any batch_rows old ids, found through the created_at index; no ORDER BY, which
    # would sort every old row again for each batch.
    old_ids = select(PredictionLog.id).where(PredictionLog.created_at < cutoff).limit(batch_rows)
    statement = delete(PredictionLog).where(PredictionLog.id.in_(old_ids.scalar_subquery()))
    purged = 0
    while True:
        with engine.begin() as conn:
            deleted = conn.execute(statement).rowcount
        purged += deleted
        metrics.LOG_PURGED.inc(deleted)
        if deleted < batch_rows:
            break
        time.sleep(pause_seconds)
    if purged:
        log.info("purged %d prediction log rows older than %d days", purged, days)
    return purged
