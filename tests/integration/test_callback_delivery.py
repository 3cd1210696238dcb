"""Job callbacks (README, Jobs, Callbacks) against a receiver on loopback that fails
deliveries on purpose: retried with exponential backoff, SERVING_CALLBACK_MAX_ATTEMPTS
deliveries in all, then given up; signed callbacks for failed and cancelled jobs too.

The worker retries with Celery's `retry_backoff=True`, whose jitter is "full": the n-th
retry waits a whole number of seconds drawn from [0, 2**(n-1)]. One delivery's gaps are
therefore random, and only many deliveries show the backoff: JOBS callbacks that always
fail are measured together, submitted a little apart."""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from common.callbacks import SIGNATURE_HEADER, verify
from common.training import breast_cancer
from tests.integration.stack import CALLBACK_SECRET, Stack
from tests.integration.test_jobs import csv_bytes, rows, wait_for
from tests.integration.uploads import put_upload

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 3
JOBS = 40  # callbacks that always fail, measured together (see the module's docstring)
# After the last delivery expected, how long a delivery too many would have to show up:
# twice the longest wait a 4th attempt could have had (2**2 s).
GENEROUS_WAIT = 8.0
STAGGER = 0.1  # seconds between two submissions


@dataclass(frozen=True)
class Delivery:
    at: float  # time.monotonic() when it arrived
    path: str
    body: bytes
    signature: str
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        return orjson.loads(self.body)  # type: ignore[no-any-return]


class Receiver(ThreadingHTTPServer):
    """POST /fail/<n>/<tag>: answers 500 to the first n deliveries to that path, then
    200; keeps every delivery."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Hook)

    def url(self, failures: int, tag: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/fail/{failures}/{tag}"

    def to(self, url: str) -> list[Delivery]:
        path = url.split(str(self.server_address[1]), 1)[1]
        with self.lock:
            return [d for d in self.deliveries if d.path == path]

    def wait_for(self, url: str, count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(found := self.to(url)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


class Hook(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        arrived = time.monotonic()
        body = self.rfile.read(int(self.headers["Content-Length"]))
        failures = int(self.path.split("/")[2])
        with self.server.lock:
            earlier = sum(d.path == self.path for d in self.server.deliveries)
            status = 500 if earlier < failures else 200
            signature = self.headers.get(SIGNATURE_HEADER, "")
            self.server.deliveries.append(Delivery(arrived, self.path, body, signature, status))
        self.send_response(status)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def calling(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(
        "callbacks",
        callback_workers=1,
        callback_max_attempts=MAX_ATTEMPTS,
        # The receiver is on loopback, which callbacks reach only when it is allowed.
        callback_allowed_networks="127.0.0.1/32",
        # JOBS + 1 jobs go in within seconds, faster than a fresh worker ends them.
        max_jobs_per_key=JOBS + 10,
    )


def assert_signed(delivery: Delivery) -> None:
    assert verify(CALLBACK_SECRET, delivery.body, delivery.signature), delivery
    assert not verify(CALLBACK_SECRET, delivery.body + b" ", delivery.signature)


TWICE = "fails-twice"  # the job whose callback fails twice, then is taken


@pytest.fixture(scope="module")
def retried(calling: Stack, receiver: Receiver) -> dict[str, list[Delivery]]:
    """job id -> its callback's deliveries, once no delivery too many came within
    GENEROUS_WAIT of the last one expected: JOBS one-row jobs whose callbacks always
    fail, and the TWICE job (keyed so), whose callback fails twice."""
    urls, job_ids = {}, []
    with calling.client() as client:
        for i in range(JOBS + 1):
            url = receiver.url(99, f"always-{i}") if i < JOBS else receiver.url(2, TWICE)
            _, data = rows(1 if i < JOBS else 2, 0.0601 + i * 1e-3)
            job = client.post("/jobs", json={"input_data": data, "callback_url": url})
            assert job.status_code == 202, job.text
            job_ids.append(job.json()["job_id"])
            urls[job_ids[-1] if i < JOBS else TWICE] = url
            # Staggered: deliveries due at once would queue behind one another, and a
            # retry's wait would read as its backoff plus that queue.
            time.sleep(STAGGER)
        # Every attempt waits at most 2**(n-1) s: all are in well within a minute.
        for url in urls.values():
            receiver.wait_for(url, MAX_ATTEMPTS, 60)
        time.sleep(GENEROUS_WAIT)
        statuses = {client.get(f"/jobs/{job_id}").json()["status"] for job_id in job_ids}
    assert statuses == {"succeeded"}  # failed deliveries never change the job
    return {job_id: receiver.to(url) for job_id, url in urls.items()}


@pytest.fixture(scope="module")
def always_failing(retried: dict[str, list[Delivery]]) -> dict[str, list[Delivery]]:
    return {job_id: found for job_id, found in retried.items() if job_id != TWICE}


def gaps(deliveries: dict[str, list[Delivery]], retry: int) -> list[float]:
    """The wait before retry number `retry` (1-based) of each job's callback."""
    return [found[retry].at - found[retry - 1].at for found in deliveries.values()]


