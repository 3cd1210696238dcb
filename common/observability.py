"""Structured logs and the Prometheus multiprocess directory, for every service.

Nothing here imports prometheus_client: `prepare_metrics_dir` must run before it is
imported, so that the API's and the worker's processes share their metric files.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


class IdSource:
    """Unique ids without a system call each: a random per-process prefix and a counter
    (uuid4 reads the kernel's random source every time, a measurable cost per request)."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self._counter):08x}"


new_id = IdSource()

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the work being done."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update(
            {k: v for k, v in vars(record).items() if k not in _STANDARD and k != "request_id"}
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(service: str, level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Celery's per-task success line carries the task's return value (predictions);
    # our own log lines and the prediction log record each task instead.
    logging.getLogger("celery.app.trace").setLevel(max(root.level, logging.WARNING))


def prepare_metrics_dir(configured: Path | None) -> Path:
    """Point prometheus-client at an empty directory shared by this service's processes.

    Child processes inherit the variable; stale files from an earlier run are removed,
    since they would add to the counts."""
    path = configured or Path(tempfile.mkdtemp(prefix="serving-metrics-"))
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path
