"""The plan of a job's input object: its format, row count and slices, as plain JSON.

A plan travels in Celery task messages, so it and each slice turn into dicts of ints,
strings and lists and back. Each slice carries everything a chunk task needs to read
it, so a chunk's message holds its own slice and not the whole plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

Format: TypeAlias = Literal["csv", "parquet"]
PARQUET_SUFFIXES = (".parquet", ".pq")


def input_format(key: str) -> Format:
    """Parquet by the key's suffix, CSV otherwise (the README's `input_object` is CSV)."""
    return "parquet" if key.lower().endswith(PARQUET_SUFFIXES) else "csv"


@dataclass(frozen=True)
class CsvSlice:
    """Whole lines [start, stop) of a CSV object, in bytes; `first_line` is the line
    number of its first line (the header is line 1); `columns` the header's index of
    each of the model's features, in the model's order."""

    start: int
    stop: int
    first_line: int
    n_rows: int
    columns: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "csv",
            "start": self.start,
            "stop": self.stop,
            "first_line": self.first_line,
            "n_rows": self.n_rows,
            "columns": list(self.columns),
        }


@dataclass(frozen=True)
class ParquetSlice:
    """Rows [start, stop) of a Parquet object, counted from 0 (messages say row 1)."""

    start: int
    stop: int

    @property
    def n_rows(self) -> int:
        return self.stop - self.start

    def to_json(self) -> dict[str, Any]:
        return {"format": "parquet", "start": self.start, "stop": self.stop}


InputSlice: TypeAlias = CsvSlice | ParquetSlice


def slice_from_json(data: dict[str, Any]) -> InputSlice:
    try:
        if data["format"] == "csv":
            columns = tuple(int(c) for c in data["columns"])
            return CsvSlice(
                int(data["start"]),
                int(data["stop"]),
                int(data["first_line"]),
                int(data["n_rows"]),
                columns,
            )
        if data["format"] == "parquet":
            return ParquetSlice(int(data["start"]), int(data["stop"]))
    except (KeyError, TypeError, ValueError):
        pass
    # A message we wrote ourselves: this is a bug or a version skew, not the user's input.
    raise ValueError(f"not a slice of a job's input: {str(data)[:200]}")


@dataclass(frozen=True)
class InputPlan:
    format: Format
    n_rows: int
    slices: tuple[InputSlice, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "n_rows": self.n_rows,
            "slices": [piece.to_json() for piece in self.slices],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputPlan:
        fmt = data.get("format")
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"not an input format: {str(fmt)[:50]}")
        try:
            slices = tuple(slice_from_json(piece) for piece in data["slices"])
            return cls(fmt, int(data["n_rows"]), slices)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a plan of a job's input: {str(data)[:200]}") from exc
