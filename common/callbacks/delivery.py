"""One delivery attempt: POST the signed body to the address just checked, within one
deadline.

The host is resolved and every address checked again here, and the socket is opened to
a checked address only, never by name: a DNS answer that changes between the check and
the connection (DNS rebinding) cannot point the request elsewhere. The Host header and
the TLS server name are the URL's host, so certificates are checked against the name.
Each socket operation waits only for the time left of the attempt's deadline, so a
receiver that trickles its answer is cut off at it. No redirect is followed, and at
most MAX_RESPONSE_BYTES of the answer are read.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterable
from functools import cache

from common.callbacks.addresses import allowed_networks, check_addresses, resolve
from common.callbacks.signing import SIGNATURE_HEADER, sign
from common.callbacks.targets import CallbackTarget, IPAddress, parse_target
from common.errors import CallbackFailed

MAX_RESPONSE_BYTES = 64 * 1024  # status line, headers and body
USER_AGENT = "model-serving-callback/1"
STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: |$)")


class BadAnswer(Exception):
    """The receiver's answer is not one (not HTTP, or cut off before its headers)."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left; TimeoutError once there are none."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {self.seconds:g} s")
        return left


def deliver(
    url: str, body: bytes, secret: str, timeout: float = 10, allowed: Iterable[str] = ()
) -> int:
    """POST the body; the receiver's 2xx status. CallbackFailed otherwise (retried);
    CallbackRefused if the address may not be called (another attempt would not help)."""
    deadline = Deadline(timeout)
    target = parse_target(url)
    try:
        addresses = resolve(target)
    except (OSError, UnicodeError) as exc:  # DNS may answer next time: retried
        raise CallbackFailed(f"callback host {target.host} does not resolve: {exc}") from None
    check_addresses(target, addresses, allowed_networks(tuple(allowed)))
    try:
        status = exchange(target, addresses, request_bytes(target, body, secret), deadline)
    except TimeoutError:
        raise CallbackFailed(f"callback to {target} got no answer within {timeout:g} s") from None
    except (OSError, BadAnswer) as exc:  # ssl.SSLError is an OSError
        raise CallbackFailed(f"callback to {target} failed: {exc}") from None
    if 300 <= status < 400:
        raise CallbackFailed(f"callback to {target} answered {status}; redirects are not followed")
    if not 200 <= status < 300:
        raise CallbackFailed(f"callback to {target} answered {status}")
    return status


def request_bytes(target: CallbackTarget, body: bytes, secret: str) -> bytes:
    head = (
        f"POST {target.path} HTTP/1.1\r\n"
        f"Host: {target.host_header}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{SIGNATURE_HEADER}: {sign(secret, body, int(time.time()))}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def exchange(
    target: CallbackTarget, addresses: list[IPAddress], request: bytes, deadline: Deadline
) -> int:
    """Send the request, read the answer; its status."""
    sock = connect(addresses, target.port, deadline)
    try:
        if target.scheme == "https":
            sock.settimeout(deadline.left())  # the whole handshake (CPython's _ssl)
            sock = tls_context().wrap_socket(sock, server_hostname=target.host)
        send(sock, request, deadline)
        return Answer(sock, deadline).status()
    finally:
        sock.close()


def connect(addresses: list[IPAddress], port: int, deadline: Deadline) -> socket.socket:
    """A socket connected to the first checked address that takes the connection."""
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(deadline.left())
            sock.connect((str(address), port))
            return sock
        except OSError as exc:  # refused or unreachable: the next address, if any
            sock.close()
            error = exc
    raise error


@cache
def tls_context() -> ssl.SSLContext:
    # The system's CAs, hostname checking, TLS 1.2 or later; shared by every thread.
    return ssl.create_default_context()


def send(sock: socket.socket, data: bytes, deadline: Deadline) -> None:
    view = memoryview(data)
    while view:
        sock.settimeout(deadline.left())
        view = view[sock.send(view) :]


class Answer:
    """The receiver's answer, read within the deadline and MAX_RESPONSE_BYTES."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self.sock, self.deadline = sock, deadline
        self.buffer = bytearray()
        self.read = 0
        self.ended = False

    def status(self) -> int:
        """The final status (after any 1xx); the body is read, and dropped, as far as the
        deadline and the size cap allow: once the status is in, the receiver has it."""
        status, length, chunked = parse_head(self.head())
        while 100 <= status < 200:
            status, length, chunked = parse_head(self.head())
        try:
            while not self.complete(length, chunked) and self.more():
                pass
        except OSError:
            pass  # the deadline, or a reset, in the body: the status stands
        return status

    def more(self) -> bool:
        """Read what comes next; False at the end of the stream or at the size cap."""
        room = MAX_RESPONSE_BYTES - self.read
        if room <= 0 or self.ended:
            return False
        self.sock.settimeout(self.deadline.left())
        chunk = self.sock.recv(min(room, 16384))
        self.read += len(chunk)
        self.buffer += chunk
        self.ended = not chunk
        return bool(chunk)

    def head(self) -> bytes:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if self.more():
                continue
            if self.read >= MAX_RESPONSE_BYTES:
                raise BadAnswer(f"the answer's headers are over {MAX_RESPONSE_BYTES} bytes")
            raise BadAnswer("the connection closed before the answer's headers ended")
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        return head

    def complete(self, length: int | None, chunked: bool) -> bool:
        if length is not None:
            return len(self.buffer) >= length
        return chunked and self.buffer.endswith(b"0\r\n\r\n")  # else: until the stream ends


def parse_head(head: bytes) -> tuple[int, int | None, bool]:
    """(status, Content-Length or None, chunked) of a status line and its headers."""
    lines = head.split(b"\r\n")
    match = STATUS_LINE.match(lines[0])
    if match is None:
        raise BadAnswer(f"the answer is not HTTP/1.x: {lines[0][:80]!r}")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    length = fields.get(b"content-length", b"")
    chunked = b"chunked" in fields.get(b"transfer-encoding", b"").lower()
    return int(match[1]), int(length) if length.isdigit() else None, chunked
