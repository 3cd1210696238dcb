"""`make isolation` (`python -m bench.isolation`): do interactive predictions wait behind
a big job? Prints figures, measured in one run on one stack:

1. idle: one-row synchronous predictions (cache misses) at c=CONCURRENCY, their p99;
2. the job alone: a ROWS-row CSV input-object job, its rows per second;
3. both: the same job again while the predictions run, both figures again.

Targets (issue 12): the predictions' p99 during the job within 3x their idle p99, and the
job's throughput at most 20% below running alone. Exit status 1 when either is missed.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench.loadgen import percentile
from bench.stack import RunContext, run_with_stack

ROWS = 1_000_000
CONCURRENCY = 4
IDLE_SECONDS = 15.0
MAX_P99_RATIO = 3.0
MAX_THROUGHPUT_DROP = 0.20
# Shared by every connection of every phase: each prediction a row never sent before.
ROW_IDS = itertools.count(1)


def write_input(store: Path, rows: int) -> None:
    from common.training import breast_cancer

    x, _, names, _ = breast_cancer()
    path = store / "inputs" / "isolation.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(names)
        for start in range(0, rows, 50_000):
            block = x[np.arange(start, min(rows, start + 50_000)) % len(x)]
            writer.writerows(block.tolist())


class Predictions(threading.Thread):
    """One connection sending unique one-row predictions until stopped."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base, headers=headers, timeout=60)
        self.stopping = threading.Event()
        self.latencies: list[float] = []
        self.failures = 0
        from bench.stack import demo_rows

        self.rows = demo_rows()

    def run(self) -> None:
        while not self.stopping.is_set():
            n = next(ROW_IDS)
            row = dict(self.rows[n % len(self.rows)])
            row["mean radius"] += n * 1e-9  # a cache miss every time
            started = time.perf_counter()
            response = self.client.post("/predict/xgboost", json={"input_data": row})
            self.latencies.append((time.perf_counter() - started) * 1000)
            self.failures += response.status_code != 200


def sync_load(
    base: str, headers: dict[str, str], seconds: float | None, until: threading.Event | None = None
) -> tuple[list[float], int]:
    threads = [Predictions(base, headers) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    if until is not None:
        until.wait()
    else:
        time.sleep(seconds or 0)
    for thread in threads:
        thread.stopping.set()
    for thread in threads:
        thread.join()
        thread.client.close()
    latencies = sorted(v for t in threads for v in t.latencies)
    return latencies, sum(t.failures for t in threads)


def run_job(base: str, headers: dict[str, str], rows: int) -> float:
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        started = time.perf_counter()
        job = client.post("/jobs", json={"input_object": "inputs/isolation.csv"}).json()
        while (status := client.get(job["status_url"]).json())["status"] not in {
            "succeeded",
            "failed",
        }:
            time.sleep(0.2)
        took = time.perf_counter() - started
    if status["status"] != "succeeded":
        raise RuntimeError(f"the job failed: {status['error']}")
    return rows / took


def run_isolation(context: RunContext) -> int:
    api = context.servers.targets["api"]
    base, headers = f"http://{api.host}:{api.port}", api.headers
    rows = context.options.rows
    print(f"  writing a {rows:,}-row CSV into the store", flush=True)
    write_input(context.tmp / "store", rows)
    sync_load(base, headers, 3)  # warm: every pool process loads the model
    idle, idle_failed = sync_load(base, headers, IDLE_SECONDS)
    alone = run_job(base, headers, rows)
    done = threading.Event()
    result: dict[str, float] = {}

    def job() -> None:
        result["rate"] = run_job(base, headers, rows)
        done.set()

    threading.Thread(target=job, daemon=True).start()
    loaded, loaded_failed = sync_load(base, headers, None, until=done)
    with_load = result["rate"]
    ratio = percentile(loaded, 99) / percentile(idle, 99)
    drop = 1 - with_load / alone
    print(io_table(idle, loaded, alone, with_load, idle_failed + loaded_failed))
    print(f"\np99 during the job / idle p99: {ratio:.2f}x (target <= {MAX_P99_RATIO:g}x)")
    print(
        f"job throughput drop with predictions running: {drop:.0%} "
        f"(target <= {MAX_THROUGHPUT_DROP:.0%})"
    )
    met = (
        ratio <= MAX_P99_RATIO and drop <= MAX_THROUGHPUT_DROP and not (idle_failed + loaded_failed)
    )
    print("PASSED" if met else "NOT MET")
    return 0 if met else 1


def io_table(
    idle: list[float], loaded: list[float], alone: float, with_load: float, failed: int
) -> str:
    def row(name: str, values: list[float], rate: str) -> str:
        if not values:
            return f"| {name} | | | | | {rate} |"
        p50, p99 = percentile(values, 50), percentile(values, 99)
        return f"| {name} | {len(values):,} | {p50:.1f} | {p99:.1f} | {values[-1]:.1f} | {rate} |"

    lines = [
        "",
        "| | predictions | p50 ms | p99 ms | max ms | job rows/s |",
        "|---|---:|---:|---:|---:|---:|",
        row("idle", idle, ""),
        row("job alone", [], f"{alone:,.0f}"),
        row("both", loaded, f"{with_load:,.0f}"),
        f"\nfailed predictions: {failed}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.isolation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rows", type=int, default=ROWS, help=f"the job's rows (default {ROWS:,})")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="servers on core 0, load on core 1 (default off: the job uses both)",
    )
    options = parser.parse_args(argv)
    return run_with_stack(options, ("worker", "api"), "python", run_isolation)


if __name__ == "__main__":
    sys.exit(main())
