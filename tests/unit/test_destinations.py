"""Which destinations may be sent to: public addresses only, unless the operator allows more."""

from __future__ import annotations

import ipaddress

import pytest

from dispatcher.destinations import (
    IPNetwork,
    check_destination,
    check_url_shape,
    is_address_allowed,
)

LOOPBACK_V4 = [ipaddress.ip_network("127.0.0.0/8")]


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("8.8.8.8", True),
        ("2606:2800:220:1::1", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("fd00:ec2::254", False),  # AWS metadata over IPv6
        ("0.0.0.0", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:10.0.0.1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("224.0.0.1", False),  # multicast
        ("255.255.255.255", False),
        ("2002:7f00:1::1", False),  # 6to4 wrapping 127.0.0.1
        ("2002:5db8:d822::1", True),  # 6to4 wrapping a public address
        ("fec0::1", False),  # deprecated site-local
        ("192.0.0.8", False),
    ],
)
def test_is_address_allowed_with_no_allowlist(address: str, allowed: bool) -> None:
    assert is_address_allowed(ipaddress.ip_address(address), []) is allowed


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::1", False),
        ("93.184.216.34", True),
    ],
)
def test_allowed_networks_open_only_themselves(address: str, allowed: bool) -> None:
    assert is_address_allowed(ipaddress.ip_address(address), LOOPBACK_V4) is allowed


@pytest.mark.parametrize(
    ("url", "allow_http", "fine"),
    [
        ("https://hooks.example.com/in", False, True),
        ("https://hooks.example.com:8443/in?x=1", False, True),
        ("https://[2606:2800:220:1::1]/in", False, True),
        ("http://hooks.example.com/in", False, False),
        ("http://hooks.example.com/in", True, True),
        ("ftp://hooks.example.com/in", False, False),
        ("ftp://hooks.example.com/in", True, False),
        ("hooks.example.com/in", False, False),
        ("https:///in", False, False),
        ("https://", False, False),
        ("https://user:pass@hooks.example.com/in", False, False),
        ("https://user@hooks.example.com/in", False, False),
        ("https://hooks.example.com:99999/in", False, False),
        ("https://hooks.example.com:port/in", False, False),
        ("https://hooks.example.com/caf\u00e9", False, True),  # non-ASCII is sent encoded
        ("https://b\u00fccher.example/in", False, True),
        ("https://hooks.example.com/a%20b%0D%0A", False, True),  # already percent-encoded
        # Controls (C0, DEL, C1), whitespace and invisible characters, anywhere
        *((f"https://hooks.example.com/i{character}n", False, False) for character in (
            "\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f",
            " ", "\u00a0", "\u1680", "\u2003", "\u2028", "\u2029", "\u202f", "\u3000",
            "\u200b", "\u200e", "\u202e", "\ufeff", "\udcff",
        )),
        ("https://hooks.exa\nmple.com/in", False, False),  # urlsplit would drop the LF
        ("https://hooks.example.com/in\r\n", False, False),
        (" https://hooks.example.com/in", False, False),
        ("https://hooks.example.com/in ", False, False),
    ],
)
def test_check_url_shape(url: str, allow_http: bool, fine: bool) -> None:
    reason = check_url_shape(url, allow_http)
    assert (reason is None) is fine, reason


@pytest.mark.parametrize(
    ("url", "allowed", "fine"),
    [
        ("https://93.184.216.34/x", [], True),
        ("https://[2606:2800:220:1::1]/x", [], True),
        ("https://127.0.0.1/x", [], False),
        ("https://[::1]/x", [], False),
        ("https://169.254.169.254/latest/meta-data", [], False),
        ("https://localhost/x", [], False),
        ("https://127.0.0.1/x", LOOPBACK_V4, True),
        ("https://10.0.0.1/x", LOOPBACK_V4, False),
        ("http://93.184.216.34/x", [], False),
    ],
)
async def test_check_destination(url: str, allowed: list[IPNetwork], fine: bool) -> None:
    reason = await check_destination(url, allowed, allow_http=False)
    assert (reason is None) is fine, reason


async def test_check_destination_names_the_refused_address() -> None:
    reason = await check_destination("https://127.0.0.1/x", [], allow_http=False)
    assert reason is not None
    assert "127.0.0.1" in reason


def test_check_url_shape_names_the_character() -> None:
    reason = check_url_shape("https://hooks.example.com/in\r\nX-Injected: 1", False)
    assert reason is not None
    assert "U+000D" in reason
