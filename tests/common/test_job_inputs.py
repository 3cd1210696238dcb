"""Job input objects (CSV and Parquet) planned and read slice by slice, in bounded memory:
real files under tmp_path through LocalStore, S3Store on moto's server, and a 1,000,000-row
CSV read in a subprocess whose peak memory is measured."""

from __future__ import annotations

import errno
import io
import itertools
import json
import math
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from common.errors import InvalidInput, InvalidModelName, StoreUnavailable
from common.job_inputs import (
    CsvSlice,
    InputPlan,
    ParquetSlice,
    csv_input,
    input_format,
    plan_input,
    read_slice,
    slice_from_json,
)
from common.registry import Feature, ModelMetadata
from common.store import LocalStore, ObjectStore
from common.tenancy import owner_of
from tests.common.test_store import key_of_bytes, make_s3_store

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["alpha", "beta", "gamma"]
# A job's input is one of its key's uploads: the objects here sit where those do.
UPLOADS = f"uploads/{owner_of('reader-key-for-tests')}"


def make_meta(names: list[str]) -> ModelMetadata:
    return ModelMetadata(
        model_type="xgboost",
        version="1",
        framework="xgboost",
        artifact_format="xgboost-ubj",
        sha256="0" * 64,
        features=[Feature(name=name) for name in names],
        classes=["a", "b"],
        created_at=datetime.now(UTC),
    )


META = make_meta(FEATURES)


def plan(store: ObjectStore, key: str, **limits: int) -> InputPlan:
    options = {"max_rows": 10**6, "chunk_rows": 2, "max_bytes": 1 << 24} | limits
    return plan_input(store, key, META, **options)


def read_all(store: ObjectStore, key: str, planned: InputPlan) -> list[list[float]]:
    return [row for piece in planned.slices for row in read_slice(store, key, META, piece)]


def refusal(store: ObjectStore, key: str, **limits: int) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        plan(store, key, **limits)
    return info.value


# --- CSV ---------------------------------------------------------------------------


def test_a_csv_reads_in_feature_order_ignoring_other_columns(store: LocalStore) -> None:
    text = "id,gamma,note,alpha,beta\n7,3.5,x,1,-2e3\n8, 6 ,y,4.25,5\n9,0,z,-0.5,1e38\n"
    store.put(f"{UPLOADS}/in.csv", text.encode())

    planned = plan(store, f"{UPLOADS}/in.csv")

    assert planned.format == "csv"
    assert planned.n_rows == 3
    assert read_all(store, f"{UPLOADS}/in.csv", planned) == [
        [1.0, -2000.0, 3.5],
        [4.25, 5.0, 6.0],
        [-0.5, 1e38, 0.0],
    ]


def test_a_bom_crlf_lines_and_no_final_newline(store: LocalStore) -> None:
    text = "\ufeffalpha,beta,gamma\r\n1,2,3\r\n4,5,6"
    store.put(f"{UPLOADS}/in.csv", text.encode())

    planned = plan(store, f"{UPLOADS}/in.csv")

    assert read_all(store, f"{UPLOADS}/in.csv", planned) == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def numbered_csv(count: int) -> bytes:
    lines = ["id,alpha,beta,gamma"] + [f"{i},{i},{i * 10},{-i}" for i in range(count)]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 100])
def test_csv_slices_cover_every_row_once_in_order(store: LocalStore, chunk_rows: int) -> None:
    data = numbered_csv(7)
    store.put(f"{UPLOADS}/in.csv", data)

    planned = plan(store, f"{UPLOADS}/in.csv", chunk_rows=chunk_rows)

    slices = [piece for piece in planned.slices if isinstance(piece, CsvSlice)]
    assert len(slices) == len(planned.slices) == math.ceil(7 / chunk_rows)
    assert all(0 < piece.n_rows <= chunk_rows for piece in slices)
    assert sum(piece.n_rows for piece in slices) == planned.n_rows == 7
    assert slices[0].start == len(b"id,alpha,beta,gamma\n")
    assert slices[-1].stop == len(data)
    for before, after in itertools.pairwise(slices):
        assert before.stop == after.start
        assert after.first_line == before.first_line + before.n_rows
    assert slices[0].first_line == 2
    assert read_all(store, f"{UPLOADS}/in.csv", planned) == [[i, i * 10, -i] for i in range(7)]


