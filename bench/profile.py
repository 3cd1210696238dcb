"""Sampling profiles of the services during a benchmark's measured windows, with py-spy.

`start_profilers` runs one `py-spy record` per service (its whole process tree,
`--subprocesses`; `--nonblocking`, so the services are never paused) for the whole seconds
of a window, writing collapsed stacks (`--format raw`: one line `frame;frame;... count`
per distinct stack). `summarise` reads such a file: the share of samples in which each
function is anywhere on the stack (total, inclusive) and innermost (self), and how the
samples split between the tree's processes. py-spy leaves idle threads out: it samples a
thread only while the kernel has it running or runnable (state R), so samples / (rate x
seconds) is how many threads were on a core or waiting for one, on average. On a shared
core that waiting counts too: a process preempted by the one it just woke (say, by a
socket send to Redis on the pinned core) is charged to the call it was in. `--gil` keeps
only the samples of threads holding the GIL, which leaves out waits inside calls that
release it (socket I/O).
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import ProcessGroup, inherited_affinity
from bench.tables import markdown_table
from dev.services import ManagedProcess

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RATE = 200  # samples per second per thread
TOP = 15
PROCESS_FRAME = re.compile(r'^process (\d+):".*"$', re.DOTALL)
THREAD_FRAME = re.compile(r"^thread \(0x[0-9a-fA-F]+\)$")
# "function (file:line)", "function (file)" with --nolineno
FUNCTION_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
LIBRARY_DIRS = re.compile(r".*/(?:site-packages|dist-packages|lib/python3\.\d+)/")


def py_spy_path() -> str | None:
    """py-spy next to this interpreter (the virtualenv's), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


# --- summarising collapsed stacks ---------------------------------------------------------


def short_path(path: str, root: Path = ROOT) -> str:
    """A file relative to the repository, site-packages or the standard library."""
    prefix = f"{root}/"
    if path.startswith(prefix):
        return path[len(prefix) :]
    return LIBRARY_DIRS.sub("", path, count=1)


def function_name(frame: str, root: Path = ROOT) -> str:
    """`file:function` of one py-spy frame (`function (file:line)`), the line dropped."""
    match = FUNCTION_FRAME.match(frame)
    if match is None:
        return frame
    return f"{short_path(match['file'], root)}:{match['function']}"


@dataclass(frozen=True)
class Share:
    function: str
    total: float  # fraction of the samples with the function anywhere on the stack
    innermost: float  # fraction with the function innermost (its "self" share)
    callers: int = 0  # callers on exactly the same samples, folded into this function

    @property
    def label(self) -> str:
        return self.function + (f" (+{self.callers} callers)" if self.callers else "")


@dataclass
class ProfileSummary:
    samples: int = 0
    by_process: Counter[int] = field(default_factory=Counter)  # pid -> samples
    total: Counter[str] = field(default_factory=Counter)  # function -> samples, anywhere
    innermost: Counter[str] = field(default_factory=Counter)  # function -> samples, innermost
    stacks: dict[str, set[int]] = field(default_factory=dict)  # function -> its stacks (lines)
    depth: Counter[str] = field(default_factory=Counter)  # function -> its deepest position

    def share(self, function: str, callers: int = 0) -> Share:
        n = self.samples or 1
        return Share(function, self.total[function] / n, self.innermost[function] / n, callers)

    def top_total(self, n: int = TOP, fold_callers: bool = True) -> list[Share]:
        """By total share. Folding: of the functions found on exactly the same stacks (the
        entry points and wrappers above a hot function), only the innermost is listed."""
        if not fold_callers:
            return [self.share(name) for name, _ in _most_common(self.total, n)]
        chains: dict[frozenset[int], list[str]] = {}
        for function in self.total:
            chains.setdefault(frozenset(self.stacks[function]), []).append(function)
        callers = {
            max(chain, key=lambda f: (self.depth[f], f)): len(chain) - 1
            for chain in chains.values()
        }
        shown = Counter({function: self.total[function] for function in callers})
        return [self.share(name, callers[name]) for name, _ in _most_common(shown, n)]

    def top_self(self, n: int = TOP) -> list[Share]:
        return [self.share(name) for name, _ in _most_common(self.innermost, n)]


def _most_common(counts: Counter[str], n: int) -> list[tuple[str, int]]:
    """By count, then by name: the same input always gives the same order."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]


def read_stacks(path: Path) -> list[str]:
    """A collapsed-stacks file's lines, split on newlines only. A frame's text may hold
    any byte (py-spy --nonblocking sometimes reads a half-written frame): a carriage
    return, which text mode turns into a newline, or U+2028, where str.splitlines breaks,
    would cut a stack in two."""
    return path.read_bytes().decode(errors="replace").split("\n")


def summarise(lines: Iterable[str], root: Path = ROOT) -> ProfileSummary:
    """Collapsed stacks (`frame;frame;...;innermost count`, as `py-spy record --format raw`
    writes them, with `process PID:"cmdline"` frames first under --subprocesses) -> the
    samples of each function. A function counts once per sample however often it recurs."""
    summary = ProfileSummary()
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            raise ValueError(f"line {number} does not end with a sample count: {line!r}") from None
        pid = 0
        functions: list[str] = []
        for frame in stack.split(";") if stack else []:
            if process := PROCESS_FRAME.match(frame):
                pid = int(process[1])  # the innermost process frame is the sample's process
            elif not THREAD_FRAME.match(frame):
                functions.append(function_name(frame, root))
        summary.samples += count
        summary.by_process[pid] += count
        for position, function in enumerate(functions):
            summary.depth[function] = max(summary.depth[function], position)
            summary.stacks.setdefault(function, set()).add(number)
        for function in set(functions):
            summary.total[function] += count
        if functions:
            summary.innermost[functions[-1]] += count
    return summary


def format_summary(
    title: str,
    summary: ProfileSummary,
    rate: float,
    seconds: float,
    top: int = TOP,
    gil: bool = False,
) -> str:
    """A heading, the samples per process, and the top functions by total and by self
    (gil: recorded with --gil, so each sample is of the thread holding the GIL)."""
    sampled = "threads holding the GIL" if gil else "threads running or runnable"
    busy = summary.samples / (rate * seconds) if rate * seconds else 0.0
    processes = ", ".join(
        f"{pid}: {100 * n / (summary.samples or 1):.0f}%"
        for pid, n in sorted(summary.by_process.items())
    )
    lines = [
        f"#### {title}",
        "",
        f"{summary.samples:,} samples in {seconds:g} s at {rate:g}/s: {busy:.2f} {sampled} "
        f"on average; samples by process: {processes or 'none'}",
    ]
    if not summary.samples:
        return "\n".join(lines)

    lines += [
        "",
        f"Top {top} by total (inclusive) share of samples (callers found on exactly the "
        "same samples folded into the function they call):",
        "",
        _shares_table(summary.top_total(top), "total"),
        "",
        f"Top {top} by self share of samples:",
        "",
        _shares_table(summary.top_self(top), "innermost"),
    ]
    return "\n".join(lines)


def _shares_table(shares: list[Share], first: str) -> str:
    columns = ("total", "innermost") if first == "total" else ("innermost", "total")
    header = ["function", *("self %" if c == "innermost" else "total %" for c in columns)]
    rows = [[s.label, *(f"{100 * getattr(s, c):.1f}" for c in columns)] for s in shares]
    return markdown_table(header, rows)


# --- recording ----------------------------------------------------------------------------


@dataclass
class Recording:
    service: str
    output: Path
    seconds: int
    proc: ManagedProcess

    def wait(self, slack: float = 30.0) -> Path:
        """Wait for py-spy to finish; the raw output, or an error with py-spy's own words."""
        assert self.proc.popen is not None
        self.proc.popen.wait(self.seconds + slack)
        if self.proc.popen.returncode != 0 or not self.output.is_file():
            raise RuntimeError(
                f"py-spy failed on {self.service} (exit status {self.proc.popen.returncode}):\n"
                f"{self.proc.log_tail()}"
            )
        return self.output


@dataclass(frozen=True)
class ProfileOptions:
    out_dir: Path
    rate: int = DEFAULT_RATE
    gil: bool = False  # only samples holding the GIL


def window_seconds(window: tuple[float, float]) -> int:
    """py-spy takes whole seconds: the window's whole seconds, at least one."""
    return max(1, int(window[1] - window[0]))


def start_profilers(
    services: dict[str, int],
    stem: str,
    window: tuple[float, float],
    options: ProfileOptions,
    group: ProcessGroup,
    log_dir: Path,
    cores: set[int] | None,
) -> list[Recording]:
    """At the window's start, one py-spy per service (name -> root pid), on `cores`; its
    output `<out_dir>/<stem>-<service>.txt`."""
    spy = py_spy_path()
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install -r requirements.txt)")
    seconds = window_seconds(window)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    time.sleep(max(0.0, window[0] - time.time()))
    recordings = []
    for service, pid in services.items():
        output = options.out_dir / f"{stem}-{service}.txt"
        output.unlink(missing_ok=True)  # a file left by an earlier run must not pass for this one
        args = [
            spy, "record",
            "--pid", str(pid),
            "--subprocesses",
            "--nonblocking",
            "--rate", str(options.rate),
            "--duration", str(seconds),
            "--format", "raw",
            "--output", str(output),
            *(["--gil"] if options.gil else []),
        ]  # fmt: skip
        name = f"py-spy-{service}"
        with inherited_affinity(cores):
            proc = group.start(ManagedProcess(name, args, log_dir / f"{stem}-{name}.log"))
        recordings.append(Recording(service, output, seconds, proc))
    return recordings
