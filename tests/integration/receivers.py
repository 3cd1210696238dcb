"""Callback receivers on 127.0.0.1 for the integration tests: each path behaves in one
way (answers at once, trickles, redirects, answers too much, holds), and every request
is kept with what happened to its connection."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIG_BYTES = 1024 * 1024
BIG_PIECE = 16 * 1024
HOLD_LIMIT = 30.0  # a held callback is let go after this long whatever happens


@dataclass
class Arrival:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None  # when the sender closed the connection, if seen
    bytes_sent: int = 0  # of the answer
    send_error: str | None = None


class Receiver(ThreadingHTTPServer):
    """`/ok` 200; `/trickle` an answer one byte a second; `/redirect` 302 to
    `redirect_to`; `/big` 200 with a 1 MiB body, in pieces; `/hold` 200 once `release`
    is set (at the latest after HOLD_LIMIT)."""

    daemon_threads = True
    request_queue_size = 512  # hundreds of callbacks connect at once in the load test

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.lock = threading.Lock()
        self.redirect_to = ""
        self.release = threading.Event()
        self.holding = 0
        super().__init__(("127.0.0.1", 0), Hook)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def to(self, path: str) -> list[Arrival]:
        with self.lock:
            return [a for a in self.arrivals if a.path == path]

    def wait_for(self, path: str, count: int, timeout: float) -> list[Arrival]:
        deadline = time.monotonic() + timeout
        while len(found := self.to(path)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return found


class Hook(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        arrival = Arrival(self.path.split("?")[0], dict(self.headers.items()), body)
        with self.server.lock:
            self.server.arrivals.append(arrival)
        handler = getattr(self, f"answer_{arrival.path.strip('/')}", self.answer_ok)
        try:
            handler(arrival)
        except OSError as exc:  # the sender closed or reset the connection
            arrival.send_error = type(exc).__name__
        self.close_connection = True

    def answer_ok(self, arrival: Arrival) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def answer_trickle(self, arrival: Arrival) -> None:
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        for byte in answer:
            self.connection.sendall(bytes([byte]))
            arrival.bytes_sent += 1
            # Readable before the answer is done: the sender closed its end (EOF).
            if select.select([self.connection], [], [], 1.0)[0]:
                arrival.closed_at = time.monotonic()
                return

    def answer_redirect(self, arrival: Arrival) -> None:
        self.send_response(302)
        self.send_header("Location", self.server.redirect_to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def answer_big(self, arrival: Arrival) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(BIG_BYTES))
        self.end_headers()
        piece = b"x" * BIG_PIECE
        while arrival.bytes_sent < BIG_BYTES:
            self.connection.sendall(piece)
            arrival.bytes_sent += len(piece)
            time.sleep(0.005)  # time for the sender's close (a reset) to come back

    def answer_hold(self, arrival: Arrival) -> None:
        with self.server.lock:
            self.server.holding += 1
        try:
            self.server.release.wait(HOLD_LIMIT)
        finally:
            with self.server.lock:
                self.server.holding -= 1
        self.answer_ok(arrival)

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def receiving() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
