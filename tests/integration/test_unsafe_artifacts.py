"""A tampered artifact and a pickle are refused by the worker; the payload never runs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from api.examples import EXAMPLE_ROW
from common.cache import notify_registry_changed
from common.registry import sha256_hex
from common.training import TrainedModel
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


class Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def test_tampered_artifact_is_refused(stack: Stack, demo_models: dict[str, TrainedModel]) -> None:
    trained = demo_models["xgboost"]
    registry = stack.registry()
    meta = registry.publish(trained.metadata | {"model_type": "tampered"}, trained.artifact)
    data = bytearray(registry.store.get(meta.artifact_key))
    data[len(data) // 2] ^= 0x01  # one byte changed
    registry.store.put(meta.artifact_key, bytes(data))
    assert sha256_hex(bytes(data)) != meta.sha256
    notify_registry_changed(stack.settings)
    with stack.client() as client:
        response = client.post("/predict/tampered/1", json={"input_data": EXAMPLE_ROW})
        logs = client.get("/logs", params={"n_limit": 5}).json()
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "artifact_rejected"
    assert "fails its checksum" in error["message"]
    failed = [e for e in logs if e["model_type"] == "tampered"]
    assert failed and failed[0]["status"] == "error" and "checksum" in failed[0]["error"]


def test_pickle_artifact_is_refused_and_its_payload_never_runs(
    stack: Stack, demo_models: dict[str, TrainedModel], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    artifact = pickle.dumps(Payload(marker))
    metadata = demo_models["xgboost"].metadata | {
        "model_type": "pickled",
        "artifact_format": "pickle",
    }
    stack.registry().publish(metadata, artifact)
    notify_registry_changed(stack.settings)  # as `python -m modelctl publish` does
    with stack.client() as client:
        response = client.post("/predict/pickled/1", json={"input_data": EXAMPLE_ROW})
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "artifact_rejected"
    assert "pickle artifact" in error["message"] and "refused" in error["message"]
    assert not marker.exists()
    # The same bytes do run code when unpickled: the test would notice if they had.
    pickle.loads(artifact)
    assert marker.exists()
