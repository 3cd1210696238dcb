"""CSV input objects, read as a stream of lines: planned in one pass, read by byte range.

The object is UTF-8 (a BOM is skipped) with a header naming the model's features; other
columns are ignored. Lines are read from the binary stream one at a time, each at most
MAX_LINE_BYTES, so byte offsets stay exact and memory never grows with the object; each
decoded line goes to one `csv.reader` (strict quoting), which takes a record's lines one
by one. A quoted field may hold newlines: its record then spans lines and is named by
its first line. A longer line, bytes that are not UTF-8, malformed quoting or a field
over the csv module's field size limit (128 KiB) fail the input, naming the line.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from typing import BinaryIO

from common.errors import InvalidInput
from common.input_problems import MAX_MAGNITUDE
from common.job_inputs.plan import CsvSlice, InputPlan
from common.job_inputs.values import Problems, changed, no_rows, record_values, too_many_rows
from common.registry import ModelMetadata

MAX_LINE_BYTES = 1024 * 1024
# A slice is also cut at this size, so a chunk task's one ranged read stays bounded
# even when rows are long (wide id or text columns).
MAX_SLICE_BYTES = 32 * 1024 * 1024


class _Unreadable(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(line, reason)
        self.line, self.reason = line, reason


class _Lines:
    """Decoded lines for csv.reader, counting lines and the bytes consumed."""

    def __init__(self, stream: BinaryIO, offset: int, first_line: int) -> None:
        self.stream = stream
        self.offset = offset  # where the next line starts, in the object
        self.line = first_line - 1  # the last line handed out

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = self.stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            raise StopIteration
        self.line += 1
        if len(raw) > MAX_LINE_BYTES:
            raise _Unreadable(self.line, f"the line is longer than {MAX_LINE_BYTES} bytes")
        if self.offset == 0 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
            self.offset = len(codecs.BOM_UTF8)
        self.offset += len(raw)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Unreadable(self.line, "the line is not valid UTF-8") from None


def _records(lines: _Lines) -> Iterator[tuple[int, list[str]]]:
    """(number of its first line, fields) per record. The reader never reads ahead, so
    after each record `lines.offset` is where the next one starts."""
    reader = csv.reader(lines, strict=True)
    while True:
        first = lines.line + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _Unreadable(lines.line, _csv_reason(exc)) from None
        yield first, record


def _csv_reason(exc: csv.Error) -> str:
    # The csv module's own messages, not the object's text: safe to pass on.
    if "field limit" in str(exc):
        return f"a field is longer than {csv.field_size_limit()} characters, the limit"
    if "new-line character" in str(exc):  # its advice (file modes) does not apply here
        return "a carriage return inside an unquoted field: lines must end in \\n or \\r\\n"
    return f"malformed CSV ({exc})"


def _columns(header: list[str], meta: ModelMetadata) -> tuple[int, ...]:
    positions: dict[str, int] = {}
    for index, name in enumerate(header):
        positions.setdefault(name, index)  # a repeated name: its first column, as before
    missing = [name for name in meta.feature_names if name not in positions]
    if missing:
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise InvalidInput(
            f"line 1: the CSV header lacks the model's features {missing[:10]}{more}"
        )
    return tuple(positions[name] for name in meta.feature_names)


class _Cutter:
    """Cuts consecutive records into slices of at most `chunk_rows` rows."""

    def __init__(self, start: int, chunk_rows: int, columns: tuple[int, ...]) -> None:
        self.start, self.end, self.chunk_rows, self.columns = start, start, chunk_rows, columns
        self.first_line = self.rows = self.total = 0
        self.slices: list[CsvSlice] = []

    def add(self, line: int, end: int) -> None:
        if not self.rows:
            self.first_line = line
        self.rows, self.total, self.end = self.rows + 1, self.total + 1, end
        if self.rows == self.chunk_rows or end - self.start >= MAX_SLICE_BYTES:
            self._close()

    def finish(self) -> tuple[CsvSlice, ...]:
        if self.rows:
            self._close()
        return tuple(self.slices)

    def _close(self) -> None:
        piece = CsvSlice(self.start, self.end, self.first_line, self.rows, self.columns)
        self.slices.append(piece)
        self.start, self.rows = self.end, 0


def plan_csv(stream: BinaryIO, meta: ModelMetadata, max_rows: int, chunk_rows: int) -> InputPlan:
    """One pass over the object: its header, every row checked, its slices."""
    lines = _Lines(stream, offset=0, first_line=1)
    records = _records(lines)
    try:
        header = next(records, None)
    except _Unreadable as exc:
        raise InvalidInput(f"invalid CSV input: line {exc.line}: {exc.reason}") from None
    if header is None:
        raise InvalidInput("the input object is empty: a CSV needs a header naming features")
    cutter = _Cutter(lines.offset, chunk_rows, _columns(header[1], meta))
    names, problems = meta.feature_names, Problems("CSV")
    try:
        for number, record in records:
            if cutter.total >= max_rows:
                raise too_many_rows("CSV", max_rows)
            checked = record_values(record, cutter.columns, names)
            if isinstance(checked, str):
                problems.add(f"line {number}: {checked}")
                if problems.full:
                    break
            cutter.add(number, lines.offset)
    except _Unreadable as exc:
        problems.add(f"line {exc.line}: {exc.reason}")
    problems.raise_any()
    if not cutter.total:
        raise no_rows("CSV")
    return InputPlan("csv", cutter.total, cutter.finish())


def read_csv_slice(data: bytes, piece: CsvSlice, meta: ModelMetadata) -> list[list[float]]:
    """The rows of one slice, given its bytes, in the model's feature order."""
    if len(piece.columns) != len(meta.features):
        raise ValueError("the slice was planned for a model with other features")
    fast = _parse_fast(data, piece)
    if fast is not None:
        return fast
    return _parse_checked(data, piece, meta)


