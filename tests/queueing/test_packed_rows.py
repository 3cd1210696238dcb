"""Packed rows: float64 values with their dtype and shape, exact, in a msgpack body that a
worker reads back as the same rows; a model with an int or bool feature keeps JSON."""

from __future__ import annotations

import asyncio
import math
import struct
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from kombu.serialization import dumps, loads

from common.batching import Request
from common.settings import Settings
from queueing.dispatcher import TaskPublisher, encode_rows, predict_batch_message
from queueing.messages import PredictBatch
from queueing.packed_rows import PackedRows, pack, packable

ODD_FLOATS = [5e-324, 1.7976931348623157e308, -0.0, 0.1, -3.4e38, 1 / 3, 2.0**53 + 2]


def meta(*types: str) -> SimpleNamespace:
    features = [SimpleNamespace(type=t) for t in types]
    return SimpleNamespace(model_type="xgboost", version="1", sha256="a" * 64, features=features)


def request(m: SimpleNamespace, rows: list[list[Any]], request_id: str = "r") -> Request:
    future: asyncio.Future[dict[str, Any]] = asyncio.Future(loop=asyncio.new_event_loop())
    future.get_loop().close()
    return Request(request_id, rows, 1.5, future, encode_rows(m, rows), "owner")


def test_only_a_model_of_float_features_packs() -> None:
    assert packable(meta("float", "float"))
    assert not packable(meta("float", "int"))
    assert not packable(meta("bool"))


def test_values_come_back_exactly_and_as_floats() -> None:
    rows = [ODD_FLOATS, [float(i) for i in range(len(ODD_FLOATS))], [1, True, *ODD_FLOATS[2:]]]
    back = PackedRows(pack(rows), len(ODD_FLOATS)).rows()
    assert back == [[float(v) for v in row] for row in rows]
    assert all(type(v) is float for row in back for v in row)
    assert math.copysign(1.0, back[0][2]) == -1.0  # -0.0 keeps its sign
    # Little-endian float64, row after row, whatever the machine.
    assert pack([[1.5, -2.0]]) == struct.pack("<2d", 1.5, -2.0)


def test_the_worker_reads_the_same_values_in_place_as_a_float64_matrix() -> None:
    rows = [ODD_FLOATS, [float(i) for i in range(len(ODD_FLOATS))]]
    packed = PackedRows(pack(rows), len(ODD_FLOATS))
    matrix = packed.matrix()
    assert matrix.shape == (2, len(ODD_FLOATS)) and matrix.dtype.str == "<f8"
    assert matrix.tolist() == packed.rows()
    # A view of the message's bytes: nothing copied, and nothing can write through it.
    assert not matrix.flags.owndata and not matrix.flags.writeable
    assert PackedRows(b"", 3).matrix().shape == (0, 3)


def test_a_batch_gives_the_model_a_matrix_for_packed_rows_and_lists_for_json() -> None:
    floats, mixed = meta("float", "float"), meta("float", "int")
    packed = predict_batch_message(floats, [request(floats, [[1.0, 2.0], [3.0, 4.5]])])
    assert PredictBatch.from_args(*packed.args()).matrix().tolist() == [[1.0, 2.0], [3.0, 4.5]]
    as_json = predict_batch_message(mixed, [request(mixed, [[1.5, 2]])])
    assert PredictBatch.from_args(*as_json.args()).matrix() == [[1.5, 2]]


def test_no_rows_and_one_feature_keep_their_shape() -> None:
    assert PackedRows(b"", 3).rows() == []
    assert PackedRows(pack([[1.0], [2.5]]), 1).rows() == [[1.0], [2.5]]


def test_a_batch_is_its_requests_rows_in_order_in_a_msgpack_body() -> None:
    m = meta("float", "float")
    requests = [request(m, [[1.0, 2.0]], "a"), request(m, [[3.0, 4.0], [5.5, 6.25]], "b")]
    message = predict_batch_message(m, requests)
    assert message.serializer == "msgpack"
    outgoing = TaskPublisher(Settings()).predict(message, "task-1")
    assert outgoing.options["serializer"] == "msgpack"

    content_type, encoding, body = dumps(outgoing.args, serializer="msgpack")
    assert content_type == "application/x-msgpack"
    parsed = PredictBatch.from_args(*loads(body, content_type, encoding, accept=[content_type]))
    assert parsed == message
    assert parsed.rows() == [[1.0, 2.0], [3.0, 4.0], [5.5, 6.25]]
    assert [(s.request_id, s.n_rows) for s in parsed.segments] == [("a", 1), ("b", 2)]
    # Less than half the JSON text of 1,000 rows of 30 measured values (17 digits each).
    wide = [[(r * 30 + i) / 7 for i in range(30)] for r in range(1000)]
    assert len(pack(wide)) < len(orjson.dumps(wide)) / 2


def test_a_mixed_model_keeps_the_json_text() -> None:
    m = meta("float", "int", "bool")
    message = predict_batch_message(m, [request(m, [[1.5, 2, True]])])
    assert message.serializer == "json"
    assert PredictBatch.from_args(*message.args()).rows() == [[1.5, 2, True]]


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        ({"dtype": "<f4", "shape": [1, 2], "data": b"\0" * 8}, "dtype"),
        ({"dtype": "<f8", "shape": [1, 2], "data": b"\0" * 8}, "cannot hold"),
        ({"dtype": "<f8", "shape": [1, 0], "data": b""}, "cannot hold"),
        ({"dtype": "<f8", "shape": [-1, -2], "data": b"\0" * 16}, "cannot hold"),
        ({"dtype": "<f8", "shape": [2], "data": b"\0" * 16}, "shape"),
        ({"dtype": "<f8", "shape": [1, 2], "data": "text"}, "bytes"),
        ({"dtype": "<f8", "data": b"\0" * 16}, "shape"),
    ],
)
def test_packed_rows_that_disagree_with_their_shape_are_refused(
    wire: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        PackedRows.from_wire(wire)