def test_csv_slices_are_also_cut_by_size(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_input, "MAX_SLICE_BYTES", 40)
    store.put(f"{UPLOADS}/in.csv", numbered_csv(30))

    planned = plan(store, f"{UPLOADS}/in.csv", chunk_rows=1000)

    slices = [piece for piece in planned.slices if isinstance(piece, CsvSlice)]
    assert len(slices) > 3
    assert all(piece.stop - piece.start < 40 + 20 for piece in slices)
    assert read_all(store, f"{UPLOADS}/in.csv", planned) == [[i, i * 10, -i] for i in range(30)]


def test_the_plan_is_plain_json_and_comes_back_equal(store: LocalStore) -> None:
    store.put(f"{UPLOADS}/in.csv", b"beta,alpha,gamma\n1,2,3\n4,5,6\n7,8,9\n")

    planned = plan(store, f"{UPLOADS}/in.csv")
    sent = json.loads(json.dumps(planned.to_json()))

    assert sent == {
        "format": "csv",
        "n_rows": 3,
        "slices": [
            {
                "format": "csv",
                "start": 17,
                "stop": 29,
                "first_line": 2,
                "n_rows": 2,
                "columns": [1, 0, 2],
            },
            {
                "format": "csv",
                "start": 29,
                "stop": 35,
                "first_line": 4,
                "n_rows": 1,
                "columns": [1, 0, 2],
            },
        ],
    }
    assert InputPlan.from_json(sent) == planned
    assert slice_from_json(sent["slices"][1]) == planned.slices[1]
    assert read_slice(store, f"{UPLOADS}/in.csv", META, slice_from_json(sent["slices"][1])) == [
        [8.0, 7.0, 9.0]
    ]


def test_a_malformed_slice_message_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a slice"):
        slice_from_json({"format": "csv", "start": 1})
    with pytest.raises(ValueError, match="not an input format"):
        InputPlan.from_json({"format": "xlsx", "n_rows": 1, "slices": []})


def test_a_quoted_field_may_span_lines_and_later_lines_keep_their_numbers(
    store: LocalStore,
) -> None:
    text = 'alpha,note,beta,gamma\n1,"two\nlines",2,3\n4,"a ""quote""",5,6\n7,x,bad,9\n'
    store.put(f"{UPLOADS}/in.csv", text.encode())

    error = refusal(store, f"{UPLOADS}/in.csv")
    assert error.message == "invalid CSV input: line 5: beta: 'bad' is not a number"

    store.put(f"{UPLOADS}/in.csv", text.replace("bad", "8").encode())
    planned = plan(store, f"{UPLOADS}/in.csv", chunk_rows=1)
    assert [piece.to_json()["first_line"] for piece in planned.slices] == [2, 4, 5]
    assert read_all(store, f"{UPLOADS}/in.csv", planned) == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alpha,beta\n1,2\n", "line 1: the CSV header lacks the model's features ['gamma']"),
        ("alpha,beta,gamma\n1,2,3\n4,,6\n", "invalid CSV input: line 3: beta: missing value"),
        ("alpha,beta,gamma\n1,2\n", "invalid CSV input: line 2: gamma: missing value"),
        ("alpha,beta,gamma\nabc,2,3\n", "invalid CSV input: line 2: alpha: 'abc' is not a number"),
        ("alpha,beta,gamma\n1,2,3\n1,nan,3\n", "line 3: beta: 'nan' is not finite or beyond"),
        (
            "alpha,beta,gamma\n1,2,inf\n",
            "line 2: gamma: 'inf' is not finite or beyond ±3.4028235e+38",
        ),
        ("alpha,beta,gamma\n-1e39,2,3\n", "line 2: alpha: '-1e39' is not finite or beyond"),
        ("alpha,beta,gamma\n1,2,3\n\n", "line 3: alpha: missing value (the line is empty)"),
        ("alpha,beta,gamma\r1,2,3\r", "line 1: a carriage return inside an unquoted field"),
        ("alpha,beta,gamma\n", "the CSV has no rows"),
        ("", "the input object is empty"),
        ('alpha,beta,gamma\n1,"2"x,3\n', "invalid CSV input: line 2: malformed CSV ("),
        ('alpha,beta,gamma\n1,2,3\n1,"2,3\n', "invalid CSV input: line 3: malformed CSV ("),
    ],
)
def test_bad_csv_input_is_refused_naming_the_line_and_feature(
    store: LocalStore, text: str, message: str
) -> None:
    store.put(f"{UPLOADS}/in.csv", text.encode())

    assert message in refusal(store, f"{UPLOADS}/in.csv").message


