"""`python -m worker.ping [NODE_NAME]`: does this worker consume? Exit 0 if it ran a ping
task sent to its own queue within the readiness timeout, else 1.

A live worker process is not enough: after a broker reconnect a worker can stay alive
and stop taking tasks. Every worker also consumes its own direct queue (`worker_direct`),
so the ping reaches this worker and no other. NODE_NAME defaults to Celery's own default,
`celery@<host name>`, which is what a container's worker is called.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time

from celery.exceptions import TimeoutError as CeleryTimeout
from celery.utils import worker_direct

from common.settings import get_settings
from queueing.messages import PING_TASK
from worker.celery_app import create_celery


def main(argv: list[str]) -> int:
    settings = get_settings()
    node = argv[0] if argv else f"celery@{socket.gethostname()}"
    app = create_celery(settings)
    # A probe answers in seconds: without this the result backend retries its
    # connection for 20 s (Celery's default) before the probe can say Redis is down.
    app.conf.result_backend_transport_options = {
        "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}
    }
    started = time.perf_counter()
    try:
        # retry=False: a probe that cannot publish fails now, not after Celery's retries.
        result = app.send_task(PING_TASK, queue=worker_direct(node), expires=60, retry=False)
    except Exception as exc:  # kombu raises assorted errors when the broker is down
        problem = " ".join(str(exc).split())  # one line: Celery's spans three
        print(f"{node}: the broker or result store is unavailable: {problem}")
        return 1
    try:
        answer = result.get(timeout=settings.readiness_timeout_seconds)
    except CeleryTimeout:
        print(f"{node}: no answer within {settings.readiness_timeout_seconds:g} s")
        return 1
    except Exception as exc:  # the broker or backend is down: not ready either
        print(f"{node}: {type(exc).__name__}: {exc}")
        return 1
    finally:
        with contextlib.suppress(Exception):
            result.forget()
    took = (time.perf_counter() - started) * 1000
    print(f"{answer['worker']} (pid {answer['pid']}) answered in {took:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
