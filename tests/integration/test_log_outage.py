"""The prediction log never fails a prediction and never loses a row: while the database
refuses writes (SQLite made immutable, a private PostgreSQL stopped) predictions answer
200, and once it takes writes again every answered request has its row."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, select

from common.tables import PredictionLog
from common.training import breast_cancer
from dev.postgres import find_postgres_bin, postgres_accepts, start_postgres, stop_postgres
from dev.services import ManagedProcess, wait_until
from tests.integration.stack import Stack, scrape, total

pytestmark = pytest.mark.integration

SWEEP = 0.5


def unique_rows(n: int, offset: float) -> list[dict[str, float]]:
    x, _, names, _ = breast_cancer()
    picked = x[np.arange(n) % len(x)].copy()
    picked[:, 1] += offset + np.arange(n) * 1e-4
    return [dict(zip(names, map(float, row), strict=True)) for row in picked]


def predict_all(stack: Stack, rows: list[dict[str, float]], hits: int = 0) -> list[str]:
    """One request per row (misses), then `hits` repeats of the first (cache hits, logged
    by the API); every answer must be 200. The request ids answered."""
    ids = []
    with stack.client() as client:
        for row in [*rows, *[rows[0]] * hits]:
            response = client.post("/predict", json={"input_data": row})
            assert response.status_code == 200, response.text
            ids.append(response.json()["request_id"])
    return ids


def logged_ids(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(select(PredictionLog.request_id)).scalars())
    finally:
        engine.dispose()


def wait_logged(database_url: str, ids: list[str], timeout: float = 60) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            missing = set(ids) - logged_ids(database_url)
        except Exception:  # the database still coming back
            missing = set(ids)
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.2)


def chattr(flag: str, paths: list[Path]) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


def immutable_supported(tmp_path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    probe = tmp_path / "probe"
    probe.write_text("x")
    try:
        chattr("+i", [probe])
    except subprocess.CalledProcessError:
        return False
    try:
        with probe.open("a") as out:
            out.write("y")
        return False  # the flag does not stop this user: no read-only database to test
    except OSError:
        return True
    finally:
        chattr("-i", [probe])


def test_sqlite_refusing_writes_never_fails_a_prediction(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    if not immutable_supported(tmp_path):
        pytest.skip("chattr +i cannot make a file read-only here (not ext4, or not root)")
    stack = make_stack("sqlite-ro", job_sweep_seconds=SWEEP)
    url = stack.settings.database_url
    database = Path(url.removeprefix("sqlite:///"))
    before = predict_all(stack, unique_rows(3, 0.1))
    # The database and its write-ahead log; not the -shm index, which SQLite maps into
    # memory (a write to a mapped page of an immutable file is a SIGBUS, not a refusal).
    files = [p for p in (database, Path(f"{database}-wal")) if p.is_file()]
    chattr("+i", files)
    try:
        during = predict_all(stack, unique_rows(40, 0.2), hits=10)
        metrics = scrape(f"http://127.0.0.1:{stack.fields['worker_metrics_port']}/metrics")
        spooled = total(metrics, "serving_log_spooled_rows_total")
        assert not set(during) & logged_ids(url)  # refused: nothing reached the table
    finally:
        chattr("-i", files)
    missing = wait_logged(url, before + during)
    assert missing == set(), f"{len(missing)} rows never reached the database"
    assert spooled >= 40  # the workers spooled their rows (the API its hits)


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[tuple[list[ManagedProcess], str]]:
    """A private server and its URL; the list holds the running process (restarts
    replace it)."""
    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL server binaries")
    proc, url = start_postgres(tmp_path / "pg")
    holder = [proc]
    yield holder, url
    stop_postgres(holder[0])


def test_postgres_stopped_and_restarted_never_fails_a_prediction(
    make_stack: Callable[..., Stack], private_postgres: tuple[list[ManagedProcess], str]
) -> None:
    holder, url = private_postgres
    stack = make_stack("pg-outage", database_url=url, job_sweep_seconds=SWEEP)
    before = predict_all(stack, unique_rows(3, 0.3))
    stop_postgres(holder[0])
    during = predict_all(stack, unique_rows(30, 0.4), hits=5)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    old = holder[0]
    holder[0] = ManagedProcess(old.name, old.args, old.log_path, cwd=old.cwd).start()
    wait_until(lambda: postgres_accepts("127.0.0.1", port), 60, "postgres again")
    missing = wait_logged(url, before + during)
    assert missing == set(), f"{len(missing)} rows never reached the database"
