"""ExactBody: a body exactly right decoded straight into rows, the same rows (values and
types) as orjson's parse and the validator give; anything else declined (None), never
refused, so the usual path names the problem."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import InvalidInput
from common.schemas import InputValidator
from tests.common.metadata import make_metadata
from tests.common.test_schemas import GOOD, PINNED, PINNED_MODELS

MIXED = make_metadata([("mean radius", "float"), ("age", "int"), ("smoker", "bool")])
FLOATS = make_metadata([(f"feature {i}", "float") for i in range(30)])


def usual(validator: InputValidator, text: bytes) -> list[list[Any]] | None:
    """What orjson and the validator make of the body, None where they refuse it."""
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or set(payload) != {"input_data"}:
        return None
    try:
        return validator.validate(payload["input_data"])
    except InvalidInput:
        return None


def assert_agrees(validator: InputValidator, text: bytes) -> list[list[Any]] | None:
    exact = validator.exact_rows(text)
    if exact is not None:
        expected = usual(validator, text)
        assert expected is not None, f"took what the usual path refuses: {text[:200]!r}"
        assert exact == expected
        assert [list(map(type, r)) for r in exact] == [list(map(type, r)) for r in expected]
        assert all(type(r) is list for r in exact)
    return exact


def body(input_data: Any) -> bytes:
    # the standard library writes NaN, Infinity and ints of any size, as a hostile client may
    return json.dumps({"input_data": input_data}).encode()


@pytest.mark.parametrize(("model", "case", "rows"), PINNED, ids=[f"{m}: {c}" for m, c, _ in PINNED])
def test_the_validators_pinned_cases_agree(model: str, case: str, rows: list[Any]) -> None:
    types, _ = PINNED_MODELS[model]
    meta = make_metadata([(f"feature {i}", t) for i, t in enumerate(types)])
    validator = InputValidator(meta, max_rows=10_000)
    exact = assert_agrees(validator, body(rows))
    if case in GOOD:
        assert exact is not None


def test_one_row_or_a_list_in_feature_order() -> None:
    validator = InputValidator(MIXED, max_rows=3)
    one = {"smoker": True, "age": 40, "mean radius": 12.5}
    assert assert_agrees(validator, body(one)) == [[12.5, 40, True]]
    assert assert_agrees(validator, body([one, one | {"age": -1}])) == [
        [12.5, 40, True],
        [12.5, -1, True],
    ]


ROW = {"mean radius": 12.5, "age": 40, "smoker": False}


@pytest.mark.parametrize(
    "text",
    [
        b'{"input_data": []}',
        body([ROW] * 4),  # past max_rows
        b'{"input_data": {"mean radius": 12.5, "age": 40}}',
        b'{"input_data": {"mean radius": 12.5, "age": 40, "smoker": false, "x": 1}}',
        b'{"input_data": {"mean radius": 12.5, "age": 40.0, "smoker": false}}',
        b'{"input_data": {"mean radius": true, "age": 40, "smoker": false}}',
        b'{"input_data": {"mean radius": 12.5, "age": 40, "smoker": 0}}',
        b'{"input_data": {"mean radius": NaN, "age": 40, "smoker": false}}',
        b'{"input_data": {"mean radius": 1e39, "age": 40, "smoker": false}}',
        b'{"input_data": {"mean radius": 1e400, "age": 40, "smoker": false}}',
        b'{"input_data": {"mean radius": "1", "age": 40, "smoker": false}}',
        b'{"input_data": [' + orjson.dumps(ROW) + b", 1]}",
        b'{"input_data": ' + orjson.dumps(ROW) + b', "extra": 1}',
        b'{"input_data": ' + orjson.dumps(ROW) + b"}}",
        b'{"input_data": ' + orjson.dumps(ROW),
        b"[" + orjson.dumps(ROW) + b"]",
        b"\xef\xbb\xbf" + body(ROW),  # a byte-order mark: orjson refuses it, naming it
        body(ROW).replace(b"age", b"\xffage"),  # not UTF-8
        body(ROW).replace(b"age", b"\\ud800age"),  # a lone surrogate
        b"{}",
        b"",
    ],
)
def test_anything_not_exactly_right_is_declined(text: bytes) -> None:
    validator = InputValidator(MIXED, max_rows=3)
    assert validator.exact_rows(text) is None
    assert usual(validator, text) is None  # and the usual path refuses each of them


def test_duplicated_keys_keep_the_last_as_orjson_does() -> None:
    validator = InputValidator(MIXED, max_rows=3)
    row = b'{"mean radius": 1.0, "age": 1, "smoker": false, "mean radius": 2.5}'
    text = b'{"input_data": [], "input_data": [' + row + b"]}"
    assert assert_agrees(validator, text) == [[2.5, 1, False]]


def test_whitespace_around_the_body_is_json_too() -> None:
    validator = InputValidator(MIXED, max_rows=3)
    assert assert_agrees(validator, b" \n" + body(ROW) + b"\r\n\t") == [[12.5, 40, False]]


# JSON number text of every shape: digits past float64's precision, exponents that
# underflow to zero or overflow past the largest float32, negative zero.
DIGITS = st.text("0123456789", min_size=1, max_size=30)
NUMBER = st.builds(
    lambda sign, whole, fraction, exponent: sign + (whole.lstrip("0") or "0") + fraction + exponent,
    st.sampled_from(["", "-"]),
    DIGITS,
    st.one_of(st.just(""), DIGITS.map(lambda d: "." + d)),
    st.one_of(st.just(""), st.integers(-400, 400).map(lambda e: f"e{e:+d}")),
)
FLOAT_TEXT = st.one_of(NUMBER, st.floats(allow_nan=False, allow_infinity=False).map(repr))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(FLOAT_TEXT, min_size=30, max_size=30), min_size=1, max_size=5))
def test_number_text_of_any_shape_gives_the_same_floats(rows: list[list[str]]) -> None:
    validator = InputValidator(FLOATS, max_rows=10)
    objects = [
        "{" + ", ".join(f'"feature {i}": {v}' for i, v in enumerate(values)) + "}"
        for values in rows
    ]
    text = ('{"input_data": [' + ", ".join(objects) + "]}").encode()
    exact = assert_agrees(validator, text)
    expected = usual(validator, text)
    assert (exact is None) == (expected is None)  # declined only where the usual path refuses
    if exact is not None:  # bit for bit: -0.0 stays negative
        assert [list(map(math.copysign, [1.0] * 30, r)) for r in exact] == [
            list(map(math.copysign, [1.0] * 30, r)) for r in expected or []
        ]
