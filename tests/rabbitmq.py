"""A private RabbitMQ for `pytest --broker=rabbitmq` (tests/integration/conftest.py).

Debian's `rabbitmq-server` is used, or installed with apt-get when missing (as root), as
tests/browser.py does for Chromium; where neither works, every test that needs it is
skipped with the reason. `python -m tests.rabbitmq` installs it ahead of a run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.rabbitmq import RabbitMQUnavailable, RabbitNode, find_rabbitmq_script, start_rabbitmq
from tests.browser import APT_ENV, APT_OPTIONS

PACKAGE = "rabbitmq-server"


def install_rabbitmq() -> str:
    """Debian's package and the Erlang it needs, the package lists refreshed first. The
    tests start nodes of their own from it, never the system's."""
    if shutil.which("apt-get") is None:
        raise RabbitMQUnavailable(f"{PACKAGE} is not installed and there is no apt-get")
    if os.geteuid() != 0:
        raise RabbitMQUnavailable(f"{PACKAGE} is not installed: run `apt-get install {PACKAGE}`")
    env = {**os.environ, **APT_ENV}
    try:
        with no_services_started():
            done = _apt_install(env)
    except subprocess.TimeoutExpired as exc:
        raise RabbitMQUnavailable(f"apt-get timed out after {exc.timeout:.0f} s") from None
    if done.returncode != 0:
        raise RabbitMQUnavailable(f"apt-get install {PACKAGE} failed: {done.stderr[-1500:]}")
    return find_rabbitmq_script()


POLICY_RC = Path("/usr/sbin/policy-rc.d")


@contextlib.contextmanager
def no_services_started() -> Iterator[None]:
    """Debian starts a package's service as it installs it: the machine would get a
    RabbitMQ of its own on 5672 just for running the tests. A policy-rc.d that answers
    101 ("action forbidden") stops that, for the install's time only."""
    if POLICY_RC.exists():
        yield  # the machine has a policy of its own: leave it
        return
    POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
    POLICY_RC.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC.unlink(missing_ok=True)


def _apt_install(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """apt-get update, then install; the first that fails is what it returns."""
    for args, timeout in [(["update"], 300), (["install", "-y", PACKAGE], 600)]:
        done = subprocess.run(
            ["apt-get", *APT_OPTIONS, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            break
    return done


def ensure_rabbitmq() -> str:
    try:
        return find_rabbitmq_script()
    except RabbitMQUnavailable:
        return install_rabbitmq()


def rabbitmq_or_skip(work_dir: Path, vhosts: int) -> tuple[RabbitNode, str]:
    """A private node (dev/rabbitmq.py) and its URL, or the test skipped saying why."""
    try:
        ensure_rabbitmq()
        return start_rabbitmq(work_dir, vhosts)
    except RabbitMQUnavailable as exc:
        pytest.skip(f"no RabbitMQ for --broker=rabbitmq: {exc}")


def main() -> int:
    """Never fails: without RabbitMQ the --broker=rabbitmq tests skip, saying why."""
    try:
        print(f"rabbitmq-server: {ensure_rabbitmq()}")
    except RabbitMQUnavailable as exc:
        print(
            f"rabbitmq-server: unavailable, the RabbitMQ tests will skip ({exc})", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
