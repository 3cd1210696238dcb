"""The prediction log's spool: rows the database refuses wait in a real Redis stream and
drain() writes them back into a real SQLite file (and a private PostgreSQL, when its
binaries are installed). Databases refuse for real: a read-only file, a full one
(SQLite's max_page_count), a stopped server."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from prometheus_client import REGISTRY
from sqlalchemy import Engine, event, text

from common.prediction_log import (
    BackgroundLogWriter,
    LogSink,
    LogSpool,
    PredictionLogRepo,
    create_log_engine,
    create_tables,
)
from common.prediction_log.spool import decode_row, encode_row
from common.settings import Settings
from common.tables import PredictionLog
from dev.services import ManagedProcess, start_redis, wait_until

REDIS_DB = 60  # of the session's Redis (tests/conftest.py); keys are per test, by prefix
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
# A row as it was given to the log: its inputs whichever column holds them (inputs()).
COLUMNS = [c.name for c in PredictionLog.__table__.columns if c.name not in {"id", "input_packed"}]
# Overflow pages: a row that makes the file grow, so a full one refuses it.
BIG_INPUT = [[0.125] * 4000]


def row(i: int, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "request_id": f"req-{i:05d}",
        "created_at": T0 + timedelta(seconds=i, microseconds=i * 7),
        "model_type": "xgboost" if i % 2 else "sklearn",
        "version": str(1 + i % 3),
        "n_rows": 1 + i % 4,
        "input": [[float(i), 0.5, -1e-7]] * (1 + i % 4),
        "output": {"labels": [f"c{i % 2}"], "probabilities": [[0.25, 0.75]]},
        "latency_ms": 1.25 + i,
        "cached": i % 5 == 0,
        "status": "error" if i % 7 == 0 else "ok",
        "error": "boom" if i % 7 == 0 else None,
        "worker": None if i % 3 == 0 else f"host:{i}",
        "owner": None if i % 6 == 0 else f"owner-{i % 2}",
        "job_id": f"job-{i}" if i % 4 == 0 else None,
        "shadow": i % 8 == 3,
        "primary_request_id": f"req-{i - 1:05d}" if i % 8 == 3 else None,
    }
    values.update(overrides)
    return values


def table_rows(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every logged row by request id, with its timestamp as the aware UTC it was given."""
    repo = PredictionLogRepo(engine)
    found = {}
    for logged in repo.newest(100_000):
        values = {name: getattr(logged, name) for name in COLUMNS} | {"input": logged.inputs()}
        when = values["created_at"]  # SQLite keeps no time zone; PostgreSQL gives its own
        values["created_at"] = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
        found[logged.request_id] = values
    return found


def spooled_total() -> float:
    return REGISTRY.get_sample_value("serving_log_spooled_rows_total") or 0.0


def sqlite_engine(path: Path, read_only: bool = False) -> Engine:
    url = f"sqlite:///file:{path}?mode=ro&uri=true" if read_only else f"sqlite:///{path}"
    return create_log_engine(url)


