"""Which destinations hookpost may send to: no private, loopback, link-local or unspecified
addresses unless the operator allows their network."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import unicodedata
from collections.abc import Sequence
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Ranges no public receiver lives in, beyond what `ipaddress` already flags.
_EXTRA_REFUSED = [
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT
    ipaddress.ip_network("198.18.0.0/15"),  # benchmarking
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("fec0::/10"),  # deprecated site-local
]


class DestinationRefused(OSError):
    """The destination resolves to an address hookpost may not send to."""


def is_address_allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    """True if `address` is public, or inside one of the operator's `allowed` networks."""
    if isinstance(address, ipaddress.IPv6Address):
        # IPv4 carried inside IPv6 (mapped, 6to4) is judged as the IPv4 address it reaches.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_address_allowed(embedded, allowed)
    if any(address in network for network in allowed):
        return True
    refused = (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
        or any(address in network for network in _EXTRA_REFUSED)
    )
    return not refused


# Controls, spaces, invisible format characters, lone surrogates: no URL holds them raw, and
# urlsplit drops tab, CR and LF, so the host checked would not be the one stored.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})


def check_url_shape(url: str, allow_http: bool) -> str | None:
    """Why `url` can never be a destination, or None if its shape is fine."""
    unsafe = next((c for c in url if unicodedata.category(c) in _UNSAFE_CATEGORIES), None)
    if unsafe is not None:
        return (f"the URL holds U+{ord(unsafe):04X}, a control, space or invisible "
                "character; percent-encode it")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        return f"not a valid URL: {error}"
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        return f"the URL scheme must be {' or '.join(schemes)}"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username or parts.password:
        return "credentials in the URL are not allowed"
    return None


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a literal address resolves to itself)."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def check_destination(url: str, allowed: Sequence[IPNetwork], allow_http: bool) -> str | None:
    """Why hookpost may not send to `url`, or None if it may."""
    problem = check_url_shape(url, allow_http)
    if problem is not None:
        return problem
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        addresses = await resolve(host, parts.port or 443)
    except OSError as error:
        return f"the host {host!r} does not resolve: {error.strerror or error}"
    for address in addresses:
        if not is_address_allowed(address, allowed):
            return f"the host {host!r} resolves to {address}, which is not a public address"
    return None
