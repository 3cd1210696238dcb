"""Rolling versions out: aliases, a traffic split, a shadow and its report. Every change
goes through RolloutService, the API's own rules, which writes registry.json and tells
the running API processes (a warning, not a failure, when Redis cannot be reached)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from common.errors import BackendUnavailable, InvalidInput
from common.rollout import ShadowRule, Weight
from modelctl.arguments import DEFAULT_REPORT_ROWS
from modelctl.context import Context
from modelctl.listing import report_table, rollout_table

_WEIGHT: TypeAdapter[int] = TypeAdapter(Weight)


def split_of(pairs: list[tuple[str, int]]) -> dict[str, int]:
    """The parsed `VERSION=WEIGHT` arguments as a split, each weight within the bounds
    the API's body takes; which versions may be in it is RolloutService's to check."""
    split: dict[str, int] = {}
    for version, weight in pairs:
        if version in split:
            raise InvalidInput(f"version {version!r} is given twice in the split")
        try:
            split[version] = _WEIGHT.validate_python(weight)
        except ValidationError as exc:
            why = exc.errors()[0]["msg"].lower()
            raise InvalidInput(f"the weight of version {version!r}: {why}") from None
    return split


def cmd_alias(args: argparse.Namespace, ctx: Context) -> int:
    model_type, alias, version = args.model_type, args.alias, args.version
    if alias is None:
        if args.delete:
            args.parser.error("--delete needs the ALIAS to remove")
        state = ctx.rollout(lambda service: service.state(model_type))
    elif args.delete:
        if version is not None:
            args.parser.error("--delete takes no VERSION")
        state = ctx.rollout(lambda service: service.delete_alias(model_type, alias))
    elif version is None:
        args.parser.error(f"give the VERSION {alias!r} should point at, or --delete")
    else:
        state = ctx.rollout(lambda service: service.set_alias(model_type, alias, version))
    show_state(ctx, state, args.json)
    return 0


def cmd_traffic(args: argparse.Namespace, ctx: Context) -> int:
    model_type = args.model_type
    if args.clear and args.weights:
        args.parser.error("--clear takes no VERSION=WEIGHT")
    if args.clear:
        state = ctx.rollout(lambda service: service.set_traffic(model_type, None))
    elif args.weights:
        split = split_of(args.weights)
        state = ctx.rollout(lambda service: service.set_traffic(model_type, split))
    else:
        state = ctx.rollout(lambda service: service.state(model_type))
    show_state(ctx, state, args.json)
    return 0


def cmd_shadow(args: argparse.Namespace, ctx: Context) -> int:
    model_type, version = args.model_type, args.version
    chosen = [name for name, on in [("VERSION", version), ("--clear", args.clear)] if on]
    if args.report:
        if chosen or args.fraction is not None:
            args.parser.error("--report takes no VERSION, --fraction or --clear")
        return shadow_report(ctx, model_type, args.n or DEFAULT_REPORT_ROWS, args.json)
    if args.n is not None:
        args.parser.error("-n goes with --report")
    if len(chosen) == 2 or (args.clear and args.fraction is not None):
        args.parser.error("--clear takes no VERSION or --fraction")
    if version is not None and args.fraction is None:
        args.parser.error(f"give the share of requests {version!r} scores: --fraction 0.2")
    if version is None and args.fraction is not None:
        args.parser.error("--fraction needs the shadow's VERSION")
    if args.clear:
        state = ctx.rollout(lambda service: service.set_shadow(model_type, None))
    elif version is not None:
        rule = shadow_rule(version, args.fraction)
        state = ctx.rollout(lambda service: service.set_shadow(model_type, rule))
    else:
        state = ctx.rollout(lambda service: service.state(model_type))
    show_state(ctx, state, args.json)
    return 0


def shadow_rule(version: str, fraction: float) -> ShadowRule:
    try:
        return ShadowRule(version=version, fraction=fraction)
    except ValidationError as exc:
        raise InvalidInput(f"--fraction {fraction}: {exc.errors()[0]['msg'].lower()}") from None


def shadow_report(ctx: Context, model_type: str, limit: int, as_json: bool) -> int:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    url = make_url(ctx.settings.database_url)
    file = url.database if url.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not Path(file).exists():
        # Connecting would create an empty database there, and report nothing.
        raise BackendUnavailable(
            f"no prediction log at {file} (SERVING_DATABASE_URL); "
            "run this where the services write theirs"
        )
    try:
        report = ctx.rollout(lambda service: service.shadow_report(model_type, limit))
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        where = url.render_as_string(hide_password=True)
        raise BackendUnavailable(f"the prediction log at {where} failed: {first}") from None
    if as_json:
        ctx.output.json(report)
    else:
        ctx.output.table(report_table(report, limit))
    return 0


def show_state(ctx: Context, state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        ctx.output.json(state)
    else:
        ctx.output.table(rollout_table(state))
