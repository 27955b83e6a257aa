"""The client's address and the origin it used, trusting forwarded headers (X-Forwarded-For,
X-Forwarded-Proto) only from configured proxies.

Rate limits key on this address, so it must not be spoofable: a client talking to a
service directly cannot choose its address by sending the header.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(spec: str) -> tuple[Network, ...]:
    """TRUSTED_PROXIES: comma-separated CIDRs or addresses."""
    items = [part.strip() for part in spec.split(",") if part.strip()]
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise ValueError(f"TRUSTED_PROXIES: {exc}") from exc


def _in(address: Address, networks: Sequence[Network]) -> bool:
    return any(address in net for net in networks)


@functools.lru_cache(maxsize=256)
def _trusted_peer(peer: str, trusted: tuple[Network, ...]) -> bool:
    # The peers of a replica are the gateway's few addresses: checked once each, not on
    # every request.
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return _in(address, trusted)


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The nearest untrusted hop: the peer itself unless the peer is a trusted proxy."""
    if not forwarded_for or not _trusted_peer(peer, trusted):
        return peer
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        if not hop:
            continue
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed chain proves nothing; fall back to the socket
        if not _in(address, trusted):
            return hop
    return peer


# A Host header as a browser sends it: a DNS name or IPv4 address, or a bracketed IPv6
# address, with an optional port. Anything else is not echoed into a link.
_HOST = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")


def public_origin(
    peer: str,
    host: str | None,
    forwarded_proto: str | None,
    scheme: str,
    trusted: tuple[Network, ...],
) -> str | None:
    """The origin the client used, e.g. https://vote.example.org; None for a malformed Host.

    The scheme comes from X-Forwarded-Proto only when the peer is a trusted proxy (the
    gateway terminates TLS); otherwise from the connection itself.
    """
    if not host or not _HOST.fullmatch(host):
        return None
    if forwarded_proto and _trusted_peer(peer, trusted):
        proto = forwarded_proto.split(",")[0].strip().lower()
        if proto in ("http", "https"):
            scheme = proto
    return f"{scheme}://{host}"
