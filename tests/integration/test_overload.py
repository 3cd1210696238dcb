"""Overload: 200 concurrent synchronous requests stuck on a slow model. Past the API's
in-flight limit they are refused at once (429, Retry-After) instead of queueing without
bound; the others all succeed once the model answers; `GET /` is still answered at once,
as it is idle (measured just before on the same stack)."""

from __future__ import annotations

import asyncio
import pickle
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.examples import EXAMPLE_ROW
from api.main import REDIS_POOL_SIZE, redis_client
from common.cache import notify_registry_changed
from common.training import TrainedModel
from tests.integration.slow_models import GatedModel
from tests.integration.stack import READER_KEY, Stack, scrape, total

pytestmark = pytest.mark.integration

REQUESTS = 200
LIMIT = 150
HEALTH_SAMPLES = 100
PRIMED = EXAMPLE_ROW | {"mean radius": 9.5}  # answered once before: in the cache


def row(i: int) -> dict[str, float]:
    """Distinct rows: no request is answered from the cache."""
    return EXAMPLE_ROW | {"mean radius": 10.0 + i / 1000}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def overload(stack: Stack, gate: Path) -> dict[str, Any]:
    headers = {"X-API-Key": READER_KEY}
    limits = httpx.Limits(max_connections=REQUESTS + 10, max_keepalive_connections=REQUESTS)
    async with (
        httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=90, limits=limits) as load,
        httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=10) as probe,
    ):
        await probe.get("/")  # its connection open, as it is when probed under load
        idle_latencies, idle_statuses = await probe_health(probe)  # the baseline
        posts = [
            asyncio.create_task(load.post("/predict/gated/1", json={"input_data": row(i)}))
            for i in range(REQUESTS)
        ]
        try:
            found = await while_held(stack, posts, probe)
        finally:
            gate.touch()  # the model answers every call from now on
        found["responses"] = await asyncio.gather(*posts)
    found["idle_latencies"], found["idle_statuses"] = idle_latencies, idle_statuses
    return found


async def probe_health(probe: httpx.AsyncClient) -> tuple[list[float], list[int]]:
    """HEALTH_SAMPLES requests to GET /, one after another: their latencies and statuses."""
    latencies, statuses = [], []
    for _ in range(HEALTH_SAMPLES):
        started = time.perf_counter()
        health = await probe.get("/")
        latencies.append(time.perf_counter() - started)
        statuses.append(health.status_code)
    return latencies, statuses


async def while_held(
    stack: Stack, posts: list[asyncio.Task[httpx.Response]], probe: httpx.AsyncClient
) -> dict[str, Any]:
    """What happens while the model holds every request it was sent."""
    # Whatever answers before the gate opens was refused: wait for the refusals (no more
    # than REQUESTS - LIMIT can come if the limit holds; a deadline in case it does not).
    deadline = time.monotonic() + 30
    while sum(p.done() for p in posts) < REQUESTS - LIMIT and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # a refusal too many would show up here
    early = [p.result() for p in posts if p.done()]
    waiting = total(scrape(stack.url + "/metrics"), "serving_predictions_in_flight")
    # GET / while the admitted requests are stuck on the workers, one after another.
    latencies, statuses = await probe_health(probe)
    still_waiting = sum(not p.done() for p in posts)
    # Still at the limit: a cache hit costs nothing and is answered; a miss is
    # refused; a job returns at once, so it takes no slot either.
    hit = await probe.post("/predict/xgboost/1", json={"input_data": PRIMED})
    miss = await probe.post("/predict/xgboost/1", json={"input_data": row(REQUESTS)})
    job = await probe.post(
        "/predict/xgboost/1",
        json={"input_data": row(REQUESTS + 1)},
        headers={"Prefer": "respond-async"},
    )
    return {
        "early": early,
        "waiting": waiting,
        "still_waiting": still_waiting,
        "latencies": latencies,
        "health_statuses": statuses,
        "hit": hit,
        "miss": miss,
        "job": job,
    }


