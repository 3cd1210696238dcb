"""Rows of float64 values as bytes (little-endian, row after row) and back as lists:
how packed rows travel to the workers (queueing.packed_rows) and how the log keeps a
worker's inputs (common.prediction_log.repo). No NumPy: the API's image has none."""

from __future__ import annotations

import sys
from array import array
from typing import Any

DTYPE = "<f8"
ITEM_BYTES = 8


def float64_rows(data: bytes, n_features: int) -> list[list[float]]:
    """The rows as lists, built in C by a two-dimensional view of the bytes."""
    if not data:
        return []
    if sys.byteorder == "big":
        values = array("d", data)
        values.byteswap()
        data = values.tobytes()
    shape = [len(data) // (ITEM_BYTES * n_features), n_features]
    # typeshed's tolist() is one-dimensional; a 2-D view gives lists of floats
    rows: list[list[float]] = memoryview(data).cast("d", shape).tolist()  # type: ignore[assignment]
    return rows


def float64_rows_of(data: bytes, n_rows: int) -> list[list[float]]:
    """The rows as lists, given how many there are (the log keeps n_rows beside them)."""
    return float64_rows(data, len(data) // ITEM_BYTES // n_rows) if data else []


def float64_bytes(matrix: Any, n_rows: int) -> bytes | None:
    """A NumPy matrix's bytes if it is n_rows (at least one) of float64 values, else None:
    duck-typed, so that a process without NumPy never imports it."""
    dtype = getattr(matrix, "dtype", None)
    if dtype is None or getattr(dtype, "str", None) != DTYPE or n_rows < 1:
        return None
    if matrix.ndim != 2 or matrix.shape[0] != n_rows or matrix.shape[1] < 1:
        return None
    data: bytes = matrix.tobytes()  # C order: row after row, whatever the view's strides
    return data
