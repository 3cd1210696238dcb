"""An idle keep-alive connection outlives the common client idle timeouts.

At uvicorn's default of 5 s, a client that reuses a connection idle for about 5 s (httpx
keeps them exactly that long) races the server's close and gets a reset: `make soak`
saw 3 such ReadErrors in 277,000 requests."""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlsplit

import pytest

from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def test_a_connection_idle_past_five_seconds_is_still_served(stack: Stack) -> None:
    address = urlsplit(stack.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.request("GET", "/healthz")
        first = connection.getresponse()
        first.read()
        assert first.status == 200
        assert first.getheader("connection", "keep-alive").lower() != "close"
        local = connection.sock.getsockname()
        time.sleep(6.0)  # past uvicorn's default timeout_keep_alive of 5 s
        connection.request("GET", "/healthz")
        second = connection.getresponse()  # RemoteDisconnected if the server closed it
        second.read()
        assert second.status == 200
        assert connection.sock.getsockname() == local  # the same connection, not a new one
    finally:
        connection.close()
