"""Prediction log on a real SQLite file: pragmas, idempotent writes, concurrent writers."""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sqlalchemy import Engine, text

from common.prediction_log import (
    BackgroundLogWriter,
    PredictionLogRepo,
    create_log_engine,
    create_tables,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def entry(request_id: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "request_id": request_id,
        "created_at": T0,
        "model_type": "xgboost",
        "version": "1",
        "n_rows": 1,
        "input": [{"alpha": 1.0, "beta": 2.0}],
        "output": {"labels": ["a"], "probabilities": [[0.75, 0.25]]},
        "latency_ms": 1.5,
        "cached": False,
        "status": "ok",
        "error": None,
        "worker": "host:1",
    }
    values.update(overrides)
    return values


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "log.db"


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    engine = create_log_engine(sqlite_url(db_path))
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def repo(engine: Engine) -> PredictionLogRepo:
    return PredictionLogRepo(engine)


# --- engine ------------------------------------------------------------------------------


def test_sqlite_engine_uses_wal_and_a_busy_timeout(db_path: Path) -> None:
    engine = create_log_engine(sqlite_url(db_path))
    try:
        with engine.connect() as conn:
            journal = conn.execute(text("PRAGMA journal_mode")).scalar_one()
            busy = conn.execute(text("PRAGMA busy_timeout")).scalar_one()
            synchronous = conn.execute(text("PRAGMA synchronous")).scalar_one()
    finally:
        engine.dispose()

    assert journal == "wal"
    assert busy == 30000
    assert synchronous == 1  # NORMAL
    assert db_path.exists()


def test_wal_mode_is_persistent_in_the_file(db_path: Path) -> None:
    import sqlite3

    engine = create_log_engine(sqlite_url(db_path))
    create_tables(engine)
    engine.dispose()

    plain = sqlite3.connect(db_path)
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        plain.close()


def test_create_tables_twice_is_fine_and_keeps_rows(engine: Engine,
                                                    repo: PredictionLogRepo) -> None:
    repo.record([entry("r1")])

    create_tables(engine)
    create_tables(engine)

    assert repo.count() == 1
    with engine.connect() as conn:
        names = {r[0] for r in conn.execute(text(
            "SELECT name FROM sqlite_master WHERE tbl_name = 'prediction_log'"))}
    assert "prediction_log" in names
    assert "ix_prediction_log_created_at" in names


# --- repository --------------------------------------------------------------------------


def test_record_writes_every_column(repo: PredictionLogRepo) -> None:
    repo.record([entry("r1", cached=True, status="error", error="boom")])

    [row] = repo.newest(10)
    assert row.request_id == "r1"
    assert row.model_type == "xgboost"
    assert row.version == "1"
    assert row.n_rows == 1
    assert row.input == [{"alpha": 1.0, "beta": 2.0}]
    assert row.output == {"labels": ["a"], "probabilities": [[0.75, 0.25]]}
    assert row.latency_ms == 1.5
    assert row.cached is True
    assert row.status == "error"
    assert row.error == "boom"
    assert row.worker == "host:1"
    assert row.created_at.replace(tzinfo=UTC) == T0


def test_a_worker_s_matrix_of_inputs_is_logged_as_its_float64_bytes(
    repo: PredictionLogRepo, engine: Engine
) -> None:
    """Lists stay JSON; a matrix is kept as its bytes (JSON null beside them) and read
    back as the same rows, bit for bit, even from a view with other strides."""
    values = [[0.1, -0.0, 5e-324], [1 / 3, 3.4e38, 2.0**53 + 2]]
    matrix = np.frombuffer(np.array(values).tobytes(), dtype="<f8").reshape(2, 3)
    wide = np.array([[v, 9.0] for row in values for v in row]).reshape(2, 6)[:, ::2]
    repo.record(
        [
            entry("lists", n_rows=2, input=values),
            entry("matrix", n_rows=2, input=matrix[0:2]),
            entry("strided", n_rows=2, input=wide),
        ]
    )

    query = text("SELECT request_id, input, input_packed FROM prediction_log")
    with engine.connect() as conn:
        stored = {r[0]: r[1:] for r in conn.execute(query)}
    assert stored["lists"] == (orjson.dumps(values).decode(), None)
    assert stored["matrix"] == ("null", matrix.tobytes())
    assert stored["strided"] == ("null", matrix.tobytes())
    read = {row.request_id: row.inputs() for row in repo.newest(10)}
    assert read["lists"] == read["matrix"] == read["strided"] == values
    assert [math.copysign(1.0, r[0][1]) for r in read.values()] == [-1.0] * 3


def test_a_matrix_that_is_not_n_rows_of_float64_stays_json(repo: PredictionLogRepo) -> None:
    values = [[1.0, 2.0]]
    repo.record(
        [
            entry("ints", n_rows=1, input=np.array([[1, 2]])),
            entry("counted-wrong", n_rows=2, input=np.array(values)),
        ]
    )
    read = {row.request_id: (row.input, row.input_packed) for row in repo.newest(10)}
    assert read == {"ints": ([[1, 2]], None), "counted-wrong": (values, None)}


def test_record_of_nothing_is_a_no_op(repo: PredictionLogRepo) -> None:
    repo.record([])

    assert repo.count() == 0


def test_duplicate_request_id_keeps_the_first_row(repo: PredictionLogRepo) -> None:
    repo.record([entry("dup", version="1")])
    repo.record([entry("dup", version="2")])

    assert repo.count() == 1
    assert [r.version for r in repo.newest(10)] == ["1"]


def test_duplicate_request_id_within_one_batch_keeps_one_row(repo: PredictionLogRepo) -> None:
    repo.record([entry("a"), entry("dup", version="1"), entry("dup", version="2"), entry("b")])

    assert repo.count() == 3
    assert sorted(r.request_id for r in repo.newest(10)) == ["a", "b", "dup"]


def test_newest_returns_newest_first_and_honours_the_limit(repo: PredictionLogRepo) -> None:
    for i in range(5):
        repo.record([entry(f"r{i}", created_at=T0 + timedelta(seconds=i))])

    assert [r.request_id for r in repo.newest(3)] == ["r4", "r3", "r2"]
    assert [r.request_id for r in repo.newest(100)] == ["r4", "r3", "r2", "r1", "r0"]


def test_newest_rows_are_usable_after_the_session_closed(repo: PredictionLogRepo) -> None:
    repo.record([entry("r1")])

    [row] = repo.newest(1)

    assert row.output["labels"] == ["a"]


def test_a_batch_mixing_entries_with_and_without_optional_keys_is_written(
    repo: PredictionLogRepo,
) -> None:
    without_worker = entry("b")
    del without_worker["worker"]

    repo.record([entry("a"), without_worker])

    assert repo.count() == 2


def test_an_optional_value_in_a_later_entry_is_kept(repo: PredictionLogRepo) -> None:
    without_worker = entry("a")
    del without_worker["worker"]

    repo.record([without_worker, entry("b", worker="host:2")])

    workers = {r.request_id: r.worker for r in repo.newest(10)}
    assert workers == {"a": None, "b": "host:2"}


def test_each_entry_shape_is_accepted_on_its_own(repo: PredictionLogRepo) -> None:
    without_worker = entry("a")
    del without_worker["worker"]

    repo.record([without_worker])
    repo.record([entry("b")])

    assert {r.request_id: r.worker for r in repo.newest(10)} == {"a": None, "b": "host:1"}


# --- background writer -------------------------------------------------------------------


def test_background_writer_writes_every_submitted_row(repo: PredictionLogRepo) -> None:
    writer = BackgroundLogWriter(repo, max_batch=50)
    try:
        for i in range(1000):
            writer.submit(entry(f"bg-{i}"))
        writer.flush(timeout=30)

        assert repo.count() == 1000
    finally:
        writer.close()


def test_background_writer_flush_with_nothing_pending_returns(repo: PredictionLogRepo) -> None:
    writer = BackgroundLogWriter(repo)
    try:
        started = time.monotonic()
        writer.flush(timeout=5)
        assert time.monotonic() - started < 1
    finally:
        writer.close()


def test_background_writer_close_writes_what_is_queued_and_stops(
    repo: PredictionLogRepo,
) -> None:
    writer = BackgroundLogWriter(repo)
    for i in range(20):
        writer.submit(entry(f"c-{i}"))

    writer.close()

    assert not writer._thread.is_alive()
    assert repo.count() == 20


class CountingRepo(PredictionLogRepo):
    """The real repository, counting its writes (each is one transaction)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.batches: list[int] = []

    def record(self, entries: list[dict[str, Any]]) -> None:
        self.batches.append(len(entries))
        super().record(entries)


def test_background_writer_rows_put_one_at_a_time_share_a_write(engine: Engine) -> None:
    repo = CountingRepo(engine)
    writer = BackgroundLogWriter(repo, linger_seconds=0.5)
    try:
        for i in range(10):  # as hits at c=1 come: one, then the next, ...
            writer.submit(entry(f"one-{i}"))
            time.sleep(0.01)
        writer.flush(timeout=10)

        assert repo.count() == 10
        assert repo.batches == [10]  # without the linger: ten writes of one row
    finally:
        writer.close()


def test_background_writer_close_does_not_wait_out_the_linger(engine: Engine) -> None:
    repo = CountingRepo(engine)
    writer = BackgroundLogWriter(repo, linger_seconds=30)
    writer.submit(entry("last"))
    started = time.monotonic()

    writer.close()

    assert time.monotonic() - started < 5
    assert repo.count() == 1


class GatedRepo(PredictionLogRepo):
    """The real repository, holding its first write until released (fixes the batching)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.first_started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def record(self, entries: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.calls == 1:
            self.first_started.set()
            assert self.release.wait(30)
        super().record(entries)


def test_background_writer_one_bad_entry_does_not_lose_the_others(engine: Engine) -> None:
    repo = GatedRepo(engine)
    writer = BackgroundLogWriter(repo)
    try:
        writer.submit(entry("first"))
        assert repo.first_started.wait(10)
        writer.submit(entry("good-1"))
        writer.submit(entry("bad", model_type=None))  # violates NOT NULL
        writer.submit(entry("good-2"))
        repo.release.set()
        writer.flush(timeout=30)

        assert sorted(r.request_id for r in repo.newest(10)) == ["first", "good-1", "good-2"]
    finally:
        repo.release.set()
        writer.close()


# --- concurrency -------------------------------------------------------------------------


def test_threads_writing_through_one_engine_lose_nothing(repo: PredictionLogRepo) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def write(worker: int) -> None:
        try:
            barrier.wait(10)
            for i in range(200):
                repo.record([entry(f"t{worker}-{i}", worker=f"thread:{worker}")])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    assert repo.count() == 800


def write_rows_in_process(db_path: str, worker: int, rows: int, barrier: Any,
                          error_path: str) -> None:
    """Runs in a spawned process: its own engine, one transaction per row."""
    try:
        engine = create_log_engine(f"sqlite:///{db_path}")
        create_tables(engine)  # several processes starting at once, as in production
        repo = PredictionLogRepo(engine)
        barrier.wait(60)
        for i in range(rows):
            repo.record([entry(f"p{worker}-{i}", worker=f"proc:{worker}")])
        engine.dispose()
    except BaseException as exc:
        Path(error_path).write_text(f"{type(exc).__name__}: {exc}")
        raise


def test_processes_writing_concurrently_end_with_the_exact_count(
    tmp_path: Path, db_path: Path
) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(target=write_rows_in_process,
                    args=(str(db_path), n, 200, barrier, str(tmp_path / f"error-{n}.txt")))
        for n in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(240)

    errors = {p.name: p.read_text() for p in tmp_path.glob("error-*.txt")}
    assert errors == {}
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    engine = create_log_engine(sqlite_url(db_path))
    try:
        repo = PredictionLogRepo(engine)
        assert repo.count() == 800
        with engine.connect() as conn:
            per_worker = dict(conn.execute(text(
                "SELECT worker, COUNT(DISTINCT request_id) FROM prediction_log GROUP BY worker"
            )).all())
    finally:
        engine.dispose()
    assert per_worker == {f"proc:{n}": 200 for n in range(4)}
