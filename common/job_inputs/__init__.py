"""A job's input object in the store, read as a stream in bounded memory, in two steps.

1. `plan_input` (the job's prepare task): refuses an object over the size limit before
   reading it, then in one streaming pass checks every row, counts the rows and cuts
   them into slices of at most `chunk_rows`; a small `InputPlan`, plain JSON.
2. `read_slice` (each chunk task): reads only its slice (a CSV's byte range, a Parquet
   file's overlapping row groups, feature columns only) and returns its rows as floats
   in the model's feature order.

`.parquet` and `.pq` keys are Parquet, any other CSV (see csv_input and parquet_input
for the rules of each). The user's mistakes are InvalidInput naming the line or row;
the store's failures are StoreUnavailable, naming the key and the kind of error only.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from contextlib import contextmanager

from common.errors import InvalidInput, StoreUnavailable
from common.job_inputs.csv_input import plan_csv, read_csv_slice
from common.job_inputs.plan import (
    CsvSlice,
    Format,
    InputPlan,
    InputSlice,
    ParquetSlice,
    input_format,
    slice_from_json,
)
from common.registry import ModelMetadata
from common.store import RESULTS_PREFIX, ObjectMissing, ObjectStore

__all__ = [
    "CsvSlice",
    "Format",
    "InputPlan",
    "InputSlice",
    "ParquetSlice",
    "input_format",
    "output_key",
    "plan_input",
    "read_slice",
    "slice_from_json",
]

_ERROR_CODE = re.compile(r"^[A-Za-z0-9.]{1,64}$")


def output_key(job_id: str, input_key: str) -> str:
    """Where a job's results object goes: under the job's id, never beside its input (a
    name the caller picked), as Parquet for a Parquet input and CSV otherwise."""
    suffix = "parquet" if input_format(input_key) == "parquet" else "csv"
    return f"{RESULTS_PREFIX}/{job_id}.{suffix}"


def plan_input(
    store: ObjectStore,
    key: str,
    meta: ModelMetadata,
    *,
    max_rows: int,
    chunk_rows: int,
    max_bytes: int,
) -> InputPlan:
    """Check the whole object and cut it into slices of at most `chunk_rows` rows."""
    with _store_errors(key):
        size = store.size(key)
        if size > max_bytes:
            raise InvalidInput(
                f"the input object {key!r} is {size} bytes, over the limit of {max_bytes} bytes",
                {"size_bytes": size, "max_bytes": max_bytes},
            )
        with store.open(key) as stream:
            if input_format(key) == "parquet":
                from common.job_inputs.parquet_input import plan_parquet

                return plan_parquet(stream, meta, max_rows, chunk_rows)
            return plan_csv(stream, meta, max_rows, chunk_rows)


def read_slice(
    store: ObjectStore, key: str, meta: ModelMetadata, piece: InputSlice
) -> list[list[float]]:
    """The slice's rows, each its features' values in `meta.feature_names` order."""
    with _store_errors(key):
        if isinstance(piece, CsvSlice):
            return read_csv_slice(store.read_range(key, piece.start, piece.stop), piece, meta)
        from common.job_inputs.parquet_input import read_parquet_slice

        with store.open(key) as stream:
            return read_parquet_slice(stream, meta, piece)


@contextmanager
def _store_errors(key: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ObjectMissing:
        raise InvalidInput(f"no object {key!r} in the store") from None
    except (ClientError, BotoCoreError, OSError) as exc:
        message = f"the store failed reading {key!r} ({_reason(exc)})"
        raise StoreUnavailable(message) from exc


def _reason(exc: Exception) -> str:
    """The error's class and code, never its text: that may carry the store's answer."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):  # boto3 names its class after the code: say it once
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return f"ClientError {code}" if _ERROR_CODE.fullmatch(code) else "ClientError"
    name = type(exc).__name__
    number = exc.errno if isinstance(exc, OSError) else None
    if number is not None and number in errno.errorcode:
        return f"{name} {errno.errorcode[number]}"
    return name
