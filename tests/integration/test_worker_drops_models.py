"""DELETE /delete-models empties the WORKER's model caches, not only the API's view
(README, Readiness: "each worker process drops its loaded models"), read from the
worker's own metrics: `serving_models_loaded` (models held, summed over its live pool
processes) and `serving_model_loads_total` (loads, by model and version).

Which pool process ran which prediction comes from the prediction log (`worker` is
host:pid), so the expected figures are exact whatever the pool's scheduling was."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from common.cache import notify_registry_changed
from common.training import TrainedModel
from tests.integration.stack import ADMIN_KEY, Stack, scrape, total
from tests.integration.test_jobs import rows

pytestmark = pytest.mark.integration

LOADED = "serving_models_loaded"
LOADS = "serving_model_loads_total"
IDLE_SECONDS = 2.0  # after the delete: twice the README's "within a second"
ROUNDS = 40  # at most, to get every pool process to predict
POOL = 2  # the stack's worker runs two pool processes


def predict_round(stack: Stack, paths: list[str], offset: float) -> list[httpx.Response]:
    """One prediction per path, all at once (distinct rows: no cache hit)."""

    def one(i: int) -> httpx.Response:
        _, data = rows(1, offset + i * 1e-4)
        with stack.client() as client:
            return client.post(paths[i], json={"input_data": data})

    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(one, range(len(paths))))


def held_by_process(stack: Stack, versions: set[tuple[str, str]]) -> dict[int, set[str]]:
    """pool process id -> the models (type/version) it predicted with, from the log."""
    with stack.client(ADMIN_KEY) as client:
        log = client.get("/logs", params={"n_limit": 1000}).json()
    held: dict[int, set[str]] = defaultdict(set)
    for row in log:
        version = (row["model_type"], row["version"])
        if row["status"] == "ok" and row["worker"] and version in versions:
            held[int(row["worker"].rsplit(":", 1)[1])].add(f"{row['model_type']}/{row['version']}")
    return dict(held)


def spread(
    stack: Stack, paths: list[str], versions: set[tuple[str, str]], offset: float
) -> dict[int, set[str]]:
    """Rounds of concurrent predictions until POOL processes each ran every version."""
    held: dict[int, set[str]] = {}
    for n in range(ROUNDS):
        answers = predict_round(stack, paths, offset + n * 1e-2)
        assert [a.status_code for a in answers] == [200] * len(paths), [a.text for a in answers]
        held = held_by_process(stack, versions)
        if len(held) >= POOL and all(len(models) == len(versions) for models in held.values()):
            break
    return held


@pytest.fixture(scope="module")
def observed(make_stack: Callable[..., Stack], demo_models: dict[str, TrainedModel]) -> Any:
    # Four tasks of one version may be out at once, so that both pool processes get some.
    stack = make_stack("dropping", cache_ttl_seconds=0, batch_max_in_flight=4)
    metrics = f"http://127.0.0.1:{stack.fields['worker_metrics_port']}/metrics"
    v1 = {("xgboost", "1"), ("logistic_regression", "1")}
    paths_v1 = ["/predict/xgboost/1", "/predict/logistic_regression/1"] * 2
    held = spread(stack, paths_v1, v1, 0.11)
    loaded = scrape(metrics)

    with stack.client(ADMIN_KEY) as admin:
        deleted = admin.delete("/delete-models")
    assert deleted.status_code == 200, deleted.text
    time.sleep(IDLE_SECONDS)
    idle = scrape(metrics)

    stack.registry().publish(demo_models["xgboost"].metadata, demo_models["xgboost"].artifact)
    notify_registry_changed(stack.settings)
    with stack.client() as client:
        old = client.post("/predict/xgboost/1", json={"input_data": rows(1, 0.19)[1]})
    ran_v2 = spread(stack, ["/predict/xgboost/2"] * 4, {("xgboost", "2")}, 0.21)
    return {
        "held": held,
        "loaded": loaded,
        "idle": idle,
        "old": old,
        "ran_v2": ran_v2,
        "after": scrape(metrics),
    }


def test_worker_processes_drop_their_models_and_load_the_new_version_fresh(
    observed: Any,
) -> None:
    held, ran_v2 = observed["held"], observed["ran_v2"]
    loaded, after = observed["loaded"], observed["after"]
    print(
        f"before the delete, pool process -> models: {held}; {LOADED} "
        f"{total(loaded, LOADED):g}, {IDLE_SECONDS:g} s after it "
        f"{total(observed['idle'], LOADED):g}, "
        f"after xgboost/2 ran in {sorted(ran_v2)}: {total(after, LOADED):g}"
    )
    # Before: the metrics agree with the log, so the figures below mean what they say.
    assert held, "no prediction was logged with its worker process"
    assert total(loaded, LOADED) == sum(len(models) for models in held.values())
    for model in ("xgboost", "logistic_regression"):
        users = [pid for pid, models in held.items() if f"{model}/1" in models]
        assert total(loaded, LOADS, model_type=model, version="1") == len(users)

    assert observed["old"].status_code == 503
    assert observed["old"].json()["error"]["type"] == "model_unavailable"
    # Every pool process that held the deleted models predicted with the new version.
    assert set(held) <= set(ran_v2), (held, ran_v2)
    # Each loaded xgboost 2 once, from the store, and holds nothing else: had a process
    # kept its deleted models, it would hold them beside the new one.
    assert total(after, LOADS, model_type="xgboost", version="2") == len(ran_v2)
    kept_too = sum(len(held.get(pid, set())) + 1 for pid in ran_v2)
    assert total(after, LOADED) == len(ran_v2) < kept_too
    # Nothing loaded the deleted versions again.
    for model in ("xgboost", "logistic_regression"):
        assert total(after, LOADS, model_type=model, version="1") == total(
            loaded, LOADS, model_type=model, version="1"
        )
