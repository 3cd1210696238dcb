"""common.callbacks.verify: what a receiver runs on each delivery. It takes a fresh,
untouched delivery and refuses an old (or far-future) timestamp, a changed body, a
changed signature, another secret and a malformed header."""

from __future__ import annotations

import time

import pytest

from common.callbacks import sign, verify

SECRET = "receiver-and-server-share-this"
BODY = b'{"job_id":"0123","status":"succeeded"}'


def signed(age_seconds: float = 0, body: bytes = BODY) -> str:
    return sign(SECRET, body, int(time.time() - age_seconds))


def test_a_fresh_untouched_delivery_is_accepted() -> None:
    header = signed()
    assert header.startswith("t=") and ",v1=" in header
    assert verify(SECRET, BODY, header) is True


@pytest.mark.parametrize(
    ("age_seconds", "tolerance", "accepted"),
    [
        (0, 300, True),
        (290, 300, True),  # within the default five minutes
        (310, 300, False),  # a captured delivery replayed later
        (3600, 300, False),
        (-310, 300, False),  # a timestamp from the future is no fresher
        (50, 60, True),
        (70, 60, False),  # the receiver's own, tighter, tolerance
    ],
)
def test_old_timestamps_are_refused(age_seconds: float, tolerance: float, accepted: bool) -> None:
    header = signed(age_seconds)
    assert verify(SECRET, BODY, header, tolerance=tolerance) is accepted


def test_an_old_delivery_is_refused_even_with_its_genuine_signature() -> None:
    """The timestamp is part of what is signed: putting a fresh one on an old
    delivery breaks the signature, and keeping the old one is refused as old."""
    old = signed(age_seconds=600)
    assert verify(SECRET, BODY, old) is False
    digest = old.split(",v1=", 1)[1]
    refreshed = f"t={int(time.time())},v1={digest}"
    assert verify(SECRET, BODY, refreshed) is False


@pytest.mark.parametrize(
    "tampered",
    [
        BODY.replace(b"succeeded", b"failed"),
        BODY + b" ",
        BODY[:-1],
        b"",
    ],
)
def test_a_tampered_body_is_refused(tampered: bytes) -> None:
    assert verify(SECRET, tampered, signed()) is False


def test_another_secret_or_a_changed_digest_is_refused() -> None:
    header = signed()
    assert verify("not-" + SECRET, BODY, header) is False
    t, digest = header.split(",v1=", 1)
    flipped = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    assert verify(SECRET, BODY, f"{t},v1={flipped}") is False
    assert verify(SECRET, BODY, f"{t},v1={digest.upper()}") is False


@pytest.mark.parametrize(
    "header",
    ["", "garbage", "v1=abc", "t=,v1=abc", "t=soon,v1=abc", "t={now}"],
)
def test_a_malformed_header_is_refused(header: str) -> None:
    # {now} filled in here, not at collection: the test's id stays the same everywhere.
    assert verify(SECRET, BODY, header.format(now=int(time.time()))) is False
