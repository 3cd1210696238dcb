"""The prediction log's table access: idempotent inserts by request id, newest rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.float64_rows import float64_bytes
from common.tables import PredictionLog


def _insert_ignoring_duplicates(engine: Engine) -> Any:
    dialect = engine.dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(PredictionLog).on_conflict_do_nothing(index_elements=["request_id"])
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(PredictionLog).on_conflict_do_nothing(
            index_elements=["request_id"]
        )
    return None


_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "input_packed": None,
    "output": None,
    "error": None,
    "worker": None,
    "cached": False,
    "owner": None,
    "job_id": None,
    "shadow": False,
    "primary_request_id": None,
}


def _packed(entry: dict[str, Any]) -> dict[str, Any]:
    """A worker's matrix of float inputs as its bytes (PredictionLog.input_packed), with
    JSON null for `input`; nothing to change for other inputs. Only the table's copy: a
    row spooled meanwhile keeps JSON (common.prediction_log.spool)."""
    data = float64_bytes(entry.get("input"), entry.get("n_rows", 0))
    return {} if data is None else {"input": None, "input_packed": data}


class PredictionLogRepo:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._upsert = _insert_ignoring_duplicates(engine)

    def record(self, entries: list[dict[str, Any]]) -> None:
        """Insert entries; one whose request_id is already logged is skipped. Raises what
        the database raises: LogSink is the writer that never fails for the database."""
        if not entries:
            return
        # A multi-row insert takes its columns from the first entry: give every entry all.
        entries = [{**_OPTIONAL_DEFAULTS, **entry, **_packed(entry)} for entry in entries]
        if self._upsert is not None:
            with self.engine.begin() as conn:
                conn.execute(self._upsert, entries)
            return
        for entry in entries:  # other dialects: one statement each, duplicates skipped
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(PredictionLog), [entry])
            except IntegrityError:
                pass

    def newest(self, limit: int) -> list[PredictionLog]:
        stmt = select(PredictionLog).order_by(PredictionLog.id.desc()).limit(limit)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt).all())

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(PredictionLog)).scalar_one())
