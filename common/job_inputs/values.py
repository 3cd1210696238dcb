"""What the CSV and Parquet readers share: the checks on values, and how problems are told.

A job's input is refused as a whole, with its first few problems, each naming where it
is (a CSV line, a Parquet row) and the feature.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.errors import InvalidInput
from common.input_problems import MAX_MAGNITUDE

MAX_PROBLEMS = 5
OUT_OF_RANGE = f"is not finite or beyond ±{MAX_MAGNITUDE:.8g}"
_SHOWN_CHARS = 40  # a field may be 128 KiB: messages show its start


class Problems:
    """The first MAX_PROBLEMS problems of one object, raised together as one InvalidInput."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.items: list[str] = []

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_PROBLEMS

    def add(self, problem: str) -> None:
        if not self.full:
            self.items.append(problem)

    def raise_any(self) -> None:
        if self.items:
            message = f"invalid {self.what} input: " + "; ".join(self.items)
            raise InvalidInput(message, {"problems": list(self.items)})


def shown(text: str) -> str:
    """A value of the user's, quoted for a message, and cut short."""
    if len(text) > _SHOWN_CHARS:
        return repr(text[:_SHOWN_CHARS]) + "..."
    return repr(text)


def record_values(
    record: Sequence[str], columns: Sequence[int], names: Sequence[str]
) -> list[float] | str:
    """The record's features as floats in the model's order, or its first problem."""
    try:
        values = [float(record[column]) for column in columns]
    except (ValueError, IndexError):
        return _checked(record, columns, names)
    # One sum finds NaN, infinities and huge values at the cost of one pass; a sum
    # too large for valid values only sends the record to the careful check.
    if sum(map(abs, values)) <= MAX_MAGNITUDE:
        return values
    return _checked(record, columns, names)


def _checked(
    record: Sequence[str], columns: Sequence[int], names: Sequence[str]
) -> list[float] | str:
    if not record:
        return f"{names[0]}: missing value (the line is empty)"
    values: list[float] = []
    for column, name in zip(columns, names, strict=True):
        text = record[column].strip() if column < len(record) else ""
        if not text:
            return f"{name}: missing value"
        try:
            value = float(text)
        except ValueError:
            return f"{name}: {shown(text)} is not a number"
        if not abs(value) <= MAX_MAGNITUDE:
            return f"{name}: {shown(text)} {OUT_OF_RANGE}"
        values.append(value)
    return values


def too_many_rows(what: str, max_rows: int) -> InvalidInput:
    return InvalidInput(f"the {what} has more than {max_rows} rows, the limit for a job")


def no_rows(what: str) -> InvalidInput:
    return InvalidInput(f"the {what} has no rows")


def changed(key_hint: str) -> InvalidInput:
    """A slice that no longer reads as planned: the object was replaced during its job."""
    return InvalidInput(f"the input object changed while its job ran ({key_hint})")
