"""Rollout rules: aliases resolve like versions, a split picks by weight (sticky per key or
per request), a shadow takes its share, and the shadow report compares rows as logged."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from common.errors import InvalidInput, ModelNotFound
from common.log_rows import log_row, shadow_of
from common.prediction_log import PredictionLogRepo
from common.prediction_log.shadow_report import shadow_report
from common.registry import Registry
from common.rollout import Rollout, ShadowRule, check_alias, check_split, pick, shadowed

ARTIFACT = b"artifact bytes"


def test_a_split_per_request_lands_by_weight() -> None:
    picks = Counter(pick({"1": 90, "2": 10}, None) for _ in range(20_000))
    assert set(picks) == {"1", "2"}
    assert 0.88 < picks["1"] / 20_000 < 0.92


def test_a_sticky_split_gives_a_caller_one_version_and_spreads_callers() -> None:
    split = {"1": 50, "2": 50}
    for caller in ("a", "b", "c"):
        assert len({pick(split, f"{caller}:xgboost") for _ in range(50)}) == 1
    callers = Counter(pick(split, f"key-{i}:xgboost") for i in range(4000))
    assert 0.45 < callers["1"] / 4000 < 0.55


def test_a_zero_weight_takes_no_traffic() -> None:
    assert check_split({"1": 100, "2": 0}, ["1", "2"]) == {"1": 100}
    assert {pick({"1": 100}, None) for _ in range(100)} == {"1"}


@pytest.mark.parametrize(
    "weights,problem",
    [
        ({}, "at least one version"),
        ({"3": 10}, r"unknown versions in the split: \['3'\]"),
        ({"1": 0, "2": 0}, "add up to 0"),
        ({"1": -5, "2": 10}, ">= 0"),
    ],
)
def test_bad_splits_are_named(weights: dict[str, int], problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        check_split(weights, ["1", "2"])


@pytest.mark.parametrize(
    "alias,problem", [("2", "invalid alias"), ("1x", "invalid alias"), ("v1", "is a version")]
)
def test_bad_aliases_are_named(alias: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        check_alias(alias, ["1", "v1"])


def test_a_shadow_takes_its_share_and_never_shadows_itself() -> None:
    rule = ShadowRule(version="2", fraction=0.2)
    share = sum(shadowed(rule, "1") for _ in range(20_000)) / 20_000
    assert 0.18 < share < 0.22
    assert not any(shadowed(rule, "2") for _ in range(1000))
    assert not shadowed(None, "1")


def test_aliases_resolve_wherever_a_version_does(registry: Registry, meta_fields) -> None:
    for _ in range(3):
        registry.publish(meta_fields(), ARTIFACT, activate=True)
    registry.activate("xgboost", "2")
    registry.save_rollout("xgboost", Rollout(aliases={"challenger": "3"}))
    catalog = registry.catalog()
    assert catalog.resolve("xgboost", "challenger").version == "3"
    assert catalog.resolve("xgboost", "champion").version == "2"  # the active version
    assert catalog.resolve("xgboost", "1").version == "1"
    with pytest.raises(ModelNotFound, match=r"aliases: \['challenger', 'champion'\]"):
        catalog.resolve("xgboost", "nope")


def test_a_rollout_is_kept_in_registry_json_and_an_empty_one_removed(
    registry: Registry, meta_fields
) -> None:
    registry.publish(meta_fields(), ARTIFACT, activate=True)
    rollout = Rollout(traffic={"1": 100}, shadow=ShadowRule(version="1", fraction=0.5))
    registry.save_rollout("xgboost", rollout)
    assert Registry(registry.store).state().rollout("xgboost") == rollout
    registry.save_rollout("xgboost", Rollout())
    assert "xgboost" not in Registry(registry.store).state().rollouts
    assert registry.state().active_by_type == {"xgboost": "1"}  # untouched


def _logged(request_id: str, version: str, labels: list[str], probs: list[list[float]]) -> dict:
    output = {"labels": labels, "probabilities": probs}
    return log_row(request_id, ("t", version), len(labels), [[0.0]] * len(labels), output, 0.0)


def test_the_shadow_report_compares_each_shadow_with_its_primary(engine: Engine) -> None:
    repo = PredictionLogRepo(engine)
    repo.record(
        [
            _logged("p1", "1", ["a", "b"], [[0.9, 0.1], [0.2, 0.8]]),
            _logged("s1", "2", ["a", "a"], [[0.7, 0.3], [0.6, 0.4]]) | shadow_of("p1"),
            _logged("p2", "1", ["b"], [[0.4, 0.6]]),
            _logged("s2", "2", ["b"], [[0.4, 0.6]]) | shadow_of("p2"),
            _logged("s3", "2", ["a"], [[1.0, 0.0]]) | shadow_of("never-logged"),
        ]
    )
    report = shadow_report(engine, "t", 100)
    assert report["requests"] == 2 and report["rows"] == 3 and report["unmatched"] == 1
    assert report["label_agreement"] == pytest.approx(2 / 3)
    # |0.9-0.7|, |0.1-0.3|, |0.2-0.6|, |0.8-0.4|, 0, 0 over 6 probabilities
    assert report["mean_abs_probability_difference"] == pytest.approx(1.2 / 6)
    assert report["shadow_versions"] == ["2"] and report["primary_versions"] == ["1"]
    assert shadow_report(engine, "t", 1)["unmatched"] == 1  # the newest shadow row only
    assert shadow_report(engine, "other", 100)["label_agreement"] is None


def test_log_rows_are_not_shadows_unless_marked() -> None:
    row = _logged("p", "1", ["a"], [[1.0, 0.0]])
    assert (row["shadow"], row["primary_request_id"]) == (False, None)
    assert row["created_at"] <= datetime.now(UTC)
