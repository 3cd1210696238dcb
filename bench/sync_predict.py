"""`python -m bench.sync_predict` (`make bench`): what the synchronous path costs.

Starts a private stack (Redis, a Celery worker with 2 prefork processes, the API with one
uvicorn worker) and a bare FastAPI app predicting in-process with the same model
(bench/bare_app.py), then puts closed-loop load on each (bench/loadgen.py, or wrk when
installed) at several concurrencies:

  bare in-process    the baseline: HTTP + JSON + model, nothing else
  stack, cache miss  every body unique (`mean radius` + n * 1e-9): a task per request
  stack, cache hit   one body repeated: answered from the Redis cache after the first

It prints a Markdown table (req/s, p50, p99, errors, req/s relative to bare) and the CPU
each process used during each window, and writes bench/results/sync_predict.json.
With --pin (the default on 2+ cores) the servers share core 0 and the load generator
runs on core 1, so the stack and the baseline get the same single core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.loadgen import BodyTemplate, LoadPlan, LoadResult, LoadRun, Target, start_python_load
from bench.procs import (
    ProcessGroup,
    affinity_of,
    can_pin,
    cpu_seconds,
    inherited_affinity,
    machine_busy_seconds,
    usable_cores,
)
from bench.wrk import start_wrk_load, wrk_path
from dev.services import ManagedProcess, free_port, start_redis, wait_until

ROOT = Path(__file__).resolve().parent.parent
RESULTS_PATH = ROOT / "bench" / "results" / "sync_predict.json"
API_KEY = "bench-key"
PERTURBED_FEATURE = "mean radius"
POOL_PROCESSES = 2
WORKER_ARGS = ["--concurrency", str(POOL_PROCESSES), "--pool", "prefork"]
READY_TIMEOUT_SECONDS = 120
CPU_GROUPS = ("api", "worker", "redis", "bare", "loadgen", "other")
GENERATOR_BUSY_PERCENT = 80.0  # above this (of its cores) the load generator may be the limit


@dataclass(frozen=True)
class Scenario:
    name: str
    target: str  # "bare" or "api"
    unique: bool  # a unique body per request (cache misses) or one repeated body


SCENARIOS = (
    Scenario("bare in-process", "bare", unique=True),
    Scenario("stack, cache miss", "api", unique=True),
    Scenario("stack, cache hit", "api", unique=False),
)


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
            f"pinned: servers (redis, worker, api, bare) on core {sorted(self.servers or [])}, "
            f"load generator on core {sorted(self.generator or [])}"
        )


@dataclass
class Servers:
    targets: dict[str, Target]  # "api", "bare"
    pids: dict[str, int]  # process name -> pid (the root of its tree)


@dataclass
class RunContext:
    options: argparse.Namespace
    layout: CoreLayout
    generator: str
    group: ProcessGroup
    servers: Servers
    tmp: Path


@dataclass
class Point:
    scenario: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    error_kinds: dict[str, int]
    ratio_vs_bare: float | None
    cpu_percent: dict[str, float]  # process group -> % of one core during the window


# --- options ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync_predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per point")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 16, 64],
        help="comma-separated connection counts (default 1,16,64)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="servers on core 0, load generator on core 1 (default: on with 2+ cores)",
    )
    parser.add_argument("--generator", choices=["auto", "python", "wrk"], default="auto")
    options = parser.parse_args(argv)
    if options.duration < 1 or options.warmup < 0 or min(options.concurrency) < 1:
        parser.error("--duration must be >= 1 s, --warmup >= 0, concurrencies >= 1")
    return options


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


# --- the stack and the baseline ---------------------------------------------------------


def child_env(redis_url: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env.update(
        SERVING_REDIS_URL=redis_url,
        SERVING_LOCAL_STORE_PATH=str(tmp / "store"),
        SERVING_DATABASE_URL=f"sqlite:///{tmp / 'predictions.db'}",
        SERVING_API_KEYS=API_KEY,
        SERVING_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    return env


def publish_demo_models(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelctl", "train-demo"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"modelctl train-demo failed:\n{done.stdout}{done.stderr}")


def http_status(url: str, headers: dict[str, str] | None = None) -> int | None:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def ready_check(procs: list[ManagedProcess], checks: list[Callable[[], bool]]) -> bool:
    for proc in procs:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited during start-up:\n{proc.log_tail()}")
    return all(check() for check in checks)


def start_servers(tmp: Path, group: ProcessGroup) -> Servers:
    redis_proc, redis_url = start_redis(tmp / "redis")
    group.adopt(redis_proc)
    env = child_env(redis_url, tmp)
    publish_demo_models(env)
    api_port, bare_port = free_port(), free_port()
    commands = {
        "worker": ["-m", "worker", *WORKER_ARGS],
        "api": ["-m", "api", "--port", str(api_port), "--workers", "1"],
        "bare": ["-m", "bench.bare_app", "--port", str(bare_port)],
    }
    procs = [
        group.start(
            ManagedProcess(name, [sys.executable, *args], tmp / f"{name}.log", env=env, cwd=ROOT)
        )
        for name, args in commands.items()
    ]
    headers = {"X-API-Key": API_KEY}
    api_url, bare_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{bare_port}"
    checks = [
        lambda: http_status(f"{api_url}/", headers) == 200,
        lambda: http_status(f"{bare_url}/healthz") == 200,
    ]
    wait_until(lambda: ready_check(procs, checks), READY_TIMEOUT_SECONDS, "the API and bare app")
    return Servers(
        targets={
            "api": Target("127.0.0.1", api_port, "/predict", headers),
            "bare": Target("127.0.0.1", bare_port, "/predict", {}),
        },
        pids={"redis": redis_proc.pid} | {proc.name: proc.pid for proc in procs},
    )


def call_json(target: Target, path: str | None = None, body: bytes | None = None) -> Any:
    """GET (no body) or POST a JSON body to the target; its JSON answer, which must be 200."""
    url = f"http://{target.host}:{target.port}{path or target.path}"
    headers = {**target.headers, "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url} answered {exc.code}: {exc.read()[:500]!r}") from None


def check_targets(servers: Servers, template: BodyTemplate) -> None:
    """One request to each: fail now, not after minutes of errors; the cache must work."""
    body = template.render()
    call_json(servers.targets["bare"], body=body)
    first, second = (call_json(servers.targets["api"], body=body) for _ in range(2))
    if first.get("cached") is not False or second.get("cached") is not True:
        raise RuntimeError(f"the cache does not behave as expected: {first} then {second}")


# --- load points ------------------------------------------------------------------------


def demo_templates() -> list[BodyTemplate]:
    """One body template per row of the breast-cancer data, in the data's order."""
    from common.training import breast_cancer

    x, _, names, _ = breast_cancer()
    rows = [dict(zip(names, map(float, values), strict=True)) for values in x]
    return [BodyTemplate.from_row(row, PERTURBED_FEATURE) for row in rows]


