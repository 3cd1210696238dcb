"""A CPU cap per host: a cgroup whose processes share a fixed part of the machine's CPU.

cgroup v2's `cpu.max` where the cpu controller is on the unified hierarchy; on a machine
that mounts it as cgroup v1 (a hybrid layout, as on this project's CI machines) the same
quota through `cpu.cfs_quota_us` / `cpu.cfs_period_us`, which the kernel enforces with the
same CFS bandwidth control. Groups carry the creating process's pid in their name, so a
run that was killed leaves nothing the next one does not remove (`remove_stale`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from dev.hosts.network import PREFIX, pid_alive

# 10 ms, not the 100 ms default: a host held to a tenth of a CPU then waits at most 9 ms
# at a time, not 90 ms, and its latency stays a property of the work, not of the quota.
PERIOD_US = 10_000


def _mounts() -> list[tuple[str, str, str]]:
    """(type, mount point, options) of every cgroup file system mounted."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        _, point, fstype, options, *_ = line.split()
        if fstype in {"cgroup", "cgroup2"}:
            found.append((fstype, point, options))
    return found


def cpu_root() -> tuple[Path, int] | None:
    """The directory under which CPU-capped groups go, and its cgroup version."""
    for fstype, point, _ in _mounts():
        if fstype == "cgroup2":
            controllers = Path(point, "cgroup.controllers")
            if controllers.exists() and "cpu" in controllers.read_text().split():
                return Path(point), 2
    for fstype, point, options in _mounts():
        if fstype == "cgroup" and "cpu" in options.split(","):
            return Path(point), 1
    return None


def unavailable_reason() -> str | None:
    if cpu_root() is None:
        return "no cgroup file system with the cpu controller is mounted"
    return None


@dataclass
class CpuCap:
    """A cgroup limited to `cpus` CPUs (0.5: half of one core's time)."""

    path: Path
    version: int
    cpus: float

    @classmethod
    def create(cls, name: str, cpus: float, period_us: int = PERIOD_US) -> CpuCap:
        root = cpu_root()
        if root is None:
            raise RuntimeError(unavailable_reason())
        base, version = root
        if version == 2:  # a child can use the cpu controller only if its parent hands it down
            (base / "cgroup.subtree_control").write_text("+cpu")
        path = base / f"{PREFIX}{os.getpid()}-{name}"
        path.mkdir(exist_ok=True)
        cap = cls(path, version, cpus)
        quota = max(1000, round(cpus * period_us))
        if version == 2:
            (path / "cpu.max").write_text(f"{quota} {period_us}")
        else:
            (path / "cpu.cfs_period_us").write_text(str(period_us))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
        return cap

    def wrap(self, args: list[str]) -> list[str]:
        """A command that joins this group, then execs args: it and everything it forks
        are capped from their first instruction."""
        join = f'echo $$ > {self.path / "cgroup.procs"} && exec "$@"'
        return ["sh", "-c", join, "sh", *args]

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def throttled_seconds(self) -> float:
        """How long the kernel held the group back for being over its quota."""
        stat = dict(
            line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line
        )
        if "throttled_usec" in stat:
            return int(stat["throttled_usec"]) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9

    def remove(self, timeout: float = 10.0) -> None:
        """Kill whatever is still in the group, then delete it."""
        remove_group(self.path, timeout)


def remove_group(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while path.exists():
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            path.rmdir()
            return
        except OSError:  # busy: members not reaped yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def remove_stale() -> list[Path]:
    """Delete the groups of runs whose creating process is gone."""
    root = cpu_root()
    removed = []
    for path in root[0].glob(f"{PREFIX}*") if root else []:
        owner = path.name[len(PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not pid_alive(int(owner)):
            remove_group(path)
            removed.append(path)
    return removed
