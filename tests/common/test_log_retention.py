"""Retention of the prediction log on a real SQLite file (and a private PostgreSQL, when
its binaries are installed): exactly the old rows go, a batch per transaction."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, event, select

from common.prediction_log import (
    PredictionLogRepo,
    create_log_engine,
    create_tables,
    purge_older_than,
)
from common.tables import PredictionLog

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
# Ages in days; the retention is 30 days: a row exactly 30 days old stays.
OLD_AGES = [30.0001, 31, 45, 90, 365, 1000]
YOUNG_AGES = [0, 0.5, 1, 29, 29.9999, 30]


def row(request_id: str, age_days: float) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "created_at": NOW - timedelta(days=age_days),
        "model_type": "xgboost",
        "version": "1",
        "n_rows": 1,
        "input": [[1.0, 2.0]],
        "output": {"labels": ["a"]},
        "latency_ms": 1.0,
        "cached": False,
        "status": "ok",
    }


def aged_rows(copies: int) -> tuple[list[dict[str, Any]], set[str], set[str]]:
    """`copies` rows of every age, interleaved by id: (rows, old ids, young ids)."""
    rows, old, young = [], set(), set()
    for n in range(copies):
        for age in OLD_AGES + YOUNG_AGES:
            request_id = f"r{n}-{age}"
            rows.append(row(request_id, age))
            (old if age in OLD_AGES else young).add(request_id)
    return rows, old, young


def request_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(select(PredictionLog.request_id)))


def purged_total() -> float:
    return REGISTRY.get_sample_value("serving_log_purged_rows_total") or 0.0


class Deletes:
    """The rows each DELETE statement the engine runs removes (one per batch)."""

    def __init__(self, engine: Engine) -> None:
        self.rowcounts: list[int] = []
        event.listen(engine, "after_cursor_execute", self._seen)

    def _seen(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            self.rowcounts.append(cursor.rowcount)


def test_purge_deletes_exactly_the_old_rows_in_several_batches(engine: Engine) -> None:
    rows, old, young = aged_rows(copies=10)  # 60 old rows among 120
    PredictionLogRepo(engine).record(rows)
    deletes = Deletes(engine)
    before = purged_total()

    purged = purge_older_than(engine, days=30, batch_rows=7, now=NOW, pause_seconds=0)

    assert purged == len(old) == 60
    assert request_ids(engine) == young
    assert purged_total() - before == 60
    assert deletes.rowcounts == [7] * 8 + [4]  # one short transaction per batch


def test_a_batch_size_dividing_the_old_rows_ends_with_an_empty_batch(engine: Engine) -> None:
    rows, _, young = aged_rows(copies=2)  # 12 old rows
    PredictionLogRepo(engine).record(rows)
    deletes = Deletes(engine)

    assert purge_older_than(engine, days=30, batch_rows=6, now=NOW, pause_seconds=0) == 12

    assert deletes.rowcounts == [6, 6, 0]
    assert request_ids(engine) == young


def test_zero_days_deletes_nothing(engine: Engine) -> None:
    rows, _, _ = aged_rows(copies=2)
    PredictionLogRepo(engine).record(rows)
    deletes = Deletes(engine)

    assert purge_older_than(engine, days=0, now=NOW) == 0

    assert len(request_ids(engine)) == len(rows)
    assert deletes.rowcounts == []


def test_purge_takes_a_repo_and_defaults_to_the_current_time(engine: Engine) -> None:
    repo = PredictionLogRepo(engine)
    now = datetime.now(UTC)
    repo.record([{**row("old", 0), "created_at": now - timedelta(days=8)},
                 {**row("new", 0), "created_at": now - timedelta(days=6)}])

    assert purge_older_than(repo, days=7) == 1

    assert request_ids(engine) == {"new"}


def test_nothing_old_deletes_nothing(engine: Engine) -> None:
    PredictionLogRepo(engine).record([row("young", 1)])

    assert purge_older_than(engine, days=30, now=NOW) == 0
    assert request_ids(engine) == {"young"}


@pytest.mark.parametrize(("days", "batch_rows"), [(-1, 10), (30, 0)])
def test_bad_arguments_are_refused(engine: Engine, days: int, batch_rows: int) -> None:
    with pytest.raises(ValueError, match="days >= 0"):
        purge_older_than(engine, days=days, batch_rows=batch_rows)


def test_a_writer_keeps_writing_while_a_long_purge_runs(engine: Engine) -> None:
    """Another connection's inserts go on between the batches (with the default pause)
    and none is lost or deleted."""
    PredictionLogRepo(engine).record([row(f"old-{i}", 40) for i in range(4000)])
    writer_engine = create_log_engine(str(engine.url))  # another process's connection
    repo = PredictionLogRepo(writer_engine)
    done = threading.Event()
    waits: list[float] = []

    def write() -> None:
        while not done.is_set():
            started = time.monotonic()
            repo.record([row(f"new-{len(waits)}", 0)])
            waits.append(time.monotonic() - started)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        purged = purge_older_than(engine, days=30, batch_rows=200, now=NOW)
    finally:
        done.set()
        thread.join(60)
        writer_engine.dispose()

    assert purged == 4000
    assert len(waits) >= 10, "the writer got in between the purge's batches"
    assert max(waits) < 5
    assert request_ids(engine) == {f"new-{i}" for i in range(len(waits))}


def test_purge_on_postgres(tmp_path: Path) -> None:
    from dev.postgres import find_postgres_bin, start_postgres, stop_postgres

    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres) found")
    proc, url = start_postgres(tmp_path / "postgres")
    engine = create_log_engine(url)
    try:
        create_tables(engine)
        rows, old, young = aged_rows(copies=5)
        PredictionLogRepo(engine).record(rows)

        assert purge_older_than(engine, days=30, batch_rows=4, now=NOW) == len(old)
        assert request_ids(engine) == young
        assert purge_older_than(engine, days=0, now=NOW) == 0
    finally:
        engine.dispose()
        stop_postgres(proc)
