"""`python -m bench.sync_predict` (`make bench`): what the synchronous path costs.

Starts a private stack (Redis, a Celery worker with 2 prefork processes, the API with one
uvicorn worker), a bare FastAPI app predicting in-process with the same model
(bench/bare_app.py) and a naive-Celery design (bench/naive_app.py, bench/naive_worker.py:
a `def` endpoint blocking on `AsyncResult.get()`, 2 prefork processes, on its own Redis
database and queue), then puts closed-loop load on each (bench/loadgen.py, or wrk when
installed) at several concurrencies:

  bare in-process    the baseline: HTTP + JSON + model, nothing else
  stack, cache miss  every body unique (`mean radius` + n * 1e-9): a task per request
  stack, cache hit   one body repeated: answered from the Redis cache after the first
  naive Celery       every body unique: a Celery task and result per request
  1,000-row requests every row of every body unique, on the bare app and on the stack
                     (at --big-concurrency; the ratio is to the bare app's 1,000 rows)

It prints a Markdown table (req/s, p50, p99, errors, req/s relative to bare), the rows/s
of the 1,000-row requests, and the CPU each process used during each window, and writes
bench/results/sync_predict.json. With --pin (the default on 2+ cores) the servers share
core 0 and the load generator runs on core 1, so every design gets the same single core.

`--scenarios NAMES` runs only the named scenarios (comma-separated: bare, miss, hit, naive,
bare-1000, miss-1000; default all) and starts only the services they need; the bare
scenario a ratio is relative to always runs too.

`--profile DIR` samples the services under load with py-spy (bench/profile.py) during each
measured window: one `py-spy record --subprocesses --nonblocking --format raw` per service
the scenario loads (api and worker; bare; naive-api and naive-worker), at --profile-rate
samples/s (--profile-gil: only samples holding the GIL), on the load generator's core;
collapsed stacks in DIR/<scenario>-c<concurrency>-<service>.txt. It prints, per point and
service, the top functions by total (inclusive) and by self share of the samples, and
writes the same to DIR/summary.md. Profiling costs the services some speed: compare
profiled figures with profiled figures only.

`--soak SECONDS` runs bench/soak.py instead: the stack alone under mixed load, its
memory sampled every 10 s; the exit status is 1 if any request failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import profile, soak
from bench.loadgen import Bodies, BodyTemplate, LoadPlan, LoadResult
from bench.naive_worker import POOL_PROCESSES as NAIVE_POOL_PROCESSES
from bench.naive_worker import QUEUE as NAIVE_QUEUE
from bench.procs import affinity_of, measure_cpu, usable_cores
from bench.stack import (
    NAIVE_REDIS_DB,
    PERTURBED_FEATURE,
    ROOT,
    SERVICES,
    WORKER_ARGS,
    RunContext,
    Servers,
    batch_totals,
    call_json,
    check_api_cache,
    choose_generator,
    demo_rows,
    generator_processes,
    run_with_stack,
    start_load,
    warm_naive,
    warm_stack,
)
from bench.tables import markdown_table
from common.settings import Settings

RESULTS_PATH = ROOT / "bench" / "results" / "sync_predict.json"
CPU_GROUPS = ("api", "worker", "redis", "bare", "naive-api", "naive-worker", "loadgen", "other")
GENERATOR_BUSY_PERCENT = 80.0  # above this (of its cores) the load generator may be the limit
BIG_ROWS = 1000
ROWS_PER_S_TARGET = 50_000  # the stack's target for BIG_ROWS-row requests, end to end
BARE = "bare in-process"
BARE_BIG = f"bare in-process, {BIG_ROWS:,} rows"
STACK_BIG = f"stack, {BIG_ROWS:,}-row miss"


@dataclass(frozen=True)
class Scenario:
    key: str  # its name in --scenarios and in profile file names
    name: str
    target: str  # "bare", "api" or "naive"
    bodies: Bodies
    rows: int = 1  # rows per request
    baseline: str = BARE  # the scenario whose req/s, at the same concurrency, is 1.00


SCENARIOS = (
    Scenario("bare", BARE, "bare", "unique"),
    Scenario("miss", "stack, cache miss", "api", "unique"),
    Scenario("hit", "stack, cache hit", "api", "repeated"),
    Scenario("naive", "naive Celery", "naive", "unique"),
    Scenario(f"bare-{BIG_ROWS}", BARE_BIG, "bare", "unique", rows=BIG_ROWS, baseline=BARE_BIG),
    Scenario(f"miss-{BIG_ROWS}", STACK_BIG, "api", "unique", rows=BIG_ROWS, baseline=BARE_BIG),
)
# The services behind each target, in Servers.pids (and so the ones profiled).
TARGET_SERVICES = {
    "bare": ("bare",),
    "api": ("api", "worker"),
    "naive": ("naive-api", "naive-worker"),
}


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
    rows_per_request: int
    rows_per_s: float
    requests_per_task: float | None = None  # the stack's mean micro-batch in the window


@dataclass(frozen=True)
class Profiled:
    """One service's py-spy recording during one point's window."""

    scenario: str
    concurrency: int
    service: str
    path: Path
    seconds: int


# --- options ------------------------------------------------------------------------------


def concurrency_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def scenario_list(text: str) -> list[Scenario]:
    """The named scenarios, with the baselines their ratios need, in SCENARIOS' order."""
    by_key = {s.key: s for s in SCENARIOS}
    keys = {part.strip() for part in text.split(",") if part.strip()}
    if unknown := sorted(keys - by_key.keys()):
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(by_key)}"
        )
    if not keys:
        raise argparse.ArgumentTypeError(f"no scenario named; choose from {', '.join(by_key)}")
    baselines = {s.baseline for s in SCENARIOS if s.key in keys}
    return [s for s in SCENARIOS if s.key in keys or s.name in baselines]


