"""`make soak` (`python -m bench.mixed_soak`): the stack under mixed load for ten minutes,
then a verdict.

CONCURRENCY connections each send, in a fixed rotation, cache misses and cache hits on
POST /predict, jobs (POST /jobs, then the job's status polled until it ends) and bad
requests, each with the 4xx it must get. Every SAMPLE_SECONDS the resident memory of
the API, the worker and Redis is sampled (VmRSS summed over each process tree).

The exit status is 1, with the reasons printed, if any answer was a 5xx or never came,
a good request was refused or a bad one got another status than its own, an accepted
job did not succeed with one result per row, the API's or the worker's memory rose more
than MAX_GROWTH_PERCENT above its level at the end of the warm-up (the first
WARMUP_FRACTION of the run, at most WARMUP_CAP_SECONDS), or a service died; else 0.
Results: bench/results/mixed_soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import orjson
import redis

from bench import chaos as chaos_mode
from bench.loadgen import BodyTemplate, percentile
from bench.procs import alive, rss_bytes
from bench.stack import (
    PERTURBED_FEATURE,
    ROOT,
    RunContext,
    check_api_cache,
    demo_rows,
    run_with_stack,
    warm_stack,
)
from bench.tables import markdown_table

RESULTS_PATH = ROOT / "bench" / "results" / "mixed_soak.json"
SERVICES = ("worker", "api")
MEMORY_GROUPS = ("api", "worker", "redis")
CHECKED_GROUPS = ("api", "worker")  # Redis grows with cached predictions and job results
SECONDS = 600.0
CONCURRENCY = 32
SAMPLE_SECONDS = 10.0
WARMUP_CAP_SECONDS = 60.0
WARMUP_FRACTION = 0.2
MAX_GROWTH_PERCENT = 10.0
JOB_ROWS = 20
POLL_SECONDS = 0.1
DRAIN_SECONDS = 120.0  # after the window, for the jobs being polled to end
ROTATION = ("miss", "hit", "miss", "hit", "job", "miss", "hit", "bad")
TERMINAL = {"succeeded", "failed", "cancelled"}
MB = 1024 * 1024


@dataclass(frozen=True)
class Bad:
    name: str
    method: str
    path: str
    body: bytes | None
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    keyed: bool = True


def bad_requests(row: dict[str, float]) -> list[Bad]:
    row = {str(name): value for name, value in row.items()}  # numpy's str is no str to orjson
    good = orjson.dumps({"input_data": row})
    nan = good.replace(orjson.dumps(row[PERTURBED_FEATURE]), b"NaN", 1)
    text = orjson.dumps({"input_data": row | {PERTURBED_FEATURE: "big"}})
    return [
        Bad("no key", "POST", "/predict", good, 401, keyed=False),
        Bad("wrong key", "POST", "/predict", good, 401, {"X-API-Key": "wrong"}),
        Bad("predict key, admin route", "DELETE", "/delete-models", None, 403),
        Bad("unknown model", "POST", "/predict/no_such_model", good, 404),
        Bad("unknown job", "GET", "/jobs/" + "0" * 32, None, 404),
        Bad("method not allowed", "PUT", "/predict", good, 405),
        Bad("malformed JSON", "POST", "/predict", b"{not json", 400),
        Bad("NaN", "POST", "/predict", nan, 400),
        Bad("empty job body", "POST", "/jobs", b"", 400),
        Bad("deep nesting", "POST", "/predict", b"[" * 5000, 400),
        Bad("text/plain body", "POST", "/predict", good, 415, {"Content-Type": "text/plain"}),
        Bad("string feature", "POST", "/predict", text, 422),
        Bad("unknown feature", "POST", "/jobs", orjson.dumps({"input_data": {"x": 1}}), 422),
        Bad("too many rows", "POST", "/predict", orjson.dumps({"input_data": [{}] * 10_001}), 422),
        Bad("bad n_limit", "GET", "/logs?n_limit=0", None, 422),
    ]


@dataclass
class Sample:
    t: float  # seconds since the load began
    rss_mb: dict[str, float]
    redis_keys: int
    counts: dict[str, int] = field(default_factory=dict)  # kind -> answers in the interval


@dataclass
class Load:
    """What the connections share: bodies, clients, and everything counted."""

    keyed: httpx.AsyncClient
    bare: httpx.AsyncClient
    miss: BodyTemplate
    job: BodyTemplate
    bad: list[Bad]
    until: float  # time.monotonic() at which no new request starts
    ids: Iterator[int]
    started: float = field(default_factory=time.monotonic)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, status)
    failures: Counter[str] = field(default_factory=Counter)  # what went wrong -> count
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    interval: Counter[str] = field(default_factory=Counter)  # kind -> answers, this interval
    jobs: dict[str, int] = field(default_factory=dict)  # accepted job id -> rows
    ended: Counter[str] = field(default_factory=Counter)  # job status at the end of polling
    bad_turn: Iterator[int] = field(default_factory=itertools.count)
    answered: list[str] = field(default_factory=list)  # request and job ids answered
    chaos: chaos_mode.Chaos | None = None

    async def send(
        self,
        kind: str,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response | None:
        client = client or self.keyed
        headers = {"Content-Type": "application/json"} | (headers or {})
        started = time.perf_counter()
        try:
            response = await client.request(method, path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self.count(kind, type(exc).__name__, started)
            self.failures[f"{kind}: {type(exc).__name__}"] += 1
            return None
        self.count(kind, str(response.status_code), started)
        if response.status_code >= 500:
            self.failures[f"{kind}: {response.status_code} {response.text[:200]}"] += 1
        return response

    def count(self, kind: str, status: str, started: float) -> None:
        self.outcomes[kind, status] += 1
        self.interval[kind] += 1
        self.latencies_ms.setdefault(kind, []).append((time.perf_counter() - started) * 1000)

    def expect(self, kind: str, response: httpx.Response | None, status: int) -> bool:
        if response is None or response.status_code >= 500:
            return False  # already a failure
        if response.status_code == 429:
            return False  # shed by the API's in-flight limit: counted, not a failure
        if response.status_code != status:
            self.failures[f"{kind}: {response.status_code} instead of {status}"] += 1
            return False
        return True


async def miss(load: Load) -> None:
    body = load.miss.render(next(load.ids))
    response = await load.send("miss", "POST", "/predict", body)
    if load.expect("miss", response, 200) and response is not None:
        load.answered.append(response.json()["request_id"])


async def hit(load: Load) -> None:
    response = await load.send("hit", "POST", "/predict", load.miss.render())
    if load.expect("hit", response, 200) and response is not None:
        load.answered.append(response.json()["request_id"])


async def job(load: Load) -> None:
    response = await load.send("job", "POST", "/jobs", load.job.render(next(load.ids)))
    if response is None or not load.expect("job", response, 202):
        return
    job_id = response.json()["job_id"]
    load.jobs[job_id] = JOB_ROWS
    load.answered.append(job_id)  # a job is one log row
    deadline = load.until + DRAIN_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
        polled = await load.send("poll", "GET", f"/jobs/{job_id}")
        if polled is not None and load.expect("poll", polled, 200):
            status = polled.json()["status"]
            if status in TERMINAL:
                load.ended[status] += 1
                return
    load.ended["still running after the drain"] += 1


async def bad(load: Load) -> None:
    case = load.bad[next(load.bad_turn) % len(load.bad)]
    client = load.keyed if case.keyed else load.bare
    response = await load.send(
        "bad", case.method, case.path, case.body, headers=case.headers, client=client
    )
    load.expect(f"bad ({case.name})", response, case.status)


STEPS: dict[str, Callable[[Load], Awaitable[None]]] = {
    "miss": miss,
    "hit": hit,
    "job": job,
    "bad": bad,
}


async def connection(load: Load, index: int) -> None:
    for turn in itertools.count(index):
        if time.monotonic() >= load.until:
            return
        await STEPS[ROTATION[turn % len(ROTATION)]](load)


async def sample_memory(load: Load, context: RunContext, samples: list[Sample]) -> None:
    groups = {name: [context.servers.pids[name]] for name in MEMORY_GROUPS}
    client = redis.Redis.from_url(context.servers.redis_url, socket_timeout=5)
    try:
        for i in itertools.count():
            moment = load.started + i * SAMPLE_SECONDS
            if moment > load.until + 0.5:
                return
            await asyncio.sleep(max(0.0, moment - time.monotonic()))
            rss = {name: used / MB for name, used in rss_bytes(groups).items()}
            counts, load.interval = dict(load.interval), Counter()
            sample = Sample(round(moment - load.started, 1), rss, int(client.dbsize()), counts)
            samples.append(sample)
            print(
                f"  t={sample.t:4.0f} s: "
                + ", ".join(f"{n} {mb:,.1f} MB" for n, mb in rss.items())
                + f"; {sum(counts.values()):,} answers",
                flush=True,
            )
    finally:
        client.close()


async def check_jobs(load: Load) -> None:
    """Read every accepted job once more: succeeded, with one prediction per row."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def check(job_id: str, rows: int) -> None:
        async with limit:
            response = await load.send("final read", "GET", f"/jobs/{job_id}")
        if response is None or not load.expect("final read", response, 200):
            load.failures["job not readable at the end"] += 1
            return
        status = response.json()
        if status["status"] != "succeeded":
            load.failures[f"job {status['status']} at the end"] += 1
        elif len((status.get("result") or {}).get("predictions", [])) != rows:
            load.failures["job succeeded without one prediction per row"] += 1

    await asyncio.gather(*(check(job_id, rows) for job_id, rows in load.jobs.items()))


