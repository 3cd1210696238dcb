"""MLServer's own virtualenv for the benchmark's peer, built once under `.cache/mlserver/`.

`python -m bench.mlserver_env` builds it (or finds it built) and prints the `mlserver`
command's path; `ensure_mlserver()` does the same from the benchmark. It lives apart
from the project's venv: MLServer pins FastAPI < 0.116 and brings gRPC, pandas and
OpenTelemetry, none of which the project wants.

The pins, and why:
- mlserver, mlserver-sklearn and mlserver-xgboost 1.7.1, the release measured;
- uvloop 0.21.0: with the 0.23 pip resolves, MLServer's inference workers fail with
  "There is no current event loop";
- scikit-learn and XGBoost at the project venv's versions, so both sides run the same
  model code (and a joblib file written by the benchmark loads back). XGBoost is the
  CPU-only `xgboost-cpu` build, as in the project's venv: mlserver-xgboost asks for
  `xgboost`, whose wheel brings CUDA libraries (the venv 1.2 GB instead of 547 MB), so
  it is installed without its dependencies (they are all there).

A stamp file named after a hash of the pins marks a finished build: a build cut short
leaves no stamp and is redone, and changing a pin rebuilds. A file lock keeps two
benchmarks from building at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from dev.services import file_lock

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / ".cache" / "mlserver"
MLSERVER_VERSION = "1.7.1"
UVLOOP_VERSION = "0.21.0"
NO_DEPS = (f"mlserver-xgboost=={MLSERVER_VERSION}",)


def ours(*distributions: str) -> str:
    """The first of `distributions` installed here, pinned at its version here."""
    for name in distributions:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return f"{name}=={metadata.version(name)}"
    raise RuntimeError(f"none of {distributions} is installed in {sys.prefix}")


def requirements() -> tuple[str, ...]:
    """What pip installs with dependencies (NO_DEPS comes after, without)."""
    return (
        f"mlserver=={MLSERVER_VERSION}",
        f"mlserver-sklearn=={MLSERVER_VERSION}",
        f"uvloop=={UVLOOP_VERSION}",
        ours("scikit-learn"),
        ours("xgboost-cpu", "xgboost"),
    )


def stamp_name(pins: tuple[str, ...]) -> str:
    digest = hashlib.sha256("\n".join(sorted(pins)).encode()).hexdigest()[:12]
    return f".installed-{digest}"


def venv_dir(cache_dir: Path = CACHE_DIR) -> Path:
    return cache_dir / "venv"


def mlserver_command(cache_dir: Path = CACHE_DIR) -> Path:
    return venv_dir(cache_dir) / "bin" / "mlserver"


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed:\n{done.stdout}{done.stderr}")


def _build(venv: Path, pins: tuple[str, ...]) -> None:
    if venv.exists():
        shutil.rmtree(venv)  # a build cut short, or older pins: start clean
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    _run([*pip, *pins])
    _run([*pip, "--no-deps", *NO_DEPS])
    (venv / stamp_name(pins + NO_DEPS)).touch()


def ensure_mlserver(cache_dir: Path = CACHE_DIR) -> Path:
    """The `mlserver` command of the cached venv, built first if it is missing."""
    pins = requirements()
    stamp = venv_dir(cache_dir) / stamp_name(pins + NO_DEPS)
    if not stamp.exists():
        with file_lock(cache_dir / ".lock"):
            # Another benchmark may have built it while this one waited for the lock.
            if not stamp.exists():
                started = time.monotonic()
                print(f"building MLServer's venv in {venv_dir(cache_dir)} ...", flush=True)
                _build(venv_dir(cache_dir), pins)
                print(f"  built in {time.monotonic() - started:.0f} s", flush=True)
    return mlserver_command(cache_dir)


def main() -> int:
    print(ensure_mlserver())
    return 0


if __name__ == "__main__":
    sys.exit(main())
