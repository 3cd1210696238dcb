"""Start Flower against a broker, with basic auth, listening on localhost only."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

from dev.services import ManagedProcess, wait_until


def flower_answers(url: str, user: str, password: str) -> bool:
    token = b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        url + "/healthcheck", headers={"Authorization": f"Basic {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_flower(
    broker_url: str,
    port: int,
    user: str,
    password: str,
    log_path: Path,
    env: dict[str, str] | None = None,
) -> tuple[ManagedProcess, str]:
    # Credentials (Flower's login, the broker URL's Redis password) go through the
    # environment, not the command line, which `ps` shows to every local user.
    flower_env = {
        **(env or os.environ),
        "FLOWER_BASIC_AUTH": f"{user}:{password}",
        "CELERY_BROKER_URL": broker_url,
    }
    args = [
        sys.executable,
        "-m",
        "celery",
        "flower",
        "--address=127.0.0.1",
        f"--port={port}",
    ]
    proc = ManagedProcess("flower", args, log_path, env=flower_env).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: flower_answers(url, user, password), 60, "Flower")
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"Flower did not start: {proc.log_tail()}") from None
    except BaseException:  # Ctrl-C meanwhile: Flower, in a session of its own, missed it
        proc.stop()
        raise
    return proc, url
