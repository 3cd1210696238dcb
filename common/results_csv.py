"""A job's results as CSV, the one builder: for `GET /jobs/{id}/results.csv` and for the
results object a worker writes beside an input object. Written a page at a time."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

from common.registry import ModelMetadata


def header(meta: ModelMetadata) -> str:
    return _lines([["row", "label", *(f"p_{c}" for c in meta.classes)]])


def rows(page: dict[str, list[Any]], offset: int) -> str:
    """The lines of one page of results whose first row is row `offset` of the job."""
    pairs = zip(page["labels"], page["probabilities"], strict=True)
    return _lines([offset + i, label, *probs] for i, (label, probs) in enumerate(pairs))


def document(
    meta: ModelMetadata, pages: Iterable[tuple[int, dict[str, list[Any]]]]
) -> Iterator[str]:
    """The whole CSV text, piece by piece, from (offset, page) pairs in order."""
    yield header(meta)
    for offset, page in pages:
        yield rows(page, offset)


def _lines(records: Iterable[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(records)
    return buffer.getvalue()
