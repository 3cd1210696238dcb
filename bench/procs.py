"""Process helpers for the benchmarks: starting and stopping children, CPU pinning, process
trees, CPU and memory accounting.

Pinning works by inheritance: a child started inside `inherited_affinity(cores)` gets
the mask at fork, so every thread and subprocess it creates later (Celery's prefork
children, Redis' background threads) stays on those cores, with no race after start.
Process trees and CPU times come from /proc; without it (not Linux) they are empty.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dev.services import ManagedProcess

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


def usable_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@contextmanager
def inherited_affinity(cores: set[int] | None) -> Iterator[None]:
    """Processes started inside this block run on `cores` (None: no change)."""
    if cores is None:
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def affinity_of(pid: int) -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(pid))
    except (AttributeError, OSError):
        return None


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used) of a live process, from /proc/<pid>/stat."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited, it is only not reaped yet
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _process_table() -> dict[int, tuple[int, float]]:
    if not PROC.is_dir():
        return {}
    table: dict[int, tuple[int, float]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = stat
    return table


def _trees(roots: Iterable[int], table: dict[int, tuple[int, float]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    pending = [pid for pid in roots if pid in table]
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, []))
    return found


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, not `pid` itself."""
    return _trees([pid], _process_table()) - {pid}


def cpu_seconds(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each named group of process trees."""
    table = _process_table()
    return {
        name: sum(table[pid][1] for pid in _trees(roots, table)) for name, roots in groups.items()
    }


def _rss_bytes(pid: int) -> int:
    """Resident memory of a live process (VmRSS); 0 if it is gone or has none (a zombie)."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # reported in kB
    return 0


def rss_bytes(groups: dict[str, list[int]]) -> dict[str, int]:
    """Resident memory of each named group of process trees, summed over its processes
    (pages shared between processes, such as a prefork pool's, count once per process)."""
    table = _process_table()
    return {
        name: sum(_rss_bytes(pid) for pid in _trees(roots, table)) for name, roots in groups.items()
    }


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (not idle, not waiting for I/O)."""
    try:
        first = (PROC / "stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    ticks = [int(value) for value in first[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


def alive(pids: Iterable[int]) -> list[int]:
    return [pid for pid in pids if _stat(pid) is not None]


class ProcessGroup:
    """Every child a benchmark starts; `stop_all` ends them and checks nothing is left."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []

    def start(self, proc: ManagedProcess) -> ManagedProcess:
        self.processes.append(proc)
        return proc.start()

    def adopt(self, proc: ManagedProcess) -> ManagedProcess:
        self.processes.append(proc)
        return proc

    def stop_all(self, grace: float = 5.0) -> list[int]:
        """Stop every child, newest first; kill and return any process still left."""
        started = descendants(os.getpid())
        for proc in reversed(self.processes):
            proc.stop()
        deadline = time.monotonic() + grace
        while (left := alive(started)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return left


def sleep_until(moment: float) -> None:
    """Sleep until a wall-clock moment (time.time())."""
    time.sleep(max(0.0, moment - time.time()))


def cpu_snapshot(groups: dict[str, list[int]]) -> tuple[float, dict[str, float]]:
    """(wall clock, CPU seconds of each group and of everything else on the machine)."""
    used = cpu_seconds(groups)
    busy = machine_busy_seconds()
    used["other"] = busy - sum(used.values()) if busy is not None else 0.0
    return time.time(), used


def measure_cpu(window: tuple[float, float], groups: dict[str, list[int]]) -> dict[str, float]:
    """% of one core each group used inside the window; "other" is the rest of the machine
    (other programs, and kernel work no process is charged for). Ends a little early: the
    load generator exits at the window's end and its CPU time would vanish with it."""
    sleep_until(window[0])
    started, before = cpu_snapshot(groups)
    sleep_until(window[1] - 0.2)
    ended, after = cpu_snapshot(groups)
    # max(0, ...): "other" is the difference of two separately ticking clocks, a little noisy.
    return {
        name: round(max(0.0, 100 * (after[name] - before[name]) / (ended - started)), 1)
        for name in after
    }
