"""Parsing `modelctl traffic TYPE 1=90 2=10` and friends: the shape while parsing, the
bounds from the domain's own rule."""

from __future__ import annotations

import argparse

import pytest

from common.errors import InvalidInput
from modelctl.arguments import parse_weight, positive
from modelctl.cli import build_parser
from modelctl.rollout import split_of


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("1=90", ("1", 90)), ("1.2=0", ("1.2", 0)), (" v-2 = 10 ", ("v-2", 10)), ("a=-1", ("a", -1))],
)
def test_a_weight_is_version_equals_whole_number(text: str, parsed: tuple[str, int]) -> None:
    assert parse_weight(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("90", "write VERSION=WEIGHT, e.g. 1=90"),
        ("=90", "write VERSION=WEIGHT"),
        ("1=", "write VERSION=WEIGHT"),
        ("1=9.5", "the weight must be a whole number"),
        ("1=ten", "the weight must be a whole number"),
    ],
)
def test_a_malformed_weight_is_refused_while_parsing(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_weight(text)


def test_the_split_keeps_the_order_and_refuses_a_version_twice() -> None:
    assert split_of([("2", 10), ("1", 90)]) == {"2": 10, "1": 90}
    with pytest.raises(InvalidInput, match="version '1' is given twice"):
        split_of([("1", 10), ("1", 90)])


@pytest.mark.parametrize(
    ("weight", "message"),
    [(-1, "greater than or equal to 0"), (10_001, "less than or equal to 10000")],
)
def test_weights_out_of_the_apis_bounds_are_refused(weight: int, message: str) -> None:
    with pytest.raises(InvalidInput, match=f"the weight of version '1': input should be {message}"):
        split_of([("1", weight)])


def test_report_rows_are_at_least_one() -> None:
    assert positive("5") == 5
    for text in ["0", "-3", "x", ""]:
        with pytest.raises(argparse.ArgumentTypeError, match="not a whole number of at least 1"):
            positive(text)


def test_the_traffic_command_parses_its_weights() -> None:
    args = build_parser().parse_args(["traffic", "xgboost", "1=90", "2=10"])
    assert (args.model_type, args.weights, args.clear) == ("xgboost", [("1", 90), ("2", 10)], False)
    assert args.handler == "rollout:cmd_traffic"
