"""Which address a request comes from, when forwarded headers may be trusted."""

from __future__ import annotations

import pytest

from shared.netaddr import client_address, parse_networks, public_origin

GATEWAYS = parse_networks("127.0.0.1/32,10.0.0.0/8,::1/128")


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        # The nearest hop the trusted proxies do not vouch for, not the first one.
        ("127.0.0.1", "203.0.113.9, 198.51.100.7, 10.1.2.3", "198.51.100.7"),
        ("127.0.0.1", " 198.51.100.7 ,, 10.1.2.3 ,", "198.51.100.7"),
        ("::1", "2001:db8::5", "2001:db8::5"),
        # Nothing but trusted hops: the socket's peer.
        ("127.0.0.1", "10.9.9.9, 10.1.1.1", "127.0.0.1"),
        # A malformed chain proves nothing.
        ("127.0.0.1", "198.51.100.7, not-an-address", "127.0.0.1"),
        # A peer that is no trusted proxy cannot choose its address.
        ("198.51.100.66", "10.0.0.1", "198.51.100.66"),
        ("198.51.100.66", "203.0.113.9", "198.51.100.66"),
        ("unix-socket", "203.0.113.9", "unix-socket"),
    ],
)
def test_the_client_address_is_the_nearest_untrusted_hop(
    peer: str, forwarded_for: str | None, expected: str
) -> None:
    for _ in range(2):  # the second time with the peer's verdict remembered
        assert client_address(peer, forwarded_for, GATEWAYS) == expected


def test_the_trusted_proxies_are_those_given_each_time() -> None:
    chain = "198.51.100.7"
    assert client_address("10.0.0.1", chain, GATEWAYS) == chain
    assert client_address("10.0.0.1", chain, parse_networks("127.0.0.1/32")) == "10.0.0.1"


def test_the_scheme_is_taken_from_a_trusted_proxy_only() -> None:
    assert public_origin("127.0.0.1", "vote.example.org", "https", "http", GATEWAYS) == (
        "https://vote.example.org"
    )
    assert public_origin("198.51.100.66", "vote.example.org", "https", "http", GATEWAYS) == (
        "http://vote.example.org"
    )
