"""An inference request's tensors, read from its JSON and its binary data (protocol only:
nothing here knows a model)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from common.errors import InvalidInput
from common.oip import binary

MAX_DIMS = 8  # no model input here has more than two
SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    values: list[Any]  # flat, in row-major order

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1


@dataclass(frozen=True)
class OutputChoice:
    name: str
    binary: bool | None  # None: as the request's binary_data_output says


@dataclass(frozen=True)
class InferenceRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[OutputChoice] | None  # None: every output
    binary_output: bool  # the request's `binary_data_output`: outputs not chosen one by one


def parse_request(header: Any, data: bytes = b"") -> InferenceRequest:
    """The request's JSON (`header`) and the binary data that followed it, if any."""
    if not isinstance(header, dict):
        raise InvalidInput("the body must be a JSON object with an 'inputs' list")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    offset, tensors = 0, []
    for index, spec in enumerate(inputs):
        tensor, offset = _tensor(spec, index, data, offset)
        tensors.append(tensor)
    if offset != len(data):
        raise InvalidInput(
            f"the body has {len(data) - offset} bytes of binary data that no input's "
            "binary_data_size accounts for"
        )
    if len({t.name for t in tensors}) != len(tensors):
        raise InvalidInput("two inputs have the same name")
    parameters = _parameters(header, "the request")
    return InferenceRequest(
        request_id,
        tensors,
        _outputs(header.get("outputs")),
        binary_output=parameters.get("binary_data_output") is True,
    )


def _parameters(spec: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = spec.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"the parameters of {what} must be an object")
    return parameters


def _tensor(spec: Any, index: int, data: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InvalidInput(f"input {index} must be an object with a 'name'")
    name = spec["name"]
    datatype, shape = spec.get("datatype"), _shape(spec.get("shape"), name)
    if datatype not in binary.DATATYPES:
        raise InvalidInput(
            f"input {name!r}: unknown datatype {datatype!r}; use one of "
            f"{', '.join(sorted(binary.DATATYPES))}"
        )
    count = math.prod(shape)
    parameters = _parameters(spec, f"input {name!r}")
    if used := [p for p in SHARED_MEMORY if p in parameters]:
        raise InvalidInput(f"input {name!r}: shared memory ({used[0]}) is not supported")
    size = parameters.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise InvalidInput(f"input {name!r}: binary_data_size must be a number of bytes")
        if "data" in spec:
            raise InvalidInput(f"input {name!r} has both 'data' and binary_data_size")
        if offset + size > len(data):
            raise InvalidInput(
                f"input {name!r}: binary_data_size {size} runs past the body's binary data"
            )
        values = binary.decode(data[offset : offset + size], datatype, count, name)
        return Tensor(name, datatype, shape, values), offset + size
    if "data" not in spec:
        raise InvalidInput(f"input {name!r} has no 'data' (and no binary_data_size)")
    values = _flat(spec["data"], name)
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} holds {count} elements, 'data' has {len(values)}"
        )
    return Tensor(name, datatype, shape, values), offset


def _shape(shape: Any, name: str) -> tuple[int, ...]:
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_DIMS
        or not all(type(n) is int and n >= 0 for n in shape)
    ):
        raise InvalidInput(
            f"input {name!r}: 'shape' must be a list of 1 to {MAX_DIMS} sizes, each >= 0"
        )
    return tuple(shape)


def _flat(data: Any, name: str) -> list[Any]:
    """'data' flat or nested as the shape: either way, its elements in row-major order."""
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: 'data' must be a list")
    values = data
    for _ in range(MAX_DIMS):
        if not values or not isinstance(values[0], list):
            break
        if not all(isinstance(v, list) for v in values):
            raise InvalidInput(f"input {name!r}: 'data' mixes lists and values")
        values = [x for v in values for x in v]
    if any(isinstance(v, (list, dict)) for v in values):
        raise InvalidInput(f"input {name!r}: 'data' nests lists unevenly")
    return values


def _outputs(outputs: Any) -> list[OutputChoice] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise InvalidInput("'outputs' must be a list of {'name': ...} objects")
    chosen = []
    for index, spec in enumerate(outputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidInput(f"output {index} must be an object with a 'name'")
        parameters = _parameters(spec, f"output {spec['name']!r}")
        flag = parameters.get("binary_data")
        if flag is not None and not isinstance(flag, bool):
            raise InvalidInput(f"output {spec['name']!r}: binary_data must be true or false")
        chosen.append(OutputChoice(spec["name"], flag))
    return chosen
