"""`python -m worker.ping`, the workers' probe, when Redis cannot be reached: one line
and exit status 1, not a traceback after Celery's 20 s of retries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dev.services import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_an_unreachable_redis_is_one_line_and_exit_1() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env |= {"SERVING_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "worker.ping", "celery@nowhere"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("celery@nowhere: the broker or result store is unavailable: ")
