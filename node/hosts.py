"""Whether a connection's source address is the host a peer is pinned to.

A peer's ``host`` may be an IP address, a CIDR range or a host name. Addresses are compared as
addresses, never as strings: an IPv4 client reaching a dual-stack listener shows up as
``::ffff:10.0.0.5`` and must still match ``10.0.0.5`` or ``10.0.0.0/24``. Host names are resolved
with ``getaddrinfo`` and the answer is kept for a short while, so a burst of associations does not
become a burst of DNS queries, yet a PACS that moves is followed within a minute.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Sequence[str]]

_MAPPED_V4 = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_address(text: str) -> IPAddress | None:
    """An address as the socket reports it (IPv4-mapped IPv6 unwrapped, zone dropped), or None."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0].strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> IPNetwork | None:
    """An IP address or CIDR range as a network (a single address is a /32 or /128), or None."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED_V4):
        offset = int(network.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((offset, network.prefixlen - 96))
    return network


def check_host_pattern(text: str) -> str:
    """Validate a peer's ``host``: an address, a CIDR range or a plausible host name."""
    value = text.strip()
    if parse_network(value) is not None:
        return value
    if "/" in value:
        raise ValueError(f"{text!r} is not a valid CIDR range")
    labels = value.rstrip(".").split(".")
    if not value or not all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels):
        raise ValueError(f"{text!r} is neither an IP address, a CIDR range nor a host name")
    return value


def _getaddrinfo(name: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)]


@dataclass(frozen=True)
class _Resolved:
    expires: float
    addresses: frozenset[IPAddress]


class HostMatcher:
    """Matches source addresses against host patterns; resolves names with a short-lived cache."""

    def __init__(self, ttl_s: float = 30.0, resolver: Resolver = _getaddrinfo) -> None:
        self.ttl_s = ttl_s
        self._resolver = resolver
        self._cache: dict[str, _Resolved] = {}
        self._lock = threading.Lock()

    def matches(self, pattern: str, address: str | None) -> bool:
        source = parse_address(address) if address else None
        if source is None:
            return False
        network = parse_network(pattern)
        if network is not None:
            return source in network
        return source in self._resolve(pattern.strip().rstrip(".").lower())

    def _resolve(self, name: str) -> frozenset[IPAddress]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and cached.expires > now:
            return cached.addresses
        try:
            found = {parse_address(text) for text in self._resolver(name)}
        except OSError as exc:  # socket.gaierror: unknown name or DNS down; kept briefly as "no address"
            log.warning("peer host %s cannot be resolved: %s", name, exc)
            found = set()
        addresses = frozenset(a for a in found if a is not None)
        with self._lock:
            self._cache[name] = _Resolved(now + self.ttl_s, addresses)
        return addresses


default_matcher = HostMatcher()
