"""A job's results as Parquet, for a Parquet input: the columns of the results CSV
(`row`, `label`, `p_<class>` for each class), one row group per page of results, written
with pyarrow's ParquetWriter as the pages come so no more than a page is held.

Workers only (pyarrow); the API never imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

from common.registry import ModelMetadata


def schema(meta: ModelMetadata) -> Any:
    import pyarrow as pa

    # Labels are the model's classes: integers if every class is one, text otherwise.
    integral = all(isinstance(c, int) and not isinstance(c, bool) for c in meta.classes)
    fields = [
        pa.field("row", pa.int64(), nullable=False),
        pa.field("label", pa.int64() if integral else pa.string(), nullable=False),
        *(pa.field(f"p_{c}", pa.float64(), nullable=False) for c in meta.classes),
    ]
    return pa.schema(fields)


def write(
    meta: ModelMetadata, pages: Iterable[tuple[int, dict[str, list[Any]]]], stream: IO[bytes]
) -> None:
    """Write the whole document to `stream` (left open) from (offset, page) pairs in order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shape = schema(meta)
    as_label = int if pa.types.is_integer(shape.field("label").type) else str
    with pq.ParquetWriter(stream, shape, compression="zstd") as writer:
        for offset, page in pages:
            n = len(page["labels"])
            probabilities = list(zip(*page["probabilities"], strict=True)) if n else []
            columns = [
                pa.array(range(offset, offset + n), pa.int64()),
                pa.array([as_label(label) for label in page["labels"]], shape.field(1).type),
                *(
                    pa.array(probabilities[i] if n else [], pa.float64())
                    for i in range(len(meta.classes))
                ),
            ]
            writer.write_table(pa.Table.from_arrays(columns, schema=shape))
