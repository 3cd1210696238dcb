"""What `<type>/<version>/card/evaluation.json` holds: the figures the page shows beside
the plots. Plain pydantic, so the API reads it without the ML libraries."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

# In the order the page shows them; the file of each is `<name>.png`.
PLOTS: tuple[str, ...] = ("roc", "pr", "confusion", "calibration", "importance")
PLOT_TITLES: dict[str, str] = {
    "roc": "ROC curve",
    "pr": "Precision-recall curve",
    "confusion": "Confusion matrix",
    "calibration": "Calibration curve",
    "importance": "Feature importance",
}
# The plots that need a positive class: skipped (with a note) for more than two classes.
BINARY_PLOTS = frozenset({"roc", "pr", "calibration"})


class FeatureWeight(BaseModel):
    feature: str
    importance: float


class EvaluationSummary(BaseModel):
    artifact_sha256: str  # the version evaluated: a card never describes another artifact
    n_test: int = Field(ge=1)
    classes: list[str | int]
    positive_class: str | int | None = None  # binary models only
    metrics: dict[str, float]  # on the held-out rows
    confusion: list[list[int]]  # rows: true class, columns: predicted, in `classes` order
    importance_method: str
    importance: list[FeatureWeight]  # largest first, at most IMPORTANCE_TOP
    plots: list[str]  # the PNGs written, in PLOTS order
    notes: list[str] = Field(default_factory=list)
    evaluated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


IMPORTANCE_TOP = 15
