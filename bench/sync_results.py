"""`make bench`'s results file, bench/results/sync_predict.json: what was measured, on
what, and every point (bench/sync_predict.py)."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import mlserver_env, mlserver_peer
from bench.naive_worker import POOL_PROCESSES as NAIVE_POOL_PROCESSES
from bench.naive_worker import QUEUE as NAIVE_QUEUE
from bench.procs import affinity_of, usable_cores
from bench.stack import NAIVE_REDIS_DB, ROOT, RunContext, Topology, generator_processes
from bench.sync_options import SCENARIOS
from bench.sync_pairs import Pair
from bench.sync_points import Point
from bench.sync_targets import judge

RESULTS_PATH = ROOT / "bench" / "results" / "sync_predict.json"


def describe_mlserver(workers: int) -> str:
    venv = mlserver_env.venv_dir().relative_to(ROOT)
    return (
        f"MLServer {mlserver_env.MLSERVER_VERSION} (mlserver-xgboost, uvloop "
        f"{mlserver_env.UVLOOP_VERSION}, venv {venv}), V2 REST {mlserver_peer.INFER_PATH}, "
        f"adaptive batching of up to {mlserver_peer.MAX_BATCH_SIZE} requests or "
        f"{mlserver_peer.MAX_BATCH_TIME_S * 1000:g} ms, parallel_workers {workers}"
    )


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
        **Topology.of(context.options).describe(),
        "naive": (
            f"python -m bench.naive_app (1 uvicorn worker) and python -m bench.naive_worker "
            f"(prefork, concurrency {NAIVE_POOL_PROCESSES}), queue {NAIVE_QUEUE}, "
            f"Redis database {NAIVE_REDIS_DB}"
        ),
        "mlserver": describe_mlserver(context.options.mlserver_workers),
    }


def run_meta(context: RunContext, elapsed: float) -> dict[str, Any]:
    """describe_machine, the run's length, and the options that change what ran."""
    options = context.options
    meta = describe_machine(context) | {"elapsed_s": round(elapsed, 1)}
    if options.scenarios != list(SCENARIOS):
        meta["scenarios"] = [s.key for s in options.scenarios]
    if options.profile is not None:
        meta["profile"] = {
            "dir": str(options.profile),
            "rate": options.profile_rate,
            "gil": options.profile_gil,
        }
    return meta


def write_results(
    meta: dict[str, Any],
    points: list[Point],
    path: Path = RESULTS_PATH,
    pairs: Sequence[Pair] = (),
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    targets = [asdict(v) for v in judge(points, pairs)]
    document = {
        "meta": meta,
        "targets": targets,
        "points": [asdict(p) for p in points],
        "pairs": [asdict(p) | {"ratio": round(p.ratio, 3)} for p in pairs],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
