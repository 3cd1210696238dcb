"""The prediction log's engine and tables: SQLite by default, any SQLAlchemy URL works."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def _json_text(value: Any) -> str:
    # A worker's inputs may be a NumPy matrix (read in place from packed rows): orjson
    # writes it as the same JSON text as the same rows as lists.
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


# The log's JSON columns hold every input row: orjson encodes them several times faster.
_JSON = {"json_serializer": _json_text, "json_deserializer": orjson.loads}

# psycopg waits for a connection as long as the OS lets it (minutes, to a host that drops
# packets); the log's writers spool a refused row instead, so they should learn soon.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5


def create_log_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_SECONDS
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **_JSON)
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


def create_tables(engine: Engine) -> None:
    """The log's tables at the newest schema: Alembic's migrations, run by every process
    at start-up, one at a time (common/prediction_log/migrate.py)."""
    from common.prediction_log.migrate import upgrade

    upgrade(engine)
