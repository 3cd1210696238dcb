"""One prediction-log writer process for test_log_writers.py, writing the way the service
does: `worker` mode calls PredictionLogRepo.record once per predict task (one entry per
request of the task, as WorkerRuntime.predict); `api` mode submits entries one by one to a
BackgroundLogWriter (as DataPlane for cache hits), which batches them on its thread.

    python -m tests.integration.log_writer_proc DB_PATH NAME MODE ROWS [--hold-after N]

It builds its engine and tables, prints "ready", waits for a line on stdin, writes ROWS
rows (request ids NAME-BATCH-I), printing "committed BATCH SIZE" after each committed
worker batch, then prints "done START END" (epoch seconds) and exits 0. ROWS 0 means
write forever. With --hold-after N (worker mode), after N committed batches it writes one
large batch whose commit never happens: it prints "holding WAL_BEFORE WAL_NOW" (the WAL
file's sizes in bytes) from inside the commit, with the write lock held, and sleeps
there until it is killed. Errors the code logs go to stderr."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import UTC, datetime
from itertools import cycle
from typing import Any

from sqlalchemy import event

from common.prediction_log import (
    BackgroundLogWriter,
    PredictionLogRepo,
    create_log_engine,
    create_tables,
)

FEATURES = ("mean radius", "mean texture", "mean perimeter", "mean area")
# Requests per predict task, cycled: single requests and micro-batches of several sizes.
WORKER_BATCHES = (1, 3, 8, 20, 50, 18)
HELD_BATCH = 3000  # rows of ~1 KB each: more than SQLite's 2 MB page cache, so it spills


def entry(request_id: str, worker: str, padding: int = 0) -> dict[str, Any]:
    row = {name: float(len(request_id) + i) for i, name in enumerate(FEATURES)}
    if padding:
        row["note"] = "x" * padding  # type: ignore[assignment]
    return {
        "request_id": request_id,
        "created_at": datetime.now(UTC),
        "model_type": "xgboost",
        "version": "1",
        "n_rows": 1,
        "input": [row],
        "output": {"labels": ["benign"], "probabilities": [[0.25, 0.75]]},
        "latency_ms": 3.5,
        "cached": False,
        "status": "ok",
        "error": None,
        "worker": worker,
    }


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wal_size(db_path: str) -> int:
    try:
        return os.path.getsize(db_path + "-wal")
    except FileNotFoundError:
        return 0


def hold_in_commit(repo: PredictionLogRepo, db_path: str, name: str, batch: int) -> None:
    before = wal_size(db_path)

    @event.listens_for(repo.engine, "commit")
    def _never_commit(_conn: Any) -> None:
        # Runs inside engine.begin(), after the INSERT and before the COMMIT.
        say(f"holding {before} {wal_size(db_path)}")
        while True:
            time.sleep(60)

    entries = [entry(f"{name}-{batch}-{i}", name, padding=1000) for i in range(HELD_BATCH)]
    repo.record(entries)
    raise AssertionError("the held batch was committed")


def write_worker(
    repo: PredictionLogRepo, db_path: str, name: str, rows: int, hold_after: int | None
) -> None:
    sizes = cycle(WORKER_BATCHES)
    written = batch = 0
    while rows == 0 or written < rows:
        if hold_after is not None and batch == hold_after:
            hold_in_commit(repo, db_path, name, batch)
        size = next(sizes) if rows == 0 else min(next(sizes), rows - written)
        repo.record([entry(f"{name}-{batch}-{i}", name) for i in range(size)])
        say(f"committed {batch} {size}")
        written += size
        batch += 1


def write_api(repo: PredictionLogRepo, name: str, rows: int) -> None:
    writer = BackgroundLogWriter(repo)
    for i in range(rows):
        writer.submit(entry(f"{name}-0-{i}", name))
    writer.flush(timeout=60)
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db_path")
    parser.add_argument("name")
    parser.add_argument("mode", choices=["worker", "api"])
    parser.add_argument("rows", type=int)
    parser.add_argument("--hold-after", type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    engine = create_log_engine(f"sqlite:///{args.db_path}")
    create_tables(engine)  # every process at once, as API and workers start
    repo = PredictionLogRepo(engine)
    say("ready")
    sys.stdin.readline()
    started = time.time()
    if args.mode == "worker":
        write_worker(repo, args.db_path, args.name, args.rows, args.hold_after)
    else:
        write_api(repo, args.name, args.rows)
    say(f"done {started} {time.time()}")
    engine.dispose()


if __name__ == "__main__":
    main()
