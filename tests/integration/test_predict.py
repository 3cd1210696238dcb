"""Predictions through API -> Redis -> Celery worker -> S3 store equal in-process ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from common.training import TrainedModel, breast_cancer
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def rows_as_dicts(x: np.ndarray, names: list[str]) -> list[dict[str, float]]:
    return [dict(zip(names, map(float, row), strict=True)) for row in x]


def expected(trained: TrainedModel, x: np.ndarray) -> tuple[list[str], np.ndarray]:
    proba = np.asarray(trained.estimator.predict_proba(x), dtype=np.float64)
    classes = trained.metadata["classes"]
    return [classes[i] for i in proba.argmax(axis=1)], proba


def probabilities(body: dict[str, Any], classes: list[str]) -> np.ndarray:
    return np.array([[p["probabilities"][c] for c in classes] for p in body["predictions"]])


@pytest.mark.parametrize("model_type", ["xgboost", "logistic_regression"])
def test_whole_data_set_matches_in_process_model(
    stack: Stack, demo_models: dict[str, TrainedModel], model_type: str
) -> None:
    x, _, names, classes = breast_cancer()
    trained = demo_models[model_type]
    with stack.client() as client:
        response = client.post(
            f"/predict/{model_type}/1", json={"input_data": rows_as_dicts(x, names)}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_type"], body["version"], body["cached"]) == (model_type, "1", False)
    labels, proba = expected(trained, x)
    assert len(body["predictions"]) == len(x) == 569
    assert [p["label"] for p in body["predictions"]] == labels
    np.testing.assert_array_equal(probabilities(body, classes), proba)


def test_single_rows_match_and_default_routes_resolve(
    stack: Stack, demo_models: dict[str, TrainedModel]
) -> None:
    x, _, names, classes = breast_cancer()
    sample = x[::40]
    labels, proba = expected(demo_models["xgboost"], sample)
    with stack.client() as client:
        for i, row in enumerate(rows_as_dicts(sample, names)):
            route = ["/predict", "/predict/xgboost", "/predict/xgboost/1"][i % 3]
            body = client.post(route, json={"input_data": row}).json()
            assert (body["model_type"], body["version"]) == ("xgboost", "1")
            assert body["predictions"][0]["label"] == labels[i]
            np.testing.assert_array_equal(probabilities(body, classes)[0], proba[i])
        other = client.post(
            "/predict/logistic_regression", json={"input_data": rows_as_dicts(sample[:1], names)[0]}
        ).json()
    active = stack.registry().state().active_by_type["logistic_regression"]
    assert (other["model_type"], other["version"]) == ("logistic_regression", active)