async def run_load(
    context: RunContext, seconds: float, concurrency: int, ids: Iterator[int]
) -> tuple[Load, list[Sample]]:
    api = context.servers.targets["api"]
    base = f"http://{api.host}:{api.port}"
    rows = demo_rows()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with (
        httpx.AsyncClient(base_url=base, headers=api.headers, timeout=60, limits=limits) as keyed,
        httpx.AsyncClient(base_url=base, timeout=60) as bare,
    ):
        load = Load(
            keyed=keyed,
            bare=bare,
            miss=BodyTemplate.from_row(rows[0], PERTURBED_FEATURE),
            job=BodyTemplate.from_rows(rows[1 : 1 + JOB_ROWS], PERTURBED_FEATURE),
            bad=bad_requests(rows[0]),
            until=time.monotonic() + seconds,
            ids=ids,
        )
        samples: list[Sample] = []
        sampler = asyncio.create_task(sample_memory(load, context, samples))
        tasks = [connection(load, i) for i in range(concurrency)]
        if context.options.chaos:
            load.chaos = chaos_mode.Chaos(
                context.tmp, context.servers.pids["worker"], context.servers.redis_url
            )
            tasks.append(chaos_mode.run_chaos(load.chaos, load))
        await asyncio.gather(*tasks)
        await sampler
        await check_jobs(load)
        if load.chaos is not None:
            load.failures.update(await chaos_mode.chaos_verdict(load.chaos, load))
    return load, samples


