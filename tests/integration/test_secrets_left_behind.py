"""After the whole suite, no API key and no callback secret is in any file the session
wrote: the services' logs (API, workers, Flower, Redis, Prometheus...) and the
prediction logs (SQLite files, with their WAL; PostgreSQL's data files).

tests/integration/conftest.py moves this module after every other test. It sends each
secret every way a client can once more, stops every stack (so that shutdown lines and
the prediction log's last rows are written), then reads every file under the session's
temporary directory, and under each `--secrets-in` folder: `make test` runs the rest of
the suite on two processes first (pytest-xdist, which has no "run this module last"),
then this module alone, pointed at the files that run left."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.examples import EXAMPLE_ROW
from tests.integration.stack import ADMIN_KEY, CALLBACK_SECRET, READER_KEY, Stack
from tests.integration.test_callbacks import Receiver

pytestmark = pytest.mark.integration

SECRETS = {"reader key": READER_KEY, "admin key": ADMIN_KEY, "callback secret": CALLBACK_SECRET}
GOOD = {"input_data": EXAMPLE_ROW}
CHUNK = 1 << 20


def exercise_every_secret(stack: Stack, callback_url: str) -> None:
    with stack.client(None) as client:
        # In the query string, which uvicorn's own access log would have printed.
        for params, status in [
            ({"api_key": READER_KEY}, 200),
            ({"api_key": ADMIN_KEY}, 200),
            ({"api_key": READER_KEY + "-but-wrong"}, 401),
        ]:
            response = client.post("/predict/xgboost/1", params=params, json=GOOD)
            assert response.status_code == status, response.text
        assert client.delete("/delete-models", params={"api_key": READER_KEY}).status_code == 403
        for key, status in [(READER_KEY, 400), (ADMIN_KEY, 400), (ADMIN_KEY + "-but-wrong", 401)]:
            response = client.post("/jobs", headers={"X-API-Key": key}, content=b"{")
            assert response.status_code == status, response.text
        job = client.post(
            "/jobs",
            headers={"X-API-Key": READER_KEY},
            json={"input_data": [EXAMPLE_ROW], "callback_url": callback_url},
        )
        assert job.status_code == 202, job.text


def files_under(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def secrets_in(path: Path) -> set[str]:
    """The names of the secrets in the file, read in chunks that overlap."""
    needles = {name: secret.encode() for name, secret in SECRETS.items()}
    overlap = max(map(len, needles.values()))
    found: set[str] = set()
    tail = b""
    try:
        with path.open("rb") as file:
            while chunk := file.read(CHUNK):
                window = tail + chunk
                found |= {name for name, needle in needles.items() if needle in window}
                tail = window[-overlap:]
    except OSError:  # a socket or a file another process removed meanwhile
        pass
    return found


def test_the_scan_finds_a_secret_across_a_chunk_boundary(tmp_path: Path) -> None:
    path = tmp_path / "canary.log"
    path.write_bytes(b"x" * (CHUNK - 5) + ADMIN_KEY.encode() + b"\n")
    try:
        assert secrets_in(path) == {"admin key"}
    finally:
        path.unlink()  # or the scan below would find it


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_no_secret_in_any_log_or_prediction_log(
    stack: Stack,
    started_stacks: list[Stack],
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> None:
    exercise_every_secret(stack, f"http://127.0.0.1:{receiver.server_address[1]}/hook")
    deadline = time.monotonic() + 30
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.1)
    assert receiver.received, "the worker never signed and delivered the callback"
    for started in started_stacks:
        started.stop()

    root = tmp_path_factory.getbasetemp()
    earlier = [Path(d).resolve() for d in request.config.getoption("--secrets-in")]
    for folder in earlier:
        assert folder.is_dir(), f"--secrets-in {folder}: no such folder"
    scanned = [path for folder in [root, *earlier] for path in files_under(folder)]
    api_logs = [p for p in scanned if p.name == "api.log"]
    assert stack.tmp / "api.log" in api_logs and stack.tmp / "predictions.db" in scanned
    # Our access log is on, without query strings; uvicorn's, which keeps them, is off.
    assert "POST /predict/xgboost/1 200" in (stack.tmp / "api.log").read_text()
    for log in api_logs:
        assert '"logger":"uvicorn.access"' not in log.read_text(errors="replace"), log
    leaks = {str(p): found for p in scanned if (found := secrets_in(p))}
    assert not leaks, f"secrets found in files the suite wrote: {leaks}"
