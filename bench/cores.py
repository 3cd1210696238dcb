"""Where a benchmark's processes run (the servers on one core, the load generator on
another) and which code they run (bench/stack.py re-exports these names)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.procs import can_pin, usable_cores
from bench.wrk import wrk_path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CoreLayout:
    servers: set[int] | None  # None: not pinned
    generator: set[int] | None

    @property
    def pinned(self) -> bool:
        return self.servers is not None

    def describe(self) -> str:
        if not self.pinned:
            return "not pinned"
        return (
            f"pinned: servers on core {sorted(self.servers or [])}, "
            f"load generator on core {sorted(self.generator or [])}"
        )


def plan_cores(pin: bool | None) -> CoreLayout:
    cores = usable_cores()
    possible = can_pin() and len(cores) >= 2
    if pin and not possible:
        print("note: --pin needs os.sched_setaffinity and 2 cores; running unpinned")
    if not (possible and (pin if pin is not None else True)):
        return CoreLayout(None, None)
    return CoreLayout({cores[0]}, {cores[1]})


def choose_generator(choice: str) -> str:
    if choice == "wrk" and wrk_path() is None:
        raise SystemExit("--generator wrk: wrk is not installed")
    if choice == "auto":
        return "wrk" if wrk_path() else "python"
    return choice


def generator_processes(layout: CoreLayout) -> int:
    if layout.generator is not None:
        return len(layout.generator)
    return max(1, (os.cpu_count() or 2) // 2)


def code_version() -> str:
    """The commit measured, and whether the working tree differs from it."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    commit = git("log", "-1", "--oneline") or "unknown"
    changed = [line for line in git("status", "--porcelain").splitlines() if line]
    return commit + (f" (+ {len(changed)} uncommitted changes)" if changed else "")
