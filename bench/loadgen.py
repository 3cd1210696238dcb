"""Closed-loop HTTP load: C connections, each sending its next request when the previous
one is answered, for a warm-up and then a measured window.

Two generators share one plan (`LoadPlan`) and one result (`LoadResult`): `wrk` when it is
installed (see bench/wrk.py) and this module's own, run as separate processes
(`python -m bench.loadgen SPEC OUT`) so it competes with nothing in the benchmark's own
process. It writes raw HTTP/1.1 keep-alive requests on asyncio streams (uvloop when
available) and reads answers by Content-Length: a few microseconds per request.

Bodies come from templates: a JSON body with one feature value left open. A "unique"
plan gives request number n the value `base + n * 1e-9`, so no two bodies are equal
(every request misses the prediction cache); otherwise every request sends the first
template's body unchanged.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.procs import ProcessGroup
from dev.services import ManagedProcess

ROOT = Path(__file__).resolve().parent.parent
STEP = 1e-9
STARTUP_SLACK_SECONDS = 1.0  # time for the generator processes to start and connect
_HOLE = "__bench_value__"


@dataclass(frozen=True)
class BodyTemplate:
    prefix: str
    base: float
    suffix: str

    @classmethod
    def from_row(cls, row: dict[str, float], feature: str) -> BodyTemplate:
        text = json.dumps({"input_data": {**row, feature: _HOLE}})
        prefix, suffix = text.split(f'"{_HOLE}"')
        return cls(prefix, row[feature], suffix)

    def render(self, n: int | None = None) -> bytes:
        """The body of request n (None: the unperturbed row). repr keeps a float a float."""
        value = self.base if n is None else self.base + n * STEP
        return f"{self.prefix}{value!r}{self.suffix}".encode()


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    headers: dict[str, str]


@dataclass(frozen=True)
class LoadPlan:
    target: Target
    templates: list[BodyTemplate]
    unique: bool
    first_id: int  # request ids start here; >= 1 so a perturbed value is never the base
    connections: int
    warmup: float
    duration: float


@dataclass
class LoadResult:
    ok: int  # 200 answers completed inside the window
    window: float  # seconds
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]  # status code or exception name -> count, inside the window
    next_id: int  # the first request id the next plan may use

    @property
    def rps(self) -> float:
        return self.ok / self.window

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class LoadRun(Protocol):
    """A started load: its measurement window (wall clock) and its generator pids."""

    window: tuple[float, float]
    pids: list[int]

    def wait(self) -> LoadResult: ...


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# --- the orchestrating side: start generator processes, merge what they report ---------


@dataclass
class ProcessSpec:
    """What one generator process does; JSON between the parent and the child."""

    host: str
    port: int
    path: str
    headers: dict[str, str]
    templates: list[dict[str, Any]]
    unique: bool
    first_id: int
    id_stride: int
    connections: int
    start_at: float  # wall clock (time.time()): begin sending
    measure_from: float
    measure_until: float


@dataclass
class PythonRun:
    window: tuple[float, float]
    procs: list[ManagedProcess]
    outputs: list[Path]
    pids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.pids = [proc.pid for proc in self.procs]

    def wait(self) -> LoadResult:
        pairs = zip(self.procs, self.outputs, strict=True)
        reports = [self._report(proc, out) for proc, out in pairs]
        latencies = sorted(ms for report in reports for ms in report["latencies_ms"])
        errors: Counter[str] = Counter()
        for report in reports:
            errors.update(report["errors"])
        return LoadResult(
            ok=len(latencies),
            window=self.window[1] - self.window[0],
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            errors=dict(errors),
            next_id=max(int(report["next_id"]) for report in reports),
        )

    def _report(self, proc: ManagedProcess, out: Path) -> dict[str, Any]:
        assert proc.popen is not None
        proc.popen.wait(max(0.0, self.window[1] - time.time()) + 60)
        if proc.popen.returncode != 0:
            raise RuntimeError(f"load generator {proc.name} failed:\n{proc.log_tail()}")
        return dict(json.loads(out.read_text()))


def start_python_load(
    plan: LoadPlan, n_procs: int, group: ProcessGroup, work_dir: Path
) -> PythonRun:
    """Start `n_procs` generator processes sharing the plan's connections."""
    n_procs = max(1, min(n_procs, plan.connections))
    start_at = time.time() + STARTUP_SLACK_SECONDS
    window = (start_at + plan.warmup, start_at + plan.warmup + plan.duration)
    procs, outputs = [], []
    for index, connections in enumerate(split(plan.connections, n_procs)):
        spec = ProcessSpec(
            host=plan.target.host,
            port=plan.target.port,
            path=plan.target.path,
            headers=plan.target.headers,
            templates=[asdict(t) for t in plan.templates],
            unique=plan.unique,
            first_id=plan.first_id + index,
            id_stride=n_procs,
            connections=connections,
            start_at=start_at,
            measure_from=window[0],
            measure_until=window[1],
        )
        spec_path = work_dir / f"loadgen-{index}.json"
        spec_path.write_text(json.dumps(asdict(spec)))
        outputs.append(work_dir / f"loadgen-{index}.out.json")
        args = [sys.executable, "-m", "bench.loadgen", str(spec_path), str(outputs[-1])]
        log = work_dir / f"loadgen-{index}.log"
        procs.append(group.start(ManagedProcess(f"loadgen-{index}", args, log, cwd=ROOT)))
    return PythonRun(window, procs, outputs)


