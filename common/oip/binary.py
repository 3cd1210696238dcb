"""The protocol's datatypes, and the binary tensor data extension's raw little-endian
encoding of them (what `tritonclient` sends and reads by default).

No NumPy: the API image has none, and `array` reads a tensor of fixed-size elements in
one C call."""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Any

from common.errors import InvalidInput, MalformedBody

HEADER_LENGTH = "inference-header-content-length"

# Datatype: (array typecode, bytes an element). BOOL and FP16 are read by hand below.
_FIXED: dict[str, tuple[str, int]] = {
    "UINT8": ("B", 1),
    "UINT16": ("H", 2),
    "UINT32": ("I", 4),
    "UINT64": ("Q", 8),
    "INT8": ("b", 1),
    "INT16": ("h", 2),
    "INT32": ("i", 4),
    "INT64": ("q", 8),
    "FP32": ("f", 4),
    "FP64": ("d", 8),
}
INT_TYPES = frozenset(name for name in _FIXED if "INT" in name)
FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
NUMERIC_TYPES = INT_TYPES | FLOAT_TYPES | {"BOOL"}
DATATYPES = NUMERIC_TYPES | {"BYTES"}
_SWAP = sys.byteorder != "little"


def element_size(datatype: str) -> int | None:
    """Bytes an element of the datatype takes; None for BYTES (each has its length)."""
    if datatype in _FIXED:
        return _FIXED[datatype][1]
    return {"BOOL": 1, "FP16": 2}.get(datatype)


def split_body(body: bytes, header_length: str) -> tuple[bytes, bytes]:
    """The JSON header and the binary data after it, by `Inference-Header-Content-Length`."""
    if not header_length.isdigit():
        raise MalformedBody(
            f"Inference-Header-Content-Length must be a number of bytes, got {header_length!r}"
        )
    size = int(header_length)
    if size > len(body):
        raise MalformedBody(
            f"Inference-Header-Content-Length is {size}, but the body has only {len(body)} bytes"
        )
    return body[:size], body[size:]


def decode(raw: bytes, datatype: str, count: int, tensor: str) -> list[Any]:
    """`count` elements of `datatype` from the raw bytes of the named tensor."""
    size = element_size(datatype)
    if size is None:
        raise InvalidInput(f"input {tensor!r}: BYTES tensors are not model inputs here")
    if len(raw) != size * count:
        raise InvalidInput(
            f"input {tensor!r}: binary_data_size is {len(raw)} bytes, but {count} "
            f"{datatype} elements take {size * count}"
        )
    if datatype == "BOOL":
        return [byte != 0 for byte in raw]
    if datatype == "FP16":
        return list(struct.unpack(f"<{count}e", raw))
    values = array(_FIXED[datatype][0])
    values.frombytes(raw)
    if _SWAP:
        values.byteswap()
    return values.tolist()


def encode(values: list[Any], datatype: str) -> bytes:
    """Elements as the extension sends them: BYTES each with a 4-byte length before it."""
    if datatype == "BYTES":
        parts = [str(value).encode() for value in values]
        return b"".join(struct.pack("<I", len(part)) + part for part in parts)
    if datatype == "BOOL":
        return bytes(1 if value else 0 for value in values)
    packed = array(_FIXED[datatype][0], values)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()
