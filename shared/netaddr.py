"""The client's address, trusting X-Forwarded-For only from configured proxies.

Rate limits key on this address, so it must not be spoofable: a client talking to a
service directly cannot choose its address by sending the header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(spec: str) -> tuple[Network, ...]:
    """TRUSTED_PROXIES: comma-separated CIDRs or addresses."""
    items = [part.strip() for part in spec.split(",") if part.strip()]
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise ValueError(f"TRUSTED_PROXIES: {exc}") from exc


def _in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The nearest untrusted hop: the peer itself unless the peer is a trusted proxy."""
    if not forwarded_for or not _in(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed chain proves nothing; fall back to the socket
        if not _in(hop, trusted):
            return hop
    return peer
