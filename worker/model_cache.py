"""A per-process, bounded, lazily filled cache of loaded models.

Filled only inside the child process that predicts: XGBoost loaded in the Celery parent
before fork can hang the children.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from common import metrics
from common.errors import ModelUnavailable
from common.registry import Registry
from common.runtimes import LoadedModel, load_model
from common.settings import Settings

log = logging.getLogger(__name__)

Key = tuple[str, str, str]


class ModelCache:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        read_epoch: Callable[[], bytes | None],
        epoch_check_seconds: float = 1.0,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.capacity = settings.worker_model_cache_size
        self._models: OrderedDict[Key, LoadedModel] = OrderedDict()
        self._read_epoch = read_epoch
        self._epoch: bytes | None = None
        self._epoch_checked = 0.0
        self._epoch_check_seconds = epoch_check_seconds

    def __len__(self) -> int:
        return len(self._models)

    def get(self, model_type: str, version: str, sha256: str) -> LoadedModel:
        self._drop_if_epoch_changed()
        key = (model_type, version, sha256)
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
            return model
        model = self._load(model_type, version, sha256)
        self._models[key] = model
        while len(self._models) > self.capacity:
            self._models.popitem(last=False)
        metrics.MODELS_LOADED.set(len(self._models))
        return model

    def clear(self) -> None:
        self._models.clear()
        metrics.MODELS_LOADED.set(0)

    def _load(self, model_type: str, version: str, sha256: str) -> LoadedModel:
        meta = self.registry.metadata(model_type, version)
        if meta.sha256 != sha256:
            raise ModelUnavailable(
                f"{model_type} v{version} changed in the store since the request was "
                "accepted; retry the request"
            )
        started = time.perf_counter()
        model = load_model(meta, self.registry.read_artifact(meta), self.settings)
        seconds = time.perf_counter() - started
        metrics.MODEL_LOADS.labels(model_type, version).inc()
        metrics.MODEL_LOAD_DURATION.labels(model_type, version).observe(seconds)
        log.info("loaded %s v%s in %.1f ms", model_type, version, seconds * 1000)
        return model

    def _drop_if_epoch_changed(self) -> None:
        # Deleting models bumps an epoch in Redis; checking it at most once a second keeps
        # the hot path free of a Redis round trip per task.
        now = time.monotonic()
        if now - self._epoch_checked < self._epoch_check_seconds:
            return
        self._epoch_checked = now
        try:
            epoch = self._read_epoch()
        except Exception as exc:  # Redis down: keep serving what is loaded
            log.warning("could not read the models epoch: %s", exc)
            return
        if epoch != self._epoch:
            if self._models:
                log.info("models epoch changed; dropping %d loaded models", len(self._models))
            self.clear()
            self._epoch = epoch