def setting(text: str) -> tuple[str, str]:
    """NAME=VALUE for --set: NAME is a field of common.settings.Settings."""
    name, sep, value = text.partition("=")
    name = name.strip().lower().removeprefix("serving_")
    if not sep or name not in Settings.model_fields:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=VALUE with NAME a setting, e.g. batch_max_wait_ms=2"
        )
    return name, value


def needed_services(scenarios: list[Scenario]) -> list[str]:
    wanted = {service for s in scenarios for service in TARGET_SERVICES[s.target]}
    return [service for service in SERVICES if service in wanted]


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
        type=concurrency_list,
        default=[1, 16, 64],
        help="comma-separated connection counts (default 1,16,64)",
    )
    parser.add_argument(
        "--big-concurrency",
        type=concurrency_list,
        default=[1, 4],
        help=f"connection counts for the {BIG_ROWS:,}-row requests (default 1,4)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="servers on core 0, load generator on core 1 (default: on with 2+ cores)",
    )
    parser.add_argument("--generator", choices=["auto", "python", "wrk"], default="auto")
    parser.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help=f"instead: {soak.CONCURRENCY} connections of mixed load on the stack for SECONDS, "
        f"memory sampled every {soak.SAMPLE_SECONDS:g} s (exit status 1 on any error)",
    )
    parser.add_argument(
        "--scenarios",
        type=scenario_list,
        metavar="NAMES",
        help=f"comma-separated, from {', '.join(s.key for s in SCENARIOS)} (default: all); "
        "the bare baseline of a ratio is always added",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        type=setting,
        action="append",
        metavar="NAME=VALUE",
        help="a setting for the stack's services, e.g. batch_max_wait_ms=2 "
        "(SERVING_BATCH_MAX_WAIT_MS); repeatable",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy each loaded service during each window; collapsed stacks into DIR, "
        "top functions printed",
    )
    parser.add_argument(
        "--profile-rate",
        type=int,
        default=profile.DEFAULT_RATE,
        metavar="HZ",
        help=f"py-spy samples per second (default {profile.DEFAULT_RATE})",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: only samples of threads holding the GIL (py-spy --gil)",
    )
    options = parser.parse_args(argv)
    concurrencies = options.concurrency + options.big_concurrency
    if options.duration < 1 or options.warmup < 0 or min(concurrencies) < 1:
        parser.error("--duration must be >= 1 s, --warmup >= 0, concurrencies >= 1")
    if options.soak is not None and options.soak < soak.SAMPLE_SECONDS:
        parser.error(f"--soak must be >= {soak.SAMPLE_SECONDS:g} s")
    if options.soak is not None and (options.scenarios or options.profile):
        parser.error("--scenarios and --profile do not apply to --soak")
    options.scenarios = options.scenarios or list(SCENARIOS)
    options.settings = dict(options.settings or [])
    if options.profile is not None:
        if profile.py_spy_path() is None:
            parser.error("--profile needs py-spy: pip install -r requirements.txt")
        if options.profile_rate < 1:
            parser.error("--profile-rate must be >= 1")
    return options


