"""The one Celery app of the worker, configured from settings."""

from __future__ import annotations

from celery import Celery

from common.celery_config import celery_config
from common.settings import Settings


def create_celery(settings: Settings) -> Celery:
    app = Celery("serving", backend=settings.effective_result_backend_url, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
