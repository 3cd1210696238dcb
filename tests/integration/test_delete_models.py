"""DELETE /delete-models on a stack of its own: artifacts go, metadata stays, no 500s."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from api.examples import EXAMPLE_ROW
from tests.integration.stack import ADMIN_KEY, Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def doomed(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack("doomed")


def test_delete_models_then_predict_is_a_clear_503(doomed: Stack) -> None:
    body = {"input_data": EXAMPLE_ROW}
    with doomed.client() as client:
        assert client.post("/predict", json=body).json()["cached"] is False
        assert client.post("/predict", json=body).json()["cached"] is True  # now in the cache
        with doomed.client(ADMIN_KEY) as admin:
            report = admin.delete("/delete-models")
        assert report.status_code == 200, report.text
        assert {(d["model_type"], d["version"]) for d in report.json()["deleted"]} == {
            ("xgboost", "1"),
            ("logistic_regression", "1"),
        }
        assert report.json()["purged_cache_entries"] >= 1
        for path in ["/predict", "/predict/xgboost", "/predict/logistic_regression/1"]:
            response = client.post(path, json=body)
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["type"] == "model_unavailable"
            assert "was deleted" in error["message"]
        listing = client.get("/models").json()
        detail = client.get("/models/xgboost/1")
    keys = doomed.registry().store.list()
    assert not [k for k in keys if k.endswith((".ubj", ".skops"))]
    assert {"xgboost/1/metadata.json", "logistic_regression/1/metadata.json"} <= set(keys)
    assert all(v["artifact_deleted"] for m in listing["models"] for v in m["versions"])
    assert detail.status_code == 200
    assert detail.json()["metadata"]["artifact_deleted_at"] is not None
