"""The prediction log (common.prediction_log) on a real PostgreSQL server this module starts itself.

The server is private: initdb into a temp dir, a free port on 127.0.0.1, stopped (fast
shutdown) at the end of the module. The machine's own PostgreSQL is never touched.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, inspect, select, text
from sqlalchemy.dialects import postgresql

from common.prediction_log import (
    BackgroundLogWriter,
    PredictionLogRepo,
    create_log_engine,
    create_tables,
)
from common.schemas import LogEntry
from common.tables import PredictionLog
from dev.postgres import find_postgres_bin, start_postgres, stop_postgres
from tests.common.test_migrations import (
    check_from_an_unstamped_release,
    check_from_empty,
    check_packed_inputs_down_and_up,
)

pytestmark = pytest.mark.integration

N_PROCESSES = 4
ROWS_PER_PROCESS = 200


def _children(pid: int) -> set[int]:
    """Pids of the direct children of pid (Linux /proc); PostgreSQL forks one per backend."""
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, postgres) on PATH or under "
            "/usr/lib/postgresql/*/bin"
        )
    proc, url = start_postgres(Path(tmp_path_factory.mktemp("postgres")))
    data_dir = Path(proc.args[proc.args.index("-D") + 1])
    children: set[int] = set()
    try:
        yield url
    finally:
        children = _children(proc.pid)  # checkpointer & co., and any backend still open
        stop_postgres(proc)
    assert proc.popen is not None
    assert proc.popen.returncode == 0, f"postgres did not shut down cleanly: {proc.log_tail()}"
    deadline = time.monotonic() + 10
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(children), f"postgres processes left behind: {sorted(_alive(children))}"
    assert not (data_dir / "postmaster.pid").exists()


@pytest.fixture(scope="module")
def engine(pg_url: str) -> Iterator[Engine]:
    engine = create_log_engine(pg_url)
    assert engine.dialect.name == "postgresql"
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def repo(engine: Engine) -> PredictionLogRepo:
    """A repo over an empty table (the server and the table are shared by the module)."""
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE prediction_log RESTART IDENTITY"))
    return PredictionLogRepo(engine)


def make_entry(request_id: str, **overrides: Any) -> dict[str, Any]:
    entry = {
        "request_id": request_id,
        "created_at": datetime.now(UTC),
        "model_type": "xgboost",
        "version": "1",
        "n_rows": 1,
        "input": [{"mean radius": 14.2, "mean texture": 20.5}],
        "output": {"predictions": [{"label": 1, "probabilities": {"0": 0.25, "1": 0.75}}]},
        "latency_ms": 3.5,
        "cached": False,
        "status": "ok",
        "error": None,
        "worker": "host-a:123",
    }
    return entry | overrides


def test_create_tables_twice_keeps_one_table_with_its_constraints(engine: Engine) -> None:
    create_tables(engine)
    create_tables(engine)
    insp = inspect(engine)
    assert "prediction_log" in insp.get_table_names()
    columns = {c["name"]: c["type"] for c in insp.get_columns("prediction_log")}
    assert set(columns) == set(PredictionLog.__table__.columns.keys())
    assert columns["created_at"].timezone is True  # timestamptz, not a naive timestamp
    unique = insp.get_unique_constraints("prediction_log")
    assert [c["column_names"] for c in unique] == [["request_id"]]
    indexed = [i["column_names"] for i in insp.get_indexes("prediction_log")]
    assert ["created_at"] in indexed


def test_duplicate_request_id_keeps_the_first_row(repo: PredictionLogRepo) -> None:
    upsert = repo._upsert
    assert upsert is not None, "PostgreSQL should take the INSERT .. ON CONFLICT path"
    compiled = str(upsert.compile(dialect=postgresql.dialect()))
    assert "ON CONFLICT (request_id) DO NOTHING" in compiled

    repo.record([])
    repo.record([make_entry("req-a", version="1")])
    repo.record([make_entry("req-a", version="2")])  # a redelivered task: skipped
    # Duplicates inside one batch, and next to new rows, are skipped too.
    repo.record([make_entry("req-b"), make_entry("req-b", version="3"), make_entry("req-c")])

    assert repo.count() == 3
    rows = {row.request_id: row for row in repo.newest(10)}
    assert sorted(rows) == ["req-a", "req-b", "req-c"]
    assert rows["req-a"].version == "1"
    assert rows["req-b"].version == "1"


def test_newest_is_newest_first_with_every_field_intact(repo: PredictionLogRepo) -> None:
    start = datetime(2024, 3, 31, 0, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    inputs = [
        [{"mean radius": 10.0 + i, "note": "naïve ✓", "flags": [True, None, 1e-12]}]
        for i in range(5)
    ]
    entries = [
        make_entry(
            f"req-{i}",
            created_at=start + timedelta(seconds=i),
            n_rows=i + 1,
            input=inputs[i],
            latency_ms=0.5 + i,
            cached=i % 2 == 1,
            worker=f"host-{i}:{1000 + i}",
        )
        for i in range(4)
    ]
    failed = make_entry(
        "req-4",
        created_at=start + timedelta(seconds=4),
        input=inputs[4],
        output=None,
        status="error",
        error="model_not_found: no model 'svm' — «version 9»",
        worker=None,
    )
    repo.record(entries[:2])
    repo.record(entries[2:])
    repo.record([failed])

    newest = repo.newest(3)
    assert [row.request_id for row in newest] == ["req-4", "req-3", "req-2"]
    assert [row.id for row in newest] == [5, 4, 3]
    assert [row.request_id for row in repo.newest(100)] == [f"req-{i}" for i in range(4, -1, -1)]

    by_id = {row.request_id: row for row in repo.newest(5)}
    for expected in [*entries, failed]:
        row = by_id[expected["request_id"]]
        assert row.created_at.tzinfo is not None
        assert row.created_at.utcoffset() is not None
        assert row.created_at == expected["created_at"]  # the same instant, to the microsecond
        for name in ("model_type", "version", "n_rows", "input", "output", "latency_ms"):
            assert getattr(row, name) == expected[name], name
        for name in ("cached", "status", "error", "worker"):
            assert getattr(row, name) == expected[name], name
        assert isinstance(row.cached, bool)
        assert isinstance(row.latency_ms, float)

    # What GET /logs returns for these rows.
    body = LogEntry.model_validate(by_id["req-4"]).model_dump(mode="json")
    assert body["output"] is None
    assert body["error"] == failed["error"]
    assert datetime.fromisoformat(body["created_at"]) == failed["created_at"]
    assert LogEntry.model_validate(by_id["req-1"]).input == inputs[1]


def test_background_writer_writes_every_row_once(repo: PredictionLogRepo) -> None:
    writer = BackgroundLogWriter(repo, max_batch=50)
    try:
        for i in range(300):
            writer.submit(make_entry(f"bg-{i}", cached=True, worker=None))
        for i in range(0, 300, 15):
            writer.submit(make_entry(f"bg-{i}", version="duplicate"))
        writer.flush(timeout=60)
    finally:
        writer.close()
    assert repo.count() == 300
    assert all(row.version == "1" for row in repo.newest(300))


def forked_processes() -> multiprocessing.context.ForkServerContext:
    """Processes forked from a server that has imported this module, so that each starts
    with SQLAlchemy, Alembic and the domain's code loaded: spawned, every one imported
    them again, half a second of CPU each for the 16 processes here. Forked from a
    process of their own, not from pytest's, which runs threads and holds connections."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # the server starts with the first process
    return ctx