def test_at_most_five_problems_are_listed(store: LocalStore) -> None:
    text = "alpha,beta,gamma\n" + "".join(f"{i},x,3\n" for i in range(9))
    store.put(f"{UPLOADS}/in.csv", text.encode())

    error = refusal(store, f"{UPLOADS}/in.csv")

    problems = [f"line {n}: beta: 'x' is not a number" for n in range(2, 7)]
    assert error.details == {"problems": problems}
    assert error.message == "invalid CSV input: " + "; ".join(problems)


def test_rows_past_the_limit_are_refused(store: LocalStore) -> None:
    store.put(f"{UPLOADS}/in.csv", numbered_csv(4))

    assert "more than 3 rows" in refusal(store, f"{UPLOADS}/in.csv", max_rows=3).message
    assert plan(store, f"{UPLOADS}/in.csv", max_rows=4).n_rows == 4


def test_a_field_over_the_csv_modules_limit_is_invalid_input(store: LocalStore) -> None:
    text = "alpha,note,beta,gamma\n1,short,2,3\n1," + "n" * (200 * 1024) + ",2,3\n"
    store.put(f"{UPLOADS}/in.csv", text.encode())

    error = refusal(store, f"{UPLOADS}/in.csv")

    assert error.message == (
        "invalid CSV input: line 3: a field is longer than 131072 characters, the limit"
    )


def test_a_line_over_the_line_limit_is_invalid_input(store: LocalStore) -> None:
    wide = ",".join(["9" * 1000] * 1100)  # 1.1 MB of short enough fields
    store.put(f"{UPLOADS}/in.csv", f"alpha,beta,gamma\n1,2,3\n{wide}\n".encode())

    error = refusal(store, f"{UPLOADS}/in.csv")

    assert error.message == "invalid CSV input: line 3: the line is longer than 1048576 bytes"


def test_a_line_that_is_not_utf8_is_invalid_input(store: LocalStore) -> None:
    store.put(f"{UPLOADS}/in.csv", b"alpha,beta,gamma\n1,2,3\n4,5,6\n7,\xff\xfe,9\n")

    error = refusal(store, f"{UPLOADS}/in.csv")

    assert error.message == "invalid CSV input: line 4: the line is not valid UTF-8"


def test_a_header_that_is_not_utf8_is_invalid_input(store: LocalStore) -> None:
    store.put(f"{UPLOADS}/in.csv", b"alpha,b\xe9ta,gamma\n1,2,3\n")

    assert refusal(store, f"{UPLOADS}/in.csv").message == (
        "invalid CSV input: line 1: the line is not valid UTF-8"
    )


def test_a_slice_of_an_object_replaced_since_its_plan_is_refused(store: LocalStore) -> None:
    store.put(f"{UPLOADS}/in.csv", numbered_csv(6))
    planned = plan(store, f"{UPLOADS}/in.csv", chunk_rows=4)
    store.put(f"{UPLOADS}/in.csv", numbered_csv(5))

    with pytest.raises(InvalidInput, match="changed while its job ran"):
        read_slice(store, f"{UPLOADS}/in.csv", META, planned.slices[1])


# --- limits, missing objects, store failures -----------------------------------------


