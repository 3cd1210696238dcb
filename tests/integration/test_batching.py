"""Micro-batching: concurrent requests share tasks, and each gets exactly its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from common.cache import notify_registry_changed
from common.runtimes import serialize_xgboost
from common.training import TrainedModel, breast_cancer
from tests.integration.stack import READER_KEY, Stack, scrape, total

pytestmark = pytest.mark.integration


async def post_all(url: str, calls: list[tuple[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(calls))
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": READER_KEY}, timeout=60, limits=limits
    ) as client:
        return await asyncio.gather(*(client.post(path, json=body) for path, body in calls))


def fresh_rows(start: int, count: int, offset: float) -> tuple[np.ndarray, list[dict[str, float]]]:
    x, _, names, _ = breast_cancer()
    sample = x[start : start + count].copy()
    sample[:, 2] += offset  # never sent before: every request is a cache miss
    return sample, [dict(zip(names, map(float, row), strict=True)) for row in sample]


def test_mixed_models_and_invalid_requests_in_one_burst(
    stack: Stack, demo_models: dict[str, TrainedModel]
) -> None:
    x_xgb, rows_xgb = fresh_rows(200, 40, 0.000321)
    x_lr, rows_lr = fresh_rows(300, 40, 0.000321)
    calls: list[tuple[str, Any]] = []
    for i in range(40):
        calls.append(("/predict/xgboost/1", {"input_data": rows_xgb[i]}))
        calls.append(("/predict/logistic_regression/1", {"input_data": rows_lr[i]}))
        if i % 8 == 0:  # invalid requests in the middle of the burst
            calls.append(("/predict/xgboost/1", {"input_data": rows_xgb[i] | {"extra": 1.0}}))
    before = scrape(stack.url + "/metrics")
    responses = asyncio.run(post_all(stack.url, calls))
    after = scrape(stack.url + "/metrics")

    _, _, _, classes = breast_cancer()
    expected = {
        "xgboost": demo_models["xgboost"].estimator.predict_proba(x_xgb),
        "logistic_regression": demo_models["logistic_regression"].estimator.predict_proba(x_lr),
    }
    seen = {"xgboost": 0, "logistic_regression": 0}
    for (path, body), response in zip(calls, responses, strict=True):
        if "extra" in body["input_data"]:
            assert response.status_code == 422
            assert "extra: unknown feature" in response.json()["error"]["message"]
            continue
        assert response.status_code == 200, response.text
        result = response.json()
        model_type = path.split("/")[2]
        assert (result["model_type"], result["version"]) == (model_type, "1")
        got = [result["predictions"][0]["probabilities"][c] for c in classes]
        # A batch's BLAS kernels may round the last bit differently from another batch
        # size; a row of another request or model would be off by far more.
        np.testing.assert_allclose(
            got, expected[model_type][seen[model_type]], rtol=1e-12, atol=1e-15
        )
        seen[model_type] += 1
    assert seen == {"xgboost": 40, "logistic_regression": 40}

    requests = total(after, "serving_batch_size_requests_sum") - total(
        before, "serving_batch_size_requests_sum"
    )
    tasks = total(after, "serving_batch_size_requests_count") - total(
        before, "serving_batch_size_requests_count"
    )
    assert requests == 80
    assert tasks < 80  # some requests did share a task

    with stack.client() as client:
        logs = client.get("/logs", params={"n_limit": 200}).json()
    ids = {r.json()["request_id"] for r in responses if r.status_code == 200}
    mine = [entry for entry in logs if entry["request_id"] in ids]
    assert len(mine) == 80 and all(entry["n_rows"] == 1 for entry in mine)


def test_two_versions_of_one_model_in_one_burst_each_answer_from_their_own(
    make_stack: Callable[..., Stack], demo_models: dict[str, TrainedModel]
) -> None:
    import xgboost as xgb

    # A stack of its own: the version it publishes must not show in other modules' tests
    # of the shared stack (the OIP metadata lists a type's versions).
    stack = make_stack("two-versions")

    x, y, _, classes = breast_cancer()
    other = xgb.XGBClassifier(n_estimators=7, max_depth=2, learning_rate=0.3, n_jobs=1)
    other.fit(x, y)
    registry = stack.registry()
    registry.publish(
        demo_models["xgboost"].metadata | {"version": "batching-v2"}, serialize_xgboost(other)
    )
    notify_registry_changed(stack.settings)
    sample, rows = fresh_rows(400, 40, 0.000654)
    expected = {
        "1": demo_models["xgboost"].estimator.predict_proba(sample),
        "batching-v2": other.predict_proba(sample),
    }
    # Far enough apart that a row answered by the other version could not pass below.
    assert np.abs(expected["1"] - expected["batching-v2"]).max() > 0.01
    calls = [(f"/predict/xgboost/{v}", {"input_data": row}) for row in rows for v in expected]
    before = scrape(stack.url + "/metrics")
    responses = asyncio.run(post_all(stack.url, calls))
    after = scrape(stack.url + "/metrics")

    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        body = response.json()
        version = calls[i][0].rsplit("/", 1)[1]
        assert (body["model_type"], body["version"]) == ("xgboost", version)
        got = [body["predictions"][0]["probabilities"][c] for c in classes]
        np.testing.assert_allclose(got, expected[version][i // 2], rtol=1e-6, atol=1e-7)

    def grew(name: str, version: str) -> float:
        labels = {"model_type": "xgboost", "version": version}
        return total(after, name, **labels) - total(before, name, **labels)

    sent = {v: grew("serving_batch_size_requests_count", v) for v in expected}
    requests = {v: grew("serving_batch_size_requests_sum", v) for v in expected}
    assert requests == {"1": 40, "batching-v2": 40}  # each version's tasks held its own
    assert sum(sent.values()) < 80  # and requests did share tasks
