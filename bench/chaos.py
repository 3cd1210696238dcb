"""`make soak CHAOS=1`: faults injected into the mixed soak while it runs.

Every CHAOS_EVERY_SECONDS, in turn:
- **kill**: SIGKILL of one of the worker's pool processes (the OOM killer, say); its task
  goes back to the queue and runs again;
- **read-only log**: the SQLite prediction log and its write-ahead log made immutable
  (`chattr +i`) for READ_ONLY_SECONDS; predictions must keep answering, their rows wait
  in the spool;
- **chunk errors**: jobs sent to a model whose every chunk fails; each must end `failed`.

The verdict adds: no job left unfinished (those jobs failed, every other succeeded), no
prediction failed because of the log (no 5xx), and, once the database is back and the
spool drained, as many log rows as answered requests (predictions and jobs).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from common.registry import Registry
from common.store import LocalStore

CHAOS_EVERY_SECONDS = 20.0
READ_ONLY_SECONDS = 15.0
FAILING_JOBS = 5
FAILING_MODEL = "chaos"
DRAIN_SECONDS = 120.0
SETTINGS = {"allow_unsafe_pickle": "true", "job_sweep_seconds": "1"}


class FailingModel:
    """Published as a pickle (the soak's stack allows it): every chunk it predicts fails
    with an error of the model's own."""

    def predict_proba(self, matrix: Any) -> Any:
        raise RuntimeError("injected chunk failure")


@dataclass
class Chaos:
    tmp: Path  # the stack's folder: its store and its SQLite log
    worker_pid: int
    redis_url: str
    kills: int = 0
    read_only_windows: int = 0
    failing_jobs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    answered: int = 0  # requests and jobs answered, each owed one log row
    missing: int = 0  # of those, without their row once the spool drained

    @property
    def database(self) -> Path:
        return self.tmp / "predictions.db"


def publish_failing_model(tmp: Path, metadata: dict[str, Any]) -> None:
    fields = metadata | {"model_type": FAILING_MODEL, "artifact_format": "pickle"}
    Registry(LocalStore(tmp / "store")).publish(fields, pickle.dumps(FailingModel()))


def demo_metadata(tmp: Path) -> dict[str, Any]:
    meta = Registry(LocalStore(tmp / "store")).metadata("xgboost", "1")
    return meta.model_dump(exclude={"version", "sha256", "created_at", "artifact_deleted_at"})


def kill_pool_process(chaos: Chaos) -> None:
    path = Path(f"/proc/{chaos.worker_pid}/task/{chaos.worker_pid}/children")
    children = [int(pid) for pid in path.read_text().split()]
    if children:
        os.kill(random.choice(children), signal.SIGKILL)  # noqa: S311 (not for security)
        chaos.kills += 1


def chattr(flag: str, paths: list[Path]) -> bool:
    if shutil.which("chattr") is None:
        return False
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, check=False)
    return done.returncode == 0


async def read_only_log(chaos: Chaos) -> None:
    # Not the -shm index: SQLite maps it, and a mapped page of an immutable file is a SIGBUS.
    files = [p for p in (chaos.database, Path(f"{chaos.database}-wal")) if p.exists()]
    if not chattr("+i", files):
        chaos.notes.append("chattr +i unavailable here: the read-only log was skipped")
        return
    chaos.read_only_windows += 1
    try:
        await asyncio.sleep(READ_ONLY_SECONDS)
    finally:
        chattr("-i", files)


async def failing_jobs(chaos: Chaos, load: Any) -> None:
    for _ in range(FAILING_JOBS):
        body = load.job.render(next(load.ids))
        response = await load.send("chaos job", "POST", "/jobs", _with_model(body))
        if response is not None and response.status_code == 202:
            chaos.failing_jobs.append(response.json()["job_id"])


def _with_model(body: bytes) -> bytes:
    return orjson.dumps(orjson.loads(body) | {"model_type": FAILING_MODEL})


async def run_chaos(chaos: Chaos, load: Any) -> None:
    turn = 0
    while time.monotonic() + CHAOS_EVERY_SECONDS < load.until:
        await asyncio.sleep(CHAOS_EVERY_SECONDS)
        action = turn % 3
        turn += 1
        if action == 0:
            kill_pool_process(chaos)
        elif action == 1:
            await read_only_log(chaos)
        else:
            await failing_jobs(chaos, load)


async def chaos_verdict(chaos: Chaos, load: Any) -> list[str]:
    """What chaos mode adds to the verdict (called once the load and its jobs are done)."""
    problems = []
    for job_id in chaos.failing_jobs:
        response = await load.send("chaos final read", "GET", f"/jobs/{job_id}")
        status = response.json()["status"] if response is not None else "unreadable"
        if status != "failed":
            problems.append(f"a job whose chunks fail ended {status!r}, not 'failed'")
    chaos.answered = len(set(load.answered))
    chaos.missing = await asyncio.to_thread(rows_missing, chaos, set(load.answered))
    if chaos.missing:
        problems.append(f"{chaos.missing} answered requests have no prediction log row")
    return problems


def rows_missing(chaos: Chaos, answered: set[str]) -> int:
    """How many answered requests have no log row, once the spool has drained (or
    DRAIN_SECONDS have passed)."""
    client = redis.Redis.from_url(chaos.redis_url, socket_timeout=5)
    deadline = time.monotonic() + DRAIN_SECONDS
    try:
        while client.xlen("serving:log-spool") and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        client.close()
    with sqlite3.connect(chaos.database) as conn:
        logged = {row[0] for row in conn.execute("SELECT request_id FROM prediction_log")}
    return len(answered - logged)


def summary(chaos: Chaos) -> str:
    text = (
        f"chaos: {chaos.kills} pool processes killed, {chaos.read_only_windows} read-only "
        f"log windows of {READ_ONLY_SECONDS:g} s, {len(chaos.failing_jobs)} jobs with failing "
        "chunks"
    )
    rows = f"log rows: {chaos.answered - chaos.missing:,} of {chaos.answered:,} answered requests"
    return "\n".join([text, rows, *chaos.notes])
