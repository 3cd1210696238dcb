"""Where a callback may go: public addresses only, and the operator's
SERVING_CALLBACK_ALLOWED_NETWORKS besides. Every address a host resolves to must pass:
a name with one public and one private address is refused, since either may be the one
connected to.

IPv4 carried inside IPv6 (IPv4-mapped, IPv4-compatible, 6to4, NAT64) is judged by the
IPv4 it carries: [::ffff:127.0.0.1] reaches the loopback as surely as 127.0.0.1 does.
Python's `is_global` alone calls some of those public, and multicast too, hence the
explicit checks.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Sequence
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

from common.callbacks.targets import CallbackTarget, IPAddress, parse_target
from common.errors import CallbackRefused, InvalidInput

IPNetwork = IPv4Network | IPv6Network
RULE = "callbacks go only to public addresses (SERVING_CALLBACK_ALLOWED_NETWORKS allows others)"
SHARED = ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
NAT64 = ip_network("64:ff9b::/96")  # the well-known prefix: the last 32 bits are IPv4
NAT64_LOCAL = ip_network("64:ff9b:1::/48")  # RFC 8215: local use
IPV4_COMPATIBLE = ip_network("::/96")
# RFC 6761: localhost names are the loopback, whatever a DNS server says about them.
LOCALHOST = (IPv4Address("127.0.0.1"), IPv6Address("::1"))
RESOLVE_SECONDS = 5.0  # at submission: a name that takes longer counts as unresolved


@lru_cache(maxsize=8)
def allowed_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ip_network(cidr, strict=False) for cidr in cidrs)
    except ValueError as exc:  # the operator's setting, not the caller's input
        raise ValueError(f"SERVING_CALLBACK_ALLOWED_NETWORKS: {exc}") from None


def embedded_ipv4(address: IPAddress) -> IPv4Address | None:
    if not isinstance(address, IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):  # not :: or ::1
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def kind(address: IPAddress) -> str | None:
    """What makes the address not public, or None if it is."""
    checks: list[tuple[bool, str]] = [
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in SHARED, "a shared address (100.64.0.0/10, carrier-grade NAT)"),
        (address in NAT64_LOCAL, "a private address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    ]
    return next((reason for refused, reason in checks if refused), None)


def refusal(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why a callback may not go to `address`, or None if it may."""
    carried = embedded_ipv4(address)
    judged = carried or address
    if any(a.version == n.version and a in n for a in {address, judged} for n in allowed):
        return None
    reason = kind(judged)
    if reason is not None and carried is not None:
        reason += f" (the IPv4 address {carried} inside it)"
    return reason


def check_addresses(
    target: CallbackTarget, addresses: Iterable[IPAddress], allowed: Sequence[IPNetwork]
) -> None:
    """CallbackRefused naming the host, the address and why, unless every one passes."""
    for address in addresses:
        reason = refusal(address, allowed)
        if reason is None:
            continue
        # "127.1 resolves to 127.0.0.1": a spelling that hides the address is spelt out.
        plain = ":" in target.host or target.host == str(address)
        what = f"is {reason}" if plain else f"resolves to {address}, {reason}"
        raise CallbackRefused(
            f"callback_url host {target.host} {what}; {RULE}",
            {"host": target.host, "address": str(address)},
        )


def resolve(target: CallbackTarget) -> list[IPAddress]:
    """Every address the host stands for (OSError if it resolves to none)."""
    if (known := _known(target)) is not None:
        return known
    return _addresses(socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM))


async def resolve_async(target: CallbackTarget) -> list[IPAddress]:
    """As `resolve`, on the event loop's resolver (a thread): the loop never blocks."""
    if (known := _known(target)) is not None:
        return known
    loop = asyncio.get_running_loop()
    lookup = loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    return _addresses(await asyncio.wait_for(lookup, RESOLVE_SECONDS))


def _known(target: CallbackTarget) -> list[IPAddress] | None:
    if target.literal is not None:
        return [target.literal]
    name = target.host.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return list(LOCALHOST)
    return None


def _addresses(infos: list[tuple[Any, ...]]) -> list[IPAddress]:
    found = [ip_address(str(info[4][0])) for info in infos]
    if not found:
        raise OSError("no address")
    return list(dict.fromkeys(found))  # in the resolver's order, each once


async def check_callback_url(url: Any, allowed: Iterable[str] = ()) -> str:
    """The URL if a job may call it back (at submission); InvalidInput saying why not."""
    target = parse_target(url)
    try:
        addresses = await resolve_async(target)
    except (OSError, UnicodeError, TimeoutError) as exc:
        why = (
            f"no answer within {RESOLVE_SECONDS:g} s"
            if isinstance(exc, TimeoutError)
            else _resolver_error(exc)
        )
        raise InvalidInput(f"callback_url host {target.host} does not resolve: {why}") from None
    check_addresses(target, addresses, allowed_networks(tuple(allowed)))
    return str(url)


def _resolver_error(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc or type(exc).__name__)