def _write_rows(url: str, worker: int, barrier: Any) -> None:
    """In a process of its own: half the rows straight through the repo, half in the background."""
    engine = create_log_engine(url)
    create_tables(engine)  # every API and worker process does this at start
    repo = PredictionLogRepo(engine)
    tag = f"host-{worker}:{os.getpid()}"
    entries = [make_entry(f"p{worker}-{i}", worker=tag) for i in range(ROWS_PER_PROCESS)]
    half = ROWS_PER_PROCESS // 2
    barrier.wait(timeout=60)
    for start in range(0, half, 10):
        repo.record(entries[start : start + 10])
    repo.record(entries[:10])  # redelivered: already logged, skipped
    writer = BackgroundLogWriter(repo, max_batch=25)
    for entry in entries[half:]:
        writer.submit(entry)
    writer.flush(timeout=60)
    writer.close()
    engine.dispose()


def test_four_processes_writing_at_once_lose_and_double_nothing(
    repo: PredictionLogRepo, pg_url: str
) -> None:
    ctx = forked_processes()
    barrier = ctx.Barrier(N_PROCESSES)
    processes = [
        ctx.Process(target=_write_rows, args=(pg_url, n, barrier), name=f"log-writer-{n}")
        for n in range(N_PROCESSES)
    ]
    for proc in processes:
        proc.start()
    try:
        for proc in processes:
            proc.join(timeout=120)
    finally:
        for proc in processes:
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert [proc.exitcode for proc in processes] == [0] * N_PROCESSES

    assert repo.count() == N_PROCESSES * ROWS_PER_PROCESS
    with repo.engine.connect() as conn:
        per_worker = conn.execute(
            select(PredictionLog.worker, func.count(func.distinct(PredictionLog.request_id)))
            .group_by(PredictionLog.worker)
            .order_by(PredictionLog.worker)
        ).all()
    assert len(per_worker) == N_PROCESSES
    assert [count for _, count in per_worker] == [ROWS_PER_PROCESS] * N_PROCESSES


