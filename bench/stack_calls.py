"""Requests to the benchmark's services, and warming their worker pools up
(bench/stack.py starts the services; it re-exports these names)."""

from __future__ import annotations

import itertools
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench import naive_worker
from bench.loadgen import BodyTemplate, Target
from dev.services import ManagedProcess

if TYPE_CHECKING:
    from bench.stack import Servers

POOL_PROCESSES = 2
READY_TIMEOUT_SECONDS = 120


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


def is_up(target: Target, path: str = "/healthz") -> bool:
    return http_status(f"http://{target.host}:{target.port}{path}", target.headers) == 200


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
    target: Target,
    bodies: Iterator[bytes],
    who: Callable[[list[Any]], set[str]],
    what: str,
    processes: int = POOL_PROCESSES,
) -> None:
    """Send rounds of concurrent requests until every pool process has predicted once:
    each loads the model on its first task, and importing XGBoost there takes seconds of
    CPU. `who` names the processes that have predicted, given a round's answers."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    seen: set[str] = set()
    with ThreadPoolExecutor(2 * POOL_PROCESSES) as pool:
        while len(seen) < processes:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all {processes} {what} processes predicted in time")
            round_bodies = [next(bodies) for _ in range(4 * POOL_PROCESSES)]
            answers = list(pool.map(lambda body: call_json(target, body=body), round_bodies))
            seen |= who(answers)


def warm_stack(
    servers: Servers, template: BodyTemplate, ids: Iterator[int], processes: int = POOL_PROCESSES
) -> None:
    """The stack's worker pool, with unique bodies; its log names the processes."""
    api = servers.targets["api"]

    def logged_workers(_: list[Any]) -> set[str]:
        entries = call_json(api, path="/logs?n_limit=1000")
        return {entry["worker"] for entry in entries if entry["worker"]}

    warm_pool(api, (template.render(n) for n in ids), logged_workers, "worker", processes)


def warm_naive(servers: Servers, template: BodyTemplate) -> None:
    """The naive worker's pool; its answers name the processes."""
    assert naive_worker.POOL_PROCESSES == POOL_PROCESSES
    warm_pool(
        servers.targets["naive"],
        itertools.repeat(template.render()),
        lambda answers: {str(answer["pid"]) for answer in answers},
        "naive worker",
    )
