"""common.callbacks.deliver against receivers on 127.0.0.1, in-process: it connects to
the address it checked (one lookup, never a second by name), sends the URL's host, checks
TLS certificates against that name, and refuses at delivery what it would refuse at
submission. The names here resolve through a stand-in resolver (no DNS is asked)."""

from __future__ import annotations

import datetime
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.callbacks import SIGNATURE_HEADER, deliver, verify
from common.callbacks.delivery import tls_context
from common.errors import CallbackFailed, CallbackRefused

LOOPBACK = ("127.0.0.1/32",)
BODY = b'{"job_id":"abc","status":"succeeded"}'
SECRET = "s3cret"


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.server_names: list[str | None] = []  # TLS SNI, as clients sent it
        super().__init__(("127.0.0.1", 0), Hook)


class Hook(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append({"headers": dict(self.headers.items()), "body": body})
        if self.path == "/trickle":
            for byte in b"HTTP/1.1 200 OK\r\n":
                self.wfile.write(bytes([byte]))
                time.sleep(0.2)
            return
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def serve(server: Receiver) -> Iterator[Receiver]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """hooks.example and other.example are 127.0.0.1, private.example 10.0.0.5."""
    names = {"hooks.example": "127.0.0.1", "other.example": "127.0.0.1"}
    names["private.example"] = "10.0.0.5"
    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_it_connects_to_the_checked_address_with_the_urls_host(
    receiver: Receiver, lookups: list[str]
) -> None:
    port = receiver.server_address[1]
    status = deliver(f"http://hooks.example:{port}/in?x=1", BODY, SECRET, 5, LOOPBACK)
    assert status == 200
    assert lookups == ["hooks.example"]  # resolved once; the socket took the address
    (seen,) = receiver.seen
    assert seen["headers"]["Host"] == f"hooks.example:{port}"
    assert seen["body"] == BODY and verify(SECRET, BODY, seen["headers"][SIGNATURE_HEADER])


def test_an_address_refused_at_delivery_is_never_connected_to(
    receiver: Receiver, lookups: list[str]
) -> None:
    """A name that was public at submission and resolves elsewhere now (or allowed
    networks that changed): refused before any connection, and not retried."""
    port = receiver.server_address[1]
    with pytest.raises(CallbackRefused, match=re.escape("resolves to 10.0.0.5, a private address")):
        deliver(f"http://private.example:{port}/", BODY, SECRET, 5, LOOPBACK)
    with pytest.raises(
        CallbackRefused, match=re.escape("hooks.example resolves to 127.0.0.1, a loop")
    ):
        deliver(f"http://hooks.example:{port}/", BODY, SECRET, 5, ())
    assert receiver.seen == []


def test_a_name_that_does_not_resolve_at_delivery_is_retried(lookups: list[str]) -> None:
    with pytest.raises(
        CallbackFailed, match=re.escape("callback host gone.example does not resolve")
    ):
        deliver("http://gone.example/", BODY, SECRET, 5, LOOPBACK)


def test_the_deadline_covers_the_whole_answer(receiver: Receiver) -> None:
    port = receiver.server_address[1]
    started = time.monotonic()
    with pytest.raises(CallbackFailed, match=re.escape("got no answer within 0.5 s")):
        deliver(f"http://127.0.0.1:{port}/trickle", BODY, SECRET, 0.5, LOOPBACK)
    took = time.monotonic() - started
    assert 0.5 <= took < 0.9, took  # the answer alone would take 3.4 s


def certificate_pair(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA (the file clients trust) and a certificate for `name` it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
def tls_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    ca, cert, key = certificate_pair(tmp_path, "hooks.example")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # what create_default_context trusts
    tls_context.cache_clear()
    server = Receiver()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: server.server_names.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from serve(server)
    tls_context.cache_clear()  # later tests get the system's CAs again


def test_tls_is_checked_against_the_urls_host(tls_receiver: Receiver, lookups: list[str]) -> None:
    port = tls_receiver.server_address[1]
    assert deliver(f"https://hooks.example:{port}/", BODY, SECRET, 5, LOOPBACK) == 200
    assert tls_receiver.seen[0]["headers"]["Host"] == f"hooks.example:{port}"
    assert tls_receiver.server_names == ["hooks.example"]
    # The same address under another name: the certificate does not name it.
    with pytest.raises(CallbackFailed, match="certificate verify failed"):
        deliver(f"https://other.example:{port}/", BODY, SECRET, 5, LOOPBACK)
    with pytest.raises(CallbackFailed, match="certificate verify failed"):
        deliver(f"https://127.0.0.1:{port}/", BODY, SECRET, 5, LOOPBACK)
    assert len(tls_receiver.seen) == 1
