"""Runtimes: tiny real models round-trip exactly; unsafe or broken artifacts are refused."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import pickle
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import xgboost as xgb
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from common.errors import ArtifactRejected
from common.registry import ModelMetadata
from common.runtimes import LoadedModel, load_model, serialize_skops, serialize_xgboost
from common.settings import DEFAULT_SKOPS_TRUSTED_TYPES, Settings

CLASSES = ["no", "yes"]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    x = rng.normal(size=(60, 3))
    y = ((x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=60)) > 0).astype(int)
    return x, y


def make_meta(artifact: bytes, fmt: str, framework: str = "sklearn",
              n_features: int = 3) -> ModelMetadata:
    return ModelMetadata.model_validate({
        "model_type": "tiny",
        "version": "1",
        "framework": framework,
        "artifact_format": fmt,
        "sha256": hashlib.sha256(artifact).hexdigest(),
        "features": [{"name": f"x{i}"} for i in range(n_features)],
        "classes": CLASSES,
        "created_at": datetime.now(UTC),
    })


def assert_same_predictions(loaded: LoadedModel, estimator: Any, x: np.ndarray) -> None:
    result = loaded.predict(x.tolist())
    expected_proba = np.asarray(estimator.predict_proba(x), dtype=np.float64).tolist()
    expected_labels = [CLASSES[int(i)] for i in estimator.predict(x)]
    assert result["probabilities"] == expected_proba
    assert result["labels"] == expected_labels
    assert set(result["labels"]) == set(CLASSES)  # the tiny data set exercises both classes


# --- exact round trips -------------------------------------------------------------------


def test_xgboost_ubj_round_trip_predicts_exactly_like_the_estimator(data) -> None:
    x, y = data
    estimator = xgb.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1, random_state=0)
    estimator.fit(x, y)
    artifact = serialize_xgboost(estimator)

    loaded = load_model(make_meta(artifact, "xgboost-ubj", "xgboost"), artifact, Settings())

    assert artifact[:1] == b"{"  # UBJSON object
    assert isinstance(loaded.estimator, xgb.XGBClassifier)
    assert loaded.estimator.get_params()["n_jobs"] == Settings().model_threads
    assert_same_predictions(loaded, estimator, x)


def test_skops_pipeline_round_trip_predicts_exactly_like_the_estimator(data) -> None:
    x, y = data
    estimator = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())])
    estimator.fit(x, y)
    artifact = serialize_skops(estimator)

    loaded = load_model(make_meta(artifact, "skops"), artifact, Settings())

    assert isinstance(loaded.estimator, Pipeline)
    assert_same_predictions(loaded, estimator, x)


def test_predict_single_row_gives_one_label_and_probabilities_summing_to_one(data) -> None:
    x, y = data
    estimator = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())])
    estimator.fit(x, y)
    artifact = serialize_skops(estimator)
    loaded = load_model(make_meta(artifact, "skops"), artifact, Settings())

    result = loaded.predict([x[0].tolist()])

    assert len(result["labels"]) == 1
    assert len(result["probabilities"]) == 1
    assert sum(result["probabilities"][0]) == pytest.approx(1.0)


def test_predict_with_the_wrong_number_of_features_is_refused(data) -> None:
    x, y = data
    estimator = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())])
    estimator.fit(x, y)
    artifact = serialize_skops(estimator)
    loaded = load_model(make_meta(artifact, "skops"), artifact, Settings())

    with pytest.raises(ArtifactRejected, match="expected rows of 3 features"):
        loaded.predict([[1.0, 2.0]])


def test_metadata_listing_more_classes_than_the_model_is_refused(data) -> None:
    x, y = data
    estimator = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())])
    estimator.fit(x, y)
    artifact = serialize_skops(estimator)
    meta = make_meta(artifact, "skops").model_copy(update={"classes": ["a", "b", "c"]})
    loaded = load_model(meta, artifact, Settings())

    with pytest.raises(ArtifactRejected, match="model returns 2 classes, metadata lists 3"):
        loaded.predict(x[:2].tolist())


# --- skops: untrusted types --------------------------------------------------------------


class ShiftTransformer(TransformerMixin, BaseEstimator):
    """A custom class: skops must not instantiate it unless it is trusted."""

    def fit(self, x: Any, y: Any = None) -> ShiftTransformer:
        return self

    def transform(self, x: Any) -> Any:
        return np.asarray(x) + 1.0


def test_skops_artifact_with_a_custom_class_is_refused_naming_it(data) -> None:
    x, y = data
    estimator = Pipeline([("shift", ShiftTransformer()), ("model", LogisticRegression())])
    estimator.fit(x, y)
    artifact = serialize_skops(estimator)
    type_name = f"{ShiftTransformer.__module__}.ShiftTransformer"

    with pytest.raises(ArtifactRejected) as info:
        load_model(make_meta(artifact, "skops"), artifact, Settings())

    assert type_name in info.value.message
    assert info.value.details == {"untrusted_types": [type_name]}


def test_skops_artifact_with_a_custom_class_loads_once_trusted(data) -> None:
    x, y = data
    estimator = Pipeline([("shift", ShiftTransformer()), ("model", LogisticRegression())])
    estimator.fit(x, y)
    artifact = serialize_skops(estimator)
    settings = Settings(skops_trusted_types=[
        *DEFAULT_SKOPS_TRUSTED_TYPES, f"{ShiftTransformer.__module__}.ShiftTransformer",
    ])

    loaded = load_model(make_meta(artifact, "skops"), artifact, settings)

    assert_same_predictions(loaded, estimator, x)


def test_skops_artifact_with_function_transformer_calling_os_system_is_refused() -> None:
    estimator = Pipeline([("run", FunctionTransformer(func=os.system)),
                          ("model", LogisticRegression())])
    artifact = serialize_skops(estimator)

    with pytest.raises(ArtifactRejected, match="untrusted types") as info:
        load_model(make_meta(artifact, "skops"), artifact, Settings())

    refused = info.value.details["untrusted_types"]
    assert [t for t in refused if t.endswith(".system")], refused


@pytest.mark.parametrize("garbage", [b"not a zip file", b"PK\x03\x04broken", b""])
def test_garbage_labelled_skops_is_refused(garbage: bytes) -> None:
    with pytest.raises(ArtifactRejected, match="not a valid skops artifact"):
        load_model(make_meta(garbage, "skops"), garbage, Settings())


# --- pickle ------------------------------------------------------------------------------


class TouchOnLoad:
    """A malicious pickle payload: unpickling it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_the_malicious_pickle_payload_really_runs_when_unpickled(tmp_path: Path) -> None:
    # Control: proves the payload used below is live, so its absence means it never ran.
    marker = tmp_path / "control-marker"

    pickle.loads(pickle.dumps(TouchOnLoad(marker)))

    assert marker.exists()


