"""The card's plots as PNG bytes, with matplotlib (worker side only).

Each plot is its own `matplotlib.figure.Figure`, never pyplot: no global figure state,
no GUI backend chosen from the environment, safe on any thread; `savefig` renders with
Agg. Small figures (5 x 4 in at 100 dpi) keep the five PNGs of a card near 130 kB."""

from __future__ import annotations

import io
from collections.abc import Callable

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from common.cards.evaluate import Curve, Evaluation
from common.cards.summary import IMPORTANCE_TOP, PLOTS

SIZE_INCHES = (5.0, 4.0)
DPI = 100


def render_plots(evaluation: Evaluation) -> dict[str, bytes]:
    """Every plot the evaluation can draw, in PLOTS order (ROC, PR and calibration only
    for a binary model)."""
    drawers: dict[str, Callable[[Evaluation], bytes]] = {
        "roc": roc_png,
        "pr": pr_png,
        "confusion": confusion_png,
        "calibration": calibration_png,
        "importance": importance_png,
    }
    wanted = [name for name in PLOTS if evaluation.binary or name in {"confusion", "importance"}]
    return {name: drawers[name](evaluation) for name in wanted}


def _png(draw: Callable[[Axes], None], tall: bool = False) -> bytes:
    width, height = SIZE_INCHES
    figure = Figure(figsize=(width, height * 1.25 if tall else height), dpi=DPI)
    draw(figure.add_subplot())
    figure.tight_layout()
    buffer = io.BytesIO()
    # No "Software" or date chunk: the same evaluation gives the same bytes.
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _curve(evaluation: Evaluation, name: str) -> Curve:
    curve: Curve | None = getattr(evaluation, name)
    if curve is None:
        raise ValueError(f"the {name} plot needs a binary model with both classes held out")
    return curve


def roc_png(evaluation: Evaluation) -> bytes:
    curve = _curve(evaluation, "roc")

    def draw(ax: Axes) -> None:
        ax.plot(curve.x, curve.y, label=f"AUC = {evaluation.metrics['roc_auc']:.4f}")
        _diagonal(ax, "chance")
        _frame(ax, "False positive rate", "True positive rate", "ROC curve", evaluation)
        ax.legend(loc="lower right")

    return _png(draw)


def pr_png(evaluation: Evaluation) -> bytes:
    curve = _curve(evaluation, "pr")

    def draw(ax: Axes) -> None:
        ap = evaluation.metrics["average_precision"]
        ax.step(curve.x, curve.y, where="post", label=f"AP = {ap:.4f}")
        _frame(ax, "Recall", "Precision", "Precision-recall curve", evaluation)
        ax.legend(loc="lower left")

    return _png(draw)


def calibration_png(evaluation: Evaluation) -> bytes:
    curve = _curve(evaluation, "calibration")

    def draw(ax: Axes) -> None:
        ax.plot(curve.x, curve.y, marker="o", label="model")
        _diagonal(ax, "perfectly calibrated")
        _frame(ax, "Mean predicted probability", "Fraction positive", "Calibration", evaluation)
        ax.legend(loc="upper left")

    return _png(draw)


def _diagonal(ax: Axes, label: str) -> None:
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label=label)


def _frame(ax: Axes, xlabel: str, ylabel: str, title: str, evaluation: Evaluation) -> None:
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} (positive: {evaluation.classes[1]})", fontsize=10)
    ax.grid(alpha=0.3)


def confusion_png(evaluation: Evaluation) -> bytes:
    matrix, labels = evaluation.confusion, [str(c) for c in evaluation.classes]

    def draw(ax: Axes) -> None:
        ax.imshow(matrix, cmap="Blues")
        top = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                color = "white" if count > top / 2 else "black"
                ax.text(j, i, str(count), ha="center", va="center", color=color)
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.set_title(f"Confusion matrix ({evaluation.n_test} held-out rows)", fontsize=10)

    return _png(draw)


def importance_png(evaluation: Evaluation) -> bytes:
    top = evaluation.importance[:IMPORTANCE_TOP][::-1]  # largest at the top of the chart

    def draw(ax: Axes) -> None:
        ax.barh([fw.feature for fw in top], [fw.importance for fw in top])
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel(evaluation.importance_method, fontsize=8)
        ax.set_title(f"Feature importance (top {len(top)})", fontsize=10)
        ax.grid(axis="x", alpha=0.3)

    return _png(draw, tall=True)