def _parse_fast(data: bytes, piece: CsvSlice) -> list[list[float]] | None:
    """The slice parsed by pyarrow's C++ reader, when the worker has it: a chunk's own
    rows were all checked when the job was planned, and this is 10 times faster than the
    csv module, which kept a pool process busy (and sync predictions waiting behind it)
    for most of a chunk. None when pyarrow is missing or the bytes read differently than
    planned: then the checked reader says exactly what is wrong, naming the line."""
    try:
        import numpy as np
        import pyarrow as pa
        from pyarrow import csv as pa_csv
    except ImportError:
        return None
    names = [f"f{i}" for i in piece.columns]  # pyarrow's own names for unnamed columns
    # No thread pool: a pool process has its own core already, and pyarrow's pool can
    # abort the process at exit (apache/arrow#34314), seen once in CI. Serial parsing
    # costs about 1.7 ms more per 5,000-row slice of 30 features.
    options = pa_csv.ReadOptions(autogenerate_column_names=True, use_threads=False)
    convert = pa_csv.ConvertOptions(
        include_columns=names, column_types=dict.fromkeys(names, pa.float64())
    )
    try:
        table = pa_csv.read_csv(pa.py_buffer(data), read_options=options, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
        return None
    if table.num_rows != piece.n_rows or any(c.null_count for c in table.columns):
        return None
    matrix = np.column_stack([c.to_numpy() for c in table.columns])
    if not np.all(np.abs(matrix) <= MAX_MAGNITUDE):  # NaN fails the comparison too
        return None
    rows: list[list[float]] = matrix.tolist()
    return rows


def _parse_checked(data: bytes, piece: CsvSlice, meta: ModelMetadata) -> list[list[float]]:
    lines = _Lines(io.BytesIO(data), offset=piece.start, first_line=piece.first_line)
    rows: list[list[float]] = []
    names, problems = meta.feature_names, Problems("CSV")
    try:
        for number, record in _records(lines):
            checked = record_values(record, piece.columns, names)
            if isinstance(checked, str):
                problems.add(f"line {number}: {checked}")
                if problems.full:
                    break
            else:
                rows.append(checked)
    except _Unreadable as exc:
        problems.add(f"line {exc.line}: {exc.reason}")
    problems.raise_any()
    if len(rows) != piece.n_rows or lines.offset != piece.stop:
        raise changed(f"lines from {piece.first_line} no longer read as planned")
    return rows
