"""A labelled CSV for `modelctl publish --eval-data`: a header row naming the metadata's
features (any order; other columns are ignored) and the label column, then one row per
held-out example. Read into rows in the model's feature order and labels as indices into
the metadata's `classes`, which is what the card's evaluation takes."""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidInput
from common.registry import Feature

TRUE_WORDS = {"true": 1.0, "false": 0.0}
NAMED = 10  # missing columns named in the error, at most


@dataclass(frozen=True)
class LabelledRows:
    x: list[list[float]]
    y: list[int]  # indices into the metadata's classes


def read_labelled_csv(
    path: Path, features: list[Feature], classes: list[str | int], label_column: str
) -> LabelledRows:
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if not header or not any(name.strip() for name in header):
            raise InvalidInput(
                f"{path} is empty: it needs a header row naming the features and the "
                f"label column {label_column!r}"
            )
        *columns, label_at = header_columns(path, header, [f.name for f in features], label_column)
        labels = LabelMap(classes, label_column)
        x: list[list[float]] = []
        y: list[int] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # a blank line, as at the end of a hand-edited file
            where = f"{path} line {reader.line_num}"
            if len(row) != len(header):
                raise InvalidInput(f"{where} has {len(row)} fields; the header has {len(header)}")
            x.append([number(row[i], f, where) for f, i in zip(features, columns, strict=True)])
            y.append(labels.index(row[label_at], where))
    if not x:
        raise InvalidInput(f"{path} has a header but no rows to evaluate on")
    return LabelledRows(x, y)


def header_columns(
    path: Path, header: list[str], feature_names: list[str], label_column: str
) -> list[int]:
    """The position of each feature in the header, in the model's order, then the label's."""
    names = [name.strip() for name in header]
    if twice := sorted(name for name, n in Counter(names).items() if n > 1):
        raise InvalidInput(f"{path} names the columns {twice} more than once")
    missing = [name for name in feature_names if name not in names]
    if missing:
        shown = f"{missing}" if len(missing) <= NAMED else f"{missing[:NAMED]} and more"
        raise InvalidInput(
            f"{path} lacks the feature columns {shown} ({len(missing)} of the model's "
            f"{len(feature_names)}; the header must name every feature, in any order)"
        )
    if label_column not in names:
        raise InvalidInput(
            f"{path} has no label column {label_column!r}; name it with --label-column"
        )
    return [names.index(name) for name in [*feature_names, label_column]]


def number(text: str, feature: Feature, where: str) -> float:
    value = text.strip()
    if feature.type == "bool" and value.lower() in TRUE_WORDS:
        return TRUE_WORDS[value.lower()]
    try:
        parsed = float(value)
    except ValueError:
        parsed = math.nan
    if not math.isfinite(parsed):
        raise InvalidInput(f"{where}, column {feature.name!r}: {value!r} is not a finite number")
    return parsed


class LabelMap:
    """A label as written in the CSV -> its class's index: the class's name as the
    metadata writes it ("benign", "1"), or the same number written otherwise ("1.0")."""

    def __init__(self, classes: list[str | int], column: str) -> None:
        self.classes, self.column = classes, column
        self.by_text = {str(name): i for i, name in enumerate(classes)}
        self.by_number = {
            float(name): i
            for i, name in enumerate(classes)
            if isinstance(name, int) and not isinstance(name, bool)
        }

    def index(self, text: str, where: str) -> int:
        label = text.strip()
        found = self.by_text.get(label)
        if found is None and self.by_number:
            try:
                found = self.by_number.get(float(label))
            except ValueError:
                found = None
        if found is None:
            raise InvalidInput(
                f"{where}: unknown label {label!r} in column {self.column!r}; "
                f"the model's classes are {self.classes}"
            )
        return found