# --- verdict and report ----------------------------------------------------------------------


def warmup_seconds(seconds: float) -> float:
    return min(WARMUP_CAP_SECONDS, WARMUP_FRACTION * seconds)


def memory_growth(samples: list[Sample], warmup: float) -> dict[str, tuple[float, float, float]]:
    """Service -> (MB at the end of the warm-up, highest MB after it, highest growth %)."""
    after = [s for s in samples if s.t >= warmup]
    growth = {}
    for name in MEMORY_GROUPS:
        start = after[0].rss_mb[name]
        peak = max(s.rss_mb[name] for s in after)
        growth[name] = (start, peak, 100 * (peak - start) / start if start else 0.0)
    return growth


def verdict(load: Load, samples: list[Sample], seconds: float, dead: list[str]) -> list[str]:
    problems = [f"{count} x {what}" for what, count in sorted(load.failures.items())]
    if load.ended.get("still running after the drain"):
        problems.append(f"{load.ended['still running after the drain']} jobs never ended")
    for name in CHECKED_GROUPS:
        start, peak, percent = memory_growth(samples, warmup_seconds(seconds))[name]
        if percent > MAX_GROWTH_PERCENT:
            problems.append(
                f"{name} memory rose {percent:.1f}% ({start:,.1f} -> {peak:,.1f} MB) after warm-up"
            )
    if not load.jobs:
        problems.append("no job was accepted")
    problems += [f"{name} died during the run" for name in dead]
    return problems


def timeline_table(samples: list[Sample]) -> str:
    kinds = ["miss", "hit", "job", "poll", "bad"]
    header = ["t s", *(f"{n} MB" for n in MEMORY_GROUPS), "redis keys", "req/s", *kinds]
    table = []
    for previous, sample in itertools.pairwise(samples):
        span = sample.t - previous.t
        table.append(
            [
                f"{sample.t:.0f}",
                *(f"{sample.rss_mb[n]:,.1f}" for n in MEMORY_GROUPS),
                f"{sample.redis_keys:,}",
                f"{sum(sample.counts.values()) / span:,.0f}" if span else "-",
                *(f"{sample.counts.get(k, 0):,}" for k in kinds),
            ]
        )
    first = samples[0]
    start = [f"{first.t:.0f}", *(f"{first.rss_mb[n]:,.1f}" for n in MEMORY_GROUPS)]
    return markdown_table(header, [start + [f"{first.redis_keys:,}"] + ["-"] * 6, *table])


