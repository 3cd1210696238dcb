"""Rows of float features on the wire as a typed array: float64, little-endian, row after
row, with its dtype and shape beside it.

A 1,000-row request of 30 floats is 240 KB this way against 547 KB of JSON text, and it
travels as msgpack's raw bytes (the predict task's body): no JSON parser reads the
values, and the pool process reads them with a memcpy instead of parsing text. Inline,
the body is still base64 inside kombu's envelope, which the worker's main process parses
and keeps a copy of until the task is acknowledged; a big batch's rows therefore wait
in Redis instead (ClaimedRows, queueing.claims). A model with an int or bool feature
keeps the JSON text, which keeps each value's type for the log.

No NumPy in the API: its image has none (`array` and `struct` do the work). The worker,
which has it, reads the values in place as a matrix (`PackedRows.matrix`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import chain
from typing import Any, Protocol, Self

from common.float64_rows import DTYPE, ITEM_BYTES, float64_rows


class HasFeatures(Protocol):
    @property
    def features(self) -> Any: ...


def packable(meta: HasFeatures) -> bool:
    """Whether a version's rows travel packed: every feature is a float."""
    return all(feature.type == "float" for feature in meta.features)


def pack(rows: list[list[Any]]) -> bytes:
    """Validated rows (every value a finite float, or an int or bool the float feature
    took) as float64 values; exact, as JSON's shortest repr is."""
    n_values = sum(map(len, rows))
    return struct.pack(f"<{n_values}d", *chain.from_iterable(rows))


@dataclass(frozen=True)
class PackedRows:
    data: bytes
    n_features: int

    @property
    def n_rows(self) -> int:
        return len(self.data) // (ITEM_BYTES * self.n_features) if self.n_features else 0

    def wire(self) -> dict[str, Any]:
        return {"dtype": DTYPE, "shape": [self.n_rows, self.n_features], "data": self.data}

    @classmethod
    def from_wire(cls, value: dict[str, Any]) -> Self:
        """Checked against its own dtype and shape: a message that disagrees is refused
        (ValueError) rather than read as other rows."""
        dtype, shape, data = value.get("dtype"), value.get("shape"), value.get("data")
        if dtype != DTYPE:
            raise ValueError(f"packed rows of dtype {dtype!r}; only {DTYPE!r} is read")
        if not isinstance(data, bytes) or not isinstance(shape, list) or len(shape) != 2:
            raise ValueError("packed rows need bytes and a shape of [rows, features]")
        n_rows, n_features = (int(n) for n in shape)
        if n_rows < 0 or n_features < 1 or n_rows * n_features * ITEM_BYTES != len(data):
            raise ValueError(f"packed rows of shape {shape} cannot hold {len(data)} bytes")
        return cls(data, n_features)

    def matrix(self) -> Any:
        """The rows as a read-only float64 NumPy matrix over the bytes themselves: no copy
        and no Python float made (the worker's model reads it; orjson logs it as the same
        JSON text as the lists). NumPy is imported here, in the worker only."""
        import numpy as np

        return np.frombuffer(self.data, dtype=DTYPE).reshape(self.n_rows, self.n_features)

    def rows(self) -> list[list[float]]:
        """The rows as lists, built in C by a two-dimensional view of the bytes."""
        return float64_rows(self.data, self.n_features)


@dataclass(frozen=True)
class ClaimedRows:
    """Packed rows left in the result backend's Redis under the task's id (queueing.claims):
    the message carries only their dtype and shape."""

    n_rows: int
    n_features: int

    def wire(self) -> dict[str, Any]:
        return {"dtype": DTYPE, "shape": [self.n_rows, self.n_features], "claimed": True}

    @classmethod
    def from_wire(cls, value: dict[str, Any]) -> Self:
        shape = value.get("shape")
        if value.get("dtype") != DTYPE or not isinstance(shape, list) or len(shape) != 2:
            raise ValueError(f"claimed rows need dtype {DTYPE!r} and a shape of [rows, features]")
        n_rows, n_features = (int(n) for n in shape)
        if n_rows < 1 or n_features < 1:
            raise ValueError(f"claimed rows of shape {shape}")
        return cls(n_rows, n_features)
