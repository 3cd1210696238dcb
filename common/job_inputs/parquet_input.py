"""Parquet input objects: planned from the footer and one pass, read by row range.

Only the model's feature columns are ever read, a batch at a time, through a seekable
file on the store (on S3, ranged GETs). Feature columns must be integer, floating or
boolean, without nulls, their values finite and within ±MAX_MAGNITUDE. Rows are named
from 1. This module imports pyarrow, which only the worker image has: import it lazily.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.errors import InvalidInput, ServingError
from common.input_problems import MAX_MAGNITUDE
from common.job_inputs.plan import InputPlan, ParquetSlice
from common.job_inputs.values import (
    MAX_PROBLEMS,
    OUT_OF_RANGE,
    Problems,
    changed,
    no_rows,
    too_many_rows,
)
from common.registry import ModelMetadata

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

BATCH_ROWS = 16_384
# pyarrow reads each column chunk through a buffer of this size instead of whole, and
# without pre-buffering (which would hold a row group's columns at once, read on
# pyarrow's own threads), so a huge row group never sits in memory.
COLUMN_BUFFER_BYTES = 1024 * 1024


class _Guarded(io.RawIOBase):
    """The store's stream as pyarrow sees it, remembering the store's own errors:
    pyarrow raises OSError for a corrupt file too, and only this tells them apart."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream
        self.failure: Exception | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return int(self._call(self._stream.tell))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._call(self._stream.seek, offset, whence))

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._call(self._stream.read, len(view))
        view[: len(data)] = data
        return len(data)

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except Exception as exc:
            self.failure = exc
            raise


@contextmanager
def _parquet_file(stream: BinaryIO) -> Iterator[pq.ParquetFile]:
    guarded = _Guarded(stream)
    try:
        with pq.ParquetFile(guarded, buffer_size=COLUMN_BUFFER_BYTES, pre_buffer=False) as file:
            yield file
    except ServingError:
        raise
    except Exception as exc:
        if guarded.failure is not None:
            raise guarded.failure from None  # the store's, for the caller to translate
        if isinstance(exc, pa.ArrowException | OSError):
            # pyarrow's text may quote the file's bytes: name only the kind of error.
            name = type(exc).__name__
            raise InvalidInput(
                f"the input object is not a readable Parquet file ({name})"
            ) from None
        raise


def _feature_columns(schema: pa.Schema, meta: ModelMetadata) -> list[str]:
    names = meta.feature_names
    missing = [name for name in names if not schema.get_all_field_indices(name)]
    if missing:
        raise InvalidInput(f"the Parquet file lacks the model's features {missing[:10]}")
    repeated = [name for name in names if len(schema.get_all_field_indices(name)) > 1]
    if repeated:
        raise InvalidInput(f"the Parquet file has more than one column named {repeated[:10]}")
    types = {name: schema.field(name).type for name in names}
    wrong = [f"{name} ({kind})" for name, kind in types.items() if not _numeric(kind)]
    if wrong:
        raise InvalidInput(f"the Parquet file's feature columns are not numeric: {wrong[:10]}")
    return names


def _numeric(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    )


def _floats(column: pa.Array) -> pa.Array:
    # Unsafe: an int64 beyond 2**53 rounds, as float("9007199254740993") does in a CSV.
    return pc.cast(column, pa.float64(), safe=False)


def _check_batch(batch: pa.RecordBatch, names: list[str], first: int, problems: Problems) -> None:
    """Problems of rows [first, first + len(batch)), row by row (rows named from 1)."""
    found: list[tuple[int, int, str]] = []
    for position, name in enumerate(names):
        column = batch.column(name)
        values = _floats(column)
        good = pc.fill_null(pc.less_equal(pc.abs(values), MAX_MAGNITUDE), False)
        if pc.all(good).as_py():
            continue
        for i in pc.indices_nonzero(pc.invert(good))[:MAX_PROBLEMS].to_pylist():
            value = values[i].as_py()
            reason = "missing value (null)" if value is None else f"{value!r} {OUT_OF_RANGE}"
            found.append((first + i, position, f"row {first + i + 1}: {name}: {reason}"))
    for _, _, problem in sorted(found):
        problems.add(problem)


def plan_parquet(
    stream: BinaryIO, meta: ModelMetadata, max_rows: int, chunk_rows: int
) -> InputPlan:
    """The footer for the schema and row count, then one pass over the feature columns."""
    with _parquet_file(stream) as file:
        names = _feature_columns(file.schema_arrow, meta)
        n_rows = int(file.metadata.num_rows)
        if n_rows > max_rows:
            raise too_many_rows("Parquet file", max_rows)
        if not n_rows:
            raise no_rows("Parquet file")
        problems, first = Problems("Parquet"), 0
        for batch in file.iter_batches(BATCH_ROWS, columns=names, use_threads=False):
            _check_batch(batch, names, first, problems)
            first += batch.num_rows
            if problems.full:
                break
        problems.raise_any()
    starts = range(0, n_rows, chunk_rows)
    slices = tuple(ParquetSlice(start, min(start + chunk_rows, n_rows)) for start in starts)
    return InputPlan("parquet", n_rows, slices)


def _row_groups(metadata: pq.FileMetaData, piece: ParquetSlice) -> tuple[list[int], int]:
    """The row groups the slice overlaps, and the index of the first one's first row."""
    groups: list[int] = []
    first = row = 0
    for index in range(metadata.num_row_groups):
        size = metadata.row_group(index).num_rows
        if row < piece.stop and row + size > piece.start:
            first = first if groups else row
            groups.append(index)
        row += size
    return groups, first


def _slice_parts(
    file: pq.ParquetFile, piece: ParquetSlice, names: list[str]
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(index of its first row, rows) for the slice, from the row groups it overlaps."""
    groups, row = _row_groups(file.metadata, piece)
    if not groups:
        return  # an object shorter than planned: the caller sees rows missing
    batches = file.iter_batches(BATCH_ROWS, row_groups=groups, columns=names, use_threads=False)
    for batch in batches:
        low, high = max(piece.start - row, 0), min(piece.stop - row, batch.num_rows)
        if low < high:
            yield row + low, batch.slice(low, high - low)
        row += batch.num_rows
        if row >= piece.stop:
            return


def read_parquet_slice(
    stream: BinaryIO, meta: ModelMetadata, piece: ParquetSlice
) -> list[list[float]]:
    """The slice's rows, in the model's feature order."""
    problems, parts = Problems("Parquet"), []
    with _parquet_file(stream) as file:
        names = _feature_columns(file.schema_arrow, meta)
        for first, part in _slice_parts(file, piece, names):
            _check_batch(part, names, first, problems)
            parts.append(part)
    problems.raise_any()
    if sum(part.num_rows for part in parts) != piece.n_rows:
        raise changed(f"rows {piece.start + 1} to {piece.stop} are no longer there")
    table = pa.Table.from_batches(parts)
    matrix = np.column_stack([_floats(table.column(name)).to_numpy() for name in names])
    return list(matrix.tolist())