class DiskLimit:
    """A real "database or disk is full": SQLite's max_page_count on every new connection
    of the engine, set to the file's size plus `pages` by fill(), lifted by free()."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.max_pages: int | None = None
        event.listen(engine, "connect", self._apply)

    def _apply(self, dbapi_connection: Any, _record: Any) -> None:
        if self.max_pages is not None:
            dbapi_connection.execute(f"PRAGMA max_page_count={self.max_pages}")

    def fill(self, pages: int) -> None:
        with self.engine.connect() as conn:
            # The WAL holds pages not yet in the main file: count them in.
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            used = int(conn.execute(text("PRAGMA page_count")).scalar_one())
        self.max_pages = used + pages
        self.engine.dispose()

    def free(self) -> None:
        self.max_pages = None
        self.engine.dispose()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}")
    yield client
    client.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def spool(client: redis.Redis, prefix: str) -> LogSpool:
    return LogSpool(client, prefix)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "log.db"
    engine = create_log_engine(f"sqlite:///{path}")
    create_tables(engine)
    engine.dispose()
    return path


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(db_path)
    yield engine
    engine.dispose()


@pytest.fixture
def read_only(db_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(db_path, read_only=True)
    yield engine
    engine.dispose()


def spooled_ids(spool: LogSpool) -> list[str]:
    return [item.row()["request_id"] for item in spool.oldest(100_000)]


# --- the row format ----------------------------------------------------------------------


def test_a_row_survives_the_spool_with_every_value_and_an_aware_timestamp() -> None:
    original = row(3, input=[{"when": "2025-01-01T00:00:00+00:00"}])

    raw = encode_row(original)

    assert orjson.loads(raw)["created_at"] == "2025-03-01T12:00:03.000021+00:00"
    assert decode_row(raw) == original  # the date-like string in the input stays a string


def test_a_worker_s_matrix_of_inputs_spools_as_the_same_json_as_lists() -> None:
    values = [[0.1, -0.0, 5e-324], [1 / 3, 3.4e38, 2.0**53 + 2]]
    matrix = np.frombuffer(np.array(values).tobytes(), dtype="<f8").reshape(2, 3)

    assert encode_row(row(1, input=matrix)) == encode_row(row(1, input=values))
    assert decode_row(encode_row(row(1, input=matrix)))["input"] == values


def test_naive_and_offset_timestamps_decode_to_the_same_instant_in_utc() -> None:
    plus_one = timezone(timedelta(hours=1))
    naive = decode_row(encode_row(row(1, created_at=datetime(2025, 1, 1, 8, 30))))
    paris = decode_row(encode_row(row(1, created_at=datetime(2025, 1, 1, 9, 30, tzinfo=plus_one))))

    assert naive["created_at"] == datetime(2025, 1, 1, 8, 30, tzinfo=UTC)
    assert naive["created_at"].tzinfo is not None
    assert paris["created_at"] == datetime(2025, 1, 1, 8, 30, tzinfo=UTC)


def test_the_spool_is_one_stream_entry_per_row_under_the_cache_prefix(
    client: redis.Redis, spool: LogSpool, prefix: str
) -> None:
    spool.append([row(1), row(2)])

    assert spool.key == f"{prefix}log-spool"
    assert client.type(spool.key) == b"stream"
    entries = client.xrange(spool.key)
    assert [set(fields) for _, fields in entries] == [{b"row"}, {b"row"}]
    assert [decode_row(fields[b"row"])["request_id"] for _, fields in entries] == [
        "req-00001",
        "req-00002",
    ]


def test_the_spool_from_settings_is_on_the_result_backend_under_the_cache_prefix(
    redis_url: str, client: redis.Redis, prefix: str
) -> None:
    backend = f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}"
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0", result_backend_url=backend, cache_prefix=prefix
    )
    spool = LogSpool.from_settings(settings)
    try:
        spool.append([row(1)])
    finally:
        spool.close()

    assert spool.key == f"{prefix}log-spool"
    assert client.xlen(f"{prefix}log-spool") == 1


# --- record: database first, spool when it refuses ---------------------------------------


def test_a_read_only_database_spools_and_drain_writes_every_row_back(
    engine: Engine, read_only: Engine, spool: LogSpool, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [row(i) for i in range(30)]
    sink = LogSink(PredictionLogRepo(read_only), spool)
    before = spooled_total()

    with caplog.at_level(logging.WARNING, logger="common.prediction_log.sink"):
        sink.record(rows[:10])
        sink.record(rows[10:])

    assert spool.length() == 30
    assert spooled_total() - before == 30
    assert sink.backlog() == 30
    assert REGISTRY.get_sample_value("serving_log_backlog_rows") == 30
    assert PredictionLogRepo(engine).count() == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning, not one per write"
    assert "readonly" in warnings[0].getMessage()
    assert "INSERT" not in warnings[0].getMessage()  # no statement, no input rows

    # The database takes writes again (here: a writable connection to the same file).
    moved = LogSink(PredictionLogRepo(engine), spool).drain()

    assert moved == 30
    assert table_rows(engine) == {r["request_id"]: r for r in rows}
    assert spool.length() == 0
    assert REGISTRY.get_sample_value("serving_log_backlog_rows") == 0


def test_a_working_database_takes_the_rows_and_the_spool_stays_empty(
    engine: Engine, spool: LogSpool
) -> None:
    LogSink(PredictionLogRepo(engine), spool).record([row(1), row(2)])

    assert PredictionLogRepo(engine).count() == 2
    assert spool.length() == 0


def test_redis_down_as_well_makes_record_raise_a_redis_error(
    tmp_path: Path, engine: Engine, read_only: Engine
) -> None:
    proc, url = start_redis(tmp_path / "redis")
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        spool = LogSpool(client, "down:")
        LogSink(PredictionLogRepo(engine), spool).record([row(1)])  # Redis is not needed
        proc.stop()

        with pytest.raises(redis.RedisError):
            LogSink(PredictionLogRepo(read_only), spool).record([row(2)])
    finally:
        proc.stop()
        client.close()
    assert [r["request_id"] for r in table_rows(engine).values()] == ["req-00001"]


def test_after_a_refusal_record_spools_without_asking_until_a_drain_succeeds(
    engine: Engine, spool: LogSpool
) -> None:
    disk = DiskLimit(engine)
    sink = LogSink(PredictionLogRepo(engine), spool, retry_database_after=60)
    disk.fill(pages=0)
    sink.record([row(1, input=BIG_INPUT)])
    disk.free()

    sink.record([row(2)])  # the database could take it, but is left alone for a while

    assert spooled_ids(spool) == ["req-00001", "req-00002"]
    assert sink.drain() == 2
    sink.record([row(3)])  # the drain found the database back: straight in again
    assert spool.length() == 0
    assert sorted(table_rows(engine)) == ["req-00001", "req-00002", "req-00003"]


def test_without_the_pause_record_asks_the_database_every_time(
    engine: Engine, spool: LogSpool
) -> None:
    disk = DiskLimit(engine)
    sink = LogSink(PredictionLogRepo(engine), spool, retry_database_after=0)
    disk.fill(pages=0)
    sink.record([row(1, input=BIG_INPUT)])
    disk.free()

    sink.record([row(2)])

    assert spooled_ids(spool) == ["req-00001"]
    assert list(table_rows(engine)) == ["req-00002"]


def test_a_row_the_table_refuses_is_set_aside_and_the_others_are_written(
    engine: Engine, spool: LogSpool, client: redis.Redis
) -> None:
    sink = LogSink(PredictionLogRepo(engine), spool)

    sink.record([row(1), row(2, model_type=None), row(3)])  # NOT NULL: refused forever

    assert sorted(table_rows(engine)) == ["req-00001", "req-00003"]
    assert spool.length() == 0
    [(_, fields)] = client.xrange(spool.dead_key)
    assert decode_row(fields[b"row"])["request_id"] == "req-00002"
    assert b"NOT NULL" in fields[b"error"]


# --- drain -------------------------------------------------------------------------------


def test_a_drain_that_fills_the_disk_halfway_leaves_the_rest_and_a_rerun_finishes(
    engine: Engine, spool: LogSpool
) -> None:
    rows = [row(i) for i in range(200)]
    spool.append(rows)
    disk = DiskLimit(engine)
    sink = LogSink(PredictionLogRepo(engine), spool)
    disk.fill(pages=6)

    moved = sink.drain(batch_rows=20)

    written = sorted(table_rows(engine))
    assert 0 < moved < 200
    assert moved % 20 == 0  # a batch is one transaction: all of it or none
    assert written == [r["request_id"] for r in rows[:moved]]
    assert spooled_ids(spool) == [r["request_id"] for r in rows[moved:]]

    disk.free()
    assert sink.drain(batch_rows=20) == 200 - moved
    assert sink.drain() == 0

    assert table_rows(engine) == {r["request_id"]: r for r in rows}
    assert spool.length() == 0


def test_rows_a_dead_drain_had_written_are_not_written_twice(
    engine: Engine, spool: LogSpool
) -> None:
    rows = [row(i) for i in range(100)]
    spool.append(rows)
    # A drain that wrote the first 40 rows and died before deleting them from the spool.
    PredictionLogRepo(engine).record(rows[:40])

    assert LogSink(PredictionLogRepo(engine), spool).drain(batch_rows=30) == 100

    assert PredictionLogRepo(engine).count() == 100
    assert table_rows(engine) == {r["request_id"]: r for r in rows}


def test_drain_honours_max_rows_oldest_first(engine: Engine, spool: LogSpool) -> None:
    rows = [row(i) for i in range(50)]
    spool.append(rows)
    sink = LogSink(PredictionLogRepo(engine), spool)

    assert sink.drain(max_rows=15, batch_rows=10) == 15

    assert sorted(table_rows(engine)) == [r["request_id"] for r in rows[:15]]
    assert sink.backlog() == 35


def test_drain_sets_aside_a_row_the_table_refuses_and_writes_the_rest(
    engine: Engine, spool: LogSpool, client: redis.Redis
) -> None:
    spool.append([row(1), row(2, model_type=None), row(3)])
    client.xadd(spool.key, {"row": b"not json"})
    spool.append([row(4)])

    assert LogSink(PredictionLogRepo(engine), spool).drain() == 3

    assert sorted(table_rows(engine)) == ["req-00001", "req-00003", "req-00004"]
    assert spool.length() == 0
    dead = [fields for _, fields in client.xrange(spool.dead_key)]
    refused = encode_row(row(2, model_type=None))
    assert sorted(fields[b"row"] for fields in dead) == sorted([b"not json", refused])


def run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def run(target: Callable[[], None]) -> None:
        try:
            barrier.wait(30)
            target()
        except BaseException as exc:  # reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return errors


def test_two_drainers_at_once_write_every_row_exactly_once(
    db_path: Path, engine: Engine, spool: LogSpool
) -> None:
    rows = [row(i) for i in range(2000)]
    for start in range(0, 2000, 500):
        spool.append(rows[start : start + 500])
    engines = [sqlite_engine(db_path) for _ in range(2)]  # as two processes would
    moved: list[int] = []
    try:
        sinks = [LogSink(PredictionLogRepo(e), spool) for e in engines]
        errors = run_threads([lambda s=s: moved.append(s.drain(batch_rows=100)) for s in sinks])
    finally:
        for e in engines:
            e.dispose()

    assert errors == []
    assert sum(moved) >= 2000  # a batch both read is written by both, once in the table
    assert PredictionLogRepo(engine).count() == 2000
    assert table_rows(engine) == {r["request_id"]: r for r in rows}
    assert spool.length() == 0


def test_rows_spooled_while_others_drain_stay_spooled(
    engine: Engine, read_only: Engine, spool: LogSpool
) -> None:
    spool.append([row(i) for i in range(1000)])
    refused = LogSink(PredictionLogRepo(read_only), spool, retry_database_after=0)
    drainer = LogSink(PredictionLogRepo(engine), spool)

    def spool_more() -> None:
        for i in range(1000, 1300):
            refused.record([row(i)])

    errors = run_threads([lambda: drainer.drain(batch_rows=50), spool_more])
    drainer.drain()

    assert errors == []
    assert PredictionLogRepo(engine).count() == 1300
    assert spool.length() == 0


# --- the API's background writer ---------------------------------------------------------


def test_background_writer_spools_what_a_read_only_database_refuses(
    redis_url: str, prefix: str, engine: Engine, read_only: Engine, spool: LogSpool
) -> None:
    own = redis.Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}")
    writer = BackgroundLogWriter(PredictionLogRepo(read_only), LogSpool(own, prefix), max_batch=7)
    try:
        for i in range(50):
            writer.submit(row(i))
        writer.flush(timeout=30)
    finally:
        writer.close()

    assert sorted(spooled_ids(spool)) == [row(i)["request_id"] for i in range(50)]
    assert LogSink(PredictionLogRepo(engine), spool).drain() == 50
    assert PredictionLogRepo(engine).count() == 50


def test_background_writer_keeps_rows_while_redis_is_down_too(
    tmp_path: Path, read_only: Engine
) -> None:
    proc, url = start_redis(tmp_path / "redis")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    spool = LogSpool(client, "down:")
    writer = BackgroundLogWriter(PredictionLogRepo(read_only), spool)
    try:
        proc.stop()
        for i in range(20):
            writer.submit(row(i))
        writer.flush(timeout=1.5)  # the writer is retrying: nothing was written anywhere
        proc, _ = start_redis(tmp_path / "redis", port=port)
        writer.flush(timeout=30)
        wait_until(lambda: spool.length() == 20, 10, "the spooled rows")
    finally:
        writer.close()
        proc.stop()


# --- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[tuple[list[ManagedProcess], str]]:
    from dev.postgres import find_postgres_bin, start_postgres, stop_postgres

    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres) found")
    proc, url = start_postgres(tmp_path / "postgres")
    procs = [proc]  # the test restarts it: the current one is last
    yield procs, url
    stop_postgres(procs[-1])


def test_a_stopped_postgres_spools_and_a_drain_after_its_restart_writes_all(
    postgres: tuple[list[ManagedProcess], str], spool: LogSpool
) -> None:
    from dev.postgres import postgres_accepts, stop_postgres

    procs, url = postgres
    engine = create_log_engine(url)
    try:
        create_tables(engine)
        sink = LogSink(PredictionLogRepo(engine), spool)
        sink.record([row(0)])
        stop_postgres(procs[0])

        for i in range(1, 21):
            sink.record([row(i)])  # refused (connection refused), spooled

        assert spool.length() == 20
        old = procs[0]
        procs.append(ManagedProcess("postgres", old.args, old.log_path, cwd=old.cwd).start())
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        wait_until(lambda: postgres_accepts("127.0.0.1", port), 60, "postgres again")

        assert sink.drain() == 20
        assert table_rows(engine) == {r["request_id"]: r for r in map(row, range(21))}
        assert spool.length() == 0
    finally:
        engine.dispose()
