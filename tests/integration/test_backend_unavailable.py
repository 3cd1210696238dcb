"""With its Redis stopped, every route that needs Redis answers 503 `backend_unavailable`
with `Retry-After: 1` (README, How it behaves, Redis going away), on a stack with a Redis
of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api.examples import EXAMPLE_ROW
from tests.integration.stack import Stack
from tests.integration.test_redis_outage import PrivateRedis

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(Path(tmp_path_factory.mktemp("redis-of-its-own")))
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def cut_off(make_stack: Callable[..., Stack], own_redis: PrivateRedis) -> Iterator[Stack]:
    stack = make_stack("cutoff", redis_url=own_redis.url)
    yield stack
    stack.stop()  # before its Redis, which it would reconnect to until the module's end


def row(i: int) -> dict[str, float]:
    return EXAMPLE_ROW | {"mean radius": 9.0 + i / 100}


def test_routes_that_need_redis_answer_503_with_retry_after(
    cut_off: Stack, own_redis: PrivateRedis
) -> None:
    with cut_off.client() as client:
        job = client.post("/jobs", json={"input_data": [EXAMPLE_ROW]})
        assert job.status_code == 202, job.text
        status_url = job.json()["status_url"]
        assert client.post("/predict", json={"input_data": EXAMPLE_ROW}).status_code == 200
        own_redis.stop()
        answers = {
            # Rows not predicted before: nothing this API process holds can answer them.
            "POST /predict": client.post("/predict", json={"input_data": row(1)}),
            "POST /predict/xgboost/1": client.post(
                "/predict/xgboost/1", json={"input_data": row(2)}
            ),
            "POST /jobs": client.post("/jobs", json={"input_data": [row(3)]}),
            "POST /predict async": client.post(
                "/predict", json={"input_data": row(4)}, headers={"Prefer": "respond-async"}
            ),
            "GET /jobs/{id}": client.get(status_url),
            "GET /jobs/{id}/results": client.get(status_url + "/results"),
            "DELETE /jobs/{id}": client.delete(status_url),
        }
        health = client.get("/")
    for route, response in answers.items():
        assert response.status_code == 503, (route, response.text)
        assert response.headers.get("Retry-After") == "1", (route, dict(response.headers))
        assert response.json()["error"]["type"] == "backend_unavailable", (route, response.text)
    # GET / is the health report: 503, saying which part is down.
    assert health.status_code == 503
    assert health.json()["redis"] is False and health.json()["worker"] is False
