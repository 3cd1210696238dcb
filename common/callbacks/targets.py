"""A callback URL taken apart: scheme, host, port and request target, or InvalidInput.

A host made of numbers is read the way the C resolver's inet_aton reads it (and browsers,
per the WHATWG URL standard): "127.1", "2130706433", "0x7f000001" and "0177.0.0.1" are
all 127.0.0.1. So no spelling of an address passes as a name, and a malformed one
("1.2.3.4.5", "08.0.0.1") is refused instead of being handed to a resolver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any
from urllib.parse import urlsplit

from common.errors import InvalidInput

IPAddress = IPv4Address | IPv6Address
MAX_URL_CHARS = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}
NOT_A_URL = "callback_url must be an absolute http:// or https:// URL"
# Printable ASCII only: the path goes into the request line as it is written, so a space,
# a CR or an LF must never reach it (urlsplit drops some of them silently).
PRINTABLE = re.compile(r"[!-~]+")
LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
HOST_NAME = re.compile(rf"{LABEL}(\.{LABEL})*\.?")
IPV4_NUMBER = re.compile(r"0[x][0-9a-f]*|[0-9]+")


@dataclass(frozen=True)
class CallbackTarget:
    scheme: str
    host: str  # lower case, without brackets: the TLS server name
    port: int
    path: str  # the request target: path and query
    literal: IPAddress | None  # the host is an address, in whichever spelling

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def __str__(self) -> str:
        """For logs and errors: without the query, which may carry the receiver's token."""
        return f"{self.scheme}://{self.host_header}{self.path.split('?', 1)[0]}"


def parse_target(url: Any) -> CallbackTarget:
    if not isinstance(url, str):
        raise InvalidInput(NOT_A_URL)
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"callback_url is longer than {MAX_URL_CHARS} characters")
    if not PRINTABLE.fullmatch(url):
        raise InvalidInput(
            "callback_url must be printable ASCII without spaces (percent-encode the rest)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Port out of range", "Invalid IPv6 URL"
        raise InvalidInput(f"callback_url is not a valid URL: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise InvalidInput(NOT_A_URL)
    if "@" in parts.netloc:
        raise InvalidInput("callback_url must not carry a user name or password")
    if port == 0:
        raise InvalidInput("callback_url has port 0")
    host = parts.hostname
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    literal = literal_address(host)
    return CallbackTarget(parts.scheme, host, port or DEFAULT_PORTS[parts.scheme], path, literal)


def literal_address(host: str) -> IPAddress | None:
    """The address a host spells, None if it is a name; InvalidInput if it is neither."""
    if ":" in host:
        try:
            return ip_address(host)
        except ValueError:
            raise InvalidInput(f"callback_url host [{host}] is not an IPv6 address") from None
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # "127.0.0.1." is 127.0.0.1 too
    if IPV4_NUMBER.fullmatch(labels[-1]):
        address = inet_aton(labels)
        if address is None:
            raise InvalidInput(f"callback_url host {host} is not a valid IPv4 address")
        return address
    if not HOST_NAME.fullmatch(host) or len(host) > 254:
        raise InvalidInput(f"callback_url host {host} is not a valid host name")
    return None


def inet_aton(labels: list[str]) -> IPv4Address | None:
    """1 to 4 numbers (decimal, 0x hex, 0 octal), the last one filling the bytes left."""
    if len(labels) > 4 or not all(IPV4_NUMBER.fullmatch(label) for label in labels):
        return None
    try:
        numbers = [_number(label) for label in labels]
    except ValueError:  # "08": a leading 0 means octal
        return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last + sum(n << (8 * (3 - i)) for i, n in enumerate(head))
    return IPv4Address(value)


def _number(label: str) -> int:
    if label.startswith("0x"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label, 8)
    return int(label)