def start_load(context: RunContext, plan: LoadPlan, work_dir: Path) -> LoadRun:
    work_dir.mkdir(parents=True, exist_ok=True)
    starter = start_wrk_load if context.generator == "wrk" else start_python_load
    with inherited_affinity(context.layout.generator):
        return starter(plan, generator_processes(context.layout), context.group, work_dir)


def sleep_until(moment: float) -> None:
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


def run_point(
    scenario: Scenario,
    concurrency: int,
    plan: LoadPlan,
    context: RunContext,
) -> tuple[Point, LoadResult]:
    print(f"  {scenario.name}, c={concurrency} ...", end="", flush=True)
    work_dir = context.tmp / "load" / f"{scenario.target}-{int(scenario.unique)}-c{concurrency}"
    run = start_load(context, plan, work_dir)
    groups = {name: [pid] for name, pid in context.servers.pids.items()} | {"loadgen": run.pids}
    cpu = measure_cpu(run.window, groups)
    result = run.wait()
    print(f" {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, errors {result.error_count}")
    point = Point(
        scenario=scenario.name,
        concurrency=concurrency,
        rps=round(result.rps, 1),
        p50_ms=round(result.p50_ms, 2),
        p99_ms=round(result.p99_ms, 2),
        errors=result.error_count,
        error_kinds=result.errors,
        ratio_vs_bare=None,
        cpu_percent=cpu,
    )
    return point, result


def predicting_processes(api: Target) -> set[str]:
    """The worker processes (host:pid) found in the newest prediction log rows."""
    entries = call_json(api, path="/logs?n_limit=1000")
    return {entry["worker"] for entry in entries if entry["worker"]}


def warm_worker_pool(context: RunContext, templates: list[BodyTemplate], next_id: int) -> int:
    """Have every pool process predict once before anything is measured: each loads the
    model on its first task, and importing XGBoost there takes seconds of CPU."""
    api = context.servers.targets["api"]
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while len(predicting_processes(api)) < POOL_PROCESSES:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all {POOL_PROCESSES} worker processes predicted in time")
        plan = LoadPlan(api, templates, True, next_id, 2 * POOL_PROCESSES, 0.0, 2.0)
        next_id = start_load(context, plan, context.tmp / "load" / "pool-warmup").wait().next_id
    return next_id


