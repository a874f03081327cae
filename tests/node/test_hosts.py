"""Peer host pinning: addresses, CIDR ranges and host names, compared as addresses."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from node.hosts import HostMatcher, check_host_pattern
from node.settings import NodeSettings, NodeTlsSettings, PeerSettings


class CountingResolver:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self, name: str) -> list[str]:
        self.calls += 1
        if name not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[name]


@pytest.mark.parametrize(("pattern", "address", "expected"), [
    ("10.0.0.5", "10.0.0.5", True),
    ("10.0.0.5", "10.0.0.6", False),
    ("10.0.0.5", "::ffff:10.0.0.5", True),  # an IPv4 client on a dual-stack listener
    ("::ffff:10.0.0.5", "10.0.0.5", True),
    ("10.0.0.0/24", "10.0.0.200", True),
    ("10.0.0.0/24", "::ffff:10.0.0.200", True),
    ("10.0.0.0/24", "10.0.1.1", False),
    ("fd00::/8", "fd12::1", True),
    ("fd00::/8", "fe80::1%eth0", False),
    ("2001:db8::1", "2001:db8:0:0::1", True),
    ("10.0.0.5", None, False),
    ("10.0.0.5", "not-an-address", False),
])
def test_addresses_and_ranges(pattern: str, address: str | None, expected: bool) -> None:
    assert HostMatcher(resolver=CountingResolver({})).matches(pattern, address) is expected


def test_host_names_are_resolved_and_cached_briefly() -> None:
    resolver = CountingResolver({"pacs.example.org": ["10.1.2.3", "2001:db8::7"]})
    matcher = HostMatcher(ttl_s=60, resolver=resolver)
    assert matcher.matches("pacs.example.org", "10.1.2.3")
    assert matcher.matches("PACS.example.org.", "::ffff:10.1.2.3")
    assert matcher.matches("pacs.example.org", "2001:db8::7")
    assert not matcher.matches("pacs.example.org", "10.1.2.4")
    assert resolver.calls == 1
    expired = HostMatcher(ttl_s=0, resolver=resolver)
    expired.matches("pacs.example.org", "10.1.2.3")
    expired.matches("pacs.example.org", "10.1.2.3")
    assert resolver.calls == 3


def test_unknown_name_matches_nothing_and_is_not_asked_again_at_once() -> None:
    resolver = CountingResolver({})
    matcher = HostMatcher(resolver=resolver)
    assert not matcher.matches("gone.example.org", "10.0.0.1")
    assert not matcher.matches("gone.example.org", "10.0.0.1")
    assert resolver.calls == 1


def test_localhost_resolves_with_the_real_resolver() -> None:
    assert HostMatcher().matches("localhost", "127.0.0.1")


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "10.0.0.0/x", "pacs example", "-", "a..b", ""])
def test_invalid_host_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_host_pattern(bad)
    with pytest.raises(ValidationError):
        PeerSettings(name="p", ae_title="P", host=bad)


def test_peer_for_uses_ranges() -> None:
    settings = NodeSettings(peers=(PeerSettings(name="ward", ae_title="CT1", host="192.168.4.0/22"),))
    assert settings.peer_for("CT1", "192.168.7.250") is not None
    assert settings.peer_for("CT1", "::ffff:192.168.5.1") is not None
    assert settings.peer_for("CT1", "192.168.8.1") is None


def test_listener_settings_are_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="plain = false"):
        NodeSettings(plain=False)
    with pytest.raises(ValidationError, match="ca_certificates"):
        NodeTlsSettings(certificate=tmp_path / "c.pem", private_key=tmp_path / "k.pem",
                        require_client_certificate=True)
    tls = NodeTlsSettings(certificate=tmp_path / "c.pem", private_key=tmp_path / "k.pem")
    assert tls.port == 2762
    assert NodeSettings(plain=False, tls=tls).tls == tls
