"""Stand-ins for the worker's loaded models in the services' unit tests: every row is
label "a", or the model raises the error it was given."""

from __future__ import annotations

from typing import Any


class Model:
    def __init__(self, meta: Any = None, error: Exception | None = None) -> None:
        self.meta, self.error = meta, error

    def predict(self, rows: Any) -> dict[str, list[Any]]:
        if self.error is not None:
            raise self.error
        return {"labels": ["a"] * len(rows), "probabilities": [[0.5, 0.5]] * len(rows)}


class Models:
    """The model cache, holding one model for every artifact asked for."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def get(self, model_type: str, version: str, sha256: str) -> Any:  # a LoadedModel
        return self.model
