"""`make bench`'s printed report: Markdown tables of the points, the rows/s target's
verdict, the CPU table and the profiles (bench/sync_predict.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench import profile
from bench.stack import ROOT, RunContext, generator_processes
from bench.sync_options import BIG_ROWS, STACK_BIG
from bench.sync_pairs import Pair
from bench.sync_points import Point, Profiled
from bench.sync_results import RESULTS_PATH
from bench.sync_targets import judge, targets_table
from bench.tables import markdown_table

CPU_GROUPS = (
    "api",
    "worker",
    "redis",
    "bare",
    "naive-api",
    "naive-worker",
    "mlserver",
    "loadgen",
    "other",
)
GENERATOR_BUSY_PERCENT = 80.0  # above this (of its cores) the load generator may be the limit
ROWS_PER_S_TARGET = 50_000  # the stack's target for BIG_ROWS-row requests, end to end


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


def heading(meta: dict[str, Any], targets: set[str]) -> str:
    return (
        f"\nSynchronous predictions, {meta['duration_s']:g} s per point after "
        f"{meta['warmup_s']:g} s of warm-up; load generator: {meta['generator']} "
        f"({meta['generator_processes']} process(es)).\n"
        f"Machine: {meta['cpu_count']} cores ({len(meta['usable_cores'])} usable), "
        f"{meta['platform']}; {meta['pinning']}.\n"
        f"Stack: worker `{meta['worker']}`, API `{meta['api']}`, one Redis.\n"
        + (f"Naive Celery: {meta['naive']}.\n" if "naive" in targets else "")
        + (f"Peer: {meta['mlserver']}.\n" if "mlserver" in targets else "")
        + f"Code: {meta['code']}.\n"
    )


def print_cpu(context: RunContext, points: list[Point]) -> None:
    print(
        "\nCPU used during each window, % of one core (worker: with its pool processes; "
        "mlserver: with its inference workers; other: the rest of the machine, kernel "
        "included), and the mean micro-batch (requests per task: the stack's tasks, "
        "MLServer's batches sent to its inference workers):\n"
    )
    print(cpu_table(points))
    busy = [p for p in points if p.cpu_percent.get("loadgen", 0) > generator_limit(context)]
    for p in busy:
        print(
            f"note: the load generator used {p.cpu_percent['loadgen']:.0f}% CPU at "
            f"{p.scenario}, c={p.concurrency}: it may have limited that point"
        )


def pairs_table(pairs: Sequence[Pair]) -> str:
    rows = [
        [
            f"{p.comparison.subject} vs {p.comparison.reference}, c={p.comparison.concurrency}",
            str(p.round),
            p.first,
            f"{p.subject_value:,.2f}",
            f"{p.reference_value:,.2f}",
            f"{p.ratio:.2f}x",
            str(p.errors),
        ]
        for p in pairs
    ]
    headers = ["comparison", "pair", "measured first", "subject", "reference", "ratio", "errors"]
    return markdown_table(headers, rows)


def print_report(
    context: RunContext,
    meta: dict[str, Any],
    points: list[Point],
    profiles: list[Profiled],
    pairs: Sequence[Pair] = (),
) -> None:
    print(heading(meta, set(context.servers.targets)))
    print(results_table(points))
    if any(p.rows_per_request > 1 for p in points):
        print(f"\nRequests of {BIG_ROWS:,} rows, every row unique:\n")
        print(rows_table(points))
    if pairs:
        print("\nBack-to-back pairs (bench/sync_pairs.py; p50 ms at c=1, req/s at c=64):\n")
        print(pairs_table(pairs))
    if verdict := target_verdict(points):
        print(f"\n{verdict}")
    print("\nIssue 15's targets, from this run:\n")
    print(targets_table(judge(points, pairs)))
    print_cpu(context, points)
    if profiles:
        print(
            "note: py-spy sampled the services during these windows (column py-spy: its own "
            "CPU, on the load generator's core when pinned); the figures may be lower for it"
        )
        print(f"\nProfiles (collapsed stacks in {context.options.profile}):\n")
        print(profile_report(context, profiles))
    print(f"\nWritten {RESULTS_PATH.relative_to(ROOT)}; the run took {meta['elapsed_s']:.0f} s.")
