"""`make bench`'s measured points: each scenario at each concurrency, one after another
on the same services (bench/sync_predict.py)."""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import mlserver_peer, profile
from bench.loadgen import BodyTemplate, LoadPlan, LoadResult
from bench.procs import measure_cpu
from bench.stack import (
    PERTURBED_FEATURE,
    RunContext,
    Servers,
    Topology,
    batch_totals,
    call_json,
    check_api_cache,
    demo_rows,
    start_load,
    warm_naive,
    warm_stack,
)
from bench.sync_options import BIG_ROWS, SCENARIOS, TARGET_SERVICES, BodyFormat, Scenario
from bench.sync_pairs import Pair, run_pairs

# A body format and rows per request -> the templates of its bodies.
Templates = dict[tuple[BodyFormat, int], list[BodyTemplate]]
# Probabilities from two servers for the same row may differ by float32 rounding only.
SAME_MODEL_TOLERANCE = 1e-6


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
    # The mean micro-batch in the window: the stack's requests per task, MLServer's per
    # batch sent to its inference workers.
    requests_per_task: float | None = None


@dataclass(frozen=True)
class Profiled:
    """One service's py-spy recording during one point's window."""

    scenario: str
    concurrency: int
    service: str
    path: Path
    seconds: int


def body_templates(rows: list[dict[str, float]]) -> Templates:
    """One template per data row for single rows (in /predict's format and as an OIP
    tensor); one /predict body of BIG_ROWS rows cycling through the data (the load
    generator makes each row unique)."""
    big = [rows[i % len(rows)] for i in range(BIG_ROWS)]
    return {
        ("predict", 1): [BodyTemplate.from_row(row, PERTURBED_FEATURE) for row in rows],
        ("predict", BIG_ROWS): [BodyTemplate.from_rows(big, PERTURBED_FEATURE)],
        ("oip", 1): [mlserver_peer.body_template(row, PERTURBED_FEATURE) for row in rows],
    }


def check_same_model(servers: Servers, templates: Templates) -> None:
    """MLServer's probabilities for a row are the bare app's: the same model is compared."""
    bare = call_json(servers.targets["bare"], body=templates["predict", 1][0].render())
    peer = call_json(servers.targets["mlserver"], body=templates["oip", 1][0].render())
    theirs = mlserver_peer.probabilities(peer)
    ours = bare["probabilities"][0]
    if len(theirs) != len(ours) or any(
        abs(a - b) > SAME_MODEL_TOLERANCE for a, b in zip(theirs, ours, strict=True)
    ):
        raise RuntimeError(f"MLServer answers {theirs}, the bare app {ours}: not the same model")


def check_targets(servers: Servers, templates: Templates) -> None:
    """One request of each size to the bare app, the API and MLServer (those started):
    fail now, not after minutes of errors; the API's cache must work. (Warming the naive
    pool checks the naive.)"""
    if "bare" in servers.targets:
        for size in (1, BIG_ROWS):
            call_json(servers.targets["bare"], body=templates["predict", size][0].render())
    if "api" in servers.targets:
        check_api_cache(servers.targets["api"], templates["predict", 1][0])
        call_json(servers.targets["api"], body=templates["predict", BIG_ROWS][0].render())
    if "mlserver" in servers.targets and "bare" in servers.targets:
        check_same_model(servers, templates)


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


def batch_counter(scenario: Scenario, servers: Servers) -> Callable[[], tuple[float, float]] | None:
    """(requests, batches) so far at the scenario's target, if it batches and says so."""
    if scenario.target == "api":
        api = servers.targets["api"]
        return lambda: batch_totals(api)
    if scenario.target == "mlserver" and (url := servers.mlserver_metrics):
        return lambda: mlserver_peer.batch_totals(url)
    return None


def mean_batch(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    requests, batches = (a - b for a, b in zip(after, before, strict=True))
    return round(requests / batches, 1) if batches else None


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
    counter = batch_counter(scenario, context.servers)
    batches_before = counter() if counter else None
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
    # Warm-up included: the same load, so the same mean.
    per_task = mean_batch(batches_before, counter()) if counter and batches_before else None
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


def warm_up(context: RunContext, templates: Templates) -> int:
    """Every pool process loads the model on its first task; returns the next free id."""
    targets = context.servers.targets
    # id 0 would be the unperturbed row, the body of the cache-hit scenario
    ids = itertools.count(1)
    if "api" in targets or "naive" in targets:
        print("  warming the worker pools (each process loads the model on its first task)")
    if "api" in targets:
        processes = Topology.of(context.options).pool_processes
        warm_stack(context.servers, templates["predict", 1][0], ids, processes)
    if "naive" in targets:
        warm_naive(context.servers, templates["predict", 1][0])
    return next(ids)


def run_all(context: RunContext) -> tuple[list[Point], list[Pair], list[Profiled]]:
    """Every scenario at each concurrency, then the back-to-back pairs
    (bench/sync_pairs.py)."""
    templates = body_templates(demo_rows())
    check_targets(context.servers, templates)
    next_id = warm_up(context, templates)
    points: list[Point] = []
    profiles: list[Profiled] = []
    for scenario in context.options.scenarios:
        for concurrency in concurrencies(scenario, context.options):
            plan = LoadPlan(
                target=context.servers.targets[scenario.target],
                templates=templates[scenario.body, scenario.rows],
                bodies=scenario.bodies,
                first_id=next_id,
                connections=concurrency,
                warmup=context.options.warmup,
                duration=context.options.duration,
            )
            point, result = run_point(scenario, concurrency, plan, context, profiles)
            points.append(point)
            next_id = max(next_id, result.next_id)
    pairs = run_pairs(context, templates, next_id, profiles)
    return with_ratios(points), pairs, profiles


def with_ratios(points: list[Point]) -> list[Point]:
    baselines = {s.name: s.baseline for s in SCENARIOS}
    rps = {(p.scenario, p.concurrency): p.rps for p in points}
    for point in points:
        if base := rps.get((baselines[point.scenario], point.concurrency)):
            point.ratio_vs_bare = round(point.rps / base, 3)
    return points
