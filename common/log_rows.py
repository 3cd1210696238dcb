"""The prediction log's row, built in one place: for a cache hit (API), for each request
of a worker's batch, and for a job."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from common.errors import ServingError
from common.request_results import split
from common.runtimes import Rows


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def log_row(
    request_id: str,
    labels: tuple[str, str],
    n_rows: int,
    inputs: Any,
    output: Any,
    received_at: float,
    *,
    error: ServingError | None = None,
    cached: bool = False,
    worker: str | None = None,
    owner: str | None = None,
    job_id: str | None = None,
) -> dict[str, Any]:
    """One row of the log: `inputs` in the version's feature order (GET /logs names them
    again), `output` None for a failure."""
    return {
        "request_id": request_id,
        "created_at": datetime.now(UTC),
        "model_type": labels[0],
        "version": labels[1],
        "n_rows": n_rows,
        "input": inputs,
        "output": None if error is not None else output,
        "latency_ms": max(0.0, (time.time() - received_at) * 1000),
        "cached": cached,
        "status": "ok" if error is None else "error",
        "error": None if error is None else f"{error.type}: {error.message}",
        "worker": worker,
        "owner": owner or None,
        "job_id": job_id,
        "shadow": False,
        "primary_request_id": None,
    }


def shadow_of(primary_request_id: str) -> dict[str, Any]:
    """What makes a row the shadow of a request: its own id stays unique."""
    return {"shadow": True, "primary_request_id": primary_request_id}


def batch_rows(
    labels: tuple[str, str],
    rows: Rows,
    segments: Sequence[Any],
    result: dict[str, Any] | None,
    error: ServingError | None,
) -> list[dict[str, Any]]:
    """One log row per request of a batch, with its own slice of inputs and outputs
    (`rows`: lists, or a worker's NumPy matrix, which the log writes as the same JSON)."""
    entries, start, worker = [], 0, worker_name()
    outputs = split(result, (s.n_rows for s in segments)) if result is not None else None
    for segment in segments:
        end = start + segment.n_rows
        output = next(outputs) if outputs is not None else None
        entries.append(
            log_row(
                segment.request_id,
                labels,
                segment.n_rows,
                rows[start:end],
                output,
                segment.received_at,
                error=error,
                worker=worker,
                owner=segment.owner,
            )
        )
        start = end
    return entries
