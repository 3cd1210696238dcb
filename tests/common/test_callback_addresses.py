"""Where callbacks may go (common/callbacks/addresses.py, targets.py): every spelling of
a non-public address is refused with its reason, public addresses pass, the allowed
networks let others through, and a name passes only if every address it has does.

Only IP literals and localhost names reach the real resolver (no network is needed for
them); the names of the multi-address cases go to a stand-in resolver."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from common.callbacks import check_callback_url, parse_target, refusal
from common.callbacks.addresses import allowed_networks
from common.callbacks.delivery import parse_head, request_bytes
from common.errors import CallbackRefused, InvalidInput

RULE = "callbacks go only to public addresses (SERVING_CALLBACK_ALLOWED_NETWORKS allows others)"


def check(url: Any, allowed: tuple[str, ...] = ()) -> str:
    return asyncio.run(check_callback_url(url, allowed))


def refused_message(url: str, allowed: tuple[str, ...] = ()) -> str:
    with pytest.raises(CallbackRefused) as caught:
        check(url, allowed)
    assert caught.value.status == 422 and caught.value.type == "callback_refused"
    return caught.value.message


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1/", "host 127.0.0.1 is a loopback address"),
        ("http://2130706433/", "host 2130706433 resolves to 127.0.0.1, a loopback address"),
        ("http://0x7f000001/", "host 0x7f000001 resolves to 127.0.0.1, a loopback address"),
        ("http://0X7F000001/", "host 0x7f000001 resolves to 127.0.0.1, a loopback address"),
        ("http://127.1/", "host 127.1 resolves to 127.0.0.1, a loopback address"),
        ("http://0177.0.0.1/", "host 0177.0.0.1 resolves to 127.0.0.1, a loopback address"),
        ("http://127.0.0.1./", "host 127.0.0.1. resolves to 127.0.0.1, a loopback address"),
        ("http://127.9.9.9:8080/", "host 127.9.9.9 is a loopback address"),
        (
            "http://[::ffff:127.0.0.1]/",
            "host ::ffff:127.0.0.1 is a loopback address (the IPv4 address 127.0.0.1 inside it)",
        ),
        ("http://[::1]/", "host ::1 is a loopback address"),
        ("http://localhost/", "host localhost resolves to 127.0.0.1, a loopback address"),
        ("http://LocalHost:9/", "host localhost resolves to 127.0.0.1, a loopback address"),
        ("http://api.localhost/", "host api.localhost resolves to 127.0.0.1, a loopback"),
        ("http://0.0.0.0/", "host 0.0.0.0 is an unspecified address"),
        ("http://0/", "host 0 resolves to 0.0.0.0, an unspecified address"),
        ("http://[::]/", "host :: is an unspecified address"),
        ("http://10.0.0.1/", "host 10.0.0.1 is a private address"),
        ("http://172.16.5.4/", "host 172.16.5.4 is a private address"),
        ("http://192.168.1.1/", "host 192.168.1.1 is a private address"),
        ("http://3232235777/", "host 3232235777 resolves to 192.168.1.1, a private address"),
        ("http://[fd00::1]/", "host fd00::1 is a private address"),
        ("http://169.254.169.254/latest/", "host 169.254.169.254 is a link-local address"),
        ("http://[fe80::1]/", "host fe80::1 is a link-local address"),
        ("http://100.64.0.1/", "host 100.64.0.1 is a shared address (100.64.0.0/10"),
        ("http://100.127.255.254/", "host 100.127.255.254 is a shared address"),
        ("http://224.0.0.1/", "host 224.0.0.1 is a multicast address"),
        ("http://[ff02::1]/", "host ff02::1 is a multicast address"),
        ("http://240.0.0.1/", "host 240.0.0.1 is a reserved address"),
        ("http://255.255.255.255/", "host 255.255.255.255 is a reserved address"),
        ("http://192.0.2.1/", "host 192.0.2.1 is a private address"),  # documentation
        ("http://198.18.0.1/", "host 198.18.0.1 is a private address"),  # benchmarking
        (
            "http://[::127.0.0.1]/",
            "host ::127.0.0.1 is a loopback address (the IPv4 address 127.0.0.1",
        ),
        (  # 6to4 of 127.0.0.1 (Python alone calls 2002::/16 global)
            "http://[2002:7f00:1::]/",
            "host 2002:7f00:1:: is a loopback address (the IPv4 address 127.0.0.1 inside",
        ),
        (  # NAT64, the well-known prefix
            "http://[64:ff9b::a00:1]/",
            "host 64:ff9b::a00:1 is a private address (the IPv4 address 10.0.0.1 inside",
        ),
        ("http://[64:ff9b:1::1]/", "host 64:ff9b:1::1 is a private address"),  # local NAT64
    ],
)
def test_every_spelling_of_a_non_public_address_is_refused(url: str, says: str) -> None:
    message = refused_message(url)
    assert message.startswith(f"callback_url {says}"), message
    assert message.endswith(RULE)


@pytest.mark.parametrize(
    "url",
    [
        "http://8.8.8.8/",
        "https://93.184.216.34/hook",
        "https://93.184.216.34:8443/hook?token=abc",
        "http://1572395042/",  # 93.184.216.34 as one number: spelling is no reason
        "http://[2606:4700:4700::1111]/",
        "http://[::ffff:8.8.8.8]/",
        "http://[64:ff9b::808:808]/",  # NAT64 of a public address
        "http://[2002:808:808::]/",  # 6to4 of a public address
    ],
)
def test_public_addresses_are_accepted(url: str) -> None:
    assert check(url) == url


def test_the_allowed_networks_let_their_addresses_through() -> None:
    allowed = ("127.0.0.1/32",)
    assert check("http://127.0.0.1:8080/hook", allowed) == "http://127.0.0.1:8080/hook"
    assert check("http://127.1:8080/", allowed) == "http://127.1:8080/"
    assert check("http://[::ffff:127.0.0.1]:8080/", allowed) == "http://[::ffff:127.0.0.1]:8080/"
    # Only those: the rest of loopback, and localhost (it is ::1 too), stay refused.
    assert "host 127.0.0.2 is a loopback" in refused_message("http://127.0.0.2/", allowed)
    assert "resolves to ::1, a loopback" in refused_message("http://localhost/", allowed)


def test_allowed_networks_as_the_settings_give_them() -> None:
    networks = allowed_networks(("10.0.0.0/8", "fd00::/8", "192.168.1.7"))
    assert [str(n) for n in networks] == ["10.0.0.0/8", "fd00::/8", "192.168.1.7/32"]
    address = parse_target("http://10.20.30.40/").literal
    assert address is not None
    assert refusal(address, networks) is None
    assert refusal(address, ()) == "a private address"
    with pytest.raises(ValueError, match="SERVING_CALLBACK_ALLOWED_NETWORKS"):
        allowed_networks(("10.0.0.0/33",))


def fake_resolver(names: dict[str, list[str]]) -> Any:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in names[host]
        ]

    return getaddrinfo


def test_a_name_passes_only_if_every_address_it_resolves_to_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        fake_resolver(
            {
                "public.example": ["93.184.216.34", "2606:2800:220:1::1"],
                "mixed.example": ["93.184.216.34", "10.0.0.7"],
                "mapped.example": ["8.8.8.8", "::ffff:169.254.169.254"],
            }
        ),
    )
    assert check("https://public.example/hook") == "https://public.example/hook"
    assert refused_message("https://mixed.example/hook").startswith(
        "callback_url host mixed.example resolves to 10.0.0.7, a private address;"
    )
    assert "resolves to ::ffff:a9fe:a9fe, a link-local address" in refused_message(
        "http://mapped.example/"
    )
    assert check("https://mixed.example/hook", ("10.0.0.0/24",)) == "https://mixed.example/hook"


def test_a_name_that_does_not_resolve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({}))
    with pytest.raises(InvalidInput) as caught:
        check("https://nowhere.example/hook")
    assert caught.value.status == 422
    assert caught.value.message == (
        "callback_url host nowhere.example does not resolve: Name or service not known"
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (42, "callback_url must be an absolute http:// or https:// URL"),
        ("ftp://8.8.8.8/x", "callback_url must be an absolute http:// or https:// URL"),
        ("file:///etc/passwd", "callback_url must be an absolute http:// or https:// URL"),
        ("/relative", "callback_url must be an absolute http:// or https:// URL"),
        ("http:///path", "callback_url must be an absolute http:// or https:// URL"),
        ("http://user:pw@8.8.8.8/", "callback_url must not carry a user name or password"),
        ("http://user@8.8.8.8/", "callback_url must not carry a user name or password"),
        ("http://8.8.8.8/" + "a" * 2040, "callback_url is longer than 2048 characters"),
        ("http://8.8.8.8/a b", "callback_url must be printable ASCII without spaces"),
        ("http://8.8.8.8/a\r\nX-Evil: 1", "callback_url must be printable ASCII"),
        ("http://exämple.org/", "callback_url must be printable ASCII"),
        ("http://8.8.8.8:99999/", "callback_url is not a valid URL: Port out of range"),
        ("http://8.8.8.8:0/", "callback_url has port 0"),
        ("http://[::1/", "callback_url is not a valid URL"),
        ("http://1.2.3.4.5/", "callback_url host 1.2.3.4.5 is not a valid IPv4 address"),
        ("http://08.0.0.1/", "callback_url host 08.0.0.1 is not a valid IPv4 address"),
        ("http://4294967296/", "callback_url host 4294967296 is not a valid IPv4 address"),
        ("http://1.256.0.1/", "callback_url host 1.256.0.1 is not a valid IPv4 address"),
        ("http://example.123/", "callback_url host example.123 is not a valid IPv4 address"),
        ("http://-bad-.example/", "callback_url host -bad-.example is not a valid host name"),
    ],
)
def test_malformed_urls_are_refused(url: Any, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check(url)
    assert caught.value.message.startswith(says), caught.value.message


def test_the_longest_url_allowed_is_2048_characters() -> None:
    url = "http://8.8.8.8/" + "a" * (2048 - len("http://8.8.8.8/"))
    assert len(url) == 2048 and check(url) == url


def test_the_request_names_the_host_and_never_the_address() -> None:
    target = parse_target("https://hooks.example:8443/in/box?job=1#frag")
    assert (target.host, target.port, target.path) == ("hooks.example", 8443, "/in/box?job=1")
    assert str(target) == "https://hooks.example:8443/in/box"  # logs carry no query
    head = request_bytes(target, b"{}", "secret").split(b"\r\n\r\n")[0].decode()
    lines = head.split("\r\n")
    assert lines[0] == "POST /in/box?job=1 HTTP/1.1"
    assert "Host: hooks.example:8443" in lines and "Content-Length: 2" in lines
    assert "Connection: close" in lines
    assert parse_target("http://[2606:4700::1]/").host_header == "[2606:4700::1]"
    assert parse_target("http://8.8.8.8:80").path == "/"


@pytest.mark.parametrize(
    ("head", "parsed"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12", (200, 12, False)),
        (b"HTTP/1.0 302 Found\r\nLocation: http://x/", (302, None, False)),
        (b"HTTP/1.1 204\r\nTransfer-Encoding: Chunked", (204, None, True)),
    ],
)
def test_status_lines_and_headers(head: bytes, parsed: tuple[int, int | None, bool]) -> None:
    assert parse_head(head) == parsed