# --- the generator process --------------------------------------------------------------


class Requests:
    """Hand-built HTTP/1.1 requests; ids first_id, first_id + stride, ..."""

    def __init__(self, spec: ProcessSpec) -> None:
        headers = {**spec.headers, "Content-Type": "application/json"}
        self.head = (
            f"POST {spec.path} HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + "Content-Length: "
        ).encode()
        self.templates = [BodyTemplate(**t) for t in spec.templates]
        self.unique = spec.unique
        self.next_id = spec.first_id
        self.stride = spec.id_stride
        self.fixed = self._frame(self.templates[0].render())

    def _frame(self, body: bytes) -> bytes:
        return self.head + str(len(body)).encode() + b"\r\n\r\n" + body

    def next(self) -> bytes:
        if not self.unique:
            return self.fixed
        n, self.next_id = self.next_id, self.next_id + self.stride
        return self._frame(self.templates[n % len(self.templates)].render(n))


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status and keep-alive of one response; its body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    start = lower.find(b"\r\ncontent-length:")
    if start < 0:
        raise ValueError("response without Content-Length")
    end = lower.index(b"\r\n", start + 2)
    await reader.readexactly(int(head[start + 17 : end]))
    return int(head[9:12]), b"\r\nconnection: close" not in lower


@dataclass
class Tally:
    measure_from: float  # perf_counter clock
    measure_until: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, started: float, ended: float, error: str | None) -> None:
        if not self.measure_from <= ended < self.measure_until:
            return
        if error is None:
            self.latencies_ms.append((ended - started) * 1000)
        else:
            self.errors[error] += 1


async def connection(spec: ProcessSpec, requests: Requests, tally: Tally) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    while time.perf_counter() < tally.measure_until:
        started = time.perf_counter()
        error: str | None = None
        try:
            if writer is None or reader is None:
                reader, writer = await asyncio.open_connection(spec.host, spec.port)
            writer.write(requests.next())
            status, keep_alive = await read_response(reader)
            if status != 200:
                error = str(status)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            error, keep_alive = type(exc).__name__, False
        tally.add(started, time.perf_counter(), error)
        if not keep_alive and writer is not None:
            writer.close()
            writer = reader = None
            if error is not None:
                await asyncio.sleep(0.01)  # do not spin on a refused connection
    if writer is not None:
        writer.close()


async def generate(spec: ProcessSpec) -> dict[str, Any]:
    offset = time.time() - time.perf_counter()
    tally = Tally(spec.measure_from - offset, spec.measure_until - offset)
    requests = Requests(spec)
    await asyncio.gather(*(connection(spec, requests, tally) for _ in range(spec.connections)))
    return {
        "latencies_ms": tally.latencies_ms,
        "errors": dict(tally.errors),
        "next_id": requests.next_id,
    }


def main(argv: list[str]) -> None:
    spec_path, out_path = map(Path, argv)
    spec = ProcessSpec(**json.loads(spec_path.read_text()))
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    report = runner(generate(spec))
    out_path.write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
