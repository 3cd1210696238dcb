"""Publishing a card: evaluate a just-published version on its held-out rows, draw its
plots and store them beside the artifact. Needs the ML libraries (worker side), which
are imported here only when a card is drawn."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.cards.store import write_card
from common.registry import ModelMetadata
from common.store import ObjectStore

if TYPE_CHECKING:
    from common.cards.evaluate import Evaluation


@dataclass(frozen=True)
class DrawnCard:
    """A card evaluated and drawn, not yet tied to a version: the same trained model
    published to several stores (the tests' stacks) is drawn once."""

    evaluation: Evaluation
    pngs: dict[str, bytes]

    def write(self, store: ObjectStore, meta: ModelMetadata) -> list[str]:
        """For the version whose artifact is the drawn model's; the keys written."""
        summary = self.evaluation.summary(meta.sha256, list(self.pngs))
        return write_card(store, meta, summary, self.pngs)


def draw_card(
    estimator: Any, x_test: Any, y_test: Any, meta: ModelMetadata | Mapping[str, Any]
) -> DrawnCard:
    """`y_test` holds class indices into the metadata's `classes`."""
    from common.cards.evaluate import evaluate
    from common.cards.plots import render_plots

    evaluation = evaluate(estimator, x_test, y_test, meta)
    return DrawnCard(evaluation, render_plots(evaluation))


def publish_card(
    store: ObjectStore, meta: ModelMetadata, estimator: Any, x_test: Any, y_test: Any
) -> list[str]:
    """The keys written: `<type>/<version>/card/<plot>.png` for each plot drawn, then
    `evaluation.json`. The estimator must be the one whose artifact `meta` describes
    (the card records that artifact's sha256)."""
    return draw_card(estimator, x_test, y_test, meta).write(store, meta)
