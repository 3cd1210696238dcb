"""50 concurrent synchronous requests, answered by two worker processes writing one log."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from common.training import TrainedModel, breast_cancer
from tests.integration.stack import READER_KEY, Stack

pytestmark = pytest.mark.integration


MODELS = ("xgboost", "logistic_regression")


async def send_all(url: str, rows: list[dict[str, float]]) -> list[httpx.Response]:
    """Row i to MODELS[i % 2]: two models are two batching lanes, so two tasks are out at
    once and both prefork children work (one lane sends one task at a time)."""
    limits = httpx.Limits(max_connections=len(rows))
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": READER_KEY}, timeout=60, limits=limits
    ) as client:
        return await asyncio.gather(
            *(
                client.post(f"/predict/{MODELS[i % 2]}/1", json={"input_data": row})
                for i, row in enumerate(rows)
            )
        )


def test_fifty_concurrent_requests_are_each_answered_correctly(
    stack: Stack, demo_models: dict[str, TrainedModel]
) -> None:
    x, _, names, classes = breast_cancer()
    sample = x[100:150].copy()
    sample[:, 1] += 0.000789  # fresh rows: every request is a cache miss
    responses = asyncio.run(send_all(stack.url, as_rows(names, sample)))
    assert [r.status_code for r in responses] == [200] * 50
    proba = {name: demo_models[name].estimator.predict_proba(sample) for name in MODELS}
    for i, response in enumerate(responses):
        body = response.json()
        assert body["cached"] is False
        assert body["model_type"] == MODELS[i % 2]
        got = [body["predictions"][0]["probabilities"][c] for c in classes]
        np.testing.assert_allclose(got, proba[MODELS[i % 2]][i], rtol=1e-12, atol=1e-15)
    mine = logged(stack, responses)
    assert len(mine) == 50
    assert all(entry["status"] == "ok" for entry in mine)
    # Both prefork children wrote to the one SQLite file at once. Which child takes a
    # task is the scheduler's choice: on a loaded machine one child can take every task
    # of a burst, so further bursts of fresh rows are sent until both have (at most 5).
    workers = {entry["worker"] for entry in mine}
    for burst in range(1, 5):
        if len(workers) >= 2:
            break
        sample[:, 1] += 0.000789 * burst
        more = asyncio.run(send_all(stack.url, as_rows(names, sample)))
        workers |= {entry["worker"] for entry in logged(stack, more)}
    assert len(workers) >= 2, workers
    assert "database is locked" not in stack.logs_text()


def as_rows(names: list[str], sample: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(names, map(float, row), strict=True)) for row in sample]


def logged(stack: Stack, responses: list[httpx.Response]) -> list[dict[str, object]]:
    ids = {r.json()["request_id"] for r in responses}
    with stack.client() as client:
        logs = client.get("/logs", params={"n_limit": 1000}).json()
    return [entry for entry in logs if entry["request_id"] in ids]
