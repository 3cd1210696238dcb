"""`python -m worker [celery worker options]`: start a worker from the settings.

`python -m worker --callbacks [options]` starts the callback worker instead: it alone
consumes the callback queue, on a pool of threads (queueing.config), so a receiver that
is slow to answer never holds a process a prediction or a job chunk is waiting for.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery

from common.observability import configure_logging, prepare_metrics_dir
from common.settings import Settings, get_settings

log = logging.getLogger(__name__)
CALLBACKS_FLAG = "--callbacks"


def main(argv: list[str]) -> None:
    settings = get_settings()
    callbacks = CALLBACKS_FLAG in argv
    argv = [arg for arg in argv if arg != CALLBACKS_FLAG]
    # Before the task modules import prometheus_client; prefork children inherit it.
    prepare_metrics_dir(settings.metrics_dir)
    configure_logging(
        "callback-worker" if callbacks else "worker", settings.log_level, settings.log_format
    )
    from worker.celery_app import create_worker_app

    app = create_worker_app(settings)
    options = callback_worker(app, settings) if callbacks else prediction_worker(settings, argv)
    # Options given on the command line come last, so they win (e.g. --concurrency).
    app.worker_main(["worker", "--loglevel", settings.log_level, *options, *argv])


def prediction_worker(settings: Settings, argv: list[str]) -> list[str]:
    from queueing.config import worker_queues

    # Most urgent first: the queues are consumed in this order (queueing.config). A
    # worker started with its own -Q (only the prediction queue, say) keeps that.
    if {"-Q", "--queues"} & set(argv):
        return []
    return ["-Q", ",".join(worker_queues(settings))]


def callback_worker(app: Celery, settings: Settings) -> list[str]:
    from celery.signals import worker_init

    from queueing.config import callback_worker_options
    from queueing.messages import CALLBACK_TASK

    # GET / counts the workers that answer a broadcast ping as able to predict: this one
    # must not answer. `python -m worker.ping` still reaches it (its direct queue).
    app.conf.worker_enable_remote_control = False

    @worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def build_resources(**_: Any) -> None:
        # The threads share the process's resources: built once here, before the pool
        # starts, rather than by each of the first deliveries at once.
        try:
            _ = app.tasks[CALLBACK_TASK].resources
        except Exception:
            log.exception("could not build the worker's resources; the first delivery will")

    return callback_worker_options(settings)


if __name__ == "__main__":
    main(sys.argv[1:])
