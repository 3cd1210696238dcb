"""`python -m modelctl --help`: publish models and flip the active version."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.cache import notify_registry_changed
from common.errors import ServingError
from common.registry import Registry
from common.settings import Settings, get_settings
from common.store import create_store


def _registry(settings: Settings) -> Registry:
    return Registry(create_store(settings))


def cmd_train_demo(args: argparse.Namespace, settings: Settings) -> int:
    from common.cards.publish import publish_card
    from common.training import DEMO_DEFAULT, DEMO_TYPES, train_demo

    registry = _registry(settings)
    if args.if_empty and registry.catalog().models:
        print(f"store {registry.store.describe()} already holds models; nothing to do")
        return 0
    for model_type in DEMO_TYPES:
        trained = train_demo(model_type)
        meta = registry.publish(
            trained.metadata,
            trained.artifact,
            activate=True,
            make_default=model_type == DEMO_DEFAULT,
        )
        publish_card(registry.store, meta, trained.estimator, trained.x_test, trained.y_test)
        print(f"published {meta.model_type} v{meta.version} with its card ({meta.metrics})")
    notify_registry_changed(settings)
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    catalog = _registry(settings).catalog()
    active = catalog.state.active
    for model_type, metas in sorted(catalog.models.items()):
        for meta in metas:
            marks = []
            if catalog.state.active_by_type.get(model_type) == meta.version:
                marks.append("active")
            if active and (active.model_type, active.version) == (model_type, meta.version):
                marks.append("default")
            if meta.artifact_deleted_at:
                marks.append("deleted")
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in meta.metrics.items())
            print(
                f"{model_type}\t{meta.version}\t{meta.created_at:%Y-%m-%d %H:%M}\t"
                f"{','.join(marks) or '-'}\t{metrics}"
            )
    if not catalog.models:
        print("no models published")
    return 0


def cmd_activate(args: argparse.Namespace, settings: Settings) -> int:
    state = _registry(settings).activate(args.model_type, args.version, make_default=args.default)
    notify_registry_changed(settings)
    print(
        f"activated {args.model_type} v{args.version}; default model: "
        f"{state.active.model_type} v{state.active.version}"
        if state.active
        else ""
    )
    return 0


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    metadata = json.loads(Path(args.metadata).read_text())
    if args.model_type:
        metadata["model_type"] = args.model_type
    meta = _registry(settings).publish(
        metadata,
        Path(args.artifact).read_bytes(),
        activate=args.activate,
        make_default=args.default,
    )
    notify_registry_changed(settings)
    print(f"published {meta.model_type} v{meta.version} sha256={meta.sha256}")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    print(_registry(settings).metadata(args.model_type, args.version).model_dump_json(indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modelctl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train-demo", help="train and publish the two demo models")
    train.add_argument("--if-empty", action="store_true", help="only if the store has no models")
    train.set_defaults(func=cmd_train_demo)
    sub.add_parser("list", help="list models and versions").set_defaults(func=cmd_list)
    activate = sub.add_parser("activate", help="make a version the active one of its type")
    activate.add_argument("model_type")
    activate.add_argument("version")
    activate.add_argument("--default", action="store_true", help="also serve it on POST /predict")
    activate.set_defaults(func=cmd_activate)
    publish = sub.add_parser("publish", help="publish an artifact trained elsewhere")
    publish.add_argument("--artifact", required=True, help="XGBoost .ubj/.json or skops file")
    publish.add_argument(
        "--metadata",
        required=True,
        help="JSON: model_type, framework, artifact_format, features, classes, ...",
    )
    publish.add_argument("--model-type", help="override the metadata's model_type")
    publish.add_argument("--activate", action="store_true")
    publish.add_argument("--default", action="store_true")
    publish.set_defaults(func=cmd_publish)
    show = sub.add_parser("show", help="print a version's metadata")
    show.add_argument("model_type")
    show.add_argument("version")
    show.set_defaults(func=cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args, get_settings()))
    except ServingError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # unreadable file, invalid JSON
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
