"""`python -m worker [celery worker options]`: start a worker from the settings."""

from __future__ import annotations

import sys

from common.observability import configure_logging, prepare_metrics_dir
from common.settings import get_settings


def main(argv: list[str]) -> None:
    settings = get_settings()
    # Before the task modules import prometheus_client; prefork children inherit it.
    prepare_metrics_dir(settings.metrics_dir)
    configure_logging("worker", settings.log_level, settings.log_format)
    from queueing.config import worker_queues
    from worker.celery_app import create_worker_app

    app = create_worker_app(settings)
    # Most urgent first: the queues are consumed in this order (queueing.config). A
    # worker started with its own -Q (only the prediction queue, say) keeps that.
    queues = [] if {"-Q", "--queues"} & set(argv) else ["-Q", ",".join(worker_queues(settings))]
    app.worker_main(["worker", "--loglevel", settings.log_level, *queues, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
