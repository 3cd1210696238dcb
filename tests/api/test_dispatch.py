"""The predict task's rows: one JSON text joined from each request's own encoding."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from api.dispatch import rows_text
from common.batching import Request
from worker.tasks import decode_rows


def request(rows: list[list[Any]], encoded: bool = True) -> Request:
    future: asyncio.Future[dict[str, Any]] = asyncio.Future(loop=asyncio.new_event_loop())
    future.get_loop().close()
    return Request("r", rows, 0.0, future, orjson.dumps(rows) if encoded else b"")


@pytest.mark.parametrize(
    "batch",
    [
        [[[1.5, 2.0]]],
        [[[1.5, 2.0], [3.0, -4.25]], [[5e-324, 1.7976931348623157e308]], [[0.1, 0.2]]],
        [[[1, True, 2.5]], [[0, False, -0.0]]],  # ints and bools stay what they are
    ],
)
def test_the_joined_text_decodes_to_every_row_in_order(batch: list[list[list[Any]]]) -> None:
    text = rows_text([request(rows) for rows in batch])
    assert isinstance(text, str)
    decoded = decode_rows(text)
    assert decoded == [row for rows in batch for row in rows]
    assert [type(v) for row in decoded for v in row] == [
        type(v) for rows in batch for row in rows for v in row
    ]


def test_a_request_without_its_encoding_is_encoded_here() -> None:
    text = rows_text([request([[1.0]], encoded=False), request([[2.0]])])
    assert decode_rows(text) == [[1.0], [2.0]]


def test_rows_from_an_earlier_api_pass_through() -> None:
    assert decode_rows([[1.0, 2.0]]) == [[1.0, 2.0]]
