"""The Redis prediction cache: miss, then hit; never stale after an activation."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import orjson
import pytest
import redis

from common.cache import SET_ALL, notify_registry_changed
from common.training import TrainedModel, breast_cancer
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def a_row(offset: float) -> dict[str, float]:
    x, _, names, _ = breast_cancer()
    row = dict(zip(names, map(float, x[3]), strict=True))
    row["mean radius"] += offset  # unique per test, so earlier tests' entries never hit
    return row


def test_second_identical_request_is_a_hit_and_logged(stack: Stack) -> None:
    body = {"input_data": a_row(0.000123)}
    with stack.client() as client:
        first = client.post("/predict/xgboost/1", json=body).json()
        second = client.post("/predict/xgboost/1", json=body).json()
        logs = client.get("/logs", params={"n_limit": 50}).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["predictions"] == second["predictions"]
    assert first["request_id"] != second["request_id"]
    by_id = {entry["request_id"]: entry for entry in logs}
    assert by_id[first["request_id"]]["cached"] is False
    assert by_id[second["request_id"]]["cached"] is True
    assert by_id[second["request_id"]]["output"] == by_id[first["request_id"]]["output"]
    assert by_id[first["request_id"]]["input"] == [body["input_data"]]


def test_no_hit_after_another_version_is_activated(
    stack: Stack, demo_models: dict[str, TrainedModel]
) -> None:
    body = {"input_data": a_row(0.000456)}
    registry = stack.registry()
    trained = demo_models["logistic_regression"]
    with stack.client() as client:
        assert client.post("/predict/logistic_regression", json=body).json()["cached"] is False
        assert client.post("/predict/logistic_regression", json=body).json()["cached"] is True
        new = registry.publish(trained.metadata, trained.artifact)
        registry.activate("logistic_regression", new.version)
        notify_registry_changed(stack.settings)
        try:
            deadline = time.monotonic() + 10
            while True:  # the notification reaches the API asynchronously
                after = client.post("/predict/logistic_regression", json=body).json()
                if after["version"] == new.version or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert (after["version"], after["cached"]) == (new.version, False)
        finally:
            registry.activate("logistic_regression", "1")
            notify_registry_changed(stack.settings)


def test_a_miss_is_cached_by_the_worker_in_the_script_that_stores_its_result(
    stack: Stack,
) -> None:
    """The cache and the results share the stack's Redis, so the API asks the worker to
    cache: the entry is written by the result's script (a `lua` client, in MONITOR), the
    API sends no cache write of its own, and the next identical request is a hit."""
    settings = stack.settings
    assert settings.worker_writes_cache
    api_write = hashlib.sha1(SET_ALL.encode()).hexdigest()
    body = {"input_data": a_row(0.000789)}
    commands: list[dict[str, Any]] = []
    watcher = redis.Redis.from_url(settings.effective_cache_url)
    done = threading.Event()

    def watch() -> None:
        with watcher.monitor() as monitor:
            for command in monitor.listen():
                commands.append(command)
                if done.is_set() and command["command"].startswith("ECHO done"):
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    time.sleep(0.3)  # MONITOR is on before the request
    with stack.client() as client:
        first = client.post("/predict/xgboost/1", json=body).json()
        time.sleep(0.3)  # any write the API would make after its answer
        done.set()
        watcher.echo("done")
        thread.join(timeout=10)
        second = client.post("/predict/xgboost/1", json=body).json()

    assert (first["cached"], second["cached"]) == (False, True)
    assert not any(c["command"].startswith(f"EVALSHA {api_write}") for c in commands)
    cache_sets = [
        c["command"].split(" ")[1]
        for c in commands
        if c.get("client_type") == "lua"
        and c["command"].startswith("SET ")
        and f" {settings.cache_prefix}pred:" in f" {c['command']}"
    ]
    assert len(cache_sets) == 1
    entry = orjson.loads(watcher.get(cache_sets[0]))  # type: ignore[arg-type]
    (prediction,) = first["predictions"]
    assert entry["labels"] == [prediction["label"]]
    shown = prediction["probabilities"]
    assert dict(zip(shown, entry["probabilities"][0], strict=True)) == shown
    ttl = watcher.ttl(cache_sets[0])
    watcher.close()
    assert settings.cache_ttl_seconds - 30 < ttl <= settings.cache_ttl_seconds
