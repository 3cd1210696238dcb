"""Fixtures for the pure unit tests of common/: no services, real files under tmp_path.

The machine's SERVING_* variables are cleared for every test by tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from common.prediction_log import create_log_engine, create_tables
from common.registry import Registry
from common.store import LocalStore


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """The prediction log on a SQLite file of the test's own, its tables made."""
    engine = create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(store_root: Path) -> LocalStore:
    return LocalStore(store_root)


@pytest.fixture
def registry(store: LocalStore) -> Registry:
    return Registry(store)


MetaFactory = Callable[..., dict[str, Any]]


def _meta_fields(model_type: str = "xgboost", **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model_type": model_type,
        "framework": "xgboost",
        "artifact_format": "xgboost-ubj",
        "features": [{"name": "alpha"}, {"name": "beta"}],
        "classes": ["a", "b"],
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def meta_fields() -> MetaFactory:
    """Minimal valid publishable metadata (2 float features, 2 classes); override any field."""
    return _meta_fields
