"""Thin, explicitly named tasks: decode JSON arguments, call `common/`, return JSON."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery

from common import metrics
from common.cache import models_epoch_key
from common.db import PredictionLogRepo, create_log_engine, create_tables
from common.errors import ServingError
from common.observability import request_id_var
from common.protocol import PREDICT_TASK
from common.registry import Registry
from common.settings import Settings
from common.store import create_store
from worker.model_cache import ModelCache

log = logging.getLogger(__name__)


@dataclass
class ProcessState:
    """What one worker process holds; built lazily after fork, never in the parent."""

    pid: int
    models: ModelCache
    log_repo: PredictionLogRepo


class WorkerRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._state: ProcessState | None = None

    def state(self) -> ProcessState:
        if self._state is None or self._state.pid != os.getpid():
            self._state = self._build()
        return self._state

    def _build(self) -> ProcessState:
        from threadpoolctl import threadpool_limits

        # One BLAS/OpenMP thread per process: prefork children must not oversubscribe.
        threadpool_limits(limits=self.settings.model_threads)
        settings = self.settings
        cache_redis = redis.Redis.from_url(
            settings.effective_cache_url, socket_timeout=2, socket_connect_timeout=2
        )
        epoch_key = models_epoch_key(settings.cache_prefix)
        engine = create_log_engine(settings.database_url)
        create_tables(engine)
        models = ModelCache(
            Registry(create_store(settings)),
            settings,
            read_epoch=lambda: cache_redis.get(epoch_key),  # type: ignore[arg-type, return-value]
        )
        return ProcessState(os.getpid(), models, PredictionLogRepo(engine))

    def predict(
        self,
        request_id: str,
        model_type: str,
        version: str,
        sha256: str,
        rows: list[list[Any]],
        received_at: float,
    ) -> dict[str, Any]:
        state = self.state()
        started = time.perf_counter()
        labels = (model_type, version)
        metrics.TASK_QUEUE_WAIT.labels(*labels).observe(max(0.0, time.time() - received_at))
        entry: dict[str, Any] = {
            "request_id": request_id,
            "model_type": model_type,
            "version": version,
            "n_rows": len(rows),
            "cached": False,
            "worker": f"{socket.gethostname()}:{os.getpid()}",
        }
        try:
            model = state.models.get(model_type, version, sha256)
            inference_started = time.perf_counter()
            result = model.predict(rows)
            metrics.INFERENCE_DURATION.labels(*labels).observe(
                time.perf_counter() - inference_started
            )
        except ServingError as exc:
            state.log_repo.record([self._finish(entry, received_at, rows, None, exc)])
            metrics.TASK_FAILURES.labels(*labels, exc.type).inc()
            metrics.TASKS.labels(*labels, "error").inc()
            raise
        names = model.meta.feature_names
        inputs = [dict(zip(names, row, strict=True)) for row in rows]
        state.log_repo.record([self._finish(entry, received_at, inputs, result, None)])
        metrics.TASKS.labels(*labels, "ok").inc()
        metrics.TASK_DURATION.labels(*labels).observe(time.perf_counter() - started)
        return result

    @staticmethod
    def _finish(
        entry: dict[str, Any],
        received_at: float,
        inputs: Any,
        output: Any,
        error: ServingError | None,
    ) -> dict[str, Any]:
        return entry | {
            "created_at": datetime.now(UTC),
            "input": inputs,
            "output": output,
            "latency_ms": max(0.0, (time.time() - received_at) * 1000),
            "status": "ok" if error is None else "error",
            "error": None if error is None else f"{error.type}: {error.message}",
        }


def register_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    @app.task(name=PREDICT_TASK)  # type: ignore[untyped-decorator]
    def predict(
        request_id: str,
        model_type: str,
        version: str,
        sha256: str,
        rows: list[list[Any]],
        received_at: float,
    ) -> dict[str, Any]:
        token = request_id_var.set(request_id)  # every log line of the task carries it
        try:
            return runtime.predict(request_id, model_type, version, sha256, rows, received_at)
        finally:
            request_id_var.reset(token)