def test_a_failing_callback_is_delivered_max_attempts_times_then_given_up(
    always_failing: dict[str, list[Delivery]],
) -> None:
    counts = {job_id: len(found) for job_id, found in always_failing.items()}
    assert counts == dict.fromkeys(always_failing, MAX_ATTEMPTS)  # never a 4th
    for job_id, found in always_failing.items():
        assert [d.answered for d in found] == [500] * MAX_ATTEMPTS
        for delivery in found:
            assert_signed(delivery)
            assert (delivery.payload["job_id"], delivery.payload["status"]) == (
                job_id,
                "succeeded",
            )
        assert len({d.body for d in found}) == 1  # each attempt sends the same status


def test_retries_back_off_exponentially(always_failing: dict[str, list[Delivery]]) -> None:
    """The waits before the 1st and the 2nd retry, over JOBS callbacks: the second is
    drawn from {0, 1, 2} s and the first from {0, 1} s, so the second's longest waits
    are twice the first's, and so is its mean: figures of this test, compared with each
    other."""
    first, second = gaps(always_failing, 1), gaps(always_failing, 2)
    top_first, top_second = (statistics.quantiles(g, n=10)[-1] for g in (first, second))
    print(
        f"waits before retry 1: mean {statistics.mean(first):.2f} s, 90th percentile "
        f"{top_first:.2f} s; before retry 2: mean {statistics.mean(second):.2f} s, 90th "
        f"percentile {top_second:.2f} s (over {len(first)} callbacks; retry 1 sorted: "
        f"{[round(g, 2) for g in sorted(first)]}; retry 2 sorted: "
        f"{[round(g, 2) for g in sorted(second)]})"
    )
    # The 90th percentile, not the longest wait, so that one delivery held up by the busy
    # host does not decide. It falls short only if fewer than 4 of the JOBS second waits
    # drew 2 s (a chance of about 1e-4), and the means differ by 0.5 s against a standard
    # error of 0.15 s.
    assert top_second >= 1.5 * top_first, (first, second)
    assert statistics.mean(second) > statistics.mean(first), (first, second)


def test_no_retry_waits_past_its_backoff_cap(
    always_failing: dict[str, list[Delivery]],
) -> None:
    """Full jitter: the n-th retry waits at most 2^(n-1) s (plus up to 2 s of queueing)."""
    for retry in range(1, MAX_ATTEMPTS):
        cap = 2 ** (retry - 1)
        assert max(gaps(always_failing, retry)) <= cap + 2.0, (retry, cap)


def test_a_callback_that_fails_twice_is_taken_on_the_third_attempt(
    retried: dict[str, list[Delivery]],
) -> None:
    found = retried[TWICE]
    assert [d.answered for d in found] == [500, 500, 200]  # and nothing after the 200
    assert all(verify(CALLBACK_SECRET, d.body, d.signature) for d in found)
    assert found[-1].payload["status"] == "succeeded"
    assert found[-1].payload["progress"] == {"rows_done": 2, "rows_total": 2}


def test_a_failed_job_calls_back_with_its_error(calling: Stack, receiver: Receiver) -> None:
    """A CSV input object with a non-numeric value: the job fails, and its callback says
    so, with the job's error, signed."""
    x, _ = rows(5, 0.0801)
    _, _, names, _ = breast_cancer()
    text = csv_bytes(x, names).decode().splitlines()
    cells = text[3].split(",")
    cells[1 + names.index("mean texture")] = "n/a"
    text[3] = ",".join(cells)  # line 4 of the file: the header is line 1
    key = put_upload(calling, "bad-texture.csv", ("\n".join(text) + "\n").encode())
    url = receiver.url(0, "failed-job")
    with calling.client() as client:
        job = client.post("/jobs", json={"input_object": key, "callback_url": url})
        assert job.status_code == 202, job.text
        done, _ = wait_for(client, job.json()["status_url"], {"succeeded", "failed"})
        found = receiver.wait_for(url, 1, 30)
        time.sleep(2)  # no second callback for one job
    assert done["status"] == "failed", done
    assert len(receiver.to(url)) == 1, receiver.to(url)
    delivery = found[0]
    assert_signed(delivery)
    payload = delivery.payload
    assert payload["job_id"] == done["job_id"] and payload["status"] == "failed"
    assert payload["error"] == done["error"]
    assert re.search(r"\bline 4\b", payload["error"]["message"]), payload["error"]
    assert payload["status_url"] == f"/jobs/{done['job_id']}"


def test_a_cancelled_job_calls_back_cancelled(calling: Stack, receiver: Receiver) -> None:
    _, data = rows(20_000, 0.0901)  # four chunks: still running when cancelled
    url = receiver.url(0, "cancelled-job")
    with calling.client() as client:
        job = client.post("/jobs", json={"input_data": data, "callback_url": url}).json()
        cancelled = client.delete(job["status_url"])
        found = receiver.wait_for(url, 1, 30)
        time.sleep(2)  # chunks that run after the cancel must not call back again
        final = client.get(job["status_url"]).json()
    assert cancelled.status_code == 200, cancelled.text
    assert final["status"] == "cancelled"
    assert len(receiver.to(url)) == 1, receiver.to(url)
    delivery = found[0]
    assert_signed(delivery)
    assert (delivery.payload["job_id"], delivery.payload["status"]) == (
        job["job_id"],
        "cancelled",
    )
    assert delivery.payload["error"] is None
