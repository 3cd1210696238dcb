"""Model cards: `modelctl card` writes (or opens) the page the API serves, and
`modelctl publish --eval-data` evaluates an artifact trained elsewhere the way the demo
models are evaluated, before anything is published."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import PublishError
from common.registry import ModelMetadata, check_name
from modelctl.context import Context
from modelctl.eval_data import read_labelled_csv
from modelctl.output import StepBar

if TYPE_CHECKING:
    from common.cards.publish import DrawnCard

EVAL_STEPS = 3  # read the CSV, load the artifact, evaluate and draw


def cmd_card(args: argparse.Namespace, ctx: Context) -> int:
    model_type = check_name(args.model_type, "model type")
    version = check_name(args.version, "version")
    html = ctx.cards(lambda cards: cards.card(model_type, version, args.base_url))
    path = Path(args.out or f"{model_type}-{version}-card.html")
    path.write_text(html, encoding="utf-8")
    named = f"v{version}" if version[0].isdigit() else version  # an alias starts with a letter
    ctx.output.line(f"wrote the card of {model_type} {named} to {path} ({len(html) // 1024} kB)")
    if args.open and not webbrowser.open(path.resolve().as_uri()):
        ctx.output.warn(f"no web browser could be started; open {path} yourself")
    return 0


def evaluate_artifact(
    ctx: Context, meta: ModelMetadata, artifact: bytes, args: argparse.Namespace, bar: StepBar
) -> DrawnCard:
    """The card of `artifact` (whose metadata `meta` will be, bar the version), drawn from
    the labelled CSV; PublishError or InvalidInput naming the problem."""
    from common.cards.publish import draw_card
    from common.runtimes import load_model

    with bar.step(f"read {args.eval_data}"):
        rows = read_labelled_csv(
            Path(args.eval_data), meta.features, meta.classes, args.label_column
        )
    with bar.step("load the artifact"):
        # As a worker loads it: pickle refused unless SERVING_ALLOW_UNSAFE_PICKLE.
        estimator = load_model(meta, artifact, ctx.settings).estimator
    with bar.step(f"evaluate on {len(rows.y)} rows and draw the card"):
        try:
            return draw_card(estimator, rows.x, rows.y, meta)
        except (AttributeError, TypeError, ValueError) as exc:
            raise PublishError(f"could not evaluate the model on {args.eval_data}: {exc}") from None


def metrics_of(card: DrawnCard) -> dict[str, float]:
    """The held-out figures, for a metadata that records none of its own."""
    return card.evaluation.metrics | {"n_test": float(card.evaluation.n_test)}
