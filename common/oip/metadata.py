"""Server metadata, model metadata and the repository index, all from our own metadata."""

from __future__ import annotations

from typing import Any

from common.oip.responses import PREDICT, PREDICT_PROBA, label_datatype
from common.registry import Catalog, ModelMetadata

SERVER_NAME = "model-serving"
SERVER_VERSION = "0.1.0"  # pyproject.toml's version (a test keeps the two the same)
EXTENSIONS = ["binary_tensor_data", "model_repository"]
MATRIX_INPUT = "input-0"  # any name works for the one-tensor form; this one is listed


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


def model_metadata(meta: ModelMetadata, versions: list[str]) -> dict[str, Any]:
    """One version's inputs and outputs. The input listed is the one-tensor form; its
    parameters name the features, each of which may be sent as a tensor of its own."""
    width = len(meta.features)
    return {
        "name": meta.model_type,
        "versions": versions,
        "platform": meta.framework,
        "inputs": [
            {
                "name": MATRIX_INPUT,
                "datatype": "FP64",
                "shape": [-1, width],
                "parameters": {
                    "content_type": "np",
                    "features": [{"name": f.name, "type": f.type} for f in meta.features],
                },
            }
        ],
        "outputs": [
            {"name": PREDICT, "datatype": label_datatype(meta), "shape": [-1, 1]},
            {"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, len(meta.classes)]},
        ],
        "parameters": {
            "version": meta.version,
            "classes": [str(c) for c in meta.classes],
            "metrics": meta.metrics,
            "description": meta.description,
        },
    }


def repository_index(catalog: Catalog, ready_only: bool) -> list[dict[str, Any]]:
    """Every version of every type, as Triton's repository extension lists them."""
    index = []
    for model_type, metas in sorted(catalog.models.items()):
        for meta in metas:
            ready = meta.artifact_deleted_at is None
            if ready_only and not ready:
                continue
            entry = {"name": model_type, "version": meta.version, "state": "READY"}
            if not ready:
                entry |= {"state": "UNAVAILABLE", "reason": "its artifact was deleted"}
            index.append(entry)
    return index
