"""Prediction cache keys: one key per (type, version, artifact, rows), nothing shared."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.cache import (
    models_epoch_key,
    prediction_key,
    prediction_pattern,
    registry_channel,
    rows_digest,
)
from common.registry import ModelMetadata

ROWS = [[1.0, 2.5], [3.0, -4.0]]


def meta(model_type: str = "xgboost", version: str = "1", sha: str = "a" * 64) -> ModelMetadata:
    return ModelMetadata.model_validate({
        "model_type": model_type, "version": version, "framework": "xgboost",
        "artifact_format": "xgboost-ubj", "sha256": sha,
        "features": [{"name": "alpha"}, {"name": "beta"}], "classes": ["a", "b"],
        "created_at": datetime(2025, 1, 1, tzinfo=UTC),
    })


def test_equal_rows_give_equal_keys() -> None:
    copy = [list(r) for r in ROWS]

    assert prediction_key("p:", meta(), ROWS) == prediction_key("p:", meta(), copy)


def test_key_has_the_prefix_and_matches_the_pattern() -> None:
    key = prediction_key("serving:", meta(), ROWS)

    assert key.startswith("serving:pred:xgboost:1:")
    assert prediction_pattern("serving:") == "serving:pred:*"


def test_different_versions_give_different_keys() -> None:
    assert prediction_key("p:", meta(version="1"), ROWS) != prediction_key(
        "p:", meta(version="2"), ROWS)


def test_different_model_types_give_different_keys() -> None:
    assert prediction_key("p:", meta("xgboost"), ROWS) != prediction_key(
        "p:", meta("logistic_regression"), ROWS)


@pytest.mark.parametrize("other", ["b" * 64, "a" * 15 + "b" + "a" * 48])
def test_different_artifact_sha256_give_different_keys(other: str) -> None:
    assert prediction_key("p:", meta(sha="a" * 64), ROWS) != prediction_key(
        "p:", meta(sha=other), ROWS)


@pytest.mark.parametrize(
    "other",
    [
        [[1.0, 2.5], [3.0, -4.0000001]],  # one value changed slightly
        [[3.0, -4.0], [1.0, 2.5]],  # rows swapped
        [[2.5, 1.0], [3.0, -4.0]],  # values swapped within a row
        [[1.0, 2.5]],  # a row fewer
        [[1.0, 2.5], [3.0, -4.0], [3.0, -4.0]],  # a row more
        [[1.0, 2.5, 3.0, -4.0]],  # same numbers, other row boundaries
    ],
)
def test_different_rows_give_different_keys(other: list[list[float]]) -> None:
    assert prediction_key("p:", meta(), ROWS) != prediction_key("p:", meta(), other)


def test_different_prefixes_give_different_keys() -> None:
    assert prediction_key("a:", meta(), ROWS) != prediction_key("b:", meta(), ROWS)


def test_rows_digest_is_a_stable_hex_digest() -> None:
    digest = rows_digest(ROWS)

    assert digest == rows_digest([[1.0, 2.5], [3.0, -4.0]])
    assert len(digest) == 40
    int(digest, 16)


def test_bool_and_number_rows_differ() -> None:
    assert rows_digest([[True]]) != rows_digest([[1]])


def test_channel_and_epoch_keys_use_the_prefix() -> None:
    assert registry_channel("s:") == "s:registry-changed"
    assert models_epoch_key("s:") == "s:models-epoch"


def test_each_owner_has_its_own_entry_unless_the_scope_is_global() -> None:
    a = prediction_key("p:", meta(), ROWS, "owner-a")
    b = prediction_key("p:", meta(), ROWS, "owner-b")

    assert a != b
    assert prediction_key("p:", meta(), ROWS, "owner-a") == a
    assert prediction_key("p:", meta(), ROWS) not in {a, b}  # the shared one is apart
    assert all(key.startswith("p:pred:xgboost:1:") for key in (a, b))
