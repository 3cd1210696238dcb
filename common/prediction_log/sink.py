"""LogSink: writes prediction log rows so that the database never fails a prediction and
no row is lost. Rows the database refuses wait in the spool (Redis) until drain() moves
them; any number of processes may drain at once, since the log ignores a request id it
already holds and drain deletes only the stream entries it has written."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from common import metrics
from common.prediction_log.repo import PredictionLogRepo
from common.prediction_log.spool import LogSpool, SpooledRow, encode_row

log = logging.getLogger(__name__)

# What the database raises when it refuses a write. Nearly always "not now" (unreachable,
# read-only, disk full, locked): the rows are spooled. is_row_error picks out "never".
DATABASE_ERRORS = (SQLAlchemyError, sqlite3.Error, OSError)

WARNING_INTERVAL_SECONDS = 60.0
DRAIN_BATCH_ROWS = 500


def is_row_error(exc: BaseException) -> bool:
    """The table refuses a row for its content (a NOT NULL, a value too long, a value
    that cannot be encoded): writing it again never helps, so it must not block others."""
    if isinstance(exc, IntegrityError | DataError | sqlite3.IntegrityError | sqlite3.DataError):
        return True
    # Raised before the database saw the statement: a parameter could not be bound.
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


def _reason(exc: BaseException) -> str:
    # The driver's message alone: SQLAlchemy's adds the statement and every parameter.
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    return f"{type(cause).__name__}: {cause}"[:500]


class LogSink:
    """The prediction log's writer for the worker and the API.

    record() never raises for the database; it raises redis.RedisError when the spool
    fails too, so the caller's task goes back to the queue instead of losing its rows.
    After a refusal, record() spools without asking the database for
    `retry_database_after` seconds, so an unreachable one (a connect timeout, SQLite's
    30-second busy wait) costs one write its wait, not every write; drain() asks it
    every time and ends that pause when it accepts rows."""

    def __init__(
        self, repo: PredictionLogRepo, spool: LogSpool, retry_database_after: float = 5.0
    ) -> None:
        self.repo = repo
        self.spool = spool
        self.retry_database_after = retry_database_after
        self._lock = threading.Lock()
        self._database_back_at = 0.0  # monotonic time
        self._next_warning = 0.0
        self._unreported = 0
        self._last_reason = ""

    def record(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        if time.monotonic() < self._database_back_at:
            self._spool(entries, None)
            return
        try:
            self.repo.record(entries)
        except DATABASE_ERRORS as exc:
            if is_row_error(exc):
                self._record_each(entries)
            else:
                self._spool(entries, exc)

    def drain(self, max_rows: int = 10_000, batch_rows: int = DRAIN_BATCH_ROWS) -> int:
        """Write up to max_rows spooled rows into the database, oldest first, and delete
        them from the spool; returns how many were written. Stops at the first refusal,
        leaving that batch and the rest spooled. Raises redis.RedisError."""
        written = taken = 0
        while taken < max_rows:
            batch = self.spool.oldest(min(batch_rows, max_rows - taken))
            if not batch:
                break
            taken += len(batch)
            done, refused = self._move(batch)
            written += done
            if refused:
                break
        if written:
            log.info("moved %d spooled prediction log rows into the database", written)
        self.backlog()
        return written

    def backlog(self) -> int:
        """Rows in the spool, also set as the serving_log_backlog_rows gauge."""
        rows = self.spool.length()
        metrics.LOG_BACKLOG.set(rows)
        return rows

    def _spool(self, entries: list[dict[str, Any]], exc: BaseException | None) -> None:
        self.spool.append(entries)
        metrics.LOG_SPOOLED.inc(len(entries))
        now = time.monotonic()
        with self._lock:
            if exc is not None:
                self._database_back_at = now + self.retry_database_after
                self._last_reason = _reason(exc)
            self._unreported += len(entries)
            if now < self._next_warning:
                return
            self._next_warning = now + WARNING_INTERVAL_SECONDS
            rows, self._unreported = self._unreported, 0
            reason = self._last_reason
        log.warning(
            "the prediction log's database refuses writes (%s): %d row(s) spooled in Redis "
            "under %s until drain() writes them (logged at most every %.0f s)",
            reason,
            rows,
            self.spool.key,
            WARNING_INTERVAL_SECONDS,
        )

    def _record_each(self, entries: list[dict[str, Any]]) -> None:
        """A batch holding a row the table refuses: write the others, set that one aside."""
        for index, entry in enumerate(entries):
            try:
                self.repo.record([entry])
            except DATABASE_ERRORS as exc:
                if not is_row_error(exc):
                    self._spool(entries[index:], exc)
                    return
                raw = encode_row(entry, lenient=True)
                self._set_aside(raw, _reason(exc), [], entry.get("request_id"))

    def _move(self, batch: list[SpooledRow]) -> tuple[int, bool]:
        """Write one batch, then delete it from the spool: (rows written, refused)."""
        rows: list[tuple[SpooledRow, dict[str, Any]]] = []
        for item in batch:
            try:
                rows.append((item, item.row()))
            except (ValueError, KeyError, TypeError) as exc:
                self._set_aside(item.raw, f"unreadable spool entry: {exc}", [item.entry_id])
        if not rows:
            return 0, False
        try:
            self.repo.record([row for _, row in rows])
        except DATABASE_ERRORS as exc:
            if is_row_error(exc):
                return self._move_each(rows)
            self._refused_drain(exc)
            return 0, True
        self._database_back_at = 0.0
        self.spool.remove([item.entry_id for item, _ in rows])
        return len(rows), False

    def _move_each(self, rows: list[tuple[SpooledRow, dict[str, Any]]]) -> tuple[int, bool]:
        written: list[str] = []
        try:
            for item, row in rows:
                try:
                    self.repo.record([row])
                except DATABASE_ERRORS as exc:
                    if not is_row_error(exc):
                        self._refused_drain(exc)
                        return len(written), True
                    why = _reason(exc)
                    self._set_aside(item.raw, why, [item.entry_id], row.get("request_id"))
                else:
                    written.append(item.entry_id)
            return len(written), False
        finally:
            self.spool.remove(written)

    def _set_aside(
        self, raw: bytes, why: str, entry_ids: list[str], request_id: Any = None
    ) -> None:
        self.spool.set_aside([(raw, why)], entry_ids)
        log.error(
            "the prediction log's table refuses row %s for its content (%s); it is kept "
            "in Redis under %s",
            request_id,
            why,
            self.spool.dead_key,
        )

    def _refused_drain(self, exc: BaseException) -> None:
        self._database_back_at = time.monotonic() + self.retry_database_after
        log.info("drain stopped: the prediction log's database refuses writes (%s)", _reason(exc))
