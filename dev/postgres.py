"""A private, throwaway PostgreSQL server for the prediction log tests.

PostgreSQL refuses to run as root, so as root the server runs as an unprivileged user.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from glob import glob
from pathlib import Path

from dev.services import LOCAL, ManagedProcess, Placement, free_port, tcp_open, wait_until

_PG_USER = "serving"  # the superuser initdb creates; trust auth, so no password
_PG_RUN_AS = ("postgres", "nobody")  # PostgreSQL refuses to run as root
_PG_SOCKET_PATH_MAX = 100  # a Unix socket path must fit in sockaddr_un.sun_path (108 bytes)


def _has_postgres_tools(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / tool, os.X_OK) for tool in ("initdb", "postgres"))


def _postgres_version_key(bin_dir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/16/bin -> (16,); /usr/pgsql-9.6/bin -> (9, 6)
    return tuple(int(n) for n in re.findall(r"\d+", bin_dir.parent.name))


def find_postgres_bin() -> Path | None:
    """The directory holding initdb and postgres (pg_ctl lives there too), or None.

    `postgres` on PATH wins (its real directory, symlinks resolved); otherwise the newest
    of /usr/lib/postgresql/*/bin (Debian, Ubuntu) and /usr/pgsql-*/bin (RHEL, Fedora).
    """
    candidates: list[Path] = []
    on_path = shutil.which("postgres")
    if on_path:
        candidates += [Path(on_path).resolve().parent, Path(on_path).parent]
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"):
        found = [Path(d) for d in glob(pattern)]
        candidates += sorted(found, key=_postgres_version_key, reverse=True)
    return next((d for d in candidates if _has_postgres_tools(d)), None)


def postgres_version(bin_dir: Path) -> str:
    """E.g. "postgres (PostgreSQL) 16.4"."""
    done = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _postgres_run_as() -> tuple[int, int] | None:
    """(uid, gid) of an unprivileged user to run PostgreSQL as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in _PG_RUN_AS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError(
        "PostgreSQL refuses to run as root and none of the users "
        f"{', '.join(_PG_RUN_AS)} exists to run it as: run the tests as an ordinary user "
        "or create a `postgres` user"
    )


def _as_user(ids: tuple[int, int] | None) -> list[str]:
    """A command prefix that drops root to (uid, gid) and then execs the command in place,
    so the process we start (and signal) is PostgreSQL itself."""
    if ids is None:
        return []
    uid, gid = ids
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    drop = (
        "import os, sys; os.setgroups([]); os.setgid(int(sys.argv[1])); "
        "os.setuid(int(sys.argv[2])); os.execv(sys.argv[3], sys.argv[3:])"
    )
    return [sys.executable, "-c", drop, str(gid), str(uid)]


def _private_dir(path: Path, ids: tuple[int, int] | None) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if ids is not None:
        os.chown(path, *ids)
    path.chmod(0o700)
    return path


def _usable_by(ids: tuple[int, int] | None, path: Path) -> bool:
    """Can the user PostgreSQL runs as write into path (every parent directory searchable)?"""
    if ids is None:
        return os.access(path, os.W_OK | os.X_OK)
    test = shutil.which("test") or "/usr/bin/test"
    probe = [*_as_user(ids), test, "-w", str(path), "-a", "-x", str(path)]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _postgres_base_dir(work_dir: Path, ids: tuple[int, int] | None) -> Path:
    """work_dir/pg, owned by the user PostgreSQL runs as; if that user cannot reach it
    (pytest's tmp dirs for root are 0700) or the socket path would be too long, a fresh
    directory in the system temp dir instead, removed when this interpreter exits."""
    base = _private_dir(work_dir / "pg", ids)
    socket_path = base / "sock" / ".s.PGSQL.65535"
    if len(str(socket_path)) <= _PG_SOCKET_PATH_MAX and _usable_by(ids, base):
        return base
    shutil.rmtree(base, ignore_errors=True)
    base = _private_dir(Path(tempfile.mkdtemp(prefix="serving-pg-")), ids)
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    (work_dir / "pg-location.txt").write_text(f"{base}\n")
    return base