def outcome_table(load: Load) -> str:
    kinds = sorted({kind for kind, _ in load.outcomes})
    table = []
    for kind in kinds:
        statuses = {s: c for (k, s), c in load.outcomes.items() if k == kind}
        latencies = sorted(load.latencies_ms.get(kind, []))
        table.append(
            [
                kind,
                f"{sum(statuses.values()):,}",
                ", ".join(f"{s}: {c:,}" for s, c in sorted(statuses.items())),
                f"{percentile(latencies, 50):.1f}",
                f"{percentile(latencies, 99):.1f}",
            ]
        )
    return markdown_table(["kind", "answers", "by status", "p50 ms", "p99 ms"], table)


def report(
    context: RunContext,
    load: Load,
    samples: list[Sample],
    seconds: float,
    concurrency: int,
    problems: list[str],
) -> None:
    warmup = warmup_seconds(seconds)
    growth = memory_growth(samples, warmup)
    print(
        f"\nMixed soak: {seconds:g} s at c={concurrency}, rotation {'/'.join(ROTATION)} "
        f"(jobs of {JOB_ROWS} rows, polled every {POLL_SECONDS:g} s).\nCode: {context.code}; "
        f"{context.layout.describe()}.\n\nMemory (MB), keys in Redis and answers per "
        f"{SAMPLE_SECONDS:g} s:\n"
    )
    print(timeline_table(samples))
    print("\nAnswers by kind over the whole run:\n")
    print(outcome_table(load))
    print(f"\nMemory after the warm-up (the first {warmup:g} s):\n")
    print(
        markdown_table(
            ["service", "after warm-up MB", "highest MB", "growth %"],
            [[n, f"{a:,.1f}", f"{b:,.1f}", f"{c:+.1f}%"] for n, (a, b, c) in growth.items()],
        )
    )
    print(f"\nJobs accepted: {len(load.jobs):,}; ended: {dict(load.ended)}.")
    if load.chaos is not None:
        print(chaos_mode.summary(load.chaos))
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": context.code,
        "seconds": seconds,
        "concurrency": concurrency,
        "pinning": context.layout.describe(),
        "outcomes": {f"{k} {s}": c for (k, s), c in sorted(load.outcomes.items())},
        "jobs_accepted": len(load.jobs),
        "jobs_ended": dict(load.ended),
        "memory_growth_percent": {n: round(c, 2) for n, (_, _, c) in growth.items()},
        "samples": [vars(s) for s in samples],
        "problems": problems,
    }
    RESULTS_PATH.write_text(json.dumps(document, indent=2) + "\n")
    print(f"Written {RESULTS_PATH.relative_to(ROOT)}.")
    if problems:
        print("\nFAILED:\n" + "\n".join(f"  - {p}" for p in problems))
    else:
        print(
            "\nPASSED: no 5xx, every bad request got its 4xx, every job succeeded, "
            f"API and worker memory within {MAX_GROWTH_PERCENT:g}% after warm-up."
        )


def run_mixed_soak(context: RunContext) -> int:
    seconds, concurrency = context.options.seconds, context.options.concurrency
    api = context.servers.targets["api"]
    template = BodyTemplate.from_row(demo_rows()[0], PERTURBED_FEATURE)
    check_api_cache(api, template)  # the hits repeat this body
    ids = itertools.count(1)  # id 0 would be the unperturbed row: the hits' body
    if context.options.chaos:
        chaos_mode.publish_failing_model(context.tmp, chaos_mode.demo_metadata(context.tmp))
    print("  warming the worker pool (each process loads the model on its first task)")
    warm_stack(context.servers, template, ids)
    generator = context.layout.generator
    saved = os.sched_getaffinity(0) if generator else None
    if generator:
        os.sched_setaffinity(0, generator)  # the load runs in this process
    print(f"  {seconds:g} s at c={concurrency} ...", flush=True)
    try:
        load, samples = asyncio.run(run_load(context, seconds, concurrency, ids))
    finally:
        if saved:
            os.sched_setaffinity(0, saved)
    dead = [name for name, pid in context.servers.pids.items() if not alive([pid])]
    problems = verdict(load, samples, seconds, dead)
    report(context, load, samples, seconds, concurrency, problems)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mixed_soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=SECONDS, help="default 600")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="default 32")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="servers on core 0, load on core 1 (default: on with 2+ cores)",
    )
    parser.add_argument(
        "--chaos",
        action="store_true",
        help="kill pool processes, fail chunks and make the log read-only while it runs",
    )
    options = parser.parse_args(argv)
    options.settings = chaos_mode.SETTINGS if options.chaos else {}
    if options.seconds < 3 * SAMPLE_SECONDS or options.concurrency < 1:
        parser.error(f"--seconds must be >= {3 * SAMPLE_SECONDS:g}, --concurrency >= 1")
    return run_with_stack(options, SERVICES, "python", run_mixed_soak)


if __name__ == "__main__":
    sys.exit(main())
