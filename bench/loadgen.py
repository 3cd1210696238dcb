"""Closed-loop HTTP load: C connections, each sending its next request when the previous
one is answered, for a warm-up and then a measured window.

Two generators share one plan (`LoadPlan`) and one result (`LoadResult`): `wrk` when it is
installed (see bench/wrk.py) and this module's own, run as separate processes
(`python -m bench.loadgen SPEC OUT`) so it competes with nothing in the benchmark's own
process. It writes raw HTTP/1.1 keep-alive requests on asyncio streams (uvloop when
available) and reads answers by Content-Length: a few microseconds per request.

Bodies come from templates: a JSON body of one row or a list of rows, with one feature
value of each row left open. With "unique" bodies, request number n fills row i of a
k-row template with `base_i + (n * k + i) * 1e-9`, so no two rows are equal, within a
body or across requests (every request misses the prediction cache); with "repeated"
bodies every request sends the first template's body unchanged (after the first, every
request hits the cache); "alternating" sends unique and repeated bodies in turn.
With an `interval`, the generator also counts answers and errors per interval of the
window (a timeline, for long runs).
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
from typing import Any, Literal, Protocol

from bench.procs import ProcessGroup
from dev.services import ManagedProcess

ROOT = Path(__file__).resolve().parent.parent
STEP = 1e-9
STARTUP_SLACK_SECONDS = 1.0  # time for the generator processes to start and connect
_HOLE = "__bench_value__"


Bodies = Literal["unique", "repeated", "alternating"]


@dataclass(frozen=True)
class BodyTemplate:
    """A JSON body cut at its open values: parts[0] value[0] parts[1] ... parts[k]."""

    parts: list[str]
    bases: list[float]  # each open value's own value in the data

    @classmethod
    def from_row(cls, row: dict[str, float], feature: str) -> BodyTemplate:
        """`{"input_data": {...}}`: one row, its `feature` open."""
        return cls._cut({"input_data": {**row, feature: _HOLE}}, [row[feature]])

    @classmethod
    def from_rows(cls, rows: list[dict[str, float]], feature: str) -> BodyTemplate:
        """`{"input_data": [{...}, ...]}`: a list of rows, `feature` open in each."""
        body = {"input_data": [{**row, feature: _HOLE} for row in rows]}
        return cls._cut(body, [row[feature] for row in rows])

    @classmethod
    def from_tensor_row(
        cls, row: dict[str, float], feature: str, tensor: str, outputs: list[str]
    ) -> BodyTemplate:
        """An Open Inference Protocol body (`POST /v2/models/<name>/infer`): one FP64
        tensor of shape [1, len(row)] holding the row's values in its order, `feature`'s
        open; `outputs` names the outputs asked for."""
        data: list[float | str] = [_HOLE if name == feature else v for name, v in row.items()]
        body = {
            "inputs": [{"name": tensor, "shape": [1, len(row)], "datatype": "FP64", "data": data}],
            "outputs": [{"name": name} for name in outputs],
        }
        return cls._cut(body, [row[feature]])

    @classmethod
    def _cut(cls, body: dict[str, Any], bases: list[float]) -> BodyTemplate:
        return cls(json.dumps(body).split(f'"{_HOLE}"'), bases)

    def render(self, n: int | None = None) -> bytes:
        """The body of request n (None: the unperturbed rows). repr keeps a float a float."""
        k = len(self.bases)
        values = (
            self.bases if n is None else [b + (n * k + i) * STEP for i, b in enumerate(self.bases)]
        )
        pieces = [self.parts[0]]
        for value, part in zip(values, self.parts[1:], strict=True):
            pieces += (repr(value), part)
        return "".join(pieces).encode()


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
    bodies: Bodies
    first_id: int  # request ids start here; >= 1 so a perturbed value is never the base
    connections: int
    warmup: float
    duration: float
    interval: float = 0.0  # seconds per timeline interval; 0: no timeline


@dataclass
class LoadResult:
    ok: int  # 200 answers completed inside the window
    window: float  # seconds
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]  # status code or exception name -> count, inside the window
    next_id: int  # the first request id the next plan may use
    # (answers, errors) in each interval of the window, when the plan asked for intervals
    timeline: list[tuple[int, int]] = field(default_factory=list)

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
    bodies: Bodies
    first_id: int
    id_stride: int
    connections: int
    start_at: float  # wall clock (time.time()): begin sending
    measure_from: float
    measure_until: float
    interval: float


@dataclass
class PythonRun:
    window: tuple[float, float]
    interval: float
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
            timeline=self._timeline(reports),
        )

    def _timeline(self, reports: list[dict[str, Any]]) -> list[tuple[int, int]]:
        if not self.interval:
            return []
        n_intervals = math.ceil(round((self.window[1] - self.window[0]) / self.interval, 6))
        counts = [[0, 0] for _ in range(n_intervals)]
        for report in reports:
            for index, (ok, errors) in report["timeline"].items():
                counts[int(index)][0] += ok
                counts[int(index)][1] += errors
        return [(ok, errors) for ok, errors in counts]

    def _report(self, proc: ManagedProcess, out: Path) -> dict[str, Any]:
        assert proc.popen is not None
        proc.popen.wait(max(0.0, self.window[1] - time.time()) + 60)
        if proc.popen.returncode != 0:
            raise RuntimeError(f"load generator {proc.name} failed:\n{proc.log_tail()}")
        return dict(json.loads(out.read_text()))


def start_python_load(
    plan: LoadPlan,
    n_procs: int,
    group: ProcessGroup,
    work_dir: Path,
    prefix: tuple[str, ...] = (),
) -> PythonRun:
    """Start `n_procs` generator processes sharing the plan's connections; `prefix` runs
    them elsewhere (e.g. `nsenter --net=...`: on another host of dev/hosts)."""
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
            bodies=plan.bodies,
            first_id=plan.first_id + index,
            id_stride=n_procs,
            connections=connections,
            start_at=start_at,
            measure_from=window[0],
            measure_until=window[1],
            interval=plan.interval,
        )
        spec_path = work_dir / f"loadgen-{index}.json"
        spec_path.write_text(json.dumps(asdict(spec)))
        outputs.append(work_dir / f"loadgen-{index}.out.json")
        args = [*prefix, sys.executable, "-m", "bench.loadgen", str(spec_path), str(outputs[-1])]
        log = work_dir / f"loadgen-{index}.log"
        procs.append(group.start(ManagedProcess(f"loadgen-{index}", args, log, cwd=ROOT)))
    return PythonRun(window, plan.interval, procs, outputs)


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
        self.bodies = spec.bodies
        self.next_id = spec.first_id
        self.stride = spec.id_stride
        self.sent = 0
        self.fixed = self._frame(self.templates[0].render())

    def _frame(self, body: bytes) -> bytes:
        return self.head + str(len(body)).encode() + b"\r\n\r\n" + body

    def next(self) -> bytes:
        self.sent += 1
        if self.bodies == "repeated" or (self.bodies == "alternating" and self.sent % 2 == 0):
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
    interval: float  # 0: no timeline
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    timeline: dict[int, list[int]] = field(default_factory=dict)  # interval -> [ok, errors]

    def add(self, started: float, ended: float, error: str | None) -> None:
        if not self.measure_from <= ended < self.measure_until:
            return
        if error is None:
            self.latencies_ms.append((ended - started) * 1000)
        else:
            self.errors[error] += 1
        if self.interval:
            index = int((ended - self.measure_from) // self.interval)
            self.timeline.setdefault(index, [0, 0])[0 if error is None else 1] += 1


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
    tally = Tally(spec.measure_from - offset, spec.measure_until - offset, spec.interval)
    requests = Requests(spec)
    await asyncio.gather(*(connection(spec, requests, tally) for _ in range(spec.connections)))
    return {
        "latencies_ms": tally.latencies_ms,
        "errors": dict(tally.errors),
        "next_id": requests.next_id,
        "timeline": tally.timeline,
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
