"""The services a benchmark runs against, started privately and stopped again.

One private Redis (database 0 for the stack, NAIVE_REDIS_DB for the naive baseline), and
any of: the stack's Celery worker (2 prefork processes) and API (one uvicorn worker), the
bare in-process app (bench/bare_app.py), the naive-Celery app and worker
(bench/naive_app.py, bench/naive_worker.py). With pinning, every server runs on one core
and the load generator on another. `run_with_stack` starts them, runs a benchmark, and
stops every process it started, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench import naive_worker
from bench.loadgen import BodyTemplate, LoadPlan, LoadRun, Target, start_python_load
from bench.procs import ProcessGroup, can_pin, inherited_affinity, usable_cores
from bench.wrk import start_wrk_load, wrk_path
from dev.services import ManagedProcess, free_port, start_redis, wait_until

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key-for-benchmarks"
PERTURBED_FEATURE = "mean radius"
POOL_PROCESSES = 2
WORKER_ARGS = ["--concurrency", str(POOL_PROCESSES), "--pool", "prefork"]
NAIVE_REDIS_DB = 1
READY_TIMEOUT_SECONDS = 120
# Every service a benchmark may start besides Redis, as named in Servers.pids.
SERVICES = ("worker", "api", "bare", "naive-worker", "naive-api")
# The HTTP services: name in Servers.pids -> name in Servers.targets.
TARGETS = {"api": "api", "bare": "bare", "naive-api": "naive"}


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
            f"pinned: servers on core {sorted(self.servers or [])}, "
            f"load generator on core {sorted(self.generator or [])}"
        )


@dataclass
class Servers:
    targets: dict[str, Target]  # "api", "bare", "naive": those started
    pids: dict[str, int]  # process name -> pid (the root of its tree)
    redis_url: str  # the stack's database


@dataclass
class RunContext:
    options: argparse.Namespace
    layout: CoreLayout
    generator: str
    group: ProcessGroup
    servers: Servers
    tmp: Path
    code: str  # the commit the services were started from (see code_version)


# --- cores and the load generator ---------------------------------------------------------


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


def start_load(context: RunContext, plan: LoadPlan, work_dir: Path) -> LoadRun:
    work_dir.mkdir(parents=True, exist_ok=True)
    starter = start_wrk_load if context.generator == "wrk" else start_python_load
    with inherited_affinity(context.layout.generator):
        return starter(plan, generator_processes(context.layout), context.group, work_dir)


# --- starting the services --------------------------------------------------------------


def child_env(redis_url: str, tmp: Path, settings: dict[str, str] | None = None) -> dict[str, str]:
    """The services' environment: none of the caller's SERVING_* variables (they could
    point at the caller's own Redis), only the benchmark's and `settings` (--set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env.update({f"SERVING_{name.upper()}": value for name, value in (settings or {}).items()})
    env.update(
        SERVING_REDIS_URL=redis_url,
        SERVING_LOCAL_STORE_PATH=str(tmp / "store"),
        SERVING_DATABASE_URL=f"sqlite:///{tmp / 'predictions.db'}",
        SERVING_API_KEYS=API_KEY,
        SERVING_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    return env


def redis_database(url: str, db: int) -> str:
    """The same Redis server's URL, another database number."""
    return f"{url.rsplit('/', 1)[0]}/{db}"


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


def service_args(name: str, port: int | None) -> list[str]:
    """The command line of one service (port: that of an HTTP service)."""
    commands = {
        "worker": ["-m", "worker", *WORKER_ARGS],
        "api": ["-m", "api", "--port", str(port), "--workers", "1"],
        "bare": ["-m", "bench.bare_app", "--port", str(port)],
        "naive-worker": ["-m", "bench.naive_worker"],
        "naive-api": ["-m", "bench.naive_app", "--port", str(port)],
    }
    return [sys.executable, *commands[name]]


def target_of(name: str, port: int) -> Target:
    headers = {"X-API-Key": API_KEY} if name == "api" else {}
    return Target("127.0.0.1", port, "/predict", headers)


def is_up(target: Target) -> bool:
    """Whether the service is up (the API's root, with a key; the others' /healthz)."""
    path = "/" if target.headers else "/healthz"
    return http_status(f"http://{target.host}:{target.port}{path}", target.headers) == 200


def start_servers(
    tmp: Path, group: ProcessGroup, services: Collection[str], settings: dict[str, str]
) -> Servers:
    """Redis, then the named services (the worker and the API together: the API needs the
    worker); returns once every HTTP service answers."""
    redis_proc, redis_url = start_redis(tmp / "redis")
    group.adopt(redis_proc)
    env = child_env(redis_url, tmp, settings)
    publish_demo_models(env)
    naive_env = env | {"SERVING_REDIS_URL": redis_database(redis_url, NAIVE_REDIS_DB)}
    ports = {name: free_port() for name in TARGETS if name in services}
    procs = [
        group.start(
            ManagedProcess(
                name,
                service_args(name, ports.get(name)),
                tmp / f"{name}.log",
                env=naive_env if name.startswith("naive") else env,
                cwd=ROOT,
            )
        )
        for name in SERVICES
        if name in services
    ]
    targets = {TARGETS[name]: target_of(name, port) for name, port in ports.items()}
    checks: list[Callable[[], bool]] = [partial(is_up, t) for t in targets.values()]
    wait_until(lambda: ready_check(procs, checks), READY_TIMEOUT_SECONDS, "the HTTP services")
    pids = {"redis": redis_proc.pid} | {proc.name: proc.pid for proc in procs}
    return Servers(targets, pids, redis_url)


# --- requests and warm-up -----------------------------------------------------------------


def call_json(target: Target, path: str | None = None, body: bytes | None = None) -> Any:
    """GET (no body) or POST a JSON body to the target; its JSON answer, which must be 200."""
    url = f"http://{target.host}:{target.port}{path or target.path}"
    headers = {**target.headers, "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url} answered {exc.code}: {exc.read()[:500]!r}") from None


def batch_totals(target: Target) -> tuple[float, float]:
    """The API's micro-batching so far: (requests sent, tasks that carried them), from
    its /metrics (the serving_batch_size_requests histogram)."""
    url = f"http://{target.host}:{target.port}/metrics"
    request = urllib.request.Request(url, headers=target.headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    totals = {"serving_batch_size_requests_sum": 0.0, "serving_batch_size_requests_count": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals["serving_batch_size_requests_sum"], totals["serving_batch_size_requests_count"]


def demo_rows() -> list[dict[str, float]]:
    """The rows of the breast-cancer data (the demo models' training data), in order."""
    from common.training import breast_cancer

    x, _, names, _ = breast_cancer()
    return [dict(zip(names, map(float, values), strict=True)) for values in x]


def check_api_cache(api: Target, template: BodyTemplate) -> None:
    """The same body twice: a miss, then a hit; fail now, not after minutes of errors."""
    body = template.render()
    first, second = (call_json(api, body=body) for _ in range(2))
    if first.get("cached") is not False or second.get("cached") is not True:
        raise RuntimeError(f"the cache does not behave as expected: {first} then {second}")


def warm_pool(
    target: Target, bodies: Iterator[bytes], who: Callable[[list[Any]], set[str]], what: str
) -> None:
    """Send rounds of concurrent requests until every pool process has predicted once:
    each loads the model on its first task, and importing XGBoost there takes seconds of
    CPU. `who` names the processes that have predicted, given a round's answers."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    seen: set[str] = set()
    with ThreadPoolExecutor(2 * POOL_PROCESSES) as pool:
        while len(seen) < POOL_PROCESSES:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all {POOL_PROCESSES} {what} processes predicted in time")
            round_bodies = [next(bodies) for _ in range(4 * POOL_PROCESSES)]
            answers = list(pool.map(lambda body: call_json(target, body=body), round_bodies))
            seen |= who(answers)


def warm_stack(servers: Servers, template: BodyTemplate, ids: Iterator[int]) -> None:
    """The stack's worker pool, with unique bodies; its log names the processes."""
    api = servers.targets["api"]

    def logged_workers(_: list[Any]) -> set[str]:
        entries = call_json(api, path="/logs?n_limit=1000")
        return {entry["worker"] for entry in entries if entry["worker"]}

    warm_pool(api, (template.render(n) for n in ids), logged_workers, "worker")


def warm_naive(servers: Servers, template: BodyTemplate) -> None:
    """The naive worker's pool; its answers name the processes."""
    assert naive_worker.POOL_PROCESSES == POOL_PROCESSES
    warm_pool(
        servers.targets["naive"],
        itertools.repeat(template.render()),
        lambda answers: {str(answer["pid"]) for answer in answers},
        "naive worker",
    )


# --- running a benchmark against the services ---------------------------------------------


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_with_stack(
    options: argparse.Namespace,
    services: Collection[str],
    generator: str,
    benchmark: Callable[[RunContext], int],
) -> int:
    """Start Redis and `services`, run `benchmark`, stop every process started; the exit
    status is the benchmark's (130 when interrupted). Logs are kept unless it returns 0."""
    signal.signal(signal.SIGTERM, _interrupt)
    layout = plan_cores(options.pin)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-predict-"))
    group = ProcessGroup()
    status = 1
    try:
        print(f"starting the services in {tmp} ({layout.describe()})", flush=True)
        code = code_version()
        with inherited_affinity(layout.servers):
            servers = start_servers(tmp, group, services, getattr(options, "settings", {}))
        status = benchmark(RunContext(options, layout, generator, group, servers, tmp, code))
        return status
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        cleanup(group, tmp, keep_logs=status != 0)


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


def code_version() -> str:
    """The commit measured, and whether the working tree differs from it."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    commit = git("log", "-1", "--oneline") or "unknown"
    changed = [line for line in git("status", "--porcelain").splitlines() if line]
    return commit + (f" (+ {len(changed)} uncommitted changes)" if changed else "")