def run_all(context: RunContext) -> list[Point]:
    templates = demo_templates()
    check_targets(context.servers, templates[0])
    # id 0 would be the unperturbed row, the body of the cache-hit scenario
    print("  warming the worker pool (each process loads the model on its first task)", flush=True)
    next_id = warm_worker_pool(context, templates, next_id=1)
    points: list[Point] = []
    for scenario in SCENARIOS:
        for concurrency in context.options.concurrency:
            plan = LoadPlan(
                target=context.servers.targets[scenario.target],
                templates=templates,
                unique=scenario.unique,
                first_id=next_id,
                connections=concurrency,
                warmup=context.options.warmup,
                duration=context.options.duration,
            )
            point, result = run_point(scenario, concurrency, plan, context)
            points.append(point)
            next_id = max(next_id, result.next_id)
    return with_ratios(points)


def with_ratios(points: list[Point]) -> list[Point]:
    bare = {p.concurrency: p.rps for p in points if p.scenario == SCENARIOS[0].name}
    for point in points:
        if bare.get(point.concurrency):
            point.ratio_vs_bare = round(point.rps / bare[point.concurrency], 3)
    return points


# --- report -------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        padded = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def results_table(points: list[Point]) -> str:
    header = ["scenario", "concurrency", "req/s", "p50 ms", "p99 ms", "errors", "req/s vs bare"]
    rows = [
        [
            p.scenario,
            str(p.concurrency),
            f"{p.rps:,.0f}",
            f"{p.p50_ms:.2f}",
            f"{p.p99_ms:.2f}",
            str(p.errors),
            "-" if p.ratio_vs_bare is None else f"{p.ratio_vs_bare:.2f}",
        ]
        for p in points
    ]
    return markdown_table(header, rows)


def cpu_table(points: list[Point]) -> str:
    header = ["scenario", "concurrency", *CPU_GROUPS]
    rows = [
        [p.scenario, str(p.concurrency), *(f"{p.cpu_percent.get(g, 0):.0f}%" for g in CPU_GROUPS)]
        for p in points
    ]
    return markdown_table(header, rows)


def generator_limit(context: RunContext) -> float:
    return GENERATOR_BUSY_PERCENT * generator_processes(context.layout)


def describe_machine(context: RunContext) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "pinning": context.layout.describe(),
        "affinity": {name: affinity_of(pid) for name, pid in context.servers.pids.items()},
        "generator": context.generator,
        "generator_processes": generator_processes(context.layout),
        "duration_s": context.options.duration,
        "warmup_s": context.options.warmup,
        "worker": f"python -m worker {' '.join(WORKER_ARGS)}",
        "api": "python -m api --workers 1",
    }


def report(context: RunContext, points: list[Point], elapsed: float) -> None:
    meta = describe_machine(context) | {"elapsed_s": round(elapsed, 1)}
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(
        json.dumps({"meta": meta, "points": [asdict(p) for p in points]}, indent=2) + "\n"
    )
    print(
        f"\nSynchronous predictions, {meta['duration_s']:g} s per point after "
        f"{meta['warmup_s']:g} s of warm-up; load generator: {meta['generator']} "
        f"({meta['generator_processes']} process(es)).\n"
        f"Machine: {meta['cpu_count']} cores ({len(meta['usable_cores'])} usable), "
        f"{meta['platform']}; {meta['pinning']}.\n"
        f"Stack: worker `{meta['worker']}`, API `{meta['api']}`, one Redis.\n"
    )
    print(results_table(points))
    print(
        "\nCPU used during each window, % of one core (worker: with its pool processes; "
        "other: the rest of the machine, kernel included):\n"
    )
    print(cpu_table(points))
    busy = [p for p in points if p.cpu_percent.get("loadgen", 0) > generator_limit(context)]
    for p in busy:
        print(
            f"note: the load generator used {p.cpu_percent['loadgen']:.0f}% CPU at "
            f"{p.scenario}, c={p.concurrency}: it may have limited that point"
        )
    print(f"\nWritten {RESULTS_PATH.relative_to(ROOT)}; the run took {elapsed:.0f} s.")


# --- main ---------------------------------------------------------------------------------


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    layout = plan_cores(options.pin)
    generator = choose_generator(options.generator)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-predict-"))
    group = ProcessGroup()
    succeeded = False
    try:
        print(f"starting the stack and the bare app in {tmp} ({layout.describe()})", flush=True)
        with inherited_affinity(layout.servers):
            servers = start_servers(tmp, group)
        context = RunContext(options, layout, generator, group, servers, tmp)
        points = run_all(context)
        report(context, points, time.monotonic() - started)
        succeeded = True
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        cleanup(group, tmp, keep_logs=not succeeded)


def cleanup(group: ProcessGroup, tmp: Path, keep_logs: bool) -> None:
    left = group.stop_all()
    if left:
        print(f"warning: processes {left} outlived their stop and were killed", file=sys.stderr)
    else:
        print("stopped every process the benchmark started; none is left", file=sys.stderr)
    if keep_logs:
        print(f"logs kept in {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