class NoReads:
    """A LocalStore that fails the test if anything reads the object's bytes."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def open(self, key: str) -> BinaryIO:
        raise AssertionError("the object was opened")

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        raise AssertionError("the object was read")

    def get(self, key: str) -> bytes:
        raise AssertionError("the object was read whole")


@pytest.mark.parametrize("key", [f"{UPLOADS}/in.csv", f"{UPLOADS}/in.parquet"])
def test_an_object_over_the_size_limit_is_refused_before_reading(
    store: LocalStore, key: str
) -> None:
    store.put(key, numbered_csv(50))
    size = store.size(key)

    with pytest.raises(InvalidInput) as info:
        plan(NoReads(store), key, max_bytes=size - 1)  # type: ignore[arg-type]

    assert info.value.message == (
        f"the input object {key!r} is {size} bytes, over the limit of {size - 1} bytes"
    )
    assert info.value.details == {"size_bytes": size, "max_bytes": size - 1}


def test_an_object_at_the_size_limit_is_read(store: LocalStore) -> None:
    store.put(f"{UPLOADS}/in.csv", numbered_csv(5))

    assert plan(store, f"{UPLOADS}/in.csv", max_bytes=store.size(f"{UPLOADS}/in.csv")).n_rows == 5


@pytest.mark.parametrize("key", [f"{UPLOADS}/none.csv", f"{UPLOADS}/none.parquet"])
def test_a_missing_object_is_invalid_input(store: LocalStore, key: str) -> None:
    assert refusal(store, key).message == f"no object {key!r} in the store"


def test_a_key_over_1024_bytes_is_refused(store: LocalStore) -> None:
    with pytest.raises(InvalidModelName, match="1024 bytes"):
        plan(store, key_of_bytes(1025))


class FailingStream(io.RawIOBase):
    """A file that raises `error` on any read touching bytes [fail_from, fail_until)."""

    def __init__(self, data: bytes, error: Exception, fail_from: int, fail_until: int) -> None:
        self._data, self._error, self._pos = data, error, 0
        self._fail = (fail_from, fail_until)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = [offset, self._pos + offset, len(self._data) + offset][whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos < self._fail[1] and self._fail[0] < self._pos + len(buffer):
            raise self._error
        chunk = self._data[self._pos : self._pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


class FailingStore(LocalStore):
    """A LocalStore whose reads fail with `error` on bytes [fail_from, fail_until)."""

    def __init__(self, root: Path, error: Exception, fail_from: int, fail_until: int) -> None:
        super().__init__(root)
        self.error, self.fail_from, self.fail_until = error, fail_from, fail_until

    def open(self, key: str) -> BinaryIO:
        stream = FailingStream(self.get(key), self.error, self.fail_from, self.fail_until)
        return io.BufferedReader(stream, buffer_size=64)

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        raise self.error


STORE_ERRORS = [
    (OSError(errno.EIO, "secret disk text"), "OSError EIO"),
    (
        ClientError({"Error": {"Code": "AccessDenied", "Message": "secret text"}}, "GetObject"),
        "ClientError AccessDenied",
    ),
    (
        ClientError({"Error": {"Code": "<secret text>", "Message": "x"}}, "GetObject"),
        "ClientError)",
    ),
    (EndpointConnectionError(endpoint_url="http://secret-host"), "EndpointConnectionError"),
]


@pytest.mark.parametrize(("error", "reason"), STORE_ERRORS)
@pytest.mark.parametrize("key", [f"{UPLOADS}/in.csv", f"{UPLOADS}/in.parquet"])
def test_a_store_failure_mid_read_is_store_unavailable_without_its_text(
    store_root: Path, error: Exception, reason: str, key: str
) -> None:
    failing = FailingStore(store_root, error, fail_from=200, fail_until=10**9)
    if key.endswith(".parquet"):
        data = parquet_bytes(parquet_table(200), row_group_size=50)
        failing.put(key, data)
        # The footer reads well: the failure comes while pyarrow reads the columns.
        failing.fail_from = 4
        failing.fail_until = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    else:
        failing.put(key, numbered_csv(200))

    with pytest.raises(StoreUnavailable) as info:
        plan(failing, key)

    assert info.value.message.startswith(f"the store failed reading {key!r} (")
    assert reason in info.value.message
    assert "secret" not in info.value.message


def test_a_store_failure_reading_a_slice_is_store_unavailable(store_root: Path) -> None:
    failing = FailingStore(store_root, OSError(errno.ECONNRESET, "secret"), 10**9, 10**9)
    failing.put(f"{UPLOADS}/in.csv", numbered_csv(5))
    planned = plan(failing, f"{UPLOADS}/in.csv")

    with pytest.raises(
        StoreUnavailable, match=rf"'{UPLOADS}/in.csv' \(ConnectionResetError ECONNRESET\)$"
    ):
        read_slice(failing, f"{UPLOADS}/in.csv", META, planned.slices[0])


# --- Parquet -----------------------------------------------------------------------


def parquet_table(count: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array([f"row-{i}" for i in range(count)], pa.string()),
            "gamma": pa.array(range(count), pa.int64()),
            "note": pa.array(["x" * 30] * count, pa.string()),
            "beta": pa.array([i % 2 == 0 for i in range(count)], pa.bool_()),
            "alpha": pa.array([i / 4 for i in range(count)], pa.float32()),
        }
    )


def expected_rows(count: int) -> list[list[float]]:
    return [[i / 4, 1.0 if i % 2 == 0 else 0.0, float(i)] for i in range(count)]


def parquet_bytes(table: pa.Table, **options: Any) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


def test_input_format_follows_the_suffix() -> None:
    assert [input_format(k) for k in ["a.parquet", "b.PQ", "c.csv", "d", "e.parquet.csv"]] == [
        "parquet",
        "parquet",
        "csv",
        "csv",
        "csv",
    ]


@pytest.mark.parametrize(
    ("key", "chunk_rows"), [(f"{UPLOADS}/in.parquet", 3), (f"{UPLOADS}/in.pq", 4)]
)
def test_a_parquet_file_reads_in_feature_order_in_slices(
    store: LocalStore, key: str, chunk_rows: int
) -> None:
    store.put(key, parquet_bytes(parquet_table(10), row_group_size=4))

    planned = plan(store, key, chunk_rows=chunk_rows)

    assert planned.format == "parquet"
    assert planned.n_rows == 10
    starts = list(range(0, 10, chunk_rows))
    assert planned.slices == tuple(ParquetSlice(s, min(s + chunk_rows, 10)) for s in starts)
    assert InputPlan.from_json(json.loads(json.dumps(planned.to_json()))) == planned
    assert read_all(store, key, planned) == expected_rows(10)


class RecordingStore(LocalStore):
    """A LocalStore that records the byte ranges read through open()."""

    reads: list[tuple[int, int]]

    def open(self, key: str) -> BinaryIO:
        inner, reads = super().open(key), self.reads

        class Recording(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def seekable(self) -> bool:
                return True

            def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
                return inner.seek(offset, whence)

            def tell(self) -> int:
                return inner.tell()

            def close(self) -> None:
                inner.close()
                super().close()

            def readinto(self, buffer: Any) -> int:
                start = inner.tell()
                data = inner.read(len(buffer))
                buffer[: len(data)] = data
                reads.append((start, start + len(data)))
                return len(data)

        return io.BufferedReader(Recording(), buffer_size=1)


def chunk_ranges(metadata: pq.FileMetaData, group: int) -> dict[str, tuple[int, int]]:
    ranges = {}
    for index in range(metadata.num_columns):
        column = metadata.row_group(group).column(index)
        start = min(o for o in [column.dictionary_page_offset, column.data_page_offset] if o)
        ranges[column.path_in_schema] = (start, start + column.total_compressed_size)
    return ranges


def test_a_parquet_slice_reads_only_its_row_groups_and_feature_columns(
    store_root: Path,
) -> None:
    recording = RecordingStore(store_root)
    data = parquet_bytes(parquet_table(4000), row_group_size=1000, compression="none")
    recording.put(f"{UPLOADS}/in.parquet", data)
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    recording.reads = []

    rows = read_slice(recording, f"{UPLOADS}/in.parquet", META, ParquetSlice(1500, 2300))

    assert rows == expected_rows(2300)[1500:]
    footer = recording.reads.pop(0)  # the last 64 KiB, where the metadata is
    assert footer == (len(data) - 65536, len(data))
    wanted = {group: chunk_ranges(metadata, group) for group in range(4)}
    touched = {
        (group, name)
        for group, ranges in wanted.items()
        for name, (low, high) in ranges.items()
        for start, stop in recording.reads
        if start < high and low < stop
    }
    assert touched == {(g, n) for g in (1, 2) for n in ("alpha", "beta", "gamma")}


def test_a_parquet_slice_inside_one_large_row_group(store: LocalStore) -> None:
    store.put(f"{UPLOADS}/in.parquet", parquet_bytes(parquet_table(150_000)))

    # Across the boundary of two of pyarrow's batches (65,536 rows each).
    rows = read_slice(store, f"{UPLOADS}/in.parquet", META, ParquetSlice(131_070, 131_075))

    assert rows == expected_rows(131_075)[131_070:]


def test_a_parquet_file_missing_a_feature_column(store: LocalStore) -> None:
    store.put(f"{UPLOADS}/in.parquet", parquet_bytes(parquet_table(5).drop_columns(["beta"])))

    assert refusal(store, f"{UPLOADS}/in.parquet").message == (
        "the Parquet file lacks the model's features ['beta']"
    )


def test_a_parquet_feature_column_that_is_not_numeric(store: LocalStore) -> None:
    table = parquet_table(5).set_column(1, "gamma", pa.array(["1"] * 5))
    store.put(f"{UPLOADS}/in.parquet", parquet_bytes(table))

    assert refusal(store, f"{UPLOADS}/in.parquet").message == (
        "the Parquet file's feature columns are not numeric: ['gamma (string)']"
    )


def test_nulls_and_bad_floats_in_parquet_name_their_rows(store: LocalStore) -> None:
    alpha = [0.0, None, 2.0, float("nan"), 4.0, float("-inf"), 5e38, 7.0]
    table = parquet_table(8).set_column(4, "alpha", pa.array(alpha, pa.float64()))
    beta = pa.array([True, True, None, True, True, True, True, True])
    store.put(f"{UPLOADS}/in.parquet", parquet_bytes(table.set_column(3, "beta", beta)))

    error = refusal(store, f"{UPLOADS}/in.parquet")

    assert error.details == {
        "problems": [
            "row 2: alpha: missing value (null)",
            "row 3: beta: missing value (null)",
            "row 4: alpha: nan is not finite or beyond ±3.4028235e+38",
            "row 6: alpha: -inf is not finite or beyond ±3.4028235e+38",
            "row 7: alpha: 5e+38 is not finite or beyond ±3.4028235e+38",
        ]
    }
    assert error.message.startswith("invalid Parquet input: row 2: alpha: missing value")


@pytest.mark.parametrize(
    "data",
    [b"alpha,beta,gamma\n1,2,3\n", b"", b"PAR1" + b"\x00" * 100 + b"PAR1"],
    ids=["csv", "empty", "garbage"],
)
def test_a_file_that_is_not_parquet_is_invalid_input(store: LocalStore, data: bytes) -> None:
    store.put(f"{UPLOADS}/in.parquet", data)

    assert refusal(store, f"{UPLOADS}/in.parquet").message.startswith(
        "the input object is not a readable Parquet file ("
    )


def test_corrupt_parquet_pages_are_invalid_input_not_a_store_error(store: LocalStore) -> None:
    data = bytearray(parquet_bytes(parquet_table(2000), compression="snappy"))
    low, high = chunk_ranges(pq.ParquetFile(io.BytesIO(data)).metadata, 0)["gamma"]
    data[low + 10 : high - 10] = b"\x07" * (high - low - 20)
    store.put(f"{UPLOADS}/in.parquet", bytes(data))

    assert refusal(store, f"{UPLOADS}/in.parquet").message.startswith(
        "the input object is not a readable Parquet file ("
    )


def test_parquet_with_no_rows_or_too_many(store: LocalStore) -> None:
    store.put(f"{UPLOADS}/empty.parquet", parquet_bytes(parquet_table(0)))
    store.put(f"{UPLOADS}/big.parquet", parquet_bytes(parquet_table(11)))

    assert refusal(store, f"{UPLOADS}/empty.parquet").message == "the Parquet file has no rows"
    assert "more than 10 rows" in refusal(store, f"{UPLOADS}/big.parquet", max_rows=10).message


# --- S3 ------------------------------------------------------------------------------


def test_csv_and_parquet_through_s3(s3_endpoint: str) -> None:
    s3 = make_s3_store(s3_endpoint)
    s3.put(f"{UPLOADS}/in.csv", numbered_csv(9))
    s3.put(f"{UPLOADS}/in.parquet", parquet_bytes(parquet_table(3000), row_group_size=700))

    csv_plan = plan(s3, f"{UPLOADS}/in.csv", chunk_rows=4)
    parquet_plan = plan(s3, f"{UPLOADS}/in.parquet", chunk_rows=1000)

    assert read_all(s3, f"{UPLOADS}/in.csv", csv_plan) == [[i, i * 10, -i] for i in range(9)]
    assert [p.n_rows for p in parquet_plan.slices] == [1000, 1000, 1000]
    assert read_all(s3, f"{UPLOADS}/in.parquet", parquet_plan) == expected_rows(3000)
    missing = refusal(s3, f"{UPLOADS}/none.csv").message
    assert missing == f"no object '{UPLOADS}/none.csv' in the store"


def test_an_s3_error_reading_a_slice_is_store_unavailable(s3_endpoint: str) -> None:
    s3 = make_s3_store(s3_endpoint)
    s3.put(f"{UPLOADS}/in.csv", numbered_csv(3))
    planned = plan(s3, f"{UPLOADS}/in.csv")
    s3.bucket = "no-such-bucket-here"

    with pytest.raises(StoreUnavailable) as info:
        read_slice(s3, f"{UPLOADS}/in.csv", META, planned.slices[0])

    assert info.value.message == (
        f"the store failed reading '{UPLOADS}/in.csv' (ClientError NoSuchBucket)"
    )


# --- memory, and what the API image needs ---------------------------------------------

MEASURE = """
import json, resource, sys
from datetime import UTC, datetime
from pathlib import Path
from common.job_inputs import plan_input, read_slice
from common.registry import Feature, ModelMetadata
from common.store import LocalStore

