"""The per-process model cache: bounded, lazily filled, emptied when the epoch moves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from common.errors import ModelUnavailable
from common.registry import Registry
from common.runtimes import serialize_xgboost
from common.settings import Settings
from common.store import LocalStore
from worker.model_cache import ModelCache


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2)), np.arange(40) % 2
    artifact = serialize_xgboost(xgb.XGBClassifier(n_estimators=3, n_jobs=1).fit(x, y))
    registry = Registry(LocalStore(tmp_path))
    for _ in range(3):
        registry.publish(
            {
                "model_type": "m",
                "framework": "xgboost",
                "artifact_format": "xgboost-ubj",
                "features": [{"name": "a"}, {"name": "b"}],
                "classes": ["no", "yes"],
            },
            artifact,
        )
    return registry


def make_cache(registry: Registry, epoch: list[bytes | None]) -> ModelCache:
    settings = Settings(worker_model_cache_size=2)
    return ModelCache(registry, settings, read_epoch=lambda: epoch[0], epoch_check_seconds=0)


def test_models_load_once_and_the_oldest_is_evicted(registry: Registry) -> None:
    cache = make_cache(registry, [None])
    sha = registry.metadata("m", "1").sha256
    first = cache.get("m", "1", sha)
    assert cache.get("m", "1", sha) is first
    cache.get("m", "2", sha)
    cache.get("m", "3", sha)
    assert len(cache) == 2
    assert cache.get("m", "1", sha) is not first  # evicted, loaded again


def test_a_new_epoch_drops_every_loaded_model(registry: Registry) -> None:
    epoch: list[bytes | None] = [b"1"]
    cache = make_cache(registry, epoch)
    sha = registry.metadata("m", "1").sha256
    first = cache.get("m", "1", sha)
    assert cache.get("m", "1", sha) is first
    epoch[0] = b"2"
    assert cache.get("m", "1", sha) is not first


def test_a_request_for_another_checksum_is_refused(registry: Registry) -> None:
    cache = make_cache(registry, [None])
    with pytest.raises(ModelUnavailable, match="changed in the store"):
        cache.get("m", "1", "0" * 64)


def test_deleted_artifacts_cannot_be_loaded(registry: Registry) -> None:
    cache = make_cache(registry, [None])
    sha = registry.metadata("m", "1").sha256
    registry.delete_artifacts()
    with pytest.raises(ModelUnavailable, match="was deleted"):
        cache.get("m", "1", sha)
