"""Prometheus and promtool for tests and local checks, and a private Prometheus server.

`find_prometheus` takes the binaries from the PATH, else from the project cache
`.cache/prometheus/`, else fills that cache from Debian's `prometheus` package: the
.deb is fetched with `apt-get download` and unpacked with `dpkg-deb -x`, so nothing is
installed system-wide and no service is started. A file lock keeps two processes (say,
parallel test sessions) from filling the cache at once.

`start_prometheus` runs a throwaway server on a free port of 127.0.0.1 (never the
standard 9090), with its own config and storage in a work directory. Debian's build
(2.42, linked against glibc) needs no other file at run time; it ships without the
React web UI (its pages answer 500), while the HTTP API and /-/ready work as usual.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from dev.services import ManagedProcess, file_lock, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = ROOT / ".cache" / "prometheus"
_EXTRACTED = "root"  # CACHE_DIR/root/usr/bin/{prometheus,promtool}
_PACKAGE = "prometheus"


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _cached(cache_dir: Path) -> tuple[Path, Path] | None:
    bin_dir = cache_dir / _EXTRACTED / "usr" / "bin"
    found = (bin_dir / "prometheus", bin_dir / "promtool")
    return found if all(_usable(p) for p in found) else None


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)


def _download_deb(cache_dir: Path) -> Path:
    """`apt-get download prometheus` into cache_dir (after `apt-get update` if needed)."""
    for old in cache_dir.glob(f"{_PACKAGE}_*.deb"):
        old.unlink()
    done = _run(["apt-get", "download", _PACKAGE], cache_dir)
    if done.returncode != 0:
        # Empty or stale package lists (a fresh container): refresh them once and retry.
        update = _run(["apt-get", "update"], cache_dir)
        if update.returncode != 0:
            raise RuntimeError(f"`apt-get update` failed:\n{update.stdout}{update.stderr}")
        done = _run(["apt-get", "download", _PACKAGE], cache_dir)
    debs = sorted(cache_dir.glob(f"{_PACKAGE}_*.deb"))
    if done.returncode != 0 or not debs:
        raise RuntimeError(
            f"`apt-get download {_PACKAGE}` failed:\n{done.stdout}{done.stderr}".rstrip()
        )
    return debs[-1]


def _fill_cache(cache_dir: Path) -> tuple[Path, Path]:
    if os.geteuid() != 0:
        raise RuntimeError(
            "prometheus and promtool were not found on the PATH nor in "
            f"{cache_dir}, and fetching Debian's `prometheus` package needs root "
            "(`apt-get update`). Install Prometheus (e.g. `sudo apt-get install "
            "prometheus`, or the release tarball from prometheus.io) so that both "
            "binaries are on the PATH, or unpack them into "
            f"{cache_dir / _EXTRACTED / 'usr' / 'bin'}."
        )
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(
                f"prometheus/promtool not found, and `{tool}` is missing to fetch "
                "Debian's package: put prometheus and promtool on the PATH"
            )
    deb = _download_deb(cache_dir)
    # Unpack next to the final place, then rename: an interrupted run leaves no half tree.
    staging = Path(tempfile.mkdtemp(prefix="extract-", dir=cache_dir))
    try:
        done = _run(["dpkg-deb", "-x", str(deb), str(staging)], cache_dir)
        if done.returncode != 0:
            raise RuntimeError(f"`dpkg-deb -x {deb.name}` failed:\n{done.stderr}")
        target = cache_dir / _EXTRACTED
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    deb.unlink(missing_ok=True)  # 19 MB; the unpacked tree is what we keep
    found = _cached(cache_dir)
    if found is None:
        raise RuntimeError(f"{deb.name} holds no usr/bin/prometheus and usr/bin/promtool")
    return found


def find_prometheus(cache_dir: Path = CACHE_DIR) -> tuple[Path, Path]:
    """(prometheus, promtool): from the PATH, else the project cache, else Debian's .deb."""
    on_path = shutil.which("prometheus"), shutil.which("promtool")
    if on_path[0] and on_path[1]:
        return Path(on_path[0]), Path(on_path[1])
    found = _cached(cache_dir)
    if found:
        return found
    with file_lock(cache_dir / ".lock"):
        # Another process may have filled the cache while this one waited for the lock.
        return _cached(cache_dir) or _fill_cache(cache_dir)


def prometheus_version(binary: Path) -> str:
    """E.g. "prometheus, version 2.42.0+ds (branch: debian/sid, revision: ...)"."""
    done = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=30
    )
    return (done.stdout or done.stderr).splitlines()[0].strip()


def _quote(value: str) -> str:
    # A YAML double-quoted scalar; JSON's escaping is a subset of YAML's.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def scrape_config(
    scrape_targets: dict[str, list[str]],
    scrape_interval: str,
    rule_files: Sequence[Path] = (),
) -> str:
    """A minimal prometheus.yml: one static job per name, scraped every scrape_interval;
    rules (if any) evaluated as often."""
    lines = [
        "global:",
        f"  scrape_interval: {scrape_interval}",
        f"  evaluation_interval: {scrape_interval}",
    ]
    if rule_files:
        lines += ["rule_files:", *(f"  - {_quote(str(path.resolve()))}" for path in rule_files)]
    lines.append("scrape_configs:")
    for job, targets in scrape_targets.items():
        lines += [
            f"  - job_name: {_quote(job)}",
            f"    scrape_interval: {scrape_interval}",
            f"    scrape_timeout: {scrape_interval}",
            "    static_configs:",
            "      - targets: [" + ", ".join(_quote(t) for t in targets) + "]",
        ]
    return "\n".join(lines) + "\n"


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_prometheus(
    work_dir: Path,
    scrape_targets: dict[str, list[str]],
    scrape_interval: str = "1s",
    port: int | None = None,
    rule_files: Sequence[Path] = (),
) -> tuple[ManagedProcess, str]:
    """A private Prometheus scraping job -> ["host:port", ...] (and evaluating rule_files);
    returns it and its base URL once it is ready."""
    prometheus, _ = find_prometheus()
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "prometheus.yml"
    config.write_text(scrape_config(scrape_targets, scrape_interval, rule_files))
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    args = [
        str(prometheus),
        f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--storage.tsdb.path={work_dir / 'data'}",
        "--storage.tsdb.retention.time=1h",
        "--log.level=warn",
    ]
    proc = ManagedProcess("prometheus", args, work_dir / "prometheus.log", cwd=work_dir).start()
    try:
        wait_until(lambda: _poll_ready(proc, base_url), 60, "prometheus")
    except (TimeoutError, RuntimeError) as exc:
        proc.stop()
        raise RuntimeError(f"prometheus did not start ({exc}):\n{proc.log_tail()}") from None
    return proc, base_url


def _poll_ready(proc: ManagedProcess, base_url: str) -> bool:
    if not proc.alive():
        raise RuntimeError("prometheus exited")
    return _ready(base_url + "/-/ready")


if __name__ == "__main__":
    prom, tool = find_prometheus()
    print(prom)
    print(tool)
    print(prometheus_version(prom))
