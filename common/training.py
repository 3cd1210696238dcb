"""Train the two demo models on scikit-learn's bundled breast-cancer data and describe
them as publishable metadata. Needs the ML libraries (worker side), never the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.registry import ArtifactFormat
from common.runtimes import library_versions, serialize_skops, serialize_xgboost

DEMO_TYPES = ("xgboost", "logistic_regression")
DEMO_DEFAULT = "xgboost"
SEED = 42


@dataclass
class TrainedModel:
    estimator: Any
    artifact: bytes
    metadata: dict[str, Any]
    # The held-out rows and their classes (indices into metadata["classes"]): what the
    # metrics were measured on and the model card is drawn from (common.cards).
    x_test: Any
    y_test: Any


def breast_cancer() -> tuple[Any, Any, list[str], list[str]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return data.data, data.target, list(data.feature_names), list(data.target_names)


def feature_specs(x_train: Any, names: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "type": "float",
            "min": float(x_train[:, i].min()),
            "max": float(x_train[:, i].max()),
        }
        for i, name in enumerate(names)
    ]


def train_demo(model_type: str) -> TrainedModel:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, names, classes = breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y
    )
    fmt: ArtifactFormat
    if model_type == "xgboost":
        import xgboost as xgb

        estimator: Any = xgb.XGBClassifier(
            n_estimators=100, max_depth=3, learning_rate=0.1, n_jobs=1, random_state=SEED
        )
        framework, fmt = "xgboost", "xgboost-ubj"
    elif model_type == "logistic_regression":
        estimator = Pipeline(
            [("scale", StandardScaler()), ("model", LogisticRegression(max_iter=1000))]
        )
        framework, fmt = "sklearn", "skops"
    else:
        raise ValueError(f"unknown demo model {model_type!r}; choose from {DEMO_TYPES}")
    estimator.fit(x_train, y_train)
    proba = estimator.predict_proba(x_test)[:, 1]
    metrics = {
        "accuracy": float(accuracy_score(y_test, estimator.predict(x_test))),
        "roc_auc": float(roc_auc_score(y_test, proba)),
        "n_train": float(len(y_train)),
        "n_test": float(len(y_test)),
    }
    artifact = (
        serialize_xgboost(estimator) if framework == "xgboost" else serialize_skops(estimator)
    )
    metadata = {
        "model_type": model_type,
        "framework": framework,
        "library_versions": library_versions(framework),
        "artifact_format": fmt,
        "features": feature_specs(x_train, names),
        "classes": classes,
        "metrics": metrics,
        "description": f"demo {model_type} on the breast-cancer data set",
    }
    return TrainedModel(estimator, artifact, metadata, x_test, y_test)
