"""The services a benchmark runs against, started privately and stopped again.

One private Redis (database 0 for the stack, NAIVE_REDIS_DB for the naive baseline), and
any of: the stack's Celery worker (2 prefork processes) and API (one uvicorn worker), the
bare in-process app (bench/bare_app.py), the naive-Celery app and worker
(bench/naive_app.py, bench/naive_worker.py), Seldon MLServer with the same model
(bench/mlserver_peer.py). With pinning, every server runs on one core
and the load generator on another. `run_with_stack` starts them, runs a benchmark, and
stops every process it started, also on Ctrl-C or SIGTERM. Requests to the services
and the pools' warm-up are in bench/stack_calls.py, the core layout and the code measured
in bench/cores.py; their names are re-exported here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench import mlserver_env, mlserver_peer
from bench.cores import CoreLayout as CoreLayout
from bench.cores import choose_generator as choose_generator
from bench.cores import code_version as code_version
from bench.cores import generator_processes as generator_processes
from bench.cores import plan_cores as plan_cores
from bench.loadgen import LoadPlan, LoadRun, Target, start_python_load
from bench.procs import ProcessGroup, inherited_affinity
from bench.stack_calls import POOL_PROCESSES as POOL_PROCESSES
from bench.stack_calls import READY_TIMEOUT_SECONDS as READY_TIMEOUT_SECONDS
from bench.stack_calls import batch_totals as batch_totals
from bench.stack_calls import call_json as call_json
from bench.stack_calls import check_api_cache as check_api_cache
from bench.stack_calls import demo_rows as demo_rows
from bench.stack_calls import http_status as http_status
from bench.stack_calls import is_up as is_up
from bench.stack_calls import ready_check as ready_check
from bench.stack_calls import warm_naive as warm_naive
from bench.stack_calls import warm_pool as warm_pool
from bench.stack_calls import warm_stack as warm_stack
from bench.wrk import start_wrk_load
from dev.services import ManagedProcess, free_port, start_redis, wait_until

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key-for-benchmarks"
PERTURBED_FEATURE = "mean radius"
WORKER_POOLS = ("prefork", "threads")


def worker_args(pool: str = "prefork") -> list[str]:
    """The stack worker's options: POOL_PROCESSES processes, or as many threads."""
    return ["--concurrency", str(POOL_PROCESSES), "--pool", pool]


WORKER_ARGS = worker_args()


@dataclass(frozen=True)
class Topology:
    """How the stack's own services run: the worker's pool and the API's processes."""

    worker_pool: str = "prefork"
    api_workers: int = 1

    @classmethod
    def of(cls, options: argparse.Namespace) -> Topology:
        return cls(getattr(options, "worker_pool", "prefork"), getattr(options, "api_workers", 1))

    @property
    def pool_processes(self) -> int:
        """Processes that each load the model: a pool of threads shares one."""
        return 1 if self.worker_pool == "threads" else POOL_PROCESSES

    def describe(self) -> dict[str, str]:
        return {
            "worker": f"python -m worker {' '.join(worker_args(self.worker_pool))}",
            "api": f"python -m api --workers {self.api_workers}",
        }


NAIVE_REDIS_DB = 1
# Every service a benchmark may start besides Redis, as named in Servers.pids.
SERVICES = ("worker", "api", "bare", "naive-worker", "naive-api", "mlserver")
# The HTTP services: name in Servers.pids -> name in Servers.targets.
TARGETS = {"api": "api", "bare": "bare", "naive-api": "naive"}
# Where each target says it is ready (the API's root needs a key); the others: /healthz.
READY_PATHS = {"api": "/", "mlserver": mlserver_peer.READY_PATH}


@dataclass
class Servers:
    targets: dict[str, Target]  # "api", "bare", "naive", "mlserver": those started
    pids: dict[str, int]  # process name -> pid (the root of its tree)
    redis_url: str  # the stack's database
    mlserver_metrics: str | None = None  # MLServer's /metrics URL, when it runs


@dataclass
class RunContext:
    options: argparse.Namespace
    layout: CoreLayout
    generator: str
    group: ProcessGroup
    servers: Servers
    tmp: Path
    code: str  # the commit the services were started from (see code_version)


# --- the load generator -------------------------------------------------------------------


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


def service_args(name: str, port: int | None, topology: Topology = Topology()) -> list[str]:
    """The command line of one service (port: that of an HTTP service)."""
    commands = {
        "worker": ["-m", "worker", *worker_args(topology.worker_pool)],
        "api": ["-m", "api", "--port", str(port), "--workers", str(topology.api_workers)],
        "bare": ["-m", "bench.bare_app", "--port", str(port)],
        "naive-worker": ["-m", "bench.naive_worker"],
        "naive-api": ["-m", "bench.naive_app", "--port", str(port)],
    }
    return [sys.executable, *commands[name]]


def target_of(name: str, port: int) -> Target:
    headers = {"X-API-Key": API_KEY} if name == "api" else {}
    return Target("127.0.0.1", port, "/predict", headers)


def start_python_services(
    tmp: Path,
    group: ProcessGroup,
    services: Collection[str],
    redis_url: str,
    env: dict[str, str],
    topology: Topology | None = None,
) -> tuple[list[ManagedProcess], dict[str, Target]]:
    """The project's and the baselines' services named (all but MLServer), and targets."""
    naive_env = env | {"SERVING_REDIS_URL": redis_database(redis_url, NAIVE_REDIS_DB)}
    ports = {name: free_port() for name in TARGETS if name in services}
    procs = [
        group.start(
            ManagedProcess(
                name,
                service_args(name, ports.get(name), topology or Topology()),
                tmp / f"{name}.log",
                env=naive_env if name.startswith("naive") else env,
                cwd=ROOT,
            )
        )
        for name in SERVICES
        if name in services and name != "mlserver"
    ]
    return procs, {TARGETS[name]: target_of(name, port) for name, port in ports.items()}


def start_servers(
    tmp: Path,
    group: ProcessGroup,
    services: Collection[str],
    settings: dict[str, str],
    mlserver_workers: int = mlserver_peer.DEFAULT_WORKERS,
    topology: Topology | None = None,
) -> Servers:
    """Redis, then the named services (the worker and the API together: the API needs the
    worker); returns once every HTTP service answers. MLServer's venv must be built."""
    redis_proc, redis_url = start_redis(tmp / "redis")
    group.adopt(redis_proc)
    env = child_env(redis_url, tmp, settings)
    publish_demo_models(env)
    procs, targets = start_python_services(tmp, group, services, redis_url, env, topology)
    mlserver = None
    if "mlserver" in services:
        command = mlserver_env.mlserver_command()
        mlserver = mlserver_peer.launch(command, tmp, tmp / "store", group, mlserver_workers)
        procs.append(mlserver.proc)
        targets["mlserver"] = mlserver.target
    checks: list[Callable[[], bool]] = [
        partial(is_up, t, READY_PATHS.get(name, "/healthz")) for name, t in targets.items()
    ]
    wait_until(lambda: ready_check(procs, checks), READY_TIMEOUT_SECONDS, "the HTTP services")
    pids = {"redis": redis_proc.pid} | {proc.name: proc.pid for proc in procs}
    return Servers(targets, pids, redis_url, mlserver.metrics_url if mlserver else None)


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
            servers = start_servers(
                tmp,
                group,
                services,
                getattr(options, "settings", {}),
                getattr(options, "mlserver_workers", mlserver_peer.DEFAULT_WORKERS),
                Topology.of(options),
            )
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
