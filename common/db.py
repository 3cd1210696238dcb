"""The prediction log through SQLAlchemy: SQLite by default, any SQLAlchemy URL works."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateIndex, CreateTable

from common.tables import Base, PredictionLog

log = logging.getLogger(__name__)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


# The log's JSON columns hold every input row: orjson encodes them several times faster.
_JSON = {"json_serializer": _json_text, "json_deserializer": orjson.loads}


def create_log_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **_JSON)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **_JSON)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # The busy timeout makes concurrent writers in other processes wait instead of
        # failing with "database is locked"; WAL lets readers and one writer work at once.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


WAL_SWITCH_SECONDS = 30.0


def _use_wal(cursor: Any) -> None:
    """Put the file in WAL mode (it stays so: only the first process ever switches it).

    The journal-mode statement can answer "database is locked" at once, without waiting
    on the busy timeout, while another process holds the lock it needs: seen when a
    process started just after a writer was killed mid-commit. It is retried."""
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


_DDL_LOCK_KEY = 0x5E2F1A6  # any constant, shared by every process of the project


def create_tables(engine: Engine) -> None:
    # Several processes may start at once against one database. IF NOT EXISTS is enough
    # for SQLite; PostgreSQL can still race in its catalog, so serialize on a lock there.
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK_KEY})
        for table in Base.metadata.sorted_tables:
            conn.execute(CreateTable(table, if_not_exists=True))
            for index in table.indexes:
                conn.execute(CreateIndex(index, if_not_exists=True))


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
    "output": None,
    "error": None,
    "worker": None,
    "cached": False,
}


class PredictionLogRepo:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._upsert = _insert_ignoring_duplicates(engine)

    def record(self, entries: list[dict[str, Any]]) -> None:
        """Insert entries; one whose request_id is already logged is skipped."""
        if not entries:
            return
        # A multi-row insert takes its columns from the first entry: give every entry all.
        entries = [{**_OPTIONAL_DEFAULTS, **entry} for entry in entries]
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
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(PredictionLog)).scalar_one())


class BackgroundLogWriter:
    """Batches log writes on a thread, so a request never waits for the database."""

    def __init__(self, repo: PredictionLogRepo, max_batch: int = 500) -> None:
        self.repo = repo
        self.max_batch = max_batch
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def submit(self, entry: dict[str, Any]) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(entry)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything submitted so far is written."""
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            self.repo.record(batch)
        except Exception:
            # One bad entry must not cost the others: write them one at a time.
            for entry in batch:
                try:
                    self.repo.record([entry])
                except Exception:
                    log.exception("could not write prediction log row %s", entry.get("request_id"))

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [] if first is None else [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    first = None
                    break
                batch.append(item)
            self._write(batch)
            with self._idle:
                self._pending -= len(batch)
                self._idle.notify_all()
            if first is None:
                return