# --- load points ------------------------------------------------------------------------


def body_templates(rows: list[dict[str, float]]) -> dict[int, list[BodyTemplate]]:
    """Rows per request -> templates: one per data row for single rows; one body of
    BIG_ROWS rows cycling through the data (the load generator makes each row unique)."""
    big = [rows[i % len(rows)] for i in range(BIG_ROWS)]
    return {
        1: [BodyTemplate.from_row(row, PERTURBED_FEATURE) for row in rows],
        BIG_ROWS: [BodyTemplate.from_rows(big, PERTURBED_FEATURE)],
    }


def check_targets(servers: Servers, templates: dict[int, list[BodyTemplate]]) -> None:
    """One request of each size to the bare app and the API (those started): fail now, not
    after minutes of errors; and the API's cache must work. (Warming the naive pool checks
    the naive.)"""
    if "bare" in servers.targets:
        for size in templates.values():
            call_json(servers.targets["bare"], body=size[0].render())
    if "api" in servers.targets:
        check_api_cache(servers.targets["api"], templates[1][0])
        call_json(servers.targets["api"], body=templates[BIG_ROWS][0].render())


def start_profiling(
    scenario: Scenario, concurrency: int, window: tuple[float, float], context: RunContext
) -> list[profile.Recording]:
    """py-spy on each service the scenario loads, for the window (on the generator's core:
    the servers' core is the one measured)."""
    options = context.options
    return profile.start_profilers(
        services={name: context.servers.pids[name] for name in TARGET_SERVICES[scenario.target]},
        stem=f"{scenario.key}-c{concurrency}",
        window=window,
        options=profile.ProfileOptions(options.profile, options.profile_rate, options.profile_gil),
        group=context.group,
        log_dir=context.tmp / "profile",
        cores=context.layout.generator,
    )


def run_point(
    scenario: Scenario,
    concurrency: int,
    plan: LoadPlan,
    context: RunContext,
    profiles: list[Profiled],
) -> tuple[Point, LoadResult]:
    """One point; with --profile, its recordings are added to `profiles`."""
    print(f"  {scenario.name}, c={concurrency} ...", end="", flush=True)
    slug = f"{scenario.target}-{scenario.bodies}-r{scenario.rows}-c{concurrency}"
    api = context.servers.targets["api"] if scenario.target == "api" else None
    batches_before = batch_totals(api) if api else None
    run = start_load(context, plan, context.tmp / "load" / slug)
    groups = {name: [pid] for name, pid in context.servers.pids.items()} | {"loadgen": run.pids}
    recordings: list[profile.Recording] = []
    if context.options.profile is not None:
        recordings = start_profiling(scenario, concurrency, run.window, context)
        groups["py-spy"] = [recording.proc.pid for recording in recordings]
    cpu = measure_cpu(run.window, groups)
    result = run.wait()
    profiles += [
        Profiled(scenario.name, concurrency, r.service, r.wait(), r.seconds) for r in recordings
    ]
    per_task = None
    if api and batches_before:
        # Warm-up included: the same load, so the same mean.
        requests, tasks = (a - b for a, b in zip(batch_totals(api), batches_before, strict=True))
        per_task = round(requests / tasks, 1) if tasks else None
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
        rows_per_request=scenario.rows,
        rows_per_s=round(result.rps * scenario.rows, 1),
        requests_per_task=per_task,
    )
    return point, result