def test_past_the_in_flight_limit_the_api_answers_429_and_stays_healthy(
    make_stack: Callable[..., Stack], demo_models: dict[str, TrainedModel]
) -> None:
    stack = make_stack(
        "overload",
        allow_unsafe_pickle=True,
        max_in_flight_predictions=LIMIT,
        predict_timeout_seconds=60,  # the admitted requests finish: no 202 fallback
    )
    gate = stack.tmp / "gate"
    metadata = demo_models["xgboost"].metadata | {
        "model_type": "gated",
        "artifact_format": "pickle",
    }
    stack.registry().publish(metadata, pickle.dumps(GatedModel(gate, max_seconds=45)))
    notify_registry_changed(stack.settings)
    with stack.client() as client:
        primed = client.post("/predict/xgboost/1", json={"input_data": PRIMED})
    assert primed.status_code == 200 and not primed.json()["cached"], primed.text

    try:
        found = asyncio.run(overload(stack, gate))
        samples = scrape(stack.url + "/metrics")
    finally:
        stack.stop()  # its worker and API are of no use to later tests

    early = found["early"]
    assert len(early) == REQUESTS - LIMIT, [r.status_code for r in early]
    for refused in early:
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "1"
        error = refused.json()["error"]
        assert error["type"] == "overloaded"
        assert f"already has {LIMIT} predictions waiting" in error["message"]
        assert error["details"] == {"max_in_flight_predictions": LIMIT, "retry_after_seconds": 1}
    assert found["waiting"] == LIMIT
    assert found["still_waiting"] == LIMIT  # held, not refused, while GET / was probed

    latencies, idle = found["latencies"], found["idle_latencies"]
    assert set(found["health_statuses"]) == set(found["idle_statuses"]) == {200}
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    idle_p50, idle_p99 = statistics.median(idle), percentile(idle, 0.99)
    print(
        f"GET / idle: p50 {idle_p50 * 1000:.1f} ms, p99 {idle_p99 * 1000:.1f} ms; under "
        f"overload: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max "
        f"{max(latencies) * 1000:.1f} ms ({len(latencies)} samples each)"
    )
    # GET / does the same work held or not (a Redis PING, and a control-channel ping that
    # the worker's main process answers: only its pool processes are held), and the held
    # requests cost the API's event loop nothing while they wait on its one result
    # subscription. What the test guards against, GET / waiting behind the held requests
    # (in a queue, or for a thread or connection they use up), would hold it until the
    # gate opens, which happens only after this probing: seconds, up to the probe's 10 s
    # timeout. The bound is loose on purpose (the 2 cores are shared with other test
    # runs, and a scheduler pause moves a p99 of a few ms by tens of them): five times
    # the idle p99, and never less than idle + 250 ms. The figures are printed above.
    bound = max(5 * idle_p99, idle_p99 + 0.250)
    assert p99 <= bound, (f"p99 {p99:.4f} s > {bound:.4f} s", sorted(latencies)[-5:])

    statuses = [r.status_code for r in found["responses"]]
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses.count(200) == LIMIT and statuses.count(429) == REQUESTS - LIMIT, statuses
    served = {
        tuple(r.json()["predictions"][0]["probabilities"].values())
        for r in found["responses"]
        if r.status_code == 200
    }
    assert served == {(0.25, 0.75)}  # the gated model's own answer

    assert found["hit"].status_code == 200 and found["hit"].json()["cached"], found["hit"].text
    assert found["miss"].status_code == 429, found["miss"].text
    assert found["job"].status_code == 202, found["job"].text

    rejected = "serving_predictions_rejected_total"
    assert total(samples, rejected, model_type="gated") == REQUESTS - LIMIT
    assert total(samples, rejected, model_type="xgboost") == 1
    assert total(samples, "serving_predictions_total", status="overloaded") == REQUESTS - LIMIT + 1
    assert total(samples, "serving_predictions_in_flight") == 0


def test_the_api_redis_clients_wait_for_a_connection_past_their_pool(redis_url: str) -> None:
    """A burst of more concurrent commands than the pool has connections: each command
    waits for a free connection, where redis-py's default pool raised "Too many
    connections" (which the API answered 503, seen above with 200 requests at once)."""

    async def burst() -> list[object]:
        client = redis_client(redis_url)
        try:
            return await asyncio.gather(*(client.ping() for _ in range(3 * REDIS_POOL_SIZE)))
        finally:
            await client.aclose()

    assert asyncio.run(burst()) == [True] * (3 * REDIS_POOL_SIZE)