def _create_tables_at_once(url: str, barrier: Any, errors: Any) -> None:
    engine = create_log_engine(url)
    with engine.connect():
        pass
    barrier.wait(timeout=60)
    try:
        create_tables(engine)
    except Exception as exc:
        errors.put(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    else:
        errors.put(None)
    finally:
        engine.dispose()


def test_processes_starting_at_once_on_an_empty_database_all_create_tables(
    pg_url: str,
) -> None:
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    ctx = forked_processes()
    failures: list[str] = []
    try:
        for round_ in range(3):
            with admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE fresh_{round_}"))
            url = pg_url.rsplit("/", 1)[0] + f"/fresh_{round_}"
            barrier, errors = ctx.Barrier(N_PROCESSES), ctx.Queue()
            processes = [
                ctx.Process(target=_create_tables_at_once, args=(url, barrier, errors))
                for _ in range(N_PROCESSES)
            ]
            for proc in processes:
                proc.start()
            results = [errors.get(timeout=120) for _ in processes]
            for proc in processes:
                proc.join(timeout=30)
            failures += [error for error in results if error is not None]
    finally:
        admin.dispose()
    assert failures == []


@pytest.fixture
def fresh_database(pg_url: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An empty database of the test's own on the module's server."""
    name = "mig_" + request.node.name.split("[")[-1].rstrip("]").replace("-", "_")[:40]
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    engine = create_log_engine(pg_url.rsplit("/", 1)[0] + f"/{name}")
    yield engine
    engine.dispose()


def test_migrations_from_an_empty_database(fresh_database: Engine) -> None:
    check_from_empty(fresh_database)


@pytest.mark.parametrize("revision", ["0001", "0002"])
def test_migrations_from_a_release_before_migrations(fresh_database: Engine, revision: str) -> None:
    check_from_an_unstamped_release(fresh_database, revision)


def test_packed_inputs_down_to_0003_and_up_again(fresh_database: Engine) -> None:
    check_packed_inputs_down_and_up(fresh_database)


def test_a_worker_s_matrix_of_inputs_is_read_back_as_its_rows(repo: PredictionLogRepo) -> None:
    import numpy as np

    values = [[0.1, -0.0, 5e-324], [1 / 3, 3.4e38, 2.0**53 + 2]]
    repo.record([make_entry("packed", n_rows=2, input=np.array(values, dtype="<f8"))])
    [row] = repo.newest(1)
    assert row.input is None and row.input_packed is not None and row.inputs() == values