def concurrencies(scenario: Scenario, options: argparse.Namespace) -> list[int]:
    return list(options.big_concurrency if scenario.rows > 1 else options.concurrency)


def run_all(context: RunContext) -> tuple[list[Point], list[Profiled]]:
    templates = body_templates(demo_rows())
    targets = context.servers.targets
    check_targets(context.servers, templates)
    # id 0 would be the unperturbed row, the body of the cache-hit scenario
    ids = itertools.count(1)
    if "api" in targets or "naive" in targets:
        print("  warming the worker pools (each process loads the model on its first task)")
    if "api" in targets:
        warm_stack(context.servers, templates[1][0], ids)
    if "naive" in targets:
        warm_naive(context.servers, templates[1][0])
    next_id = next(ids)
    points: list[Point] = []
    profiles: list[Profiled] = []
    for scenario in context.options.scenarios:
        for concurrency in concurrencies(scenario, context.options):
            plan = LoadPlan(
                target=context.servers.targets[scenario.target],
                templates=templates[scenario.rows],
                bodies=scenario.bodies,
                first_id=next_id,
                connections=concurrency,
                warmup=context.options.warmup,
                duration=context.options.duration,
            )
            point, result = run_point(scenario, concurrency, plan, context, profiles)
            points.append(point)
            next_id = max(next_id, result.next_id)
    return with_ratios(points), profiles


def with_ratios(points: list[Point]) -> list[Point]:
    baselines = {s.name: s.baseline for s in SCENARIOS}
    rps = {(p.scenario, p.concurrency): p.rps for p in points}
    for point in points:
        if base := rps.get((baselines[point.scenario], point.concurrency)):
            point.ratio_vs_bare = round(point.rps / base, 3)
    return points


# --- report -------------------------------------------------------------------------------


def ratio(point: Point) -> str:
    return "-" if point.ratio_vs_bare is None else f"{point.ratio_vs_bare:.2f}"


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
            ratio(p),
        ]
        for p in points
    ]
    return markdown_table(header, rows)


def rows_table(points: list[Point]) -> str:
    header = ["scenario", "concurrency", "req/s", "rows/s", "p50 ms", "p99 ms", "rows/s vs bare"]
    rows = [
        [
            p.scenario,
            str(p.concurrency),
            f"{p.rps:,.1f}",
            f"{p.rows_per_s:,.0f}",
            f"{p.p50_ms:.2f}",
            f"{p.p99_ms:.2f}",
            ratio(p),
        ]
        for p in points
        if p.rows_per_request > 1
    ]
    return markdown_table(header, rows)


def cpu_table(points: list[Point]) -> str:
    groups = list(CPU_GROUPS)
    if any("py-spy" in p.cpu_percent for p in points):
        groups.insert(groups.index("other"), "py-spy")
    header = ["scenario", "concurrency", *groups, "requests per task"]
    rows = [
        [
            p.scenario,
            str(p.concurrency),
            *(f"{p.cpu_percent.get(g, 0):.0f}%" for g in groups),
            "-" if p.requests_per_task is None else f"{p.requests_per_task:.1f}",
        ]
        for p in points
    ]
    return markdown_table(header, rows)


def target_verdict(points: list[Point]) -> str | None:
    stack = [p for p in points if p.scenario == STACK_BIG]
    if not stack:
        return None
    best = max(stack, key=lambda p: p.rows_per_s)
    met = "met" if best.rows_per_s >= ROWS_PER_S_TARGET else "NOT met"
    return (
        f"Target >= {ROWS_PER_S_TARGET:,} rows/s end to end with {BIG_ROWS:,}-row requests: "
        f"{met} (best: {best.rows_per_s:,.0f} rows/s at c={best.concurrency})."
    )