try:  # the libraries' own size is no part of the object's: load them before the start
    import pyarrow.csv  # noqa: F401
except ImportError:
    pass
path = Path(sys.argv[1])
meta = ModelMetadata(
    model_type="m", version="1", framework="xgboost", artifact_format="xgboost-ubj",
    sha256="0" * 64, features=[Feature(name=f"f{i}") for i in range(30)],
    classes=["a", "b"], created_at=datetime.now(UTC),
)
store = LocalStore(path.parent)
start_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
planned = plan_input(
    store, path.name, meta, max_rows=1_000_000, chunk_rows=5000, max_bytes=2**40
)
plan_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = total = 0
first_kib = None
for piece in planned.slices:
    chunk = read_slice(store, path.name, meta, piece)
    rows += len(chunk)
    total += sum(int(row[29]) for row in chunk)
    if first_kib is None:
        first_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
hwm_kib = next(
    int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")
)
print(json.dumps({
    "n_rows": planned.n_rows, "n_slices": len(planned.slices), "rows": rows, "total": total,
    "start_mib": start_kib / 1024, "plan_mib": plan_kib / 1024,
    "first_slice_mib": first_kib / 1024,
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "vm_hwm_mib": hwm_kib / 1024,
}))
"""
# Linux keeps a process's ru_maxrss across fork and exec: a child of pytest starts at
# pytest's own peak. A child of a small Python process starts clean, so the measuring
# process is started by one.
LAUNCH = """
import subprocess, sys
sys.exit(subprocess.run([sys.executable, "-c", *sys.argv[1:]]).returncode)
"""


def write_big_csv(path: Path, count: int) -> int:
    """Streamed to disk; the last feature of row i is i % 1000. Returns the file's size."""
    pool = [",".join(f"{(r * 7 + c) % 1000 / 8:.3f}" for c in range(29)) for r in range(997)]
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("id," + ",".join(f"f{i}" for i in range(30)) + "\n")
        for block in range(0, count, 10_000):
            out.writelines(
                f"{i},{pool[i % 997]},{i % 1000}\n" for i in range(block, block + 10_000)
            )
    return path.stat().st_size


