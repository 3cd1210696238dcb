"""`python -m bench.scale` (`make scale-bench`): throughput as worker hosts are added.

For 1, 2 and 3 worker hosts it starts the multi-host bed (dev/hosts/bed.py: Redis, S3
and PostgreSQL on one host, the API on another, each worker host a network namespace
held to `--worker-cpus` of the machine's CPU), and from the client host it measures:

  1 row       cache misses at c=64 (every body unique), req/s, p50, p99
  1,000 rows  1,000-row cache misses at c=64, rows/s
  job         a 100,000-row CSV job, wall time from submit to `succeeded`

and the CPU the API, Redis and the workers used during each window: the API's and
Redis's headroom is what is left of the core each can use. It prints the tables, the
`scale:` lines, and writes bench/results/scale.json. Linux and root only (namespaces).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
import sqlalchemy as sa

from bench.loadgen import BodyTemplate, LoadPlan, Target, start_python_load
from bench.procs import ProcessGroup, measure_cpu
from bench.scale_report import HostsRun, Point, report, results
from bench.stack import PERTURBED_FEATURE, ROOT, batch_totals, demo_rows
from common.training import DEMO_TYPES, TrainedModel, train_demo
from dev.hosts.bed import API_PORT, KEY, BedPlan, TestBed, publish_models, unavailable_reason

RESULTS_PATH = ROOT / "bench" / "results" / "scale.json"
JOB_ROWS = 100_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--hosts", default="1,2,3", help="worker host counts to measure")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--worker-cpus", type=float, default=0.2, help="CPU cap per host")
    parser.add_argument("--worker-cpu-period-ms", type=float, default=10.0)
    parser.add_argument("--worker-concurrency", type=int, default=1, help="pool per host")
    parser.add_argument("--api-processes", type=int, default=1)
    parser.add_argument("--in-flight", type=int, default=6, help="batch_max_in_flight")
    parser.add_argument("--generators", type=int, default=2, help="load generator processes")
    parser.add_argument("--job-rows", type=int, default=JOB_ROWS)
    parser.add_argument("--keep", action="store_true", help="keep the beds' logs")
    return parser.parse_args(argv)


def bed_plan(hosts: int, options: argparse.Namespace) -> BedPlan:
    return BedPlan(
        worker_hosts=hosts,
        worker_cpus=options.worker_cpus,
        worker_cpu_period_us=round(options.worker_cpu_period_ms * 1000),
        worker_concurrency=options.worker_concurrency,
        api_processes=options.api_processes,
        # Twice as many batches out at once as the largest bed has pool processes: with
        # fewer, the API, not the hosts, would limit how many work at a time, and each
        # host would sit idle while its next batch crosses the API and Redis.
        settings={"batch_max_in_flight": options.in_flight},
    )


def templates() -> dict[int, BodyTemplate]:
    rows = demo_rows()
    return {
        1: BodyTemplate.from_row(rows[0], PERTURBED_FEATURE),
        1000: BodyTemplate.from_rows((rows * 2)[:1000], PERTURBED_FEATURE),
    }


def measure(
    bed: TestBed, size: int, template: BodyTemplate, options: argparse.Namespace, first_id: int
) -> Point:
    target = Target(bed.api.address, API_PORT, "/predict", {"X-API-Key": KEY})
    plan = LoadPlan(
        target, [template], "unique", first_id, options.concurrency, options.warmup,
        options.duration,
    )  # fmt: skip
    group = ProcessGroup()
    work_dir = bed.work_dir / f"load-{size}"
    work_dir.mkdir(parents=True, exist_ok=True)
    run = start_python_load(plan, options.generators, group, work_dir, tuple(bed.client.enter))
    groups = {
        "api": [bed.processes["api"].pid],
        "redis": [bed.processes["redis"].pid],
        "postgres": [bed.processes["postgres"].pid],
        "workers": [bed.processes[name].pid for name in bed.worker_names()],
        "load": run.pids,
    }
    before, batched_before = usage(bed), bed.run_on(bed.client, lambda: batch_totals(target))
    cpu = measure_cpu(run.window, groups)
    result = run.wait()
    after, batched_after = usage(bed), bed.run_on(bed.client, lambda: batch_totals(target))
    requests, tasks = (a - b for a, b in zip(batched_after, batched_before, strict=True))
    for proc in group.processes:  # not group.stop_all(): it ends every child, the bed's too
        proc.stop()
    hosts = len(bed.worker_names())
    workload = "1 row" if size == 1 else f"{size:,} rows"
    # Counted over the whole load (warm-up and tail too), divided by what it answered.
    answered = max(1, after.log_rows - before.log_rows)
    return Point(hosts, workload, size, result.rps, result.p50_ms, result.p99_ms,
                 result.errors, cpu,
                 (after.redis_commands - before.redis_commands) / answered,
                 (after.log_bytes - before.log_bytes) / answered,
                 (after.redis_memory - before.redis_memory) / answered,
                 requests / max(1.0, tasks))  # fmt: skip


@dataclass(frozen=True)
class Usage:
    redis_commands: int
    redis_memory: int
    log_rows: int
    log_bytes: int


def usage(bed: TestBed) -> Usage:
    """Redis's commands so far, and the prediction log's rows and bytes (table, indexes
    and TOAST), read from the client host."""

    def read() -> Usage:
        client = redis.Redis.from_url(bed.fields["redis_url"])
        commands = int(client.info("stats")["total_commands_processed"])
        memory = int(client.info("memory")["used_memory"])
        client.close()
        engine = sa.create_engine(bed.fields["database_url"])
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM prediction_log")).scalar_one()
            size = "SELECT pg_total_relation_size('prediction_log')"
            size_bytes = conn.execute(sa.text(size)).scalar_one()
        engine.dispose()
        return Usage(commands, memory, int(rows), int(size_bytes))

    return bed.run_on(bed.client, read)


def job_csv(rows: int) -> bytes:
    """`rows` rows of the demo data, one feature perturbed so that no two are equal."""
    data = demo_rows()
    names = list(data[0])
    lines = [",".join(names)]
    for i in range(rows):
        row = data[i % len(data)]
        values = [row[n] + (i * 1e-6 if n == PERTURBED_FEATURE else 0.0) for n in names]
        lines.append(",".join(f"{v:.9g}" for v in values))
    return ("\n".join(lines) + "\n").encode()


def run_job(bed: TestBed, body: bytes) -> tuple[float, float]:
    """Seconds from submitting the CSV job to its 202 (the upload), and to `succeeded`."""

    def submit_and_wait() -> tuple[float, float]:
        headers = {"X-API-Key": KEY, "Content-Type": "text/csv"}
        with httpx.Client(base_url=bed.api_url, headers=headers, timeout=120) as client:
            started = time.monotonic()
            job = client.post("/jobs", params={"model_type": "xgboost"}, content=body)
            if job.status_code != 202:
                raise RuntimeError(f"the job was refused: {job.status_code} {job.text}")
            accepted = time.monotonic() - started
            while (status := client.get(job.json()["status_url"]).json())["status"] not in {
                "succeeded", "failed", "cancelled",
            }:  # fmt: skip
                time.sleep(0.05)
            if status["status"] != "succeeded":
                raise RuntimeError(f"the job ended {status['status']}: {status}")
            return accepted, time.monotonic() - started

    return bed.run_on(bed.client, submit_and_wait)


def warm(bed: TestBed, template: BodyTemplate) -> None:
    """Each pool process loads the model on its first task: a round of requests first."""

    def send() -> None:
        with httpx.Client(base_url=bed.api_url, headers={"X-API-Key": KEY}, timeout=60) as c:
            for n in range(1, 40):
                response = c.post("/predict", content=template.render(10**9 + n))
                if response.status_code != 200:
                    raise RuntimeError(f"warm-up: {response.status_code} {response.text}")

    bed.run_on(bed.client, send)


def run_hosts(
    hosts: int, options: argparse.Namespace, models: dict[str, TrainedModel], body: bytes
) -> HostsRun:
    print(f"--- {hosts} worker host(s) at {options.worker_cpus} CPU each", flush=True)
    outcome = HostsRun(hosts)
    work_dir = Path(tempfile.mkdtemp(prefix=f"serving-scale-{hosts}-"))
    try:
        measure_bed(
            TestBed(bed_plan(hosts, options), work_dir=work_dir), options, models, body, outcome
        )
    finally:
        if options.keep:
            print(f"    logs kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    return outcome


def measure_bed(
    bed: TestBed,
    options: argparse.Namespace,
    models: dict[str, TrainedModel],
    body: bytes,
    outcome: HostsRun,
) -> None:
    with bed:
        bed.start(publish_models(models))
        bodies = templates()
        warm(bed, bodies[1])
        for n, (size, template) in enumerate(bodies.items()):
            outcome.points.append(measure(bed, size, template, options, 1 + n * 10**8))
            print(f"    {outcome.points[-1].workload}: {outcome.points[-1].rps:.0f} req/s")
        outcome.job_upload_seconds, outcome.job_seconds = run_job(bed, body)
        print(f"    {options.job_rows:,}-row job: {outcome.job_seconds:.1f} s", flush=True)
        outcome.throttled_seconds = sum(cap.throttled_seconds() for cap in bed.caps.values())


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"make scale-bench needs the multi-host bed: {reason}", file=sys.stderr)
        return 2
    models = {model_type: train_demo(model_type) for model_type in DEMO_TYPES}
    body = job_csv(options.job_rows)
    runs = [run_hosts(int(n), options, models, body) for n in options.hosts.split(",")]
    text = report(runs, options)
    print(text)
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(results(runs, options, text), indent=2))
    print(f"wrote {RESULTS_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