def generator_limit(context: RunContext) -> float:
    return GENERATOR_BUSY_PERCENT * generator_processes(context.layout)


def describe_machine(context: RunContext) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": context.code,
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
        "naive": (
            f"python -m bench.naive_app (1 uvicorn worker) and python -m bench.naive_worker "
            f"(prefork, concurrency {NAIVE_POOL_PROCESSES}), queue {NAIVE_QUEUE}, "
            f"Redis database {NAIVE_REDIS_DB}"
        ),
    }


def profile_report(context: RunContext, profiles: list[Profiled]) -> str:
    """Each recording's summary; also written to DIR/summary.md."""
    options = context.options
    sections = [
        profile.format_summary(
            f"{p.scenario}, c={p.concurrency}: {p.service} ({p.path.name})",
            profile.summarise(profile.read_stacks(p.path)),
            options.profile_rate,
            p.seconds,
            gil=options.profile_gil,
        )
        for p in profiles
    ]
    gil = ", only threads holding the GIL" if options.profile_gil else ""
    text = (
        f"py-spy, {options.profile_rate} samples/s per thread while running or runnable{gil}; "
        "total: the function anywhere on the stack, self: innermost.\n\n" + "\n\n".join(sections)
    )
    (options.profile / "summary.md").write_text(text + "\n")
    return text


def report(
    context: RunContext, points: list[Point], profiles: list[Profiled], elapsed: float
) -> None:
    meta = describe_machine(context) | {"elapsed_s": round(elapsed, 1)}
    if context.options.scenarios != list(SCENARIOS):
        meta["scenarios"] = [s.key for s in context.options.scenarios]
    if context.options.profile is not None:
        meta["profile"] = {
            "dir": str(context.options.profile),
            "rate": context.options.profile_rate,
            "gil": context.options.profile_gil,
        }
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
        + (f"Naive Celery: {meta['naive']}.\n" if "naive" in context.servers.targets else "")
        + f"Code: {meta['code']}.\n"
    )
    print(results_table(points))
    if any(p.rows_per_request > 1 for p in points):
        print(f"\nRequests of {BIG_ROWS:,} rows, every row unique:\n")
        print(rows_table(points))
    if verdict := target_verdict(points):
        print(f"\n{verdict}")
    print(
        "\nCPU used during each window, % of one core (worker: with its pool processes; "
        "other: the rest of the machine, kernel included), and the stack's mean "
        "micro-batch (requests per task):\n"
    )
    print(cpu_table(points))
    busy = [p for p in points if p.cpu_percent.get("loadgen", 0) > generator_limit(context)]
    for p in busy:
        print(
            f"note: the load generator used {p.cpu_percent['loadgen']:.0f}% CPU at "
            f"{p.scenario}, c={p.concurrency}: it may have limited that point"
        )
    if profiles:
        print(
            "note: py-spy sampled the services during these windows (column py-spy: its own "
            "CPU, on the load generator's core when pinned); the figures may be lower for it"
        )
        print(f"\nProfiles (collapsed stacks in {context.options.profile}):\n")
        print(profile_report(context, profiles))
    print(f"\nWritten {RESULTS_PATH.relative_to(ROOT)}; the run took {elapsed:.0f} s.")


# --- main ---------------------------------------------------------------------------------


def benchmark(started: float) -> Callable[[RunContext], int]:
    def run(context: RunContext) -> int:
        points, profiles = run_all(context)
        report(context, points, profiles, time.monotonic() - started)
        return 0

    return run


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if options.soak is not None:
        if options.generator == "wrk":
            print("note: the soak uses bench.loadgen, which counts answers per interval")
        return run_with_stack(options, soak.SERVICES, "python", soak.run_soak)
    generator = choose_generator(options.generator)
    services = needed_services(options.scenarios)
    return run_with_stack(options, services, generator, benchmark(time.monotonic()))


if __name__ == "__main__":
    sys.exit(main())
