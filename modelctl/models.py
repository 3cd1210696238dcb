"""Versions: train and publish the demo models, publish one trained elsewhere (with its
card, from a labelled CSV), list, show and activate."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from common.cache import notify_registry_changed
from common.errors import PublishError
from common.registry import ModelMetadata, check_name, sha256_hex
from modelctl import cards
from modelctl.context import Context
from modelctl.listing import catalog_rows, figures, listing_table
from modelctl.output import StepBar

if TYPE_CHECKING:
    from common.cards.publish import DrawnCard


def cmd_train_demo(args: argparse.Namespace, ctx: Context) -> int:
    from common.training import DEMO_TYPES

    registry = ctx.registry
    if args.if_empty and registry.catalog().models:
        ctx.output.line(f"store {registry.store.describe()} already holds models; nothing to do")
        return 0
    with ctx.output.steps() as bars:
        for model_type in DEMO_TYPES:
            meta = publish_demo(ctx, model_type, bars.bar(model_type, 3))
            ctx.output.line(
                f"published {meta.model_type} v{meta.version} with its card "
                f"({figures(meta.metrics)})"
            )
            notify_registry_changed(ctx.settings)
    return 0


def publish_demo(ctx: Context, model_type: str, bar: StepBar) -> ModelMetadata:
    from common.cards.publish import draw_card
    from common.training import DEMO_DEFAULT, train_demo

    with bar.step("train"):
        trained = train_demo(model_type)
    with bar.step("evaluate and draw the card"):
        card = draw_card(trained.estimator, trained.x_test, trained.y_test, trained.metadata)
    with bar.step(f"upload to {ctx.registry.store.describe()}"):
        default = model_type == DEMO_DEFAULT
        meta = ctx.registry.publish(
            trained.metadata, trained.artifact, activate=True, make_default=default
        )
        write_card(ctx, card, meta)
    bar.done(f"v{meta.version}")
    return meta


def cmd_publish(args: argparse.Namespace, ctx: Context) -> int:
    fields = read_metadata(Path(args.metadata), args.model_type)
    artifact = Path(args.artifact).read_bytes()
    meta = provisional_metadata(ctx, fields, artifact)
    card = None
    with ctx.output.steps() as bars:
        bar = bars.bar(meta.model_type, 1 + (cards.EVAL_STEPS if args.eval_data else 0))
        if args.eval_data:  # first, so that a bad CSV or model publishes nothing
            card = cards.evaluate_artifact(ctx, meta, artifact, args, bar)
            if not fields.get("metrics"):
                fields["metrics"] = cards.metrics_of(card)
        with bar.step(f"upload to {ctx.registry.store.describe()}"):
            meta = ctx.registry.publish(
                fields, artifact, activate=args.activate, make_default=args.default
            )
            if card is not None:
                write_card(ctx, card, meta)
        bar.done(f"v{meta.version}")
    notify_registry_changed(ctx.settings)
    ctx.output.line(f"published {meta.model_type} v{meta.version} sha256={meta.sha256}")
    if card is not None:
        ctx.output.line(
            f"with its card, on {card.evaluation.n_test} held-out rows: "
            f"{figures(card.evaluation.metrics)}"
        )
    return 0


def write_card(ctx: Context, card: DrawnCard, meta: ModelMetadata) -> None:
    """The card of a version just published; if the store fails now, the version is out
    all the same, and the error says so."""
    try:
        card.write(ctx.registry.store, meta)
    except Exception as exc:
        notify_registry_changed(ctx.settings)
        raise PublishError(
            f"published {meta.model_type} v{meta.version}, but writing its card failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def read_metadata(path: Path, model_type: str | None) -> dict[str, Any]:
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(fields).__name__}")
    if model_type:
        fields["model_type"] = model_type
    return fields


def provisional_metadata(ctx: Context, fields: dict[str, Any], artifact: bytes) -> ModelMetadata:
    """The metadata the version will have (its number may still change): checked before
    anything is evaluated or written, with one clear line for each problem."""
    model_type = check_name(str(fields.get("model_type", "")), "model type")
    if not artifact:
        raise PublishError("the artifact is empty")
    version = str(fields.get("version") or ctx.registry.next_version(model_type))
    try:
        return ModelMetadata.model_validate(
            {
                **fields,
                "version": version,
                "sha256": sha256_hex(artifact),
                "created_at": fields.get("created_at") or datetime.now(UTC),
                "artifact_deleted_at": None,
            }
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'metadata'}: {e['msg']}" for e in exc.errors()
        )
        raise PublishError(f"invalid metadata: {problems}") from None


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    catalog = ctx.registry.catalog()
    rows = catalog_rows(catalog)
    if args.json:
        ctx.output.json(rows)
    elif not rows:
        ctx.output.line("no models published")
    else:
        ctx.output.table(listing_table(rows, ctx.registry.store.describe()))
    return 0


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    meta = ctx.registry.metadata(args.model_type, args.version)
    if args.json:
        ctx.output.json(meta.model_dump(mode="json"))
    else:
        ctx.output.out.print_json(meta.model_dump_json(), indent=2)
    return 0


def cmd_activate(args: argparse.Namespace, ctx: Context) -> int:
    state = ctx.registry.activate(args.model_type, args.version, make_default=args.default)
    notify_registry_changed(ctx.settings)
    default = f"{state.active.model_type} v{state.active.version}" if state.active else "none"
    ctx.output.line(f"activated {args.model_type} v{args.version}; default model: {default}")
    return 0
