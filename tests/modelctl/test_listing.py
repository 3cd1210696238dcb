"""The tables: a type's rollout as RolloutService describes it, and the listing's rows."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from common.registry import Catalog, ModelMetadata, ModelRef, RegistryState
from common.rollout import Rollout, ShadowRule
from modelctl.listing import catalog_rows, rollout_table


def rendered(table: Any) -> list[list[str]]:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    lines = console.export_text().splitlines()
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if "│" in line]


def test_a_rollout_shows_each_version_with_its_aliases_weight_and_shadow() -> None:
    state = {
        "model_type": "xgboost",
        "versions": ["1", "2"],
        "aliases": {"champion": "1", "challenger": "2", "old": "0"},
        "traffic": {"1": 3, "2": 1},
        "shadow": {"version": "2", "fraction": 0.005},
    }
    assert rendered(rollout_table(state)) == [
        ["1", "champion", "3 (75%)", ""],
        ["2", "challenger", "1 (25%)", "0.5%"],
        ["0 (deleted)", "old", "", ""],
    ]


def meta(model_type: str, version: str, **extra: Any) -> ModelMetadata:
    return ModelMetadata(
        model_type=model_type,
        version=version,
        framework="xgboost",
        artifact_format="xgboost-ubj",
        sha256="0" * 64,
        features=[{"name": "a"}],
        classes=["x", "y"],
        created_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        **extra,
    )


def test_the_listing_marks_the_active_the_default_the_deleted_and_the_rollout() -> None:
    state = RegistryState(
        active=ModelRef(model_type="b", version="2"),
        active_by_type={"a": "1", "b": "2"},
        rollouts={
            "b": Rollout(
                aliases={"next": "3"},
                traffic={"2": 1},
                shadow=ShadowRule(version="3", fraction=0.5),
            )
        },
    )
    deleted = meta("b", "1", artifact_deleted_at=datetime(2026, 2, 1, tzinfo=UTC))
    catalog = Catalog(
        state, {"b": [deleted, meta("b", "2"), meta("b", "3")], "a": [meta("a", "1")]}
    )
    rows = catalog_rows(catalog)
    assert [(r["model_type"], r["version"], r["marks"]) for r in rows] == [
        ("a", "1", ["active"]),
        ("b", "1", ["deleted"]),
        ("b", "2", ["active", "default"]),
        ("b", "3", []),
    ]
    assert [(r["aliases"], r["traffic"], r["shadow"]) for r in rows[1:]] == [
        ([], None, None),
        ([], 1, None),
        (["next"], None, 0.5),
    ]
