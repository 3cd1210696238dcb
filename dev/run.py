"""`make run`: the whole stack on this machine with its embedded defaults.

Uses the Redis at SERVING_REDIS_URL when it answers, else starts a private one; publishes
the demo models if the store is empty; runs a worker, the API on http://localhost:8000 and
Flower on http://127.0.0.1:5555 (basic auth), and prints the development keys and
password. Ctrl-C stops everything this started.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from common.settings import Settings, get_settings
from dev.flower import start_flower
from dev.services import (
    ManagedProcess,
    redis_answers,
    start_redis,
    tcp_open,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".dev"
API_PORT = 8000
API_PROCESSES = 2


def dev_key(name: str) -> str:
    """A key kept in .dev/ so it stays the same from one `make run` to the next."""
    path = STATE / name
    if not path.exists():
        STATE.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def ensure_redis(url: str) -> tuple[str, ManagedProcess | None]:
    parsed = urlparse(url)
    if redis_answers(parsed.hostname or "127.0.0.1", parsed.port or 6379):
        print(f"using the Redis at {url}")
        return url, None
    proc, private_url = start_redis(STATE / "redis")
    print(f"no Redis at {url}; started a private one at {private_url}")
    return private_url, proc


def flower_credentials(settings: Settings) -> tuple[str, str]:
    if settings.flower_basic_auth is not None:
        user, _, password = settings.flower_basic_auth.get_secret_value().partition(":")
        return user, password
    return "admin", dev_key("flower-password")


def api_healthy(key: str) -> bool:
    request = urllib.request.Request(f"http://127.0.0.1:{API_PORT}/", headers={"X-API-Key": key})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How long the services get to stop after SIGTERM, all at once, before SIGKILL.
STOP_GRACE_SECONDS = 10.0


def _interrupt(*_: object) -> None:
    # Ignore every further stop signal first: a process manager's second SIGTERM (or a
    # make that forwards the one its group got) must not cut the stopping short, even if
    # it comes before the `finally` that stops everything has begun.
    _ignore_stop_signals()
    raise KeyboardInterrupt


def _ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def stop_all(started: list[ManagedProcess], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM to every service's process group at once, so they stop in parallel within
    one grace period, then SIGKILL to whatever is left of each; Redis last (a stopping
    worker hands its unacknowledged tasks back to it)."""
    _ignore_stop_signals()
    services = [p for p in reversed(started) if p.name != "redis"]
    for proc in services:
        proc.begin_stop()
    deadline = time.monotonic() + grace
    for proc in services:
        proc.stop(timeout=max(0.5, deadline - time.monotonic()))
    for proc in started:
        if proc.name == "redis":
            proc.stop(timeout=grace)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dev.run", description=__doc__)
    parser.add_argument("--port", type=int, default=API_PORT, help="the API's port (8000)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=STATE,
        help="keys, logs and a private Redis's files (.dev/ of the checkout)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # SIGTERM and SIGHUP stop the stack as cleanly as Ctrl-C does.
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    options = parse_args(argv)
    global API_PORT, STATE  # one launcher per process; the functions above read them
    API_PORT, STATE = options.port, options.state_dir
    settings = get_settings()
    if tcp_open("127.0.0.1", API_PORT):
        print(f"port {API_PORT} is in use; stop what runs there first", file=sys.stderr)
        return 1
    # Every child runs in a session of its own (ManagedProcess), so Ctrl-C reaches only
    # this process: whatever it started must be in `started` before anything can raise.
    started: list[ManagedProcess] = []
    try:
        redis_url, redis_proc = ensure_redis(settings.redis_url)
        if redis_proc:
            started.append(redis_proc)
        key, admin_key = dev_key("api-key"), dev_key("admin-api-key")
        env = {**os.environ, "SERVING_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
        env.setdefault("SERVING_API_KEYS", key)
        env.setdefault("SERVING_ADMIN_API_KEYS", admin_key)
        python = sys.executable
        modelctl = ManagedProcess(
            "modelctl",
            [python, "-m", "modelctl", "train-demo", "--if-empty"],
            STATE / "modelctl.log",
            env=env,
            cwd=ROOT,
        )
        started.append(modelctl.start())
        modelctl.popen.wait()  # type: ignore[union-attr]
        modelctl.stop()  # closes its log; it is done, not a service to watch
        started.remove(modelctl)
        # The callback worker serves its metrics on the port after the worker's.
        metrics_port = settings.worker_metrics_port and settings.worker_metrics_port + 1
        callback_env = env | {"SERVING_WORKER_METRICS_PORT": str(metrics_port)}
        api_options = ["--host", "127.0.0.1", "--port", str(API_PORT)]
        api_options += ["--workers", str(API_PROCESSES)]
        for name, args, process_env in [
            # Named apart: each worker's direct queue (`<name>.dq2`, python -m worker.ping
            # NAME) must reach that worker alone.
            ("worker", [python, "-m", "worker", "--concurrency", "2", "-n", "worker@%h"], env),
            (
                "callback-worker",
                [python, "-m", "worker", "--callbacks", "-n", "callbacks@%h"],
                callback_env,
            ),
            # Two processes, as the images run: on 2 cores they answered 35-46% more
            # cache misses at c=64 than one (README, Benchmark: Round 2).
            ("api", [python, "-m", "api", *api_options], env),
        ]:
            started.append(
                ManagedProcess(name, args, STATE / f"{name}.log", env=process_env, cwd=ROOT).start()
            )
        flower_user, flower_password = flower_credentials(settings)
        flower, flower_url = start_flower(
            settings.model_copy(update={"redis_url": redis_url}).effective_broker_url,
            settings.flower_port,
            flower_user,
            flower_password,
            STATE / "flower.log",
            env=env,
        )
        started.append(flower)
        wait_until(
            lambda: api_healthy(env["SERVING_API_KEYS"].split(",")[0]), 120, "the API with a worker"
        )
        announce(env["SERVING_API_KEYS"].split(",")[0], admin_key)
        print(
            f"  Flower: {flower_url} (user {flower_user}, password {flower_password})\n", flush=True
        )
        while all(p.alive() for p in started):
            time.sleep(0.5)
        dead = [p for p in started if not p.alive()]
        for proc in dead:
            print(f"{proc.name} exited; its log ({proc.log_path}) ends with:\n{proc.log_tail()}")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(started)
        print("stopped everything make run started", flush=True)


def announce(key: str, admin_key: str) -> None:
    print(
        f"""
The stack runs on http://localhost:{API_PORT} (Swagger: /docs, ReDoc: /redoc).
Logs: {STATE}/api.log and {STATE}/worker.log. Ctrl-C stops everything.

  development API key:  {key}
  admin API key:        {admin_key}

Try:
  curl -s -H 'X-API-Key: {key}' -H 'Content-Type: application/json' \\
    -d @dev/example-row.json http://localhost:{API_PORT}/predict
  curl -s -H 'X-API-Key: {key}' 'http://localhost:{API_PORT}/logs?n_limit=2'
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
