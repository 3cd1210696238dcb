"""Headless Chromium for tests that look at a page as a person would.

Debian's `chromium` is found on PATH, or installed with apt-get when missing (as root;
`make test` runs `python -m tests.browser` first, so CI installs it before pytest starts).
Every host but 127.0.0.1 is made unreachable: names resolve to nothing and anything not
bypassed goes to a proxy on the discard port, so a page that needs a CDN shows broken.

    chromium = chromium_or_skip()            # in a fixture (tests/integration/conftest.py)
    dom = chromium.dump_dom("http://127.0.0.1:8000/docs")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import pytest

NAMES = ("chromium", "chromium-browser")
ISOLATION = (
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
)
HEADLESS = (
    "--headless",
    # As root Chromium refuses to start sandboxed, and containers often lack the user
    # namespaces the sandbox needs; it only ever loads pages our own tests serve.
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
# Waits for another apt-get (dpkg's lock) instead of failing at once.
APT_OPTIONS = ("-q", "-o", "DPkg::Lock::Timeout=300")


class BrowserUnavailable(RuntimeError):
    """Chromium is missing and could not be installed; the message says why."""


@dataclass(frozen=True)
class Chromium:
    executable: str

    def dump_dom(self, url: str, budget_ms: int = 20_000, timeout: float = 120) -> str:
        """The DOM after the page's scripts ran for `budget_ms` of virtual time (which
        does not advance while a request is pending, so fetched specs are rendered)."""
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            done = subprocess.run(
                [
                    self.executable,
                    *HEADLESS,
                    *ISOLATION,
                    f"--user-data-dir={profile}",
                    f"--virtual-time-budget={budget_ms}",
                    "--dump-dom",
                    url,
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        if done.returncode != 0:
            raise RuntimeError(f"chromium exited {done.returncode} on {url}: {done.stderr[-2000:]}")
        return done.stdout


def find_chromium() -> str | None:
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def _apt_get(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", *APT_OPTIONS, *args],
        env={**os.environ, **APT_ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def install_chromium() -> str:
    """Debian's chromium package, with the package lists refreshed first (a new
    machine's lists may be empty or old). About 20 s and 125 MB here."""
    if shutil.which("apt-get") is None:
        raise BrowserUnavailable("chromium is not installed and there is no apt-get")
    if os.geteuid() != 0:
        raise BrowserUnavailable("chromium is not installed: run `apt-get install chromium`")
    try:
        _apt_get("update", timeout=300)  # a failure here still leaves the old lists to try
        done = _apt_get("install", "-y", "--no-install-recommends", "chromium", timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise BrowserUnavailable(f"apt-get timed out after {exc.timeout:.0f} s") from None
    path = find_chromium()
    if done.returncode != 0 or path is None:
        raise BrowserUnavailable(f"apt-get install chromium failed: {done.stderr[-1500:]}")
    return path


def chromium_or_skip() -> Chromium:
    path = find_chromium()
    if path is None:
        try:
            path = install_chromium()
        except BrowserUnavailable as exc:
            pytest.skip(f"no headless browser: {exc}")
    return Chromium(path)


def main() -> int:
    """`python -m tests.browser`: install Chromium if it is missing. A machine where
    that is impossible still runs the suite (the browser tests skip), so this never
    fails `make test`; it says why instead."""
    try:
        print(f"chromium: {find_chromium() or install_chromium()}")
    except BrowserUnavailable as exc:
        print(f"chromium: unavailable, the browser tests will skip ({exc})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
