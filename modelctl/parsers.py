"""The subcommands' arguments, each with a description and examples (`--help`)."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from modelctl.arguments import DEFAULT_BASE_URL, DEFAULT_REPORT_ROWS, parse_weight, positive

Subparsers = Any  # argparse's _SubParsersAction, which it does not export
HELP_WIDTH = 88


def add(sub: Subparsers, name: str, handler: str, summary: str, about: str, examples: str) -> Any:
    """`handler` is "module:function" in modelctl, imported only when the command runs."""
    parser = sub.add_parser(
        name,
        help=summary,
        description=textwrap.fill(about, HELP_WIDTH),
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The parser too: a command refuses a wrong mix of arguments as argparse does.
    parser.set_defaults(handler=handler, parser=parser)
    return parser


def json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON, for scripts")


def add_model_commands(sub: Subparsers) -> None:
    train = add(
        sub, "train-demo", "models:cmd_train_demo", "train and publish the two demo models",
        "Train the demo XGBoost and logistic-regression models on scikit-learn's "
        "breast-cancer data, evaluate each on its held-out quarter, draw its model card "
        "and publish both (active; xgboost is the default model).",
        "  modelctl train-demo\n  modelctl train-demo --if-empty   # as `make run` does",
    )  # fmt: skip
    train.add_argument("--if-empty", action="store_true", help="only if the store has no models")

    listing = add(
        sub, "list", "models:cmd_list", "list models and versions",
        "Every version of every type: when it was published, whether it is its type's "
        "active version or the default model (POST /predict), whether its artifact was "
        "deleted, its aliases, its traffic weight and shadow share, and its metrics.",
        "  modelctl list\n  modelctl list --json | jq '.[].version'",
    )  # fmt: skip
    json_flag(listing, "the versions")

    show = add(
        sub, "show", "models:cmd_show", "print a version's metadata",
        "A version's metadata.json: framework, library versions, artifact format and "
        "sha256, features with their types and ranges, classes, metrics.",
        "  modelctl show xgboost 1\n  modelctl show xgboost 1 --json | jq .sha256",
    )  # fmt: skip
    show.add_argument("model_type", metavar="TYPE")
    show.add_argument("version", metavar="VERSION")
    json_flag(show, "the metadata exactly, without colours")

    activate = add(
        sub, "activate", "models:cmd_activate", "make a version the active one of its type",
        "Make VERSION its type's active version (the `champion` alias). If the default "
        "model is of that type, it becomes the default too; --default makes it so anyway.",
        "  modelctl activate xgboost 2\n  modelctl activate logistic_regression 1 --default",
    )  # fmt: skip
    activate.add_argument("model_type", metavar="TYPE")
    activate.add_argument("version", metavar="VERSION")
    activate.add_argument("--default", action="store_true", help="also serve it on POST /predict")
    add_publish(sub)


def add_publish(sub: Subparsers) -> None:
    publish = add(
        sub, "publish", "models:cmd_publish", "publish an artifact trained elsewhere",
        "Publish an artifact with its metadata as the type's next version. With "
        "--eval-data, the model is first loaded as a worker loads it and evaluated on a "
        "labelled CSV the way the demo models are, and its model card is published beside "
        "it; if the metadata records no metrics, the held-out ones are recorded. Nothing "
        "is published when the CSV or the model does not fit the metadata.",
        "  modelctl publish --artifact model.ubj --metadata meta.json --activate\n"
        "  modelctl publish --artifact model.skops --metadata meta.json \\\n"
        "      --eval-data holdout.csv --label-column target",
    )  # fmt: skip
    publish.add_argument(
        "--artifact", required=True, metavar="FILE", help="XGBoost .ubj/.json or skops file"
    )
    publish.add_argument(
        "--metadata",
        required=True,
        metavar="FILE",
        help="JSON: model_type, framework, artifact_format, features, classes, ...",
    )
    publish.add_argument("--model-type", metavar="TYPE", help="override the metadata's model_type")
    publish.add_argument(
        "--eval-data",
        metavar="CSV",
        help="held-out rows: a header naming every feature (any order) and the label column",
    )
    publish.add_argument(
        "--label-column",
        default="target",
        metavar="NAME",
        help="the CSV's label column, of class names as the metadata's classes (default: target)",
    )
    publish.add_argument("--activate", action="store_true", help="make it its type's active one")
    publish.add_argument("--default", action="store_true", help="also serve it on POST /predict")


def add_rollout_commands(sub: Subparsers) -> None:
    alias = add(
        sub, "alias", "rollout:cmd_alias", "show, set or delete a type's aliases",
        "An alias names a version wherever a version goes (/predict/TYPE/ALIAS, jobs, "
        "/v2). `champion` is always the active version: pointing it elsewhere activates "
        "that version. With TYPE alone, show the type's rollout.",
        "  modelctl alias xgboost                      # show\n"
        "  modelctl alias xgboost challenger 2\n"
        "  modelctl alias xgboost champion 2           # activates 2\n"
        "  modelctl alias xgboost challenger --delete",
    )  # fmt: skip
    alias.add_argument("model_type", metavar="TYPE")
    alias.add_argument("alias", metavar="ALIAS", nargs="?")
    alias.add_argument("version", metavar="VERSION", nargs="?")
    alias.add_argument("--delete", action="store_true", help="remove ALIAS")
    json_flag(alias, "the rollout")

    traffic = add(
        sub, "traffic", "rollout:cmd_traffic", "show, set or clear a type's traffic split",
        "Split the type's requests (those naming no version) between versions by weight. "
        "The pick is sticky per caller key unless SERVING_TRAFFIC_STICKY=false.",
        "  modelctl traffic xgboost               # show\n"
        "  modelctl traffic xgboost 1=90 2=10\n"
        "  modelctl traffic xgboost --clear",
    )  # fmt: skip
    traffic.add_argument("model_type", metavar="TYPE")
    traffic.add_argument("weights", metavar="VERSION=WEIGHT", nargs="*", type=parse_weight)
    traffic.add_argument("--clear", action="store_true", help="remove the split")
    json_flag(traffic, "the rollout")

    shadow = add(
        sub, "shadow", "rollout:cmd_shadow", "show, set or clear a type's shadow; its report",
        "Score a share of the type's requests again on a shadow version (never returned, "
        "logged with shadow=true), and report how often it agrees with the versions that "
        "answered (read from the prediction log, SERVING_DATABASE_URL).",
        "  modelctl shadow xgboost                    # show\n"
        "  modelctl shadow xgboost 2 --fraction 0.2\n"
        "  modelctl shadow xgboost --report -n 500\n"
        "  modelctl shadow xgboost --clear",
    )  # fmt: skip
    shadow.add_argument("model_type", metavar="TYPE")
    shadow.add_argument("version", metavar="VERSION", nargs="?")
    shadow.add_argument(
        "--fraction", type=float, metavar="F", help="the share of requests, 0 < F <= 1"
    )
    shadow.add_argument("--clear", action="store_true", help="remove the shadow")
    shadow.add_argument("--report", action="store_true", help="compare shadow and primary")
    shadow.add_argument(
        "-n",
        type=positive,
        help=f"--report: the last N shadow rows (default {DEFAULT_REPORT_ROWS})",
    )
    json_flag(shadow, "the rollout or the report")


def add_card_command(sub: Subparsers) -> None:
    card = add(
        sub, "card", "cards:cmd_card", "write a version's model card (HTML), or open it",
        "Render the page GET /models/TYPE/VERSION/card serves (metadata, metrics, the "
        "held-out evaluation with its plots, the input schema, an example request) into "
        "one self-contained HTML file. It holds no API key: the example reads $API_KEY.",
        "  modelctl card xgboost 1                  # writes xgboost-1-card.html\n"
        "  modelctl card xgboost 2 --out card.html --open",
    )  # fmt: skip
    card.add_argument("model_type", metavar="TYPE")
    card.add_argument("version", metavar="VERSION", help="a version or an alias")
    card.add_argument("--out", metavar="FILE", help="default: TYPE-VERSION-card.html here")
    card.add_argument("--open", action="store_true", help="open the file in a web browser")
    card.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help=f"the API's address in the example request (default: {DEFAULT_BASE_URL})",
    )


def add_db_command(sub: Subparsers) -> None:
    db = add(
        sub, "db", "db:cmd_db", "upgrade the prediction log's schema, or show its revision",
        "The prediction log's schema is managed by Alembic migrations. The API and the "
        "workers upgrade it themselves at start-up; this does the same by hand (for a "
        "database the services may not alter), or shows the revision it is at.",
        "  modelctl db current\n"
        "  modelctl db upgrade                      # to the newest revision\n"
        "  SERVING_DATABASE_URL=postgresql+psycopg://log@db/serving modelctl db upgrade",
    )  # fmt: skip
    db.add_argument("action", choices=["upgrade", "current"])
    db.add_argument(
        "revision", nargs="?", default="head", help="upgrade: to this revision (default: head)"
    )
