"""The naive-Celery baseline's worker: one task that predicts the rows it is given.

`python -m bench.naive_worker` starts a prefork worker with 2 processes on its own queue
(`bench-naive`), with broker and result backend both at SERVING_REDIS_URL (the benchmark
points it at a Redis database of its own). Each pool process loads the active model on
its first task, from the store named by the settings, and keeps it. Celery's defaults
otherwise: early acknowledgement, prefetching, a result per task in the backend. Beside
the prediction the task returns the pid of the process that ran it, so the benchmark can
tell when every pool process has loaded the model. `create_naive_celery` is shared with
bench/naive_app.py, the producer.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from common.runtimes import LoadedModel
from common.settings import Settings, get_settings

QUEUE = "bench-naive"
PREDICT_TASK = "bench.naive.predict"
POOL_PROCESSES = 2

_model: LoadedModel | None = None  # this pool process's model, loaded on its first task


def create_naive_celery(settings: Settings) -> Celery:
    url = settings.redis_url
    app = Celery("bench-naive", broker=url, backend=url, set_as_current=False)
    app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)
    return app


def model(settings: Settings) -> LoadedModel:
    global _model
    if _model is None:
        from threadpoolctl import threadpool_limits

        from bench.bare_app import load_active_model

        threadpool_limits(limits=settings.model_threads)  # the real worker's thread budget
        _model = load_active_model(settings)
    return _model


def predict(rows: list[dict[str, float]]) -> dict[str, Any]:
    loaded = model(get_settings())
    names = loaded.meta.feature_names
    result = loaded.predict([[row[name] for name in names] for row in rows])
    return {**result, "pid": os.getpid()}


def main() -> None:
    settings = get_settings()
    app = create_naive_celery(settings)
    app.task(name=PREDICT_TASK)(predict)
    app.worker_main(
        [
            "worker",
            "--pool", "prefork",
            "--concurrency", str(POOL_PROCESSES),
            "--queues", QUEUE,
            "--hostname", "bench-naive@%h",
            "--loglevel", settings.log_level,
        ]
    )  # fmt: skip


if __name__ == "__main__":
    main()
