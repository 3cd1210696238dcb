"""`python -m bench.sync_predict --soak SECONDS`: the stack under steady load, memory
watched.

Only the stack runs (Redis, the worker with its pool, the API). CONCURRENCY connections
send cache misses and cache hits in turn for SECONDS, from bench/loadgen.py, which counts
answers and errors per SAMPLE_SECONDS interval. Every SAMPLE_SECONDS the resident memory
(VmRSS, summed over each service's process tree) of the API, the worker and Redis is
sampled, with the number of keys in the stack's Redis database (cached predictions live
an hour: Redis grows with them). The report is a table of time -> memory, keys, req/s
and errors per interval, then each service's growth from the first sample after warm-up
(WARMUP_CAP_SECONDS or WARMUP_FRACTION of the run, whichever is smaller) to the last
sample. The exit status is 1 if any request failed or a service died, else 0. Results:
bench/results/soak.json.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from bench.loadgen import BodyTemplate, LoadPlan, LoadResult
from bench.procs import alive, rss_bytes, sleep_until
from bench.stack import (
    PERTURBED_FEATURE,
    ROOT,
    WORKER_ARGS,
    RunContext,
    check_api_cache,
    demo_rows,
    generator_processes,
    start_load,
    warm_stack,
)
from bench.tables import markdown_table

RESULTS_PATH = ROOT / "bench" / "results" / "soak.json"
SERVICES = ("worker", "api")
MEMORY_GROUPS = ("api", "worker", "redis")
CONCURRENCY = 64
SAMPLE_SECONDS = 10.0
WARMUP_CAP_SECONDS = 60.0
WARMUP_FRACTION = 0.2
MB = 1024 * 1024


@dataclass
class Sample:
    t: float  # seconds since the load's window began
    rss_mb: dict[str, float]  # service -> resident memory
    redis_keys: int  # in the stack's database: mostly cached predictions, kept for an hour
    rps: float | None = None  # in the interval that ends here (None: the first sample)
    errors: int | None = None


@dataclass
class Growth:
    service: str
    start: Sample  # the first sample after warm-up
    end: Sample  # the last sample

    @property
    def mb(self) -> float:
        return self.end.rss_mb[self.service] - self.start.rss_mb[self.service]

    @property
    def percent(self) -> float:
        start_mb = self.start.rss_mb[self.service]
        return 100 * self.mb / start_mb if start_mb else math.nan


def sample_times(seconds: float) -> list[float]:
    """0, SAMPLE_SECONDS, 2 * SAMPLE_SECONDS, ... and the end of the run."""
    count = math.ceil(round(seconds / SAMPLE_SECONDS, 6))
    return [min(i * SAMPLE_SECONDS, seconds) for i in range(count + 1)]


def warmup_seconds(seconds: float) -> float:
    return min(WARMUP_CAP_SECONDS, WARMUP_FRACTION * seconds)


def sample_memory(context: RunContext, window: tuple[float, float]) -> list[Sample]:
    """Sample each service's memory at sample_times, printing each sample as it comes."""
    groups = {name: [context.servers.pids[name]] for name in MEMORY_GROUPS}
    client = redis.Redis.from_url(context.servers.redis_url, socket_timeout=5)
    samples = []
    try:
        for t in sample_times(window[1] - window[0]):
            sleep_until(window[0] + t)
            rss = {name: used / MB for name, used in rss_bytes(groups).items()}
            samples.append(Sample(t, rss, int(client.dbsize())))
            print(f"  t={t:3.0f} s: " + ", ".join(f"{n} {mb:,.1f} MB" for n, mb in rss.items()))
    finally:
        client.close()
    return samples


def add_throughput(samples: list[Sample], result: LoadResult) -> None:
    """Each sample after the first gets the req/s and errors of the interval before it."""
    intervals = zip(itertools.pairwise(samples), result.timeline, strict=True)
    for (previous, sample), (ok, errors) in intervals:
        sample.rps = ok / (sample.t - previous.t)
        sample.errors = errors


def growth(samples: list[Sample], warmup: float) -> list[Growth]:
    first = next(sample for sample in samples if sample.t >= warmup)
    return [Growth(name, first, samples[-1]) for name in MEMORY_GROUPS]


