"""The Open Inference Protocol (v2) routes, driven by tritonclient, a real client none of
us wrote (JSON and its default binary mode), and by raw JSON in MLServer's request shape.
Its answers are /predict's: the same rows give the same cache entry and log rows."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from common.training import DEMO_TYPES, TrainedModel, breast_cancer
from dev.services import wait_until
from tests.integration.stack import ADMIN_KEY, Stack

pytestmark = pytest.mark.integration


def key() -> dict[str, str]:
    """A new dict each call: tritonclient writes Inference-Header-Content-Length into the
    headers it is given, and would send it again with the next request's. The admin key:
    with the cache scoped by key, this module's rows never make another module's
    (test_predict's, on the same shared stack) a cache hit."""
    return {"X-API-Key": ADMIN_KEY}


def client_for(stack: Stack) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(
        stack.url.removeprefix("http://"), connection_timeout=10, network_timeout=60
    )


def matrix_input(x: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("input-0", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def cached_predict(stack: Stack, model_type: str, rows: list[dict[str, float]]) -> Any:
    """/predict of the rows, once v2's answer is in the cache (it is written after the
    answer goes out)."""
    with stack.client(ADMIN_KEY) as client:
        for _ in range(50):
            answer = client.post(f"/predict/{model_type}", json={"input_data": rows})
            assert answer.status_code == 200, answer.text
            if answer.json()["cached"]:
                return answer.json()
            time.sleep(0.1)
    raise AssertionError("v2's answer never reached the cache /predict reads")


def log_row(stack: Stack, request_id: str) -> dict[str, Any]:
    with stack.client(ADMIN_KEY) as client:

        def found() -> list[Any]:
            return client.get("/logs", params={"request_id": request_id}).json()

        wait_until(lambda: bool(found()), 30, f"the log row of {request_id}")
        (row,) = found()
        return row  # type: ignore[no-any-return]


def test_health_and_metadata(stack: Stack, demo_models: dict[str, TrainedModel]) -> None:
    client = client_for(stack)
    assert client.is_server_live() and client.is_server_ready()  # probes need no key
    server = client.get_server_metadata(headers=key())
    assert server["name"] == "model-serving"
    assert set(server["extensions"]) == {"binary_tensor_data", "model_repository"}
    metadata = client.get_model_metadata("xgboost", headers=key())
    features = demo_models["xgboost"].metadata["features"]
    (listed,) = metadata["inputs"]
    assert listed["shape"] == [-1, len(features)] and listed["datatype"] == "FP64"
    assert [f["name"] for f in listed["parameters"]["features"]] == [f["name"] for f in features]
    assert metadata["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]
    assert metadata["versions"] == ["1"] and metadata["platform"] == "xgboost"
    assert client.get_model_metadata("xgboost", "1", headers=key())["parameters"]["version"] == "1"
    assert client.is_model_ready("xgboost", headers=key())
    assert client.is_model_ready("logistic_regression", "1", headers=key())
    assert not client.is_model_ready("no_such_model", headers=key())
    assert not client.is_model_ready("xgboost", "99", headers=key())
    index = client.get_model_repository_index(headers=key())
    assert {"name": "xgboost", "version": "1", "state": "READY"} in index
    assert {entry["name"] for entry in index} >= set(DEMO_TYPES)


@pytest.mark.parametrize("model_type", DEMO_TYPES)
def test_answers_equal_predicts_over_the_whole_data_set(
    stack: Stack, demo_models: dict[str, TrainedModel], model_type: str
) -> None:
    x, _, names, classes = breast_cancer()
    trained = demo_models[model_type]
    client = client_for(stack)
    result = client.infer(model_type, [matrix_input(x)], headers=key())  # binary both ways
    proba = result.as_numpy("predict_proba")
    np.testing.assert_allclose(proba, trained.estimator.predict_proba(x), rtol=1e-6)
    labels = [label.decode() for label in result.as_numpy("predict")[:, 0]]
    assert labels == [classes[i] for i in trained.estimator.predict(x)]
    response = result.get_response()
    assert response["model_name"] == model_type and response["model_version"] == "1"

    rows = [dict(zip(names, map(float, r), strict=True)) for r in x]
    sync = cached_predict(stack, model_type, rows)  # the same cache entry
    assert [p["label"] for p in sync["predictions"]] == labels
    assert [[p["probabilities"][c] for c in classes] for p in sync["predictions"]] == proba.tolist()

    outputs = [triton.InferRequestedOutput("predict_proba", binary_data=False)]
    json_only = [matrix_input(x, binary=False)]
    plain = client.infer(model_type, json_only, outputs=outputs, headers=key())
    assert plain.get_response()["parameters"]["cached"] is True
    assert [o["name"] for o in plain.get_response()["outputs"]] == ["predict_proba"]
    np.testing.assert_array_equal(plain.as_numpy("predict_proba"), proba)

    # The same log rows: the miss (logged by the worker) and /predict's hit.
    first = log_row(stack, response["id"])
    hit = log_row(stack, sync["request_id"])
    assert (first["cached"], hit["cached"]) == (False, True)
    for field in ("model_type", "version", "n_rows", "input", "output", "owner"):
        assert first[field] == hit[field], field


def test_mlservers_request_shapes_in_raw_json(stack: Stack) -> None:
    x, _, names, _ = breast_cancer()
    picked = x[100:103] + 1e-3  # rows no other test sends
    rows = [dict(zip(names, map(float, r), strict=True)) for r in picked]
    per_feature = {  # MLServer's pandas codec: a tensor per column
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": n, "shape": [3, 1], "datatype": "FP64", "data": picked[:, i].tolist()}
            for i, n in enumerate(names)
        ],
    }
    one_tensor = {  # MLServer's numpy codec, nested data
        "id": "my-own-id",
        "inputs": [{"name": "X", "shape": [3, 30], "datatype": "FP64", "data": picked.tolist()}],
    }
    bearer = {"Authorization": f"Bearer {ADMIN_KEY}"}  # what generic clients send
    with stack.client(None, headers=bearer) as client:
        sync = client.post("/predict/xgboost/1", json={"input_data": rows}).json()
        for body in (per_feature, one_tensor):
            answer = client.post("/v2/models/xgboost/versions/1/infer", json=body)
            assert answer.status_code == 200, answer.text
            outputs = {o["name"]: o for o in answer.json()["outputs"]}
            assert outputs["predict"]["data"] == [p["label"] for p in sync["predictions"]]
            proba = np.reshape(outputs["predict_proba"]["data"], outputs["predict_proba"]["shape"])
            expected = [list(p["probabilities"].values()) for p in sync["predictions"]]
            assert proba.tolist() == expected
            assert answer.json()["parameters"]["cached"] is True
        assert answer.json()["id"] == "my-own-id"


def protocol_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    return body["error"]  # type: ignore[no-any-return]


def test_errors_follow_the_protocol(stack: Stack) -> None:
    row = {"name": "X", "shape": [1, 30], "datatype": "FP64", "data": [1.0] * 30}
    infer = "/v2/models/xgboost/infer"
    with stack.client(None) as anonymous:
        assert "API key" in protocol_error(anonymous.post(infer, json={"inputs": [row]}), 401)
        wrong = {"Authorization": "Bearer not-a-key"}
        protocol_error(anonymous.get("/v2", headers=wrong), 401)
    with stack.client() as client:
        assert "'no_such_model'" in protocol_error(
            client.post("/v2/models/no_such_model/infer", json={"inputs": [row]}), 404
        )
        narrow = row | {"shape": [1, 29], "data": [1.0] * 29}
        assert "input 'X' has shape [1, 29]" in protocol_error(
            client.post(infer, json={"inputs": [narrow]}), 422
        )
        nan = json.dumps({"inputs": [row | {"data": [float("nan")] + [1.0] * 29}]})
        assert "NaN and Infinity are not JSON" in protocol_error(
            client.post(infer, content=nan.encode()), 400
        )
        unknown = {"inputs": [row], "outputs": [{"name": "scores"}]}
        assert "unknown output 'scores'" in protocol_error(client.post(infer, json=unknown), 422)
        assert "not valid JSON" in protocol_error(client.post(infer, content=b"{"), 400)
        assert "Inference-Header-Content-Length" in protocol_error(
            client.post(infer, content=b"{}", headers={"Inference-Header-Content-Length": "9"}),
            400,
        )
        protocol_error(client.get("/v2/models/xgboost/versions/99"), 404)
        protocol_error(client.get("/v2/no/such/route"), 404)
        # /predict keeps its own error shape.
        assert set(client.post("/predict", json={}).json()["error"]) >= {"type", "message"}


def test_tritonclient_raises_the_servers_message(stack: Stack) -> None:
    client = client_for(stack)
    x = np.full((2, 30), np.inf)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("xgboost", [matrix_input(x)], headers=key())
    assert raised.value.status() == "422"
    assert raised.value.message().startswith("invalid input: row 0: mean radius: ")
    with pytest.raises(InferenceServerException) as raised:
        client.infer("xgboost", [matrix_input(x[:, :3])], headers=key())
    assert "[N, 30]" in raised.value.message()


def test_fp32_and_integer_tensors_are_accepted(stack: Stack) -> None:
    x, _, _, _ = breast_cancer()
    client = client_for(stack)
    tensor = triton.InferInput("input__0", [4, 30], "FP32")
    tensor.set_data_from_numpy(x[:4].astype(np.float32))
    bearer = {"Authorization": f"Bearer {ADMIN_KEY}"}
    result = client.infer("xgboost", [tensor], headers=bearer)
    assert result.as_numpy("predict_proba").shape == (4, 2)
    whole = triton.InferInput("input__0", [1, 30], "INT64")
    whole.set_data_from_numpy(np.rint(x[:1]).astype(np.int64))
    assert client.infer("xgboost", [whole], headers=key()).as_numpy("predict").shape == (1, 1)
