"""`make bench`'s scenarios and command-line options (bench/sync_predict.py)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench import mlserver_peer, profile, soak
from bench.loadgen import Bodies
from bench.stack import SERVICES, WORKER_POOLS
from common.settings import Settings

BIG_ROWS = 1000
BARE = "bare in-process"
BARE_BIG = f"bare in-process, {BIG_ROWS:,} rows"
STACK_BIG = f"stack, {BIG_ROWS:,}-row miss"
MLSERVER = "MLServer, adaptive batching"
MISS = "stack, cache miss"
HIT = "stack, cache hit"
NAIVE = "naive Celery"
BodyFormat = Literal["predict", "oip"]  # /predict's rows, or an Open Inference Protocol tensor


@dataclass(frozen=True)
class Scenario:
    key: str  # its name in --scenarios and in profile file names
    name: str
    target: str  # "bare", "api", "naive" or "mlserver"
    bodies: Bodies
    rows: int = 1  # rows per request
    baseline: str = BARE  # the scenario whose req/s, at the same concurrency, is 1.00
    body: BodyFormat = "predict"


SCENARIOS = (
    Scenario("bare", BARE, "bare", "unique"),
    Scenario("miss", MISS, "api", "unique"),
    Scenario("hit", HIT, "api", "repeated"),
    Scenario("naive", NAIVE, "naive", "unique"),
    Scenario("mlserver", MLSERVER, "mlserver", "unique", body="oip"),
    Scenario(f"bare-{BIG_ROWS}", BARE_BIG, "bare", "unique", rows=BIG_ROWS, baseline=BARE_BIG),
    Scenario(f"miss-{BIG_ROWS}", STACK_BIG, "api", "unique", rows=BIG_ROWS, baseline=BARE_BIG),
)
# The services behind each target, in Servers.pids (and so the ones profiled).
TARGET_SERVICES = {
    "bare": ("bare",),
    "api": ("api", "worker"),
    "naive": ("naive-api", "naive-worker"),
    "mlserver": ("mlserver",),
}


def concurrency_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def scenario_list(text: str) -> list[Scenario]:
    """The named scenarios, with the baselines their ratios need, in SCENARIOS' order."""
    by_key = {s.key: s for s in SCENARIOS}
    keys = {part.strip() for part in text.split(",") if part.strip()}
    if unknown := sorted(keys - by_key.keys()):
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(by_key)}"
        )
    if not keys:
        raise argparse.ArgumentTypeError(f"no scenario named; choose from {', '.join(by_key)}")
    baselines = {s.baseline for s in SCENARIOS if s.key in keys}
    return [s for s in SCENARIOS if s.key in keys or s.name in baselines]


def setting(text: str) -> tuple[str, str]:
    """NAME=VALUE for --set: NAME is a field of common.settings.Settings."""
    name, sep, value = text.partition("=")
    name = name.strip().lower().removeprefix("serving_")
    if not sep or name not in Settings.model_fields:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=VALUE with NAME a setting, e.g. batch_max_wait_ms=2"
        )
    return name, value


def needed_services(scenarios: list[Scenario]) -> list[str]:
    wanted = {service for s in scenarios for service in TARGET_SERVICES[s.target]}
    return [service for service in SERVICES if service in wanted]


def add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per point")
    parser.add_argument(
        "--concurrency",
        type=concurrency_list,
        default=[1, 16, 64],
        help="comma-separated connection counts (default 1,16,64)",
    )
    parser.add_argument(
        "--big-concurrency",
        type=concurrency_list,
        default=[1, 4],
        help=f"connection counts for the {BIG_ROWS:,}-row requests (default 1,4)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=15,
        help="back-to-back rounds of the two scenarios each drift-bound target compares "
        "(misses vs naive Celery at c=1, misses vs bare at c=64; bench/sync_pairs.py; "
        "default 15, 0: none)",
    )
    parser.add_argument(
        "--pair-duration", type=float, default=2.0, help="seconds measured per pair window"
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="servers on core 0, load generator on core 1 (default: on with 2+ cores)",
    )
    parser.add_argument("--generator", choices=["auto", "python", "wrk"], default="auto")
    parser.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help=f"instead: {soak.CONCURRENCY} connections of mixed load on the stack for SECONDS, "
        f"memory sampled every {soak.SAMPLE_SECONDS:g} s (exit status 1 on any error)",
    )


def add_service_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenarios",
        type=scenario_list,
        metavar="NAMES",
        help=f"comma-separated, from {', '.join(s.key for s in SCENARIOS)} (default: all); "
        "the bare baseline of a ratio is always added",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        type=setting,
        action="append",
        metavar="NAME=VALUE",
        help="a setting for the stack's services, e.g. batch_max_wait_ms=2 "
        "(SERVING_BATCH_MAX_WAIT_MS); repeatable",
    )
    parser.add_argument(
        "--mlserver-workers",
        type=int,
        default=mlserver_peer.DEFAULT_WORKERS,
        metavar="N",
        help="MLServer's parallel_workers: inference worker processes, 0 for inference in "
        f"its HTTP process (default {mlserver_peer.DEFAULT_WORKERS}, MLServer's own default)",
    )
    parser.add_argument(
        "--worker-pool",
        choices=WORKER_POOLS,
        default="prefork",
        help="the stack worker's Celery pool, with as many processes or threads as now "
        "(default prefork, the worker's own default)",
    )
    parser.add_argument(
        "--api-workers",
        type=int,
        default=1,
        metavar="N",
        help="uvicorn worker processes of the stack's API (default 1)",
    )


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy each loaded service during each window; collapsed stacks into DIR, "
        "top functions printed",
    )
    parser.add_argument(
        "--profile-rate",
        type=int,
        default=profile.DEFAULT_RATE,
        metavar="HZ",
        help=f"py-spy samples per second (default {profile.DEFAULT_RATE})",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: only samples of threads holding the GIL (py-spy --gil)",
    )


def check_options(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    concurrencies = options.concurrency + options.big_concurrency
    if options.duration < 1 or options.warmup < 0 or min(concurrencies) < 1:
        parser.error("--duration must be >= 1 s, --warmup >= 0, concurrencies >= 1")
    if options.mlserver_workers < 0:
        parser.error("--mlserver-workers must be >= 0")
    if options.api_workers < 1:
        parser.error("--api-workers must be >= 1")
    if options.soak is not None and options.soak < soak.SAMPLE_SECONDS:
        parser.error(f"--soak must be >= {soak.SAMPLE_SECONDS:g} s")
    if options.soak is not None and (options.scenarios or options.profile):
        parser.error("--scenarios and --profile do not apply to --soak")
    if options.profile is not None:
        if profile.py_spy_path() is None:
            parser.error("--profile needs py-spy: pip install -r requirements.txt")
        if options.profile_rate < 1:
            parser.error("--profile-rate must be >= 1")


def parse_args(argv: list[str] | None, description: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync_predict",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_load_options(parser)
    add_service_options(parser)
    add_profile_options(parser)
    options = parser.parse_args(argv)
    check_options(parser, options)
    options.scenarios = options.scenarios or list(SCENARIOS)
    options.settings = dict(options.settings or [])
    return options
