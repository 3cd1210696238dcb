"""`python -m worker [celery worker options]`: start a worker from the settings."""

from __future__ import annotations

import logging
import sys

from celery import Celery

from common.settings import Settings, get_settings
from worker.celery_app import create_celery
from worker.tasks import WorkerRuntime, register_tasks


def build_worker_app(settings: Settings) -> Celery:
    app = create_celery(settings)
    register_tasks(app, WorkerRuntime(settings))
    return app


def main(argv: list[str]) -> None:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
    app = build_worker_app(settings)
    app.worker_main(["worker", "--loglevel", settings.log_level, "-Q", settings.task_queue, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