def run_soak(context: RunContext) -> int:
    seconds = float(context.options.soak)
    api = context.servers.targets["api"]
    templates = [BodyTemplate.from_row(row, PERTURBED_FEATURE) for row in demo_rows()]
    check_api_cache(api, templates[0])  # and the hits will repeat templates[0]'s body
    ids = itertools.count(1)  # id 0 would be the unperturbed row: the hits' body
    print("  warming the worker pool (each process loads the model on its first task)")
    warm_stack(context.servers, templates[0], ids)
    plan = LoadPlan(
        target=api,
        templates=templates,
        bodies="alternating",
        first_id=next(ids),
        connections=CONCURRENCY,
        warmup=0.0,
        duration=seconds,
        interval=SAMPLE_SECONDS,
    )
    print(f"  {seconds:g} s at c={CONCURRENCY}, misses and hits in turn ...", flush=True)
    run = start_load(context, plan, context.tmp / "load" / "soak")
    samples = sample_memory(context, run.window)
    result = run.wait()
    add_throughput(samples, result)
    dead = [name for name, pid in context.servers.pids.items() if not alive([pid])]
    report(context, samples, result, dead)
    return 1 if result.error_count or dead else 0


# --- report -------------------------------------------------------------------------------


def timeline_table(samples: list[Sample]) -> str:
    header = ["t s", *(f"{name} MB" for name in MEMORY_GROUPS), "redis keys", "req/s", "errors"]
    rows = [
        [
            f"{s.t:.0f}",
            *(f"{s.rss_mb[name]:,.1f}" for name in MEMORY_GROUPS),
            f"{s.redis_keys:,}",
            "-" if s.rps is None else f"{s.rps:,.0f}",
            "-" if s.errors is None else str(s.errors),
        ]
        for s in samples
    ]
    return markdown_table(header, rows)


def growth_table(growths: list[Growth]) -> str:
    start, end = growths[0].start.t, growths[0].end.t
    header = ["service", f"at {start:.0f} s MB", f"at {end:.0f} s MB", "growth MB", "growth %"]
    rows = [
        [
            g.service,
            f"{g.start.rss_mb[g.service]:,.1f}",
            f"{g.end.rss_mb[g.service]:,.1f}",
            f"{g.mb:+,.1f}",
            f"{g.percent:+.1f}%",
        ]
        for g in growths
    ]
    return markdown_table(header, rows)


def write_results(meta: dict[str, Any], samples: list[Sample], result: LoadResult) -> None:
    growths = growth(samples, warmup_seconds(samples[-1].t))
    document = {
        "meta": meta,
        "samples": [asdict(sample) for sample in samples],
        "growth_mb": {g.service: round(g.mb, 2) for g in growths},
        "growth_percent": {g.service: round(g.percent, 2) for g in growths},
        "answers": result.ok,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
    }
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(document, indent=2) + "\n")


def report(context: RunContext, samples: list[Sample], result: LoadResult, dead: list[str]) -> None:
    seconds = samples[-1].t
    warmup = warmup_seconds(seconds)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": context.code,
        "seconds": seconds,
        "concurrency": CONCURRENCY,
        "pinning": context.layout.describe(),
        "dead": dead,
    }
    write_results(meta, samples, result)
    print(
        f"\nSoak: {seconds:g} s at c={CONCURRENCY}, cache misses and hits in turn; load "
        f"generator: python ({generator_processes(context.layout)} process(es)).\n"
        f"Stack: worker `python -m worker {' '.join(WORKER_ARGS)}`, API "
        f"`python -m api --workers 1`, one Redis; {meta['pinning']}.\n"
        f"Code: {meta['code']}.\n\n"
        f"Resident memory (VmRSS summed over each service's processes), keys in Redis, and "
        f"throughput per {SAMPLE_SECONDS:g} s:\n"
    )
    print(timeline_table(samples))
    print(f"\nMemory growth after the warm-up (the first {warmup:g} s):\n")
    print(growth_table(growth(samples, warmup)))
    print(
        f"\nWhole run: {result.ok:,} answers, {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, errors {result.error_count} {result.errors or ''}".rstrip()
    )
    if dead:
        print(f"services that died during the run: {', '.join(dead)}")
    print(f"Written {RESULTS_PATH.relative_to(ROOT)}.")
