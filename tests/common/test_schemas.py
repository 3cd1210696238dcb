"""InputValidator: rows in metadata feature order, every bad value named precisely."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from common.errors import InvalidInput
from common.registry import ModelMetadata
from common.schemas import InputValidator
from tests.common.metadata import make_metadata


@pytest.fixture
def meta() -> ModelMetadata:
    return ModelMetadata.model_validate(
        {
            "model_type": "tiny",
            "version": "1",
            "framework": "xgboost",
            "artifact_format": "xgboost-ubj",
            "sha256": "a" * 64,
            "features": [
                {"name": "mean radius", "type": "float", "min": 6.5, "max": 28.1},
                {"name": "age", "type": "int"},
                {"name": "smoker", "type": "bool"},
                {"name": "z-score"},
            ],
            "classes": ["a", "b"],
            "created_at": datetime(2025, 1, 1, tzinfo=UTC),
        }
    )


@pytest.fixture
def validator(meta: ModelMetadata) -> InputValidator:
    return InputValidator(meta, max_rows=3)


def row(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"mean radius": 12.5, "age": 40, "smoker": False, "z-score": -0.25}
    values.update(overrides)
    return values


def test_single_row_gives_one_row_in_feature_order(validator: InputValidator) -> None:
    assert validator.validate(row()) == [[12.5, 40, False, -0.25]]


def test_keys_in_another_order_still_give_metadata_order(validator: InputValidator) -> None:
    shuffled = {"z-score": 3.0, "smoker": True, "age": 7, "mean radius": 9.0}

    assert list(shuffled) != ["mean radius", "age", "smoker", "z-score"]
    assert validator.validate(shuffled) == [[9.0, 7, True, 3.0]]


def test_list_of_rows_gives_rows_in_order(validator: InputValidator) -> None:
    rows = [row(), {"smoker": True, "z-score": 1.5, "mean radius": 20.0, "age": 1}]

    assert validator.validate(rows) == [[12.5, 40, False, -0.25], [20.0, 1, True, 1.5]]


def test_int_for_a_float_feature_is_accepted_and_becomes_a_float(
    validator: InputValidator,
) -> None:
    rows = validator.validate(row(**{"mean radius": 12, "z-score": 0}))

    assert rows == [[12.0, 40, False, 0.0]]
    assert type(rows[0][0]) is float
    assert type(rows[0][3]) is float
    assert type(rows[0][1]) is int
    assert type(rows[0][2]) is bool


def test_exactly_max_rows_is_accepted(validator: InputValidator) -> None:
    assert len(validator.validate([row()] * 3)) == 3


def test_more_than_max_rows_is_refused(validator: InputValidator) -> None:
    with pytest.raises(InvalidInput, match=r"too many rows: 4 > 3"):
        validator.validate([row()] * 4)


def test_empty_list_is_refused(validator: InputValidator) -> None:
    with pytest.raises(InvalidInput, match="empty list"):
        validator.validate([])


@pytest.mark.parametrize("value", ["12.5", 12.5, None, True, ("a",)])
def test_non_object_input_is_refused(validator: InputValidator, value: Any) -> None:
    with pytest.raises(InvalidInput, match="input_data must be an object"):
        validator.validate(value)


@pytest.mark.parametrize("value", [[1.0, 2.0], ["x"], [None]])
def test_list_of_non_objects_is_refused(validator: InputValidator, value: Any) -> None:
    with pytest.raises(InvalidInput, match="row 0"):
        validator.validate(value)


def _single_error(validator: InputValidator, data: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        validator.validate(data)
    return info.value


def test_missing_feature_is_named(validator: InputValidator) -> None:
    data = row()
    del data["age"]

    error = _single_error(validator, data)

    # Refused by the cheap count of keys, before pydantic: expected and got are named.
    assert error.message == "invalid input_data: 3 features where the model takes 4: age: missing"
    assert error.details == [{"feature": "age", "problem": "missing", "expected": 4, "got": 3}]


def test_unknown_feature_is_named(validator: InputValidator) -> None:
    error = _single_error(validator, row(colour=1.0))

    assert error.message == (
        "invalid input_data: 5 features where the model takes 4: colour: unknown feature"
    )
    assert error.details == [
        {"feature": "colour", "problem": "unknown feature", "expected": 4, "got": 5}
    ]


def test_internal_field_name_is_not_accepted_as_a_feature(validator: InputValidator) -> None:
    data = row()
    del data["age"]
    data["f1"] = 40

    error = _single_error(validator, data)

    assert {d["feature"] for d in error.details} == {"age", "f1"}


@pytest.mark.parametrize(
    ("feature", "value"),
    [
        ("mean radius", "12.5"),  # string in a float feature
        ("mean radius", True),  # bool in a float feature
        ("mean radius", None),
        ("mean radius", [1.0]),
        ("age", "40"),
        ("age", 40.5),
        ("age", True),  # bool in an int feature
        ("smoker", 1),
        ("smoker", "true"),
    ],
)
def test_wrongly_typed_value_names_the_feature(
    validator: InputValidator, feature: str, value: Any
) -> None:
    error = _single_error(validator, row(**{feature: value}))

    assert error.message.startswith(f"invalid input_data: {feature}: ")
    assert [d["feature"] for d in error.details] == [feature]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_float_is_refused_naming_the_feature(
    validator: InputValidator, value: float
) -> None:
    error = _single_error(validator, row(**{"z-score": value}))

    assert error.message == "invalid input_data: z-score: Input should be a finite number"
    assert error.details == [{"feature": "z-score", "problem": "Input should be a finite number"}]


@pytest.mark.parametrize("value", [3.5e38, -1.7e308])
def test_float_beyond_float32_is_refused_naming_the_feature(
    validator: InputValidator, value: float
) -> None:
    # XGBoost would read it as infinity; scikit-learn's scaler overflowed and the worker
    # failed every request batched with it.
    error = _single_error(validator, row(**{"z-score": value}))

    assert error.message == (
        "invalid input_data: z-score: out of range: beyond ±3.4028235e+38, the largest 32-bit float"
    )


def test_largest_float32_values_are_accepted(validator: InputValidator) -> None:
    big = 3.4028234663852886e38
    assert validator.validate(row(**{"z-score": big, "mean radius": -big}))[0][0] == -big


def test_errors_in_a_list_name_the_row_index(validator: InputValidator) -> None:
    bad = row(**{"mean radius": math.nan, "colour": 1.0})
    del bad["age"]  # the right number of keys, so pydantic names every problem

    error = _single_error(validator, [row(), row(), bad])

    assert "row 2: mean radius: Input should be a finite number" in error.message
    assert "row 2: age: missing" in error.message
    assert "row 0" not in error.message
    assert sorted(error.details, key=lambda d: d["feature"]) == [
        {"feature": "age", "problem": "missing", "row": 2},
        {"feature": "colour", "problem": "unknown feature", "row": 2},
        {"feature": "mean radius", "problem": "Input should be a finite number", "row": 2},
    ]


def test_errors_in_several_rows_each_name_their_row(validator: InputValidator) -> None:
    error = _single_error(validator, [row(age="x"), row(), row(smoker=2)])

    assert error.message.startswith("invalid input_data: row 0: age: ")
    assert "; row 2: smoker: " in error.message
    assert [(d["row"], d["feature"]) for d in error.details] == [(0, "age"), (2, "smoker")]


def test_many_errors_are_summarised(meta: ModelMetadata) -> None:
    validator = InputValidator(meta, max_rows=100)

    error = _single_error(validator, [{"junk": 1}] * 2)

    # per row: 4 missing features and one unknown one = 10 problems, 5 shown
    assert len(error.details) == 10
    assert error.message.endswith("(and 5 more)")


def test_invalid_input_is_a_422(validator: InputValidator) -> None:
    error = _single_error(validator, [])

    assert int(error.status) == 422
    assert error.to_dict()["type"] == "invalid_input"


def test_json_schema_requires_every_feature_by_name(validator: InputValidator) -> None:
    schema = validator.json_schema()

    assert sorted(schema["required"]) == sorted(["mean radius", "age", "smoker", "z-score"])
    assert list(schema["properties"]) == ["mean radius", "age", "smoker", "z-score"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["mean radius"]["type"] == "number"
    assert schema["properties"]["age"]["type"] == "integer"
    assert schema["properties"]["smoker"]["type"] == "boolean"
    assert schema["properties"]["mean radius"]["description"] == (
        "observed in training: 6.5 to 28.1"
    )
    assert "description" not in schema["properties"]["z-score"]


# The fast path (`_exact_rows`) against pydantic, on rows mixing right and wrong values.
ODD_VALUES: list[Any] = [
    0, 1, -7, 2.5, -0.0, 1e308, -1e308, math.inf, -math.inf, math.nan, 3.4e38, -3.5e38,
    True, False, None, "1.5", "", [], {}, 10**30, 10**400,
]  # fmt: skip


@pytest.mark.parametrize("seed", range(20))
def test_fast_path_agrees_with_pydantic(meta: ModelMetadata, seed: int) -> None:
    import random

    rng = random.Random(seed)
    validator = InputValidator(meta, max_rows=1000)
    for _ in range(300):
        rows = []
        for _ in range(rng.randint(1, 3)):
            values = row(**{"mean radius": rng.uniform(-5, 5), "age": rng.randint(-9, 9)})
            if rng.random() < 0.5:
                values[rng.choice(list(values))] = rng.choice(ODD_VALUES)
            if rng.random() < 0.1:
                values.pop(rng.choice(list(values)))
            if rng.random() < 0.1:
                values["extra"] = 1.0
            rows.append(values)
        fast = validator._exact_rows(rows)
        try:
            expected = validator.validate(rows)
        except InvalidInput:
            assert fast is None, rows  # the fast path never accepts what pydantic refuses
            continue
        if fast is not None:
            assert fast == expected and [list(map(type, r)) for r in fast] == [
                list(map(type, r)) for r in expected
            ], rows


def test_fast_path_takes_exact_rows_and_leaves_the_rest(meta: ModelMetadata) -> None:
    validator = InputValidator(meta, max_rows=10)
    assert validator._exact_rows([row(), row(age=3)]) == [
        [12.5, 40, False, -0.25],
        [12.5, 3, False, -0.25],
    ]
    assert validator._exact_rows([row(), row(age=True)]) is None  # a bool is not an int
    assert validator._exact_rows([row(**{"mean radius": 12})]) is None  # pydantic converts
    assert validator._exact_rows([row(**{"z-score": math.nan})]) is None
    assert validator._exact_rows([row(), "not a row"]) is None


def test_single_feature_models_use_the_fast_path() -> None:
    meta = ModelMetadata.model_validate(
        {
            "model_type": "one",
            "version": "1",
            "framework": "xgboost",
            "artifact_format": "xgboost-ubj",
            "sha256": "a" * 64,
            "features": [{"name": "x"}],
            "classes": ["a", "b"],
            "created_at": datetime(2025, 1, 1, tzinfo=UTC),
        }
    )
    validator = InputValidator(meta, max_rows=10)
    assert validator._exact_rows([{"x": 1.5}, {"x": -2.0}]) == [[1.5], [-2.0]]
    assert validator.validate([{"x": 1.5}]) == [[1.5]]


class _Float(float):
    pass


# (feature types, a good row's values): a mixed model and an all-float one
PINNED_MODELS = {
    "mixed": (["float", "int", "bool", "float"], [12.5, 40, False, -0.25]),
    "floats": (["float"] * 30, [i / 7 - 2.0 for i in range(30)]),
}
BIG = 3.4028234663852886e38  # MAX_MAGNITUDE: pydantic accepts it


def _pinned_cases(types: list[str], good: list[Any]) -> dict[str, list[Any]]:
    names = [f"feature {i}" for i in range(len(types))]

    def one(**changes: Any) -> dict[str, Any]:
        values = dict(zip(names, good, strict=True))
        for index, value in changes.items():
            values[names[int(index[1:])]] = value
        return values

    last = len(types) - 1
    int_at = types.index("int") if "int" in types else None
    missing = one()
    del missing[names[1]]
    swapped = one()  # as many keys as the features, one of them unknown
    del swapped[names[1]]
    swapped["colour"] = 1.0
    extra = {**one(), "colour": 1.0}
    cases: dict[str, list[Any]] = {
        "good": [one()],
        "good, many": [one(), one(v0=-1.5), one(**{f"v{last}": 1e30})],
        "good, 2,500 rows": [one(v0=float(i)) for i in range(2500)],
        "largest magnitude": [one(v0=BIG, **{f"v{last}": -BIG})],
        "huge but valid sums": [one(v0=1e38, **{f"v{last}": 1e38})] * 40,
        "int where a float goes": [one(v0=12)],
        "bool where a float goes": [one(v0=True)],
        "float subclass": [one(v0=_Float(1.5))],
        "NaN": [one(), one(**{f"v{last}": math.nan})],
        "inf": [one(v0=math.inf)],
        "-inf": [one(v0=-math.inf)],
        "1e39": [one(v0=1e39)],
        "just beyond the largest": [one(v0=math.nextafter(BIG, math.inf))],
        "missing key": [one(), missing],
        "unknown key in a missing one's place": [swapped],
        "extra key": [extra],
        "non-dict row": [one(), list(good)],
        "dict subclass": [type("Row", (dict,), {})(one())],
        "bad row in the second thousand": [one()] * 1500 + [one(v0=math.nan)],
        "string": [one(v0="1.5")],
        "None": [one(v0=None)],
    }
    if int_at is not None:
        cases |= {
            "bool where an int goes": [one(**{f"v{int_at}": True})],
            "float where an int goes": [one(**{f"v{int_at}": 40.0})],
            "huge int": [one(**{f"v{int_at}": 10**39})],
            "int too large for a float": [one(**{f"v{int_at}": 10**400})],
            "int where a bool goes": [one(v2=0)],
        }
    return cases


PINNED = [
    (model, case, rows)
    for model, (types, good) in PINNED_MODELS.items()
    for case, rows in _pinned_cases(types, good).items()
]
GOOD = {"good", "good, many", "good, 2,500 rows"}


@pytest.mark.parametrize(("model", "case", "rows"), PINNED, ids=[f"{m}: {c}" for m, c, _ in PINNED])
def test_fast_path_returns_none_or_what_pydantic_returns(
    model: str, case: str, rows: list[Any]
) -> None:
    types, _ = PINNED_MODELS[model]
    meta = make_metadata([(f"feature {i}", t) for i, t in enumerate(types)])
    validator = InputValidator(meta, max_rows=10_000)

    fast = validator._exact_rows(rows)
    try:
        expected: list[list[Any]] | None = validator._through_pydantic(rows, single=False)
    except InvalidInput:
        expected = None

    if case in GOOD:
        assert fast is not None
    if fast is not None:
        assert expected is not None, "the fast path took what pydantic refuses"
        assert fast == expected
        assert [list(map(type, r)) for r in fast] == [list(map(type, r)) for r in expected]
        assert all(type(r) is list for r in fast)
