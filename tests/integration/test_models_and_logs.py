"""GET /, /healthz, /models, /models/{type}/{version}, /logs, and the docs pages."""

from __future__ import annotations

from datetime import datetime

import pytest

from api.examples import EXAMPLE_ROW
from tests.integration.stack import ADMIN_KEY, READER_KEY, Stack

pytestmark = pytest.mark.integration


def test_health_reports_redis_and_a_worker(stack: Stack) -> None:
    with stack.client() as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "redis": True, "worker": True}


def test_liveness_needs_no_key(stack: Stack) -> None:
    with stack.client(None) as client:
        assert client.get("/healthz").json() == {"status": "alive"}


def test_models_lists_versions_and_active(stack: Stack) -> None:
    with stack.client() as client:
        body = client.get("/models").json()
    assert body["default"] == {"model_type": "xgboost", "version": "1"}
    by_type = {m["model_type"]: m for m in body["models"]}
    assert {"xgboost", "logistic_regression"} <= set(by_type)
    first = by_type["xgboost"]["versions"][0]
    assert (first["version"], first["framework"], first["artifact_deleted"]) == (
        "1",
        "xgboost",
        False,
    )
    assert 0.9 < first["metrics"]["roc_auc"] <= 1.0


def test_model_detail_has_metadata_and_input_schema(stack: Stack) -> None:
    with stack.client() as client:
        body = client.get("/models/logistic_regression/1").json()
    meta = body["metadata"]
    assert meta["framework"] == "sklearn" and meta["artifact_format"] == "skops"
    assert len(meta["sha256"]) == 64 and meta["classes"] == ["malignant", "benign"]
    assert [f["name"] for f in meta["features"]] == list(EXAMPLE_ROW)
    assert meta["features"][0]["min"] < meta["features"][0]["max"]
    assert {"accuracy", "roc_auc"} <= set(meta["metrics"])
    assert set(meta["library_versions"]) >= {"scikit-learn", "numpy", "skops"}
    schema = body["input_schema"]
    assert sorted(schema["required"]) == sorted(EXAMPLE_ROW)
    assert schema["additionalProperties"] is False
    assert body["active"] is True and body["default"] is False


def test_logs_are_newest_first_and_limited(stack: Stack) -> None:
    rows = [EXAMPLE_ROW | {"mean texture": 10.0 + i / 1000} for i in range(11)]
    with stack.client() as client:
        ids = [
            client.post("/predict/xgboost/1", json={"input_data": r}).json()["request_id"]
            for r in rows
        ]
        logs = client.get("/logs", params={"n_limit": 3}).json()
        default = client.get("/logs").json()
    assert [entry["request_id"] for entry in logs] == ids[-3:][::-1]
    assert [entry["request_id"] for entry in default] == ids[-10:][::-1]
    entry = logs[0]
    assert entry["status"] == "ok" and entry["error"] is None and entry["n_rows"] == 1
    assert entry["input"] == [rows[-1]]
    assert entry["output"]["labels"][0] in {"malignant", "benign"}
    assert entry["latency_ms"] > 0 and entry["worker"]
    assert datetime.fromisoformat(entry["created_at"]).tzinfo is not None


def test_docs_pages_and_examples(stack: Stack) -> None:
    with stack.client(None) as client:
        assert client.get("/docs").status_code == 200
        assert client.get("/redoc").status_code == 200
        spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    examples = predict["requestBody"]["content"]["application/json"]["examples"]
    assert examples["one row"]["value"]["input_data"] == EXAMPLE_ROW
    assert {"202", "401", "404", "422"} <= set(predict["responses"])
    assert "APIKeyHeader" in spec["components"]["securitySchemes"]


def test_api_keys_never_reach_a_log(stack: Stack) -> None:
    with stack.client(None) as client:
        response = client.post(
            "/predict/xgboost/1", params={"api_key": READER_KEY}, json={"input_data": EXAMPLE_ROW}
        )
        assert response.status_code == 200
    with stack.client(ADMIN_KEY) as client:
        logs = client.get("/logs", params={"n_limit": 1000}).text
    text = stack.logs_text()
    assert "POST /predict/xgboost/1 200" in text  # the access log is there ...
    for key in (READER_KEY, ADMIN_KEY):
        assert key not in text  # ... without the key
        assert key not in logs


def test_input_rows_stay_out_of_the_service_logs(stack: Stack) -> None:
    marker = 12.3456789012345  # a value no other test sends
    with stack.client() as client:
        response = client.post(
            "/predict/xgboost/1", json={"input_data": EXAMPLE_ROW | {"mean radius": marker}}
        )
        logged = client.get("/logs", params={"n_limit": 5}).json()
    assert response.status_code == 200
    request_id = response.json()["request_id"]
    assert any(entry["input"][0]["mean radius"] == marker for entry in logged)  # in the log DB
    text = stack.logs_text()
    assert request_id in text  # the worker's and the API's lines name the request ...
    assert str(marker) not in text  # ... but not its data