@pytest.mark.parametrize("fmt", ["pickle", "joblib"])
def test_pickle_artifact_is_refused_and_its_payload_never_runs(tmp_path: Path,
                                                               fmt: str) -> None:
    marker = tmp_path / "pwned"
    if fmt == "pickle":
        artifact = pickle.dumps(TouchOnLoad(marker))
    else:
        buffer = io.BytesIO()
        joblib.dump(TouchOnLoad(marker), buffer)
        artifact = buffer.getvalue()

    with pytest.raises(ArtifactRejected, match=f"is a {fmt} artifact"):
        load_model(make_meta(artifact, fmt), artifact, Settings(allow_unsafe_pickle=False))

    assert not marker.exists()


def test_pickle_is_refused_by_default() -> None:
    assert Settings().allow_unsafe_pickle is False


@pytest.mark.parametrize("fmt", ["pickle", "joblib"])
def test_benign_pickled_estimator_loads_when_unsafe_pickle_is_allowed(data, fmt: str) -> None:
    x, y = data
    estimator = LogisticRegression().fit(x, y)
    if fmt == "pickle":
        artifact = pickle.dumps(estimator)
    else:
        buffer = io.BytesIO()
        joblib.dump(estimator, buffer)
        artifact = buffer.getvalue()

    loaded = load_model(make_meta(artifact, fmt), artifact, Settings(allow_unsafe_pickle=True))

    assert isinstance(loaded.estimator, LogisticRegression)
    assert_same_predictions(loaded, estimator, x)


# --- broken xgboost artifacts ------------------------------------------------------------


@pytest.mark.parametrize("garbage", [
    b"this is not an xgboost model",
    b"\x00" * 32,
    b"{}",
    b'{"learner": 1}',
    bytes(range(256)),
])
def test_garbage_labelled_xgboost_ubj_is_refused(garbage: bytes) -> None:
    with pytest.raises(ArtifactRejected, match="not a valid XGBoost model"):
        load_model(make_meta(garbage, "xgboost-ubj", "xgboost"), garbage, Settings())


def test_non_utf8_garbage_labelled_xgboost_ubj_is_refused() -> None:
    garbage = b"{x" + b"\xfe" * 8

    with pytest.raises(ArtifactRejected):
        load_model(make_meta(garbage, "xgboost-ubj", "xgboost"), garbage, Settings())


_LOAD_EMPTY = """
import sys
from datetime import UTC, datetime
from common.errors import ArtifactRejected
from common.registry import ModelMetadata
from common.runtimes import load_model
from common.settings import Settings
meta = ModelMetadata.model_validate({
    "model_type": "tiny", "version": "1", "framework": "xgboost",
    "artifact_format": "xgboost-ubj",
    "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "features": [{"name": "x0"}], "classes": ["no", "yes"], "created_at": datetime.now(UTC),
})
try:
    load_model(meta, b"", Settings())
except ArtifactRejected:
    sys.exit(0)
sys.exit(3)
"""


def test_empty_xgboost_artifact_is_refused_without_killing_the_process() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    done = subprocess.run([sys.executable, "-c", _LOAD_EMPTY], cwd=root, env=env,
                          capture_output=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr.decode(errors="replace")[-500:]
