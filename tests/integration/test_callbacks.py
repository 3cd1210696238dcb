"""Job callbacks reach a real local HTTP server, signed, and are retried after a failure.

The receiver listens on 127.0.0.1, which the shared stack allows
(SERVING_CALLBACK_ALLOWED_NETWORKS=127.0.0.1/32, tests/integration/stack.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from api.examples import EXAMPLE_ROW
from common.callbacks import SIGNATURE_HEADER, verify
from tests.integration.stack import CALLBACK_SECRET, Stack

pytestmark = pytest.mark.integration


class Receiver(ThreadingHTTPServer):
    """Answers 500 to the first callback and 200 to the next ones; keeps them all."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        super().__init__(("127.0.0.1", 0), Hook)


class Hook(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((body, self.headers.get(SIGNATURE_HEADER, "")))
        self.send_response(500 if len(self.server.received) == 1 else 200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_callback_is_signed_and_retried(stack: Stack, receiver: Receiver) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    with stack.client() as client:
        job = client.post("/jobs", json={"input_data": [EXAMPLE_ROW], "callback_url": url})
        assert job.status_code == 202, job.text
        job_id = job.json()["job_id"]
        deadline = time.monotonic() + 30
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        status = client.get(f"/jobs/{job_id}").json()["status"]
    assert len(receiver.received) == 2, receiver.received  # a 500, then a retry
    body, signature = receiver.received[1]
    assert verify(CALLBACK_SECRET, body, signature)
    assert not verify("another-secret", body, signature)
    assert not verify(CALLBACK_SECRET, body + b" ", signature)
    payload = orjson.loads(body)
    assert (payload["job_id"], payload["status"]) == (job_id, "succeeded")
    assert payload["progress"] == {"rows_done": 1, "rows_total": 1}
    assert status == "succeeded"  # the failed delivery did not touch the job


def test_bad_callback_urls_are_refused(stack: Stack) -> None:
    with stack.client() as client:
        for url in ["ftp://example.org/x", "not a url", "/relative", 42]:
            response = client.post("/jobs", json={"input_data": [EXAMPLE_ROW], "callback_url": url})
            assert response.status_code == 422, (url, response.text)
            assert "callback_url" in response.json()["error"]["message"]
