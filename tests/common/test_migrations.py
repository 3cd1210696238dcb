"""The prediction log's Alembic migrations on SQLite files (tests/integration/
test_postgres_log.py runs the same checks on PostgreSQL): from an empty database, from
the schemas earlier releases made without migrations, back down and up again, and by
several processes at once."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from common.prediction_log import PredictionLogRepo, create_log_engine
from common.prediction_log.migrate import TABLE, _config, current, head, upgrade
from common.tables import Base

PAGE_ROWS = 100  # 0004's downgrade rewrites this many rows at a time


def schema_differences(engine: Engine) -> list[Any]:
    """What Alembic's autogenerate would change to reach common/tables.py: nothing."""
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)  # type: ignore[no-any-return]


def as_an_earlier_release_left_it(engine: Engine, revision: str) -> None:
    """The schema of `revision`, made as releases before migrations made it: no
    alembic_version table."""
    upgrade(engine, revision)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))


def old_row(engine: Engine, request_id: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO prediction_log (request_id, created_at, model_type, version, "
                "n_rows, input, output, latency_ms, cached, status) VALUES (:id, :at, "
                "'xgboost', '1', 1, '[[1.0]]', NULL, 2.5, false, 'ok')"
            ),
            {"id": request_id, "at": datetime(2025, 1, 1, tzinfo=UTC)},
        )


def check_from_empty(engine: Engine) -> None:
    assert current(engine) is None
    assert upgrade(engine) == head() == "0004"
    assert schema_differences(engine) == []
    assert upgrade(engine) == head()  # again: nothing to do


def check_from_an_unstamped_release(engine: Engine, revision: str) -> None:
    as_an_earlier_release_left_it(engine, revision)
    old_row(engine, "old-1")
    assert current(engine) is None
    assert upgrade(engine) == head()
    assert schema_differences(engine) == []
    rows = PredictionLogRepo(engine).newest(10)
    assert [(r.request_id, r.owner, r.shadow) for r in rows] == [("old-1", None, None)]


@pytest.fixture
def sqlite(tmp_path: Path) -> Engine:
    return create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")


def test_from_an_empty_database(sqlite: Engine) -> None:
    check_from_empty(sqlite)


@pytest.mark.parametrize("revision", ["0001", "0002"])
def test_from_a_release_before_migrations(sqlite: Engine, revision: str) -> None:
    check_from_an_unstamped_release(sqlite, revision)


def test_down_to_the_first_revision_and_up_again(sqlite: Engine) -> None:
    upgrade(sqlite)
    with sqlite.connect() as connection:
        command.downgrade(_config(connection), "0001")
        connection.commit()
    columns = {c["name"] for c in inspect(sqlite).get_columns("prediction_log")}
    assert "owner" not in columns and "shadow" not in columns
    assert upgrade(sqlite) == head() and schema_differences(sqlite) == []


def check_packed_inputs_down_and_up(engine: Engine) -> None:
    """Down from 0004, a worker's packed inputs are written back as JSON, not lost."""
    import numpy as np

    from common.log_rows import log_row

    upgrade(engine)
    values = [[0.5, -0.0], [1 / 3, 5e-324]]
    matrix = np.array(values, dtype="<f8")
    PredictionLogRepo(engine).record(
        [
            log_row(f"packed-{n}", ("xgboost", "1"), 2, matrix, None, 0.0)
            for n in range(PAGE_ROWS + 1)  # more than one page of the downgrade
        ]
    )
    with engine.connect() as connection:
        command.downgrade(_config(connection), "0003")
        connection.commit()
    assert "input_packed" not in {c["name"] for c in inspect(engine).get_columns(TABLE)}
    with engine.connect() as connection:  # the 0003 schema: not the ORM's table
        texts = connection.execute(text("SELECT input FROM prediction_log")).scalars().all()
    assert len(texts) == PAGE_ROWS + 1
    # SQLite gives the JSON's text; psycopg parses PostgreSQL's json itself
    assert all((orjson.loads(t) if isinstance(t, str) else t) == values for t in texts)
    assert upgrade(engine) == head() and schema_differences(engine) == []


def test_packed_inputs_down_to_0003_and_up_again(sqlite: Engine) -> None:
    check_packed_inputs_down_and_up(sqlite)


def _upgrade_at_once(url: str, barrier: Any, results: Any) -> None:
    engine = create_log_engine(url)
    barrier.wait()
    try:
        results.put(upgrade(engine))
    except Exception as exc:  # reported to the test, which fails on it
        results.put(repr(exc))


def test_processes_migrating_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [
        context.Process(target=_upgrade_at_once, args=(url, barrier, results)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
    assert outcomes == [head()] * 4
    assert schema_differences(create_log_engine(url)) == []
