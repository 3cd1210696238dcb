"""A pool process builds its resources on its first task: while the log's database is
down it still gets them (its rows spool), where the main process's housekeeping raises
and tries again later."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from common.log_rows import log_row
from common.prediction_log import spool_key
from common.settings import Settings
from worker.base import build_resources
from worker.celery_app import create_worker_app


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again once the probe is


def test_a_pool_process_gets_its_resources_while_the_database_is_down(
    tmp_path: Path, redis_url: str
) -> None:
    settings = Settings(
        redis_url=redis_url,
        cache_prefix=f"resources-{uuid.uuid4().hex}:",
        local_store_path=tmp_path / "store",
        database_url=f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/log",
        worker_metrics_port=0,
    )
    app = create_worker_app(settings)

    with pytest.raises(OperationalError):
        build_resources(app, settings)  # housekeeping: raises, and tries again later
    resources = build_resources(app, settings, database_may_be_down=True)

    # and a prediction's row, refused by the database, waits in the spool
    resources.log.record([log_row("r1", ("xgboost", "1"), 1, [[1.0]], None, time.time())])
    assert resources.log.backlog() == 1
    resources.jobs.client.delete(spool_key(settings.cache_prefix))