@pytest.mark.timeout(240)
def test_a_million_row_csv_is_planned_and_read_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    size = write_big_csv(path, 1_000_000)
    assert size > 200_000_000

    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, MEASURE, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-4000:]}"
    figures = json.loads(done.stdout)

    print(f"\n1,000,000-row CSV of {size / 2**20:.0f} MiB: {figures}")
    assert figures["n_rows"] == figures["rows"] == 1_000_000
    assert figures["n_slices"] == 200
    assert figures["total"] == 1000 * sum(range(1000))
    assert figures["start_mib"] < 150, figures  # the measure is the child's own
    assert figures["peak_mib"] < 400, figures
    # Flat, not growing with the object: far less than its 200+ MiB over the start, and
    # the 199 slices after the first add next to nothing.
    assert figures["peak_mib"] - figures["start_mib"] < 100, figures
    assert figures["peak_mib"] - figures["first_slice_mib"] < 30, figures
    assert figures["vm_hwm_mib"] < 400, figures


@pytest.mark.parametrize("pyarrow_installed", [True, False])
def test_a_csv_reads_the_same_with_or_without_pyarrow(
    store: LocalStore, pyarrow_installed: bool
) -> None:
    """pyarrow (the worker's) parses a chunk's slice fast; without it (the API image) the
    csv module gives the same rows, and planning never needs pyarrow."""
    store.put(f"{UPLOADS}/in.csv", numbered_csv(3))
    block = "" if pyarrow_installed else "sys.modules['pyarrow'] = None"
    program = _META_SOURCE + textwrap.dedent(
        f"""
        import sys
        {block}
        from common.job_inputs import plan_input, read_slice
        from common.store import LocalStore
        from pathlib import Path
        store = LocalStore(Path({str(store.root)!r}))
        key = {UPLOADS + "/in.csv"!r}
        planned = plan_input(store, key, META, max_rows=9, chunk_rows=9, max_bytes=999)
        planning = "pyarrow" in sys.modules and sys.modules["pyarrow"] is not None
        print(read_slice(store, key, META, planned.slices[0]), planning)
        """
    )

    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert done.stdout.strip() == "[[0.0, 0.0, 0.0], [1.0, 10.0, -1.0], [2.0, 20.0, -2.0]] False"


