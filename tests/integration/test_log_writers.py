"""Several OS processes writing the prediction log into one SQLite file, as the API and
worker processes do (tests/integration/log_writer_proc.py): the exact number of rows, no
"database is locked"; a writer killed with SIGKILL mid-batch leaves a sound file that the
next process opens, reads and writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import Engine, text

from common.prediction_log import PredictionLogRepo, create_log_engine
from tests.integration.log_writer_proc import WORKER_BATCHES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ROWS = 2000
DEADLINE = 90.0  # seconds: generous, for a shared 2-core machine; normally ~2-4 s


class Writer:
    """A log_writer_proc subprocess; its stdout lines are read on a thread."""

    def __init__(self, db: Path, name: str, mode: str, rows: int, *extra: str) -> None:
        self.name = name
        self.stderr_path = db.parent / f"{name}.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.log_writer_proc",
                str(db),
                name,
                mode,
                str(rows),
                *extra,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.lines: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.strip())
                self._changed.notify_all()
        with self._changed:
            self._eof = True  # the process has exited (or closed stdout)
            self._changed.notify_all()

    def wait_for(self, prefix: str, count: int = 1) -> list[str]:
        """The first `count` stdout lines starting with `prefix`, once they are printed."""

        def found() -> list[str]:
            return [line for line in self.lines if line.startswith(prefix)][:count]

        with self._changed:
            ok = self._changed.wait_for(lambda: len(found()) >= count or self._eof, DEADLINE)
            lines = found()
        assert ok and len(lines) >= count, (
            f"{self.name}: no {count} x {prefix!r} (exit {self.proc.poll()}); "
            f"stderr: {self.stderr()}"
        )
        return lines

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> int:
        rc = self.proc.wait(DEADLINE)
        self._reader.join(10)
        return rc

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def committed(self) -> dict[int, int]:
        """batch number -> rows, for every batch the writer reported committed."""
        with self._changed:
            lines = [line.split() for line in self.lines if line.startswith("committed ")]
        return {int(batch): int(size) for _, batch, size in lines}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._stderr.close()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.stdout is not None:
            self._reader.join(10)
            self.proc.stdout.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "predictions.db"


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    started: list[Writer] = []
    yield started
    for writer in started:
        writer.stop()


@pytest.fixture
def open_engine(db: Path) -> Iterator[list[Engine]]:
    engines: list[Engine] = []
    yield engines
    for engine in engines:
        engine.dispose()


def start(writers: list[Writer], db: Path, name: str, mode: str, rows: int, *extra: str) -> Writer:
    writer = Writer(db, name, mode, rows, *extra)
    writers.append(writer)
    return writer


def rows_by_writer(engine: Engine) -> dict[str, Counter[int]]:
    """writer -> batch number -> rows, from the request ids NAME-BATCH-I."""
    found: dict[str, Counter[int]] = {}
    with engine.connect() as conn:
        for (request_id,) in conn.execute(text("SELECT request_id FROM prediction_log")):
            name, batch, _ = request_id.rsplit("-", 2)
            found.setdefault(name, Counter())[int(batch)] += 1
    return found


def integrity(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text("PRAGMA integrity_check"))]


def assert_clean(writer: Writer, rc: int) -> None:
    err = writer.stderr()
    assert rc == 0, f"{writer.name} exited {rc}: {err}"
    assert "database is locked" not in err
    assert "Traceback" not in err and "ERROR" not in err, err


def test_four_processes_write_every_row_exactly_once(
    db: Path, writers: list[Writer], open_engine: list[Engine]
) -> None:
    # Two as the workers write (one record() per predict task), two as the API writes
    # (BackgroundLogWriter): every process creates the tables at once, then all write.
    names = {"w1": "worker", "w2": "worker", "a1": "api", "a2": "api"}
    procs = [start(writers, db, name, mode, ROWS) for name, mode in names.items()]
    for proc in procs:
        proc.wait_for("ready")
    for proc in procs:
        proc.go()
    rcs = [proc.finish() for proc in procs]

    for proc, rc in zip(procs, rcs, strict=True):
        assert_clean(proc, rc)
    spans = [proc.wait_for("done ")[0].split()[1:] for proc in procs]
    engine = create_log_engine(f"sqlite:///{db}")
    open_engine.append(engine)
    with engine.connect() as conn:
        total, distinct = conn.execute(
            text("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM prediction_log")
        ).one()
        per_worker: dict[str, int] = dict(
            conn.execute(text("SELECT worker, COUNT(*) FROM prediction_log GROUP BY worker")).all()
        )
    assert (total, distinct) == (4 * ROWS, 4 * ROWS)
    assert per_worker == dict.fromkeys(names, ROWS)
    assert integrity(engine) == ["ok"]
    elapsed = max(float(end) for _, end in spans) - min(float(begin) for begin, _ in spans)
    print(f"\n4 writers x {ROWS} rows: {elapsed:.2f} s, {4 * ROWS / elapsed:,.0f} rows/s")


def test_a_writer_killed_inside_its_commit_leaves_a_sound_file(
    db: Path, writers: list[Writer], open_engine: list[Engine]
) -> None:
    # The writer commits 12 batches, then inserts 3,000 rows of ~1 KB in one batch (more
    # than the page cache: SQLite spills its pages into the WAL) and is killed before it
    # commits, with the write lock held. Nothing else has the file open: the next opener
    # recovers it.
    killed = start(writers, db, "k", "worker", 0, "--hold-after", "12")
    killed.wait_for("ready")
    killed.go()
    _, wal_before, wal_held = killed.wait_for("holding ")[0].split()
    committed = killed.committed()
    os.kill(killed.proc.pid, signal.SIGKILL)
    assert killed.finish() == -signal.SIGKILL
    assert "database is locked" not in killed.stderr()

    assert len(committed) == 12
    assert int(wal_held) > int(wal_before), "the held batch never reached the WAL"
    assert (db.parent / "predictions.db-wal").stat().st_size >= int(wal_held)
    engine = create_log_engine(f"sqlite:///{db}")
    open_engine.append(engine)
    assert integrity(engine) == ["ok"]
    # Every committed batch whole, and nothing of the uncommitted one.
    assert rows_by_writer(engine) == {"k": Counter(committed)}
    rows = PredictionLogRepo(engine).newest(1000)
    assert len(rows) == sum(committed.values())
    assert all(r.input[0]["mean radius"] > 0 and r.output["labels"] == ["benign"] for r in rows)
    engine.dispose()

    fresh = start(writers, db, "f", "worker", 500)
    fresh.wait_for("ready")
    fresh.go()
    assert_clean(fresh, fresh.finish())
    assert integrity(engine) == ["ok"]
    assert rows_by_writer(engine) == {"k": Counter(committed), "f": Counter(fresh.committed())}
    assert sum(fresh.committed().values()) == 500


def test_a_writer_killed_while_another_writes_costs_the_other_nothing(
    db: Path, writers: list[Writer], open_engine: list[Engine]
) -> None:
    # One writer writes batches without end; another writes 2,000 rows beside it. The first
    # is killed at an arbitrary point once it has committed 400 rows: most likely inside a
    # batch, or holding the write lock the other is waiting for.
    killed = start(writers, db, "k", "worker", 0)
    steady = start(writers, db, "s", "worker", ROWS)
    for proc in (killed, steady):
        proc.wait_for("ready")
    killed.go()
    steady.go()
    deadline = time.monotonic() + DEADLINE
    while sum(killed.committed().values()) < 400:
        assert killed.proc.poll() is None and time.monotonic() < deadline, killed.stderr()
        time.sleep(0.01)
    os.kill(killed.proc.pid, signal.SIGKILL)
    assert killed.finish() == -signal.SIGKILL
    committed: dict[int, Any] = killed.committed()

    assert_clean(steady, steady.finish())
    engine = create_log_engine(f"sqlite:///{db}")
    open_engine.append(engine)
    assert integrity(engine) == ["ok"]
    found = rows_by_writer(engine)
    assert sum(found["s"].values()) == ROWS
    # Batches are all or nothing: every batch reported is whole; at most one more batch
    # (committed, but killed before it said so) is there, whole too.
    extra = {batch: n for batch, n in found["k"].items() if batch not in committed}
    assert {b: found["k"][b] for b in committed} == committed
    after = max(committed) + 1
    assert extra in ({}, {after: WORKER_BATCHES[after % len(WORKER_BATCHES)]})
