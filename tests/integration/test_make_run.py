"""`make run` (python -m dev.run) stops everything it started when a process manager
sends SIGTERM twice (its stop, then its kill, or make forwarding the signal its group got
as well): no API left on the port, no worker, no Flower, no private Redis.

The whole stack's test catches the race (a signal landing between the first one's
KeyboardInterrupt and the shutdown) only now and then (1 run in 14 before the fix); the
second puts dev.run's own handler through it thirty times: before the fix 1, 8 and 15 of
the thirty were cut short in three runs, none since."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.services import free_port, tcp_open, wait_until

ROOT = Path(__file__).resolve().parents[2]
BURST = 3000


Process = tuple[int, str]  # a pid and its start time: a pid alone may be reused


def _stat(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, ... (None once gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in {"Z", "X"} else fields


def descendants(pid: int) -> set[Process]:
    """Every running process under `pid`, with its start time."""
    tree: dict[int, list[Process]] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields is not None:  # fields[1]: the parent; fields[19]: the start time
            tree.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    found: set[Process] = set()
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def running(process: Process) -> bool:
    fields = _stat(process[0])
    return fields is not None and fields[19] == process[1]


class Launched:
    def __init__(self, launcher: subprocess.Popen[bytes], output: Path, ports: dict[str, int]):
        self.launcher, self.output, self.ports = launcher, output, ports
        self.seen: set[Process] = set()


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[Launched]:
    ports = {"api": free_port(), "flower": free_port(), "worker metrics": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env |= {
        # Nothing answers there: it starts a private Redis of its own (in the state dir).
        "SERVING_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "SERVING_LOCAL_STORE_PATH": str(tmp_path / "store"),
        "SERVING_DATABASE_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
        "SERVING_FLOWER_PORT": str(ports["flower"]),
        "SERVING_WORKER_METRICS_PORT": str(ports["worker metrics"]),
        "SERVING_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    output = tmp_path / "run.out"
    command = [sys.executable, "-m", "dev.run", "--port", str(ports["api"])]
    command += ["--state-dir", str(tmp_path / "state")]
    with output.open("wb") as out:
        launcher = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    launched = Launched(launcher, output, ports)
    try:
        yield launched
    finally:
        # After a failure: nothing this test started keeps running past it.
        launched.seen |= descendants(launcher.pid)
        if launcher.poll() is None:
            launcher.kill()
        for process in launched.seen:
            if running(process):
                os.kill(process[0], signal.SIGKILL)
        launcher.wait(10)


def test_two_quick_sigterms_stop_everything_it_started(launched: Launched) -> None:
    launcher, output, ports = launched.launcher, launched.output, launched.ports

    def ready() -> bool:
        assert launcher.poll() is None, output.read_text()
        return "The stack runs on" in output.read_text()

    wait_until(ready, 240, "make run")
    found = re.search(r"started a private one at redis://127\.0\.0\.1:(\d+)/", output.read_text())
    assert found, output.read_text()
    ports["redis"] = int(found.group(1))
    processes = launched.seen = descendants(launcher.pid)
    for name, port in ports.items():
        if name != "worker metrics":  # bound by the worker a little after it starts
            assert tcp_open("127.0.0.1", port), f"{name} is not listening"
    # redis, worker (main and 2 pool processes), api (uvicorn and its 2 workers), flower
    assert len(processes) >= 6, processes

    started = time.monotonic()
    # A burst (a few milliseconds of signals) so that some land while the first one's
    # KeyboardInterrupt is still on its way to the `finally` that stops everything: a
    # make forwarding the SIGTERM its process group got as well does that. Then more
    # while it stops.
    for _ in range(BURST):
        os.kill(launcher.pid, signal.SIGTERM)
    for delay in (0.05, 0.3, 1.0):
        time.sleep(delay)
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)
    code = launcher.wait(60)
    took = time.monotonic() - started
    print(f"\nmake run stopped {len(processes)} processes {took:.1f} s after the first SIGTERM")

    text = output.read_text()
    assert code == 0, text
    assert "stopped everything make run started" in text
    left = sorted(p for p in processes if running(p))
    assert left == [], f"still running: {left}"
    for name, port in ports.items():
        assert not tcp_open("127.0.0.1", port), f"{name} still listens on {port}"


# dev.run's handler and shutdown around a loop shaped like its main's: the race is
# between the first signal's KeyboardInterrupt and the shutdown's first line.
HARNESS = """
import sys, time
from dev import run

for sig in run.STOP_SIGNALS:
    run.signal.signal(sig, run._interrupt)
print("ready", flush=True)
try:
    while True:
        time.sleep(0.5)
except KeyboardInterrupt:
    pass
finally:
    run.stop_all([])
    time.sleep(0.1)  # more signals keep coming meanwhile
    print("stopped", flush=True)
"""


def test_no_burst_of_signals_cuts_the_shutdown_short() -> None:
    outcomes = []
    for _ in range(30):
        harness = subprocess.Popen(
            [sys.executable, "-c", HARNESS],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert harness.stdout is not None and harness.stdout.readline() == b"ready\n"
        time.sleep(0.02)
        for _ in range(BURST):
            try:
                os.kill(harness.pid, signal.SIGTERM)
            except ProcessLookupError:
                break
        out, err = harness.communicate(timeout=20)
        outcomes.append((harness.returncode, b"stopped" in out, err.decode()[-300:]))
    cut_short = [o for o in outcomes if o[:2] != (0, True)]
    assert cut_short == [], f"{len(cut_short)} of 30 shutdowns were cut short: {cut_short[0]}"
