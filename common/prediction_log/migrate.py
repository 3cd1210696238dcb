"""The prediction log's schema, managed by Alembic (common/prediction_log/migrations/).

`upgrade(engine)` brings a database to the newest revision. The API and the workers run
it at start-up, so several processes may run it at once against one database: it holds
a lock while it runs (PostgreSQL: an advisory lock; SQLite: a lock file beside the
database, which is on one host). A database made before migrations existed (tables
made by `CREATE TABLE`, no `alembic_version`) is stamped with the revision its columns
match, then upgraded like any other. `modelctl db upgrade` runs the same."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

SCRIPTS = Path(__file__).with_name("migrations")
TABLE = "prediction_log"
_LOCK_KEY = 0x5E2F1A6  # any constant, shared by every process of the project
# What a database from before migrations holds, newest first: the revision it matches.
_COLUMNS_OF = [("0003", "primary_request_id"), ("0002", "owner"), ("0001", "request_id")]


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    revision = ScriptDirectory(str(SCRIPTS)).get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    """The database's revision; None before any migration (or an older unstamped one)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate to `revision` (the newest by default); the revision the database is at."""
    with _locked(engine) as connection:
        config = _config(connection)
        if (unstamped := _unstamped_revision(connection)) is not None:
            command.stamp(config, unstamped)
        command.upgrade(config, revision)
        connection.commit()
        return MigrationContext.configure(connection).get_current_revision()


def _unstamped_revision(connection: Connection) -> str | None:
    """The revision an unstamped database's table matches (it was made with CREATE TABLE)."""
    tables = set(inspect(connection).get_table_names())
    if TABLE not in tables or "alembic_version" in tables:
        return None
    columns = {column["name"] for column in inspect(connection).get_columns(TABLE)}
    return next(revision for revision, column in _COLUMNS_OF if column in columns)


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                connection.commit()
            return
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        if not database or database == ":memory:":
            yield connection
            return
        with open(f"{database}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield connection
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
