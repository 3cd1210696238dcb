"""A version's metadata for unit tests: its features and classes, the rest fixed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from common.registry import ModelMetadata


def make_metadata(
    features: list[tuple[str, str]], classes: list[Any] | None = None
) -> ModelMetadata:
    """Features as (name, type) pairs; classes "no" and "yes" unless given."""
    return ModelMetadata(
        model_type="demo",
        version="3",
        framework="sklearn",
        artifact_format="skops",
        sha256="0" * 64,
        features=[{"name": n, "type": t} for n, t in features],
        classes=classes or ["no", "yes"],
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
