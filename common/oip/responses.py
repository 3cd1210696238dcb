"""An inference response: the outputs MLServer's scikit-learn and XGBoost runtimes name,
`predict` (labels) and `predict_proba` (class probabilities), in JSON or as binary data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from common.errors import InvalidInput
from common.oip import binary
from common.oip.tensors import InferenceRequest
from common.registry import ModelMetadata

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
OUTPUTS = (PREDICT, PREDICT_PROBA)


@dataclass(frozen=True)
class Rendered:
    body: bytes
    header_length: int | None  # set when binary data follows the JSON


def label_datatype(meta: ModelMetadata) -> str:
    """INT64 for integer classes, BYTES for class names."""
    ints = all(type(c) is int for c in meta.classes)
    return "INT64" if ints else "BYTES"


def check_outputs(request: InferenceRequest) -> None:
    """Refused before any work: an output this server has not."""
    for choice in request.outputs or []:
        if choice.name not in OUTPUTS:
            raise InvalidInput(
                f"unknown output {choice.name!r}: the outputs are {', '.join(OUTPUTS)}"
            )


def render(
    request: InferenceRequest,
    meta: ModelMetadata,
    result: dict[str, Any],
    extra: dict[str, Any],
) -> Rendered:
    """The response to `request` for the model's `result`; `extra` goes in `parameters`."""
    labels, probabilities = result["labels"], result["probabilities"]
    tensors = {
        PREDICT: (label_datatype(meta), [len(labels), 1], labels),
        PREDICT_PROBA: (
            "FP64",
            [len(labels), len(meta.classes)],
            [p for row in probabilities for p in row],
        ),
    }
    chosen = request.outputs or []
    binary_of = {c.name: request.binary_output if c.binary is None else c.binary for c in chosen}
    names = [c.name for c in chosen] or list(OUTPUTS)
    outputs, buffers = [], []
    for name in names:
        datatype, shape, values = tensors[name]
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary_of.get(name, request.binary_output):
            buffers.append(binary.encode(values, datatype))
            output["parameters"] = {"binary_data_size": len(buffers[-1])}
        else:
            output["data"] = [str(v) for v in values] if datatype == "BYTES" else values
        outputs.append(output)
    header = orjson.dumps(
        {
            "model_name": meta.model_type,
            "model_version": meta.version,
            "id": request.id if request.id is not None else extra.get("request_id"),
            "parameters": extra,
            "outputs": outputs,
        }
    )
    if not buffers:
        return Rendered(header, None)
    return Rendered(header + b"".join(buffers), len(header))
