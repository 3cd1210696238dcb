"""Rollout under load: 16 clients predict while an alias and a traffic split flip; no
request fails, answers name the new version within a second, a 90/10 split lands by
weight, and shadow rows are logged and reported as a direct comparison finds them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from common.cache import notify_registry_changed
from common.training import TrainedModel
from dev.services import wait_until
from tests.integration.stack import ADMIN_KEY, Stack, scrape, total
from tests.integration.test_jobs import rows

pytestmark = pytest.mark.integration

CLIENTS = 16
SPLIT_REQUESTS = 5000


@pytest.fixture(scope="module")
def rolling(make_stack: Callable[..., Stack], demo_models: dict[str, TrainedModel]) -> Stack:
    """xgboost v1 (the demo's), and v2: the logistic regression under the same type, so
    that the two versions really differ. Splits are drawn per request here, and two API
    processes share the port: a change must reach both."""
    stack = make_stack("rollout", api_processes=2, traffic_sticky=False)
    lr = demo_models["logistic_regression"]
    stack.registry().publish(lr.metadata | {"model_type": "xgboost"}, lr.artifact)
    notify_registry_changed(stack.settings)
    return stack


@dataclass
class Answer:
    sent: float
    status: int
    version: str | None


@dataclass
class Load:
    """CLIENTS threads predicting one after another, each answer recorded."""

    stack: Stack
    stop: threading.Event = field(default_factory=threading.Event)
    answers: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, client_index: int) -> None:
        _, data = rows(32, 0.3 + client_index / 100)  # cached after the first round
        with self.stack.client() as client:
            i = 0
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.post(
                        "/predict/xgboost", json={"input_data": data[i % len(data)]}
                    )
                    status = response.status_code
                    version = response.json().get("version") if status == 200 else None
                except httpx.HTTPError:
                    status, version = 0, None
                with self.lock:
                    self.answers.append(Answer(sent, status, version))
                i += 1

    def since(self, moment: float) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.sent >= moment]


@pytest.fixture
def load(rolling: Stack) -> Iterator[Load]:
    running = Load(rolling)
    threads = [threading.Thread(target=running.run, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(running.since(0)) > 200, 60, "the load to get going")
    yield running
    running.stop.set()
    for thread in threads:
        thread.join(30)


def admin(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    with stack.client(ADMIN_KEY) as client:
        response = client.request(method, path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_an_alias_flip_under_load_loses_nothing(rolling: Stack, load: Load) -> None:
    admin(rolling, "PUT", "/models/xgboost/aliases/champion", {"version": "1"})
    time.sleep(1.5)
    before = time.monotonic()
    state = admin(rolling, "PUT", "/models/xgboost/aliases/champion", {"version": "2"})
    flipped = time.monotonic()
    assert state["aliases"]["champion"] == "2"
    # The new version's first answers are misses (its model loads): wait for them.
    wait_until(lambda: len(load.since(flipped + 1.0)) > 100, 60, "answers after the flip")
    answers = load.since(0)
    assert answers and all(a.status == 200 for a in answers), [
        a for a in answers if a.status != 200
    ][:5]
    settled = [a.version for a in answers if a.sent >= flipped + 1.0]
    assert len(settled) > 100 and set(settled) == {"2"}
    assert {a.version for a in answers if a.sent < before - 1.0} == {"1"}


def test_a_split_under_load_lands_within_three_points(rolling: Stack, load: Load) -> None:
    admin(rolling, "PUT", "/models/xgboost/aliases/champion", {"version": "2"})
    state = admin(rolling, "PUT", "/models/xgboost/traffic", {"1": 90, "2": 10})
    flipped = time.monotonic()
    assert state["traffic"] == {"1": 90, "2": 10}
    wait_until(
        lambda: len(load.since(flipped + 1.0)) >= SPLIT_REQUESTS, 120, f"{SPLIT_REQUESTS} answers"
    )
    split = load.since(flipped + 1.0)[:SPLIT_REQUESTS]
    share = sum(a.version == "1" for a in split) / len(split)
    print(f"\n90/10 split over {len(split)} answers under load: {share:.1%} from version 1")
    assert all(a.status == 200 for a in split)
    assert 0.87 <= share <= 0.93
    ended = admin(rolling, "DELETE", "/models/xgboost/traffic")
    unsplit = time.monotonic()
    assert ended["traffic"] is None
    time.sleep(2)
    assert {a.version for a in load.since(unsplit + 1.0)} == {"2"}  # the champion again
    assert all(a.status == 200 for a in load.since(0))


def test_an_alias_works_wherever_a_version_does(rolling: Stack) -> None:
    admin(rolling, "PUT", "/models/xgboost/aliases/challenger", {"version": "1"})
    _, data = rows(2, 0.71)
    with rolling.client() as client:
        sync = client.post("/predict/xgboost/challenger", json={"input_data": data})
        assert sync.status_code == 200 and sync.json()["version"] == "1", sync.text
        tensor = {
            "name": "X",
            "shape": [2, 30],
            "datatype": "FP64",
            "data": [list(row.values()) for row in data],
        }
        v2 = client.post("/v2/models/xgboost/versions/challenger/infer", json={"inputs": [tensor]})
        assert v2.status_code == 200 and v2.json()["model_version"] == "1", v2.text
        job = client.post(
            "/jobs", json={"input_data": data, "model_type": "xgboost", "version": "challenger"}
        )
        assert job.status_code == 202 and job.json()["version"] == "1", job.text
        unknown = client.post("/predict/xgboost/nobody", json={"input_data": data})
        assert unknown.status_code == 404 and "'challenger', 'champion'" in unknown.text
        refused = client.put("/models/xgboost/aliases/x", json={"version": "1"})
        assert refused.status_code == 403  # a predict key
    with rolling.client(ADMIN_KEY) as client:
        bad = client.put("/models/xgboost/aliases/v9", json={"version": "9"})
        assert bad.status_code == 404 and "unknown version '9'" in bad.text
        split = client.put("/models/xgboost/traffic", json={"1": 50, "7": 50})
        assert split.status_code == 422 and "['7']" in split.text
    state = admin(rolling, "DELETE", "/models/xgboost/aliases/challenger")
    assert "challenger" not in state["aliases"]


def test_a_shadow_must_take_the_same_features(
    rolling: Stack, demo_models: dict[str, TrainedModel]
) -> None:
    xgb = demo_models["xgboost"]
    renamed = [dict(f) for f in xgb.metadata["features"]]
    renamed[0]["name"] = "radius, renamed"
    other = {**xgb.metadata, "features": renamed, "model_type": "narrow"}
    registry = rolling.registry()
    registry.publish(other, xgb.artifact, activate=True)
    registry.publish(xgb.metadata | {"model_type": "narrow"}, xgb.artifact)
    notify_registry_changed(rolling.settings)
    with rolling.client(ADMIN_KEY) as client:
        refused = client.put("/models/narrow/shadow", json={"version": "2", "fraction": 0.5})
    assert refused.status_code == 422, refused.text
    assert "takes other features than the active v1" in refused.json()["error"]["message"]


def logs(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/logs", params={"n_limit": 1000, "model_type": "xgboost", **params})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_shadow_rows_are_logged_and_the_report_agrees(
    rolling: Stack, demo_models: dict[str, TrainedModel]
) -> None:
    admin(rolling, "PUT", "/models/xgboost/aliases/champion", {"version": "1"})
    admin(rolling, "PUT", "/models/xgboost/shadow", {"version": "2", "fraction": 0.2})
    _, data = rows(400, 0.77)
    with rolling.client() as client:
        for row in data:
            answer = client.post("/predict/xgboost", json={"input_data": row})
            assert answer.status_code == 200 and answer.json()["version"] == "1", answer.text
    queued = total(scrape(rolling.url + "/metrics"), "serving_shadow_requests_total")
    assert 40 <= queued <= 120, queued  # a fifth of 400, give or take
    with rolling.client(ADMIN_KEY) as client:
        wait_until(lambda: len(logs(client, shadow=True)) >= queued, 60, "the shadow rows")
        shadows = logs(client, shadow=True)
        primaries = {row["request_id"]: row for row in logs(client, version="1", shadow=False)}
        report = client.get("/models/xgboost/shadow/report", params={"n": 1000}).json()
    assert len(shadows) == queued
    lr = demo_models["logistic_regression"].estimator
    agree, diffs = 0, []
    for shadow in shadows:
        assert shadow["version"] == "2" and shadow["shadow"] is True
        primary = primaries[shadow["primary_request_id"]]
        inputs = np.array([list(r.values()) for r in shadow["input"]])
        np.testing.assert_allclose(shadow["output"]["probabilities"], lr.predict_proba(inputs))
        agree += shadow["output"]["labels"] == primary["output"]["labels"]
        diffs += list(
            np.abs(
                np.array(shadow["output"]["probabilities"])
                - np.array(primary["output"]["probabilities"])
            ).ravel()
        )
    assert report["requests"] == len(shadows) and report["unmatched"] == 0
    assert report["label_agreement"] == pytest.approx(agree / len(shadows))
    assert report["mean_abs_probability_difference"] == pytest.approx(np.mean(diffs))
    print(
        f"\nshadow v2 beside v1 on {len(shadows)} of 400 requests: labels agree "
        f"{report['label_agreement']:.1%}, mean |dp| "
        f"{report['mean_abs_probability_difference']:.4f}"
    )
    admin(rolling, "DELETE", "/models/xgboost/shadow")
