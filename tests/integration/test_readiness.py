"""Readiness proves a worker consumes (a ping task round trip), not only that it lives.

Stopping a worker's pool processes (SIGSTOP) leaves its main process answering Celery's
control pings, as a worker that stopped consuming after a reconnect would: `GET /` still
says a worker is there; `GET /ready` and `python -m worker.ping` say it does not consume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.integration.stack import ROOT, Stack
from tests.integration.test_jobs import pool_processes

pytestmark = pytest.mark.integration


def ping_worker(stack: Stack, node: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.ping", node],
        env=stack.env | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_ready_only_while_a_worker_consumes(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("ready", readiness_timeout_seconds=2)
    worker = next(p for p in stack.processes if p.name.startswith("worker"))
    node = f"{worker.name}@{os.uname().nodename}"
    pool = pool_processes(worker.pid)
    assert len(pool) == 2
    with stack.client() as client:
        ready = client.get("/ready")
        pinged = ping_worker(stack, node)
        with stopped(pool):
            alive = client.get("/")
            not_ready = client.get("/ready")
            not_pinged = ping_worker(stack, node)
        again = client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["worker"] == node and ready.json()["round_trip_ms"] > 0
    assert pinged.returncode == 0, pinged.stdout + pinged.stderr
    assert node in pinged.stdout
    assert alive.status_code == 200 and alive.json()["worker"] is True
    assert not_ready.status_code == 503
    assert not_ready.json() == {
        "ready": False,
        "worker": None,
        "round_trip_ms": None,
        "problem": "no worker answered a ping task within 2 s",
    }
    assert not_pinged.returncode == 1 and "no answer within 2 s" in not_pinged.stdout
    assert again.status_code == 200, again.text


def test_ping_of_an_unknown_worker_fails(stack: Stack) -> None:
    # Nothing ever answers for that node: a second's wait decides as well as the
    # readiness timeout's default 5 s.
    answer = ping_worker(stack, "nobody@nowhere", SERVING_READINESS_TIMEOUT_SECONDS="1")
    assert answer.returncode == 1
    assert "nobody@nowhere: no answer within 1 s" in answer.stdout
