"""`modelctl db`: the prediction log's migrations by hand, on a SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from common.prediction_log import create_log_engine
from common.prediction_log.migrate import head
from tests.common.test_migrations import as_an_earlier_release_left_it

ROOT = Path(__file__).resolve().parents[2]


def modelctl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
    env |= {"SERVING_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = create_log_engine(url)
    as_an_earlier_release_left_it(engine, "0002")  # made before migrations
    before = modelctl(url, "db", "current")
    assert before.returncode == 0 and f"revision none (the newest is {head()})" in before.stdout
    upgraded = modelctl(url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"upgraded from nothing to revision {head()}" in upgraded.stdout
    assert "shadow" in {c["name"] for c in inspect(engine).get_columns("prediction_log")}
    again = modelctl(url, "db", "current")
    assert f"revision {head()} (the newest)" in again.stdout
    engine.dispose()


def test_an_unknown_revision_is_one_clear_error(tmp_path: Path) -> None:
    failed = modelctl(f"sqlite:///{tmp_path / 'log.db'}", "db", "upgrade", "9999")
    assert failed.returncode == 2
    assert failed.stderr.startswith("error: ") and "9999" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