def test_the_fast_and_the_checked_csv_readers_agree() -> None:
    from common.job_inputs.csv_input import _parse_checked, _parse_fast

    meta = make_meta(["alpha", "beta", "gamma"])
    data = b'7,"1.5",x,-2e-3,0\n8,1e30,y,3,"-0.25"\n9,12,z,4.75,5\n'
    piece = CsvSlice(start=0, stop=len(data), first_line=2, n_rows=3, columns=(1, 3, 4))

    fast = _parse_fast(data, piece)

    assert fast is not None
    assert (
        fast
        == _parse_checked(data, piece, meta)
        == [
            [1.5, -0.002, 0.0],
            [1e30, 3.0, -0.25],
            [12.0, 4.75, 5.0],
        ]
    )


@pytest.mark.parametrize(
    "data", [b"1,2,3\n4,,6\n", b"1,2,3\n4,nan,6\n", b"1,2,3\n4,1e39,6\n", b"1,2,3\n"]
)
def test_the_fast_reader_leaves_anything_unplanned_to_the_checked_one(data: bytes) -> None:
    from common.job_inputs.csv_input import _parse_fast

    piece = CsvSlice(start=0, stop=len(data), first_line=2, n_rows=2, columns=(0, 1, 2))
    assert _parse_fast(data, piece) is None


_META_SOURCE = """
from datetime import UTC, datetime
from common.registry import Feature, ModelMetadata
META = ModelMetadata(
    model_type="m", version="1", framework="xgboost", artifact_format="xgboost-ubj",
    sha256="0" * 64, features=[Feature(name=n) for n in ["alpha", "beta", "gamma"]],
    classes=["a", "b"], created_at=datetime.now(UTC),
)
""".strip()
