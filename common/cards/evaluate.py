"""A version's evaluation on its held-out rows, with scikit-learn: the figures and curves
the card's plots are drawn from. Worker side only (NumPy, scikit-learn).

`y_test` holds each row's class as its index in the metadata's `classes`, which is the
column of `predict_proba` the serving runtime reads it from (common/runtimes.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from common.cards.summary import IMPORTANCE_TOP, EvaluationSummary, FeatureWeight
from common.registry import ModelMetadata

CALIBRATION_BINS = 10
PERMUTATION_REPEATS = 5


@dataclass(frozen=True)
class Curve:
    x: list[float]
    y: list[float]


@dataclass
class Evaluation:
    classes: list[str | int]
    n_test: int
    metrics: dict[str, float]
    confusion: list[list[int]]
    importance_method: str
    importance: list[FeatureWeight]  # every feature, largest first
    roc: Curve | None = None  # false positive rate -> true positive rate
    pr: Curve | None = None  # recall -> precision
    calibration: Curve | None = None  # mean predicted probability -> fraction positive
    notes: list[str] = field(default_factory=list)

    @property
    def binary(self) -> bool:
        return self.roc is not None

    def summary(self, artifact_sha256: str, plots: list[str]) -> EvaluationSummary:
        return EvaluationSummary(
            artifact_sha256=artifact_sha256,
            n_test=self.n_test,
            classes=self.classes,
            positive_class=self.classes[1] if self.binary else None,
            metrics=self.metrics,
            confusion=self.confusion,
            importance_method=self.importance_method,
            importance=self.importance[:IMPORTANCE_TOP],
            plots=plots,
            notes=self.notes,
        )


def evaluate(
    estimator: Any, x_test: Any, y_test: Any, meta: ModelMetadata | Mapping[str, Any]
) -> Evaluation:
    """ValueError naming the problem when the rows, labels or model do not fit the metadata."""
    if isinstance(meta, ModelMetadata):
        classes, names = list(meta.classes), meta.feature_names
    else:
        classes, names = list(meta["classes"]), [f["name"] for f in meta["features"]]
    x, y = _checked(x_test, y_test, len(names), len(classes))
    proba = np.asarray(estimator.predict_proba(x), dtype=np.float64)
    if proba.shape != (len(y), len(classes)):
        raise ValueError(
            f"predict_proba gave shape {proba.shape}; expected ({len(y)}, {len(classes)})"
        )
    predicted = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    evaluation = Evaluation(
        classes=classes,
        n_test=len(y),
        metrics={
            "accuracy": float(skm.accuracy_score(y, predicted)),
            # XGBoost's float32 rows sum to 1 only within ~1e-7, which log_loss warns of.
            "log_loss": float(skm.log_loss(y, proba / proba.sum(axis=1)[:, None], labels=labels)),
        },
        confusion=skm.confusion_matrix(y, predicted, labels=labels).tolist(),
        importance_method="",
        importance=[],
    )
    method, weights = feature_importance(estimator, x, y)
    evaluation.importance_method = method
    evaluation.importance = sorted(
        (
            FeatureWeight(feature=n, importance=float(w))
            for n, w in zip(names, weights, strict=True)
        ),
        key=lambda fw: -fw.importance,
    )
    _binary_curves(evaluation, y, proba, predicted)
    return evaluation


def _checked(x_test: Any, y_test: Any, n_features: int, n_classes: int) -> tuple[Any, Any]:
    x = np.asarray(x_test, dtype=np.float64)
    y = np.asarray(y_test)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"x_test has shape {x.shape}; expected (rows, {n_features} features)")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y_test has shape {y.shape}; expected ({x.shape[0]},), one per row")
    if x.shape[0] == 0:
        raise ValueError("no held-out rows to evaluate on")
    indices = f"y_test must hold class indices 0..{n_classes - 1} (the metadata's classes in order)"
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{indices}; got values of type {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"{indices}; got values from {y.min()} to {y.max()}")
    return x, y


def _binary_curves(evaluation: Evaluation, y: Any, proba: Any, predicted: Any) -> None:
    """ROC, precision-recall and calibration need one positive class and both classes
    among the held-out rows; otherwise each is skipped with a note saying why."""
    if len(evaluation.classes) != 2:
        evaluation.notes.append(
            f"ROC, precision-recall and calibration curves need two classes; this model has "
            f"{len(evaluation.classes)}, so the card shows its confusion matrix and importance"
        )
        return
    if len(set(y.tolist())) < 2:
        evaluation.notes.append(
            "the held-out rows hold one class only: no ROC, precision-recall or calibration"
        )
        return
    score = proba[:, 1]
    fpr, tpr, _ = skm.roc_curve(y, score)
    precision, recall, _ = skm.precision_recall_curve(y, score)
    frac_pos, mean_pred = calibration_curve(y, score, n_bins=CALIBRATION_BINS)
    evaluation.roc = Curve(fpr.tolist(), tpr.tolist())
    evaluation.pr = Curve(recall.tolist(), precision.tolist())
    evaluation.calibration = Curve(mean_pred.tolist(), frac_pos.tolist())
    evaluation.metrics |= {
        "roc_auc": float(skm.auc(fpr, tpr)),
        "average_precision": float(skm.average_precision_score(y, score)),
        "precision": float(skm.precision_score(y, predicted, zero_division=0)),
        "recall": float(skm.recall_score(y, predicted, zero_division=0)),
        "f1": float(skm.f1_score(y, predicted, zero_division=0)),
        "brier_score": float(skm.brier_score_loss(y, score)),
    }


def feature_importance(estimator: Any, x: Any, y: Any) -> tuple[str, Any]:
    """The model's own importances where it has them (trees, XGBoost), |coefficients| of
    a linear model (alone or ending a Pipeline), else permutation importance."""
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    n_features = x.shape[1]
    own = getattr(final, "feature_importances_", None)
    if own is not None and np.shape(own) == (n_features,):
        kind = getattr(final, "importance_type", None)
        suffix = f" ({kind})" if isinstance(kind, str) else ""
        return f"{type(final).__name__}.feature_importances_{suffix}", np.asarray(own)
    coef = getattr(final, "coef_", None)
    if coef is not None and np.shape(np.atleast_2d(coef))[1] == n_features:
        where = "the pipeline's final " if final is not estimator else ""
        per_class = ", averaged over classes" if np.ndim(coef) == 2 and len(coef) > 1 else ""
        return (
            f"|coefficient| of {where}{type(final).__name__}{per_class}",
            np.abs(np.atleast_2d(coef)).mean(axis=0),
        )
    from sklearn.inspection import permutation_importance

    result = permutation_importance(
        estimator, x, y, scoring=_accuracy, n_repeats=PERMUTATION_REPEATS, random_state=0
    )
    return (
        f"permutation importance (drop in held-out accuracy, {PERMUTATION_REPEATS} repeats)",
        result.importances_mean,
    )


def _accuracy(estimator: Any, x: Any, y: Any) -> float:
    """Accuracy of the class the runtime serves (argmax of predict_proba), whatever
    labels the estimator's own `predict` returns."""
    return float(np.mean(np.asarray(estimator.predict_proba(x)).argmax(axis=1) == y))
