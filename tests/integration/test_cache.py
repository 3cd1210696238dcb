"""The Redis prediction cache: miss, then hit; never stale after an activation."""

from __future__ import annotations

import time

import pytest

from common.cache import notify_registry_changed
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
