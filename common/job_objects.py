"""Jobs whose input is a CSV object in the model store, and whose results go beside it."""

from __future__ import annotations

import csv
import io
from typing import Any

from common.errors import InvalidInput
from common.registry import ModelMetadata
from common.schemas import MAX_MAGNITUDE

MAX_ERRORS = 5


def output_key(input_key: str) -> str:
    return input_key.rsplit(".", 1)[0] + ".predictions.csv"


def parse_csv(data: bytes, meta: ModelMetadata, max_rows: int) -> list[list[Any]]:
    """Rows in feature order. Columns the model does not use (ids, ...) are ignored;
    a missing feature or a value that is not a finite number is an error naming its row."""
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))
        header = next(reader)
    except (UnicodeDecodeError, StopIteration, csv.Error) as exc:
        raise InvalidInput(
            f"the input object is not a UTF-8 CSV file with a header: {exc}"
        ) from None
    missing = [name for name in meta.feature_names if name not in header]
    if missing:
        raise InvalidInput(f"the CSV lacks the model's features {missing[:10]}")
    columns = [header.index(name) for name in meta.feature_names]
    rows: list[list[Any]] = []
    problems: list[str] = []
    for number, record in enumerate(reader, start=2):  # line 1 is the header
        if len(rows) >= max_rows:
            raise InvalidInput(f"the CSV has more than {max_rows} rows")
        row = _row(record, columns, meta, number, problems)
        if row is not None:
            rows.append(row)
        if len(problems) >= MAX_ERRORS:
            break
    if problems:
        raise InvalidInput("invalid CSV input: " + "; ".join(problems))
    if not rows:
        raise InvalidInput("the CSV has no rows")
    return rows


def _row(
    record: list[str], columns: list[int], meta: ModelMetadata, number: int, problems: list[str]
) -> list[Any] | None:
    values: list[Any] = []
    for column, feature in zip(columns, meta.features, strict=True):
        text = record[column].strip() if column < len(record) else ""
        try:
            value = float(text)
        except ValueError:
            problems.append(f"line {number}: {feature.name}: {text!r} is not a number")
            return None
        if not abs(value) <= MAX_MAGNITUDE:
            problems.append(
                f"line {number}: {feature.name}: {text!r} is not finite or beyond "
                f"±{MAX_MAGNITUDE:.8g}"
            )
            return None
        values.append(value)
    return values


def results_csv(meta: ModelMetadata, labels: list[Any], probabilities: list[list[float]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row", "label", *(f"p_{c}" for c in meta.classes)])
    for i, (label, probs) in enumerate(zip(labels, probabilities, strict=True)):
        writer.writerow([i, label, *probs])
    return buffer.getvalue().encode()
