"""Load and predict for each framework. ML libraries are imported only here, lazily,
so the API (which never loads a model) does not need them installed."""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import ArtifactRejected
from common.registry import ModelMetadata

if TYPE_CHECKING:
    from common.settings import Settings

PICKLE_FORMATS = {"pickle", "joblib"}
# Rows in feature order: lists of values, or a float64 NumPy matrix (a worker reads packed
# rows in place as one: queueing.packed_rows).
Rows = Any


@dataclass
class LoadedModel:
    meta: ModelMetadata
    estimator: Any

    def predict(self, rows: Rows) -> dict[str, list[Any]]:
        """Labels and class probabilities for a batch of rows in feature order (a float64
        matrix is used as it is, without a copy)."""
        import numpy as np

        matrix = np.asarray(rows, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.meta.features):
            raise ArtifactRejected(
                f"expected rows of {len(self.meta.features)} features, got shape {matrix.shape}"
            )
        proba = np.asarray(self.estimator.predict_proba(matrix), dtype=np.float64)
        if proba.shape[1] != len(self.meta.classes):
            raise ArtifactRejected(
                f"model returns {proba.shape[1]} classes, metadata lists {len(self.meta.classes)}"
            )
        classes = self.meta.classes
        return {
            "labels": [classes[i] for i in proba.argmax(axis=1).tolist()],
            "probabilities": proba.tolist(),
        }


def load_model(meta: ModelMetadata, data: bytes, settings: Settings) -> LoadedModel:
    """Deserialize verified artifact bytes. Pickle is refused unless explicitly allowed."""
    fmt = meta.artifact_format
    if fmt in PICKLE_FORMATS and not settings.allow_unsafe_pickle:
        raise ArtifactRejected(
            f"{meta.model_type} v{meta.version} is a {fmt} artifact; loading it would run "
            "arbitrary code from the store, so it is refused. Republish it as XGBoost UBJSON "
            "or skops, or set SERVING_ALLOW_UNSAFE_PICKLE=true if you trust every writer "
            "of the store"
        )
    if fmt in {"xgboost-ubj", "xgboost-json"}:
        estimator = _load_xgboost(data, settings.model_threads)
    elif fmt == "skops":
        estimator = _load_skops(data, settings.skops_trusted_types)
    else:
        estimator = _load_pickle(fmt, data)
    return LoadedModel(meta, estimator)


def _load_xgboost(data: bytes, threads: int) -> Any:
    import xgboost as xgb

    # libxgboost aborts the whole process on some malformed input (an empty buffer):
    # both UBJSON and JSON models start with '{', so refuse anything else up front.
    if not data.startswith(b"{"):
        raise ArtifactRejected("not a valid XGBoost model: UBJSON or JSON starts with '{'")
    model = xgb.XGBClassifier()
    try:
        model.load_model(bytearray(data))
    except (xgb.core.XGBoostError, UnicodeDecodeError, ValueError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArtifactRejected(f"not a valid XGBoost model: {first_line}") from None
    model.set_params(n_jobs=threads)
    return model


def _load_skops(data: bytes, trusted: list[str]) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises assorted errors for a non-skops file
        raise ArtifactRejected(f"not a valid skops artifact: {exc}") from None
    refused = sorted(set(untrusted) - set(trusted))
    if refused:
        raise ArtifactRejected(
            f"skops artifact contains untrusted types {refused}; add them to "
            "SERVING_SKOPS_TRUSTED_TYPES only if you trust them",
            {"untrusted_types": refused},
        )
    return sio.loads(data, trusted=sorted(set(untrusted)))


def _load_pickle(fmt: str, data: bytes) -> Any:
    if fmt == "joblib":
        import joblib

        return joblib.load(io.BytesIO(data))
    import pickle

    return pickle.loads(data)  # noqa: S301 - only with allow_unsafe_pickle on


def serialize_xgboost(model: Any) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.ubj"
        model.save_model(path)
        return path.read_bytes()


def serialize_skops(model: Any) -> bytes:
    import skops.io as sio

    return bytes(sio.dumps(model))


def library_versions(framework: str) -> dict[str, str]:
    import numpy
    import sklearn

    versions = {"numpy": numpy.__version__, "scikit-learn": sklearn.__version__}
    if framework == "xgboost":
        import xgboost

        versions["xgboost"] = xgboost.__version__
    else:
        import skops

        versions["skops"] = skops.__version__
    return versions
