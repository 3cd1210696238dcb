"""The redis service's script from docker-compose.yml, run on this machine's redis-server.

No Docker here: a stand-in for the image's docker-entrypoint.sh rewrites the arguments as
the real one can (options inserted right after `redis-server`, here a private port and
folder), then execs them. What is checked is the script itself: the password arrives on
stdin, the flags still apply, redis-server replaces the shell, the healthcheck's redis-cli
authenticates from REDISCLI_AUTH, and the serving settings reach it with the password.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from pydantic import SecretStr

from common.settings import Settings
from dev.services import ManagedProcess, free_port, redis_answers, wait_until

ROOT = Path(__file__).resolve().parents[2]

ENTRYPOINT_STANDIN = """#!/bin/sh
set -e
if [ "$1" = redis-server ]; then
    shift
    set -- redis-server --port "$TEST_PORT" --bind 127.0.0.1 --dir "$TEST_DIR" "$@"
fi
exec "$@"
"""


def redis_major_version(binary: str) -> int:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"v=(\d+)\.", out)
    return int(found.group(1)) if found else 0


REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        REDIS_SERVER is None or REDIS_CLI is None or redis_major_version(REDIS_SERVER) < 7,
        reason="needs redis-server 7+ and redis-cli on the PATH (the image runs 7.4)",
    ),
]


def compose_redis() -> dict[str, Any]:
    service: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][
        "redis"
    ]
    return service


def run_script(tmp_path: Path, password: str) -> tuple[ManagedProcess, int, Path]:
    """Start the service's `entrypoint` + `command` as compose would, `$$` being `$`."""
    service = compose_redis()
    argv = [*service["entrypoint"], *(arg.replace("$$", "$") for arg in service["command"])]
    bin_dir, data_dir = tmp_path / "bin", tmp_path / "data"
    bin_dir.mkdir()
    data_dir.mkdir()
    standin = bin_dir / "docker-entrypoint.sh"
    standin.write_text(ENTRYPOINT_STANDIN)
    standin.chmod(0o755)
    port = free_port()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "REDIS_PASSWORD": password,
        "TEST_PORT": str(port),
        "TEST_DIR": str(data_dir),
    }
    proc = ManagedProcess("compose-redis", argv, tmp_path / "redis.log", env=env).start()
    return proc, port, data_dir


def healthcheck(port: int, auth: str | None) -> int:
    """The compose healthcheck, pointed at the private port instead of 6379."""
    test = compose_redis()["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1].replace("redis-cli", f"redis-cli -p {port}")
    assert f"-p {port}" in command
    env = {"PATH": os.environ["PATH"]}
    if auth is not None:
        env["REDISCLI_AUTH"] = auth
    return subprocess.run(["sh", "-c", command], env=env, capture_output=True).returncode


def test_redis_runs_with_the_password_from_its_environment(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(32)
    proc, port, data_dir = run_script(tmp_path, password)
    try:
        wait_until(lambda: redis_answers("127.0.0.1", port) or not proc.alive(), 20, "Redis")
        assert proc.alive(), proc.log_tail()

        # Raw socket: redis-py would retry the refusal with backoff for seconds.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as anonymous:
            anonymous.sendall(b"PING\r\n")
            assert anonymous.recv(64).startswith(b"-NOAUTH")
        client = redis.Redis(port=port, password=password, socket_timeout=5)
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        # Every step exec'd: redis-server is the process compose started (PID 1 there,
        # so it gets SIGTERM), and the password is nowhere in its argv.
        assert client.info("server")["process_id"] == proc.pid
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
        assert b"redis-server" in cmdline

        assert healthcheck(port, password) == 0
        assert healthcheck(port, "not-the-password") != 0
        assert healthcheck(port, None) != 0

        # The API and workers: SERVING_REDIS_PASSWORD added to a URL without credentials.
        settings = Settings(
            redis_url=f"redis://127.0.0.1:{port}/0",
            redis_password=SecretStr(password),
        )
        for url in (settings.effective_broker_url, settings.effective_cache_url):
            with redis.Redis.from_url(url, socket_timeout=5) as serving:
                assert serving.ping()
        client.close()
    finally:
        proc.stop()
    assert proc.popen is not None and proc.popen.returncode == 0, proc.log_tail()
    assert list((data_dir / "appendonlydir").iterdir()), "no append-only file"


@pytest.mark.parametrize("password", ["has space", "a/b@c", 'quote"d', "dollar$x"])
def test_redis_refuses_a_password_unfit_for_urls(tmp_path: Path, password: str) -> None:
    proc, port, _ = run_script(tmp_path, password)
    assert proc.popen is not None
    assert proc.popen.wait(20) == 1
    proc.stop()
    assert "REDIS_PASSWORD may hold only" in proc.log_tail()
    assert not redis_answers("127.0.0.1", port)
