"""Callback rules on a real stack (README, Callbacks): signed deliveries to an allowed
network, loopback refused at submission when nothing is allowed, one deadline per
attempt, no redirects, at most 64 KiB of an answer read.

The stack allows 127.0.0.1/32 (SERVING_CALLBACK_ALLOWED_NETWORKS), where the receivers
listen, and gives each delivery 2 s and 2 attempts: a failed attempt shows as a second
request, a successful one as none."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import orjson
import pytest

from api.examples import EXAMPLE_ROW
from common.callbacks import MAX_RESPONSE_BYTES, SIGNATURE_HEADER, verify
from dev.services import wait_until
from tests.integration.receivers import BIG_BYTES, Receiver, receiving
from tests.integration.stack import CALLBACK_SECRET, ROOT, Stack

pytestmark = pytest.mark.integration

DEADLINE = 2.0
RULE = "callbacks go only to public addresses (SERVING_CALLBACK_ALLOWED_NETWORKS allows others)"


@pytest.fixture(scope="module")
def rules(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(
        "cbrules", callback_workers=1, callback_timeout_seconds=DEADLINE, callback_max_attempts=2
    )


@pytest.fixture(scope="module")
def nothing_allowed(rules: Stack) -> Iterator[Stack]:
    """A second API on the same Redis and workers, with no network allowed (the default)."""
    fields = rules.fields | {"callback_allowed_networks": ""}
    api = Stack("cbnone", fields, rules.tmp / "none")
    api.tmp.mkdir()
    api.start_api()
    try:
        wait_until(api._healthy, 60, "the API allowing no network")
        yield api
    finally:
        api.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as server:
        yield server


def submit(stack: Stack, url: str) -> str:
    with stack.client() as client:
        job = client.post("/jobs", json={"input_data": [EXAMPLE_ROW], "callback_url": url})
    assert job.status_code == 202, job.text
    return str(job.json()["job_id"])


def test_a_callback_arrives_signed_with_the_urls_host(rules: Stack, receiver: Receiver) -> None:
    job_id = submit(rules, receiver.url("/ok?job=mine"))
    (arrival,) = receiver.wait_for("/ok", 1, 30)
    time.sleep(1.5)  # a retry would have come by now: the 200 was taken
    assert len(receiver.to("/ok")) == 1
    assert verify(CALLBACK_SECRET, arrival.body, arrival.headers[SIGNATURE_HEADER])
    assert not verify("another-secret", arrival.body, arrival.headers[SIGNATURE_HEADER])
    payload = orjson.loads(arrival.body)
    assert (payload["job_id"], payload["status"]) == (job_id, "succeeded")
    assert arrival.headers["Host"] == f"127.0.0.1:{receiver.server_address[1]}"
    assert arrival.headers["User-Agent"] == "model-serving-callback/1"


def test_loopback_is_refused_when_no_network_is_allowed(
    nothing_allowed: Stack, receiver: Receiver
) -> None:
    port = receiver.server_address[1]
    with nothing_allowed.client() as client:
        for host, says in [
            ("127.0.0.1", "host 127.0.0.1 is a loopback address"),
            ("2130706433", "host 2130706433 resolves to 127.0.0.1, a loopback address"),
            ("[::ffff:127.0.0.1]", "host ::ffff:127.0.0.1 is a loopback address"),
            ("localhost", "host localhost resolves to 127.0.0.1, a loopback address"),
        ]:
            body = {"input_data": [EXAMPLE_ROW], "callback_url": f"http://{host}:{port}/ok"}
            response = client.post("/jobs", json=body)
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["type"] == "callback_refused"
            assert error["message"].startswith(f"callback_url {says}"), error
            assert error["message"].endswith(RULE)
    time.sleep(1)
    assert receiver.arrivals == []  # no job was made, so nothing was ever sent


def test_only_the_allowed_network_passes(rules: Stack, receiver: Receiver) -> None:
    """127.0.0.1/32 is allowed; the rest of loopback (127.0.0.2) is not."""
    port = receiver.server_address[1]
    with rules.client() as client:
        body = {"input_data": [EXAMPLE_ROW], "callback_url": f"http://127.0.0.2:{port}/ok"}
        response = client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    assert "host 127.0.0.2 is a loopback address" in response.json()["error"]["message"]


def test_a_trickled_answer_is_cut_off_at_the_deadline(rules: Stack, receiver: Receiver) -> None:
    """One byte a second: the attempt ends at its 2 s deadline, not when the answer
    would have been complete (about 60 s), and fails, so it is tried again."""
    submit(rules, receiver.url("/trickle"))
    first, second = receiver.wait_for("/trickle", 2, 30)
    wait_until(lambda: second.closed_at is not None, 10, "the second attempt's end")
    took = [a.closed_at - a.at for a in (first, second) if a.closed_at is not None]
    print(f"trickled attempts cut off after {[round(t, 2) for t in took]} s (deadline 2 s)")
    assert len(took) == 2
    # The deadline counts from the attempt's start, a little before the request arrived;
    # the slack above it is for a loaded machine, far below the answer's 60 bytes.
    assert all(DEADLINE - 0.5 <= t <= DEADLINE + 1.0 for t in took), took
    assert first.bytes_sent <= 4
    # The worker logs the failed attempt once it has handled it: a moment after the close.
    wait_until(
        lambda: f"got no answer within {DEADLINE:g} s" in rules.logs_text(), 10, "the log line"
    )


def test_a_redirect_is_not_followed(rules: Stack) -> None:
    with receiving() as redirecting, receiving() as elsewhere:
        redirecting.redirect_to = elsewhere.url("/ok")
        submit(rules, redirecting.url("/redirect"))
        tried = redirecting.wait_for("/redirect", 2, 30)  # a 302 is a failed attempt
        time.sleep(2)
        assert len(tried) == 2
        assert elsewhere.arrivals == []
    assert re.search(r"answered 302; redirects are not followed", rules.logs_text())


def test_at_most_64_kib_of_an_answer_is_read(rules: Stack, receiver: Receiver) -> None:
    """A 200 with a 1 MiB body: the sender stops reading and closes after 64 KiB (its
    kernel's buffers take a little more), and the delivery counts, so no retry."""
    submit(rules, receiver.url("/big"))
    (arrival,) = receiver.wait_for("/big", 1, 30)
    wait_until(lambda: arrival.send_error is not None or arrival.bytes_sent >= BIG_BYTES, 30, "")
    time.sleep(1.5)  # a retry would have come by now
    print(f"the receiver wrote {arrival.bytes_sent} bytes of {BIG_BYTES} ({arrival.send_error})")
    assert len(receiver.to("/big")) == 1
    assert arrival.send_error in {"BrokenPipeError", "ConnectionResetError"}
    assert MAX_RESPONSE_BYTES <= arrival.bytes_sent < BIG_BYTES // 2


def test_the_callback_worker_answers_pings_on_its_own_queue(rules: Stack) -> None:
    """`python -m worker.ping` (the compose health check) reaches it, though it does not
    answer the broadcast ping GET / counts prediction workers with (test_timeout)."""
    node = f"callbacks0-{rules.name}@{socket.gethostname()}"
    done = subprocess.run(
        [sys.executable, "-m", "worker.ping", node],
        env=rules.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"{node} (pid "), done.stdout