def postgres_accepts(host: str, port: int, user: str = _PG_USER) -> bool:
    """True once the server takes a real connection (it opens its port before that)."""
    if not tcp_open(host, port):
        return False
    import psycopg

    try:
        with psycopg.connect(
            host=host, port=port, user=user, dbname="postgres", connect_timeout=2
        ) as conn:
            conn.execute("SELECT 1")
            return True
    except psycopg.OperationalError:
        return False


def start_postgres(
    work_dir: Path, port: int | None = None, at: Placement = LOCAL, clients: str | None = None
) -> tuple[ManagedProcess, str]:
    """A private PostgreSQL server (initdb, trust auth, fsync off) on `at.bind` only
    (127.0.0.1 by default); `clients`, a network such as 10.77.0.0/24, may connect too.

    Returns the process and `postgresql+psycopg://serving@<address>:<port>/postgres`.
    The cluster lives in work_dir/pg (or a temp dir, see _postgres_base_dir), the server's
    log in work_dir/postgres.log. Stop it with stop_postgres(proc) (fast shutdown).
    """
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise RuntimeError(
            "no PostgreSQL server binaries (initdb, postgres) on PATH or under "
            "/usr/lib/postgresql/*/bin: install them (e.g. `apt-get install postgresql`)"
        )
    ids = _postgres_run_as()
    work_dir.mkdir(parents=True, exist_ok=True)
    base = _postgres_base_dir(work_dir, ids)
    data_dir = base / "data"
    socket_dir = _private_dir(base / "sock", ids)
    initdb = [
        *_as_user(ids),
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        _PG_USER,
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--no-locale",
        "--no-sync",
    ]
    initdb_log = work_dir / "initdb.log"
    with initdb_log.open("wb") as out:
        done = subprocess.run(
            initdb, stdout=out, stderr=subprocess.STDOUT, cwd=base, check=False, timeout=120
        )
    if done.returncode != 0:
        tail = initdb_log.read_bytes()[-4000:].decode(errors="replace")
        raise RuntimeError(f"initdb failed (exit {done.returncode}): {tail}")
    if clients is not None:  # initdb's pg_hba.conf trusts loopback only
        with (data_dir / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {clients} trust\n")

    # A free port can be taken between free_port() and the bind: try another one then.
    for attempt in range(3 if port is None else 1):
        server_port = port or free_port()
        args = [
            *at.prefix,
            *_as_user(ids),
            str(bin_dir / "postgres"),
            "-D",
            str(data_dir),
            "-p",
            str(server_port),
            "-k",
            str(socket_dir),
            "-c",
            f"listen_addresses={at.bind}",
            "-c",
            "fsync=off",
        ]
        proc = ManagedProcess("postgres", args, work_dir / "postgres.log", cwd=base).start()

        def ready(proc: ManagedProcess = proc, server_port: int = server_port) -> bool:
            if not proc.alive():
                raise RuntimeError("postgres exited")
            return at.probe(lambda: postgres_accepts(at.bind, server_port))

        try:
            wait_until(ready, 60, "postgres")
        except (TimeoutError, RuntimeError):
            stop_postgres(proc)
            tail = proc.log_tail()
            if "Address already in use" in tail and attempt < 2 and port is None:
                continue
            raise RuntimeError(f"postgres did not start: {tail}") from None
        return proc, f"postgresql+psycopg://{_PG_USER}@{at.bind}:{server_port}/postgres"
    raise AssertionError("unreachable")


def stop_postgres(proc: ManagedProcess, timeout: float = 30.0) -> None:
    """Fast shutdown (SIGINT): open sessions are ended, then the server exits cleanly.

    ManagedProcess.stop() alone sends SIGTERM, PostgreSQL's "smart" shutdown, which
    waits for every client to disconnect first.
    """
    if proc.popen is not None and proc.alive():
        proc.popen.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout)
    proc.stop()
