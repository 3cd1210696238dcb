"""The one Celery app of the worker, configured from settings, with its tasks and signals."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_shutdown, worker_ready

from common.heap import settle_heap
from common.settings import Settings
from queueing.codec import use_orjson_codec
from queueing.config import broker_is_amqp, celery_config
from worker.result_backend import backend_url

log = logging.getLogger(__name__)


def create_celery(settings: Settings) -> Celery:
    use_orjson_codec()
    # Celery's Redis result backend, storing each result in one round trip.
    backend = backend_url(settings.effective_result_backend_url)
    app = Celery("serving", backend=backend, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def create_worker_app(settings: Settings) -> Celery:
    from worker.housekeeping import run_housekeeping_when_ready
    from worker.tasks import register_tasks

    app = create_celery(settings)
    register_tasks(app, settings)
    _serve_metrics_when_ready(settings.worker_metrics_port)
    run_housekeeping_when_ready(app, settings)
    if broker_is_amqp(settings):
        _declare_queues_when_starting(app)
    _settle_heap_before_fork()
    return app


def _settle_heap_before_fork() -> None:
    """The main process's startup frozen before the pool forks (common/heap.py): the
    pool processes inherit it frozen, and share its pages."""

    @worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def settle(**_: Any) -> None:
        settle_heap()


def _declare_queues_when_starting(app: Celery) -> None:
    """RabbitMQ: every queue of `task_queues` declared before the consumer starts.

    Celery's native delayed delivery binds every queue the app knows to its delay
    exchanges; one not declared yet (the callback queue before its worker first ran)
    fails its binding, which Celery logs as delayed delivery failing altogether
    (CRITICAL), although the worker's own queues were bound."""

    @worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def declare(**_: Any) -> None:
        try:
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=3)
                for queue in app.conf.task_queues:
                    queue.bind(connection.default_channel).declare()
        except Exception as exc:  # the broker is down: the consumer keeps retrying
            log.warning("could not declare the queues at start: %s", exc)


def _serve_metrics_when_ready(port: int) -> None:
    """The main process serves /metrics for all pool processes (multiprocess mode).

    Started once the pool has forked, so the children do not inherit the socket."""
    if not port:
        return

    @worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def start_server(**_: Any) -> None:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(port, registry=registry)
        log.info("metrics on http://0.0.0.0:%d/metrics", port)

    @worker_process_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def forget_process(**_: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
