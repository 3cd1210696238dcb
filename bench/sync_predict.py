"""`python -m bench.sync_predict` (`make bench`): what the synchronous path costs.

Starts a private stack (Redis, a Celery worker with 2 prefork processes, the API with one
uvicorn worker), a bare FastAPI app predicting in-process with the same model
(bench/bare_app.py) and a naive-Celery design (bench/naive_app.py, bench/naive_worker.py:
a `def` endpoint blocking on `AsyncResult.get()`, 2 prefork processes, on its own Redis
database and queue) and Seldon MLServer serving the same model with adaptive batching
(bench/mlserver_peer.py, from its own venv under .cache/mlserver/, built on first use by
bench/mlserver_env.py), then puts closed-loop load on each (bench/loadgen.py, or wrk when
installed) at several concurrencies:

  bare in-process    the baseline: HTTP + JSON + model, nothing else
  stack, cache miss  every body unique (`mean radius` + n * 1e-9): a task per request
  stack, cache hit   one body repeated: answered from the Redis cache after the first
  naive Celery       every body unique: a Celery task and result per request
  MLServer           every body unique: `POST /v2/models/demo-xgboost/infer`, one FP64
                     tensor of shape [1, 30]; batches of up to 64 requests or 5 ms
  1,000-row requests every row of every body unique, on the bare app and on the stack
                     (at --big-concurrency; the ratio is to the bare app's 1,000 rows)

Then, for the two targets whose margin is inside the machine's drift, `--pairs N` rounds
(default 15) of the two scenarios they compare, one right after the other in alternating
order, `--pair-duration` seconds each (default 2; bench/sync_pairs.py): cache misses
against naive Celery's p50 at c=1, and against the bare endpoint's req/s at c=64. Those
targets' figures are the medians of the rounds' ratios, since the main sequence measures
the two minutes apart. A profiled run (`--profile`) has no pairs.

It prints a Markdown table (req/s, p50, p99, errors, req/s relative to bare), the rows/s
of the 1,000-row requests, and the CPU each process used during each window, and writes
bench/results/sync_predict.json (bench/sync_results.py; the scenarios and options are in
bench/sync_options.py, the points in bench/sync_points.py, the report in
bench/sync_report.py). With --pin (the default on 2+ cores) the servers share
core 0 and the load generator runs on core 1, so every design gets the same single core.

`--scenarios NAMES` runs only the named scenarios (comma-separated: bare, miss, hit, naive,
mlserver, bare-1000, miss-1000; default all) and starts only the services they need; the
bare scenario a ratio is relative to always runs too. `--mlserver-workers N` sets
MLServer's parallel_workers (default 1, its own default; 0: inference in its HTTP process).

`--profile DIR` samples the services under load with py-spy (bench/profile.py) during each
measured window: one `py-spy record --subprocesses --nonblocking --format raw` per service
the scenario loads (api and worker; bare; naive-api and naive-worker; mlserver), at
--profile-rate
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
import sys
import time
from collections.abc import Callable

from bench import mlserver_env, soak, sync_options
from bench.stack import RunContext, choose_generator, run_with_stack
from bench.sync_options import needed_services
from bench.sync_points import run_all
from bench.sync_report import print_report
from bench.sync_results import run_meta, write_results

__all__ = ["main", "needed_services", "parse_args"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return sync_options.parse_args(argv, __doc__)


def benchmark(started: float) -> Callable[[RunContext], int]:
    def run(context: RunContext) -> int:
        points, pairs, profiles = run_all(context)
        meta = run_meta(context, time.monotonic() - started)
        write_results(meta, points, pairs=pairs)
        print_report(context, meta, points, profiles, pairs)
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
    started = time.monotonic()
    if "mlserver" in services:
        mlserver_env.ensure_mlserver()  # before any service starts: the first build takes ~40 s
    return run_with_stack(options, services, generator, benchmark(started))


if __name__ == "__main__":
    sys.exit(main())
