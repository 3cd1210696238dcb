"""The cheap first check of InputValidator: a row whose number of keys differs from the
model's number of features is refused naming expected and got, before pydantic."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from common.errors import InvalidInput
from common.input_problems import MAX_DETAILS
from common.registry import ModelMetadata
from common.schemas import InputValidator

FEATURES = [f"f{i:02d}" for i in range(30)]


@pytest.fixture
def validator() -> InputValidator:
    meta = ModelMetadata.model_validate(
        {
            "model_type": "wide",
            "version": "1",
            "framework": "xgboost",
            "artifact_format": "xgboost-ubj",
            "sha256": "a" * 64,
            "features": [{"name": name} for name in FEATURES],
            "classes": ["a", "b"],
            "created_at": datetime(2025, 1, 1, tzinfo=UTC),
        }
    )
    return InputValidator(meta, max_rows=1000)


def good_row() -> dict[str, float]:
    return {name: 0.5 for name in FEATURES}


def refusal(validator: InputValidator, data: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        validator.validate(data)
    return refused.value


def test_a_row_with_a_hundred_thousand_keys_is_refused_cheaply(
    validator: InputValidator,
) -> None:
    hostile = good_row() | {f"junk-{i}-" + "x" * 100: 1.0 for i in range(100_000)}

    started = time.perf_counter()
    error = refusal(validator, [good_row(), hostile])
    cheap = time.perf_counter() - started
    started = time.perf_counter()
    with pytest.raises(ValidationError):  # what the slow path would have done
        TypeAdapter(list[validator.row_model]).validate_python([hostile])  # type: ignore[name-defined]
    slow = time.perf_counter() - started
    print(f"\n100,000 unknown keys: refused in {cheap * 1e3:.1f} ms; pydantic {slow * 1e3:.1f} ms")

    assert error.message.startswith(
        "invalid input_data: row 1 has 100030 features where the model takes 30: row 1: junk-0-xxxx"
    )
    assert len(error.details) == MAX_DETAILS
    first = error.details[0]
    assert first["row"] == 1 and (first["expected"], first["got"]) == (30, 100_030)
    assert first["problem"] == "unknown feature"
    assert first["feature"] == "junk-0-" + "x" * 33 + "..."  # a huge key is cut short
    assert cheap < slow


def test_rows_missing_features_name_them_with_the_counts(validator: InputValidator) -> None:
    short = good_row()
    del short["f03"], short["f17"]

    error = refusal(validator, [good_row(), good_row(), short, good_row()])

    assert error.message == (
        "invalid input_data: row 2 has 28 features where the model takes 30: "
        "row 2: f03: missing; row 2: f17: missing"
    )
    assert error.details == [
        {"feature": name, "problem": "missing", "expected": 30, "got": 28, "row": 2}
        for name in ("f03", "f17")
    ]


def test_a_single_object_row_is_named_without_an_index(validator: InputValidator) -> None:
    error = refusal(validator, {"f00": 1.0})

    assert error.message.startswith("invalid input_data: 1 features where the model takes 30:")
    assert "row" not in error.details[0]
    assert len(error.details) == 29


def test_the_right_count_of_wrong_names_still_goes_to_pydantic(
    validator: InputValidator,
) -> None:
    renamed = good_row()
    del renamed["f05"]
    renamed["f5"] = 1.0

    error = refusal(validator, renamed)

    assert "features where the model takes" not in error.message
    assert {d["feature"] for d in error.details} == {"f05", "f5"}


def test_rows_of_the_right_width_pass(validator: InputValidator) -> None:
    assert validator.validate([good_row()] * 3) == [[0.5] * 30] * 3
