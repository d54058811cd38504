"""Whom the per-address limits count (`ingest.client_address`): the TCP peer, or behind trusted
proxies the client that X-Forwarded-For names."""

from __future__ import annotations

import re

import pytest

from common.settings import SettingsError, from_mapping
from ingest.client_address import ClientAddress, parse_networks

BEHIND = ClientAddress.from_setting("10.0.0.0/8, 192.168.1.5")


def test_without_trusted_proxies_the_peer_is_the_client_and_the_header_is_ignored() -> None:
    assert ClientAddress().of("10.0.0.7", ["203.0.113.9"]) == "10.0.0.7"
    assert ClientAddress().of(None, ["203.0.113.9"]) == "?"


def test_an_untrusted_peer_cannot_choose_its_address() -> None:
    assert BEHIND.of("198.51.100.20", ["203.0.113.9"]) == "198.51.100.20"


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted() -> None:
    assert BEHIND.of("10.1.2.3", ["203.0.113.9"]) == "203.0.113.9"
    assert BEHIND.of("192.168.1.5", ["203.0.113.9"]) == "203.0.113.9"
    assert BEHIND.of("10.1.2.3", []) == "10.1.2.3"  # a trusted peer without the header: itself


def test_the_chain_is_read_from_the_right_past_trusted_hops() -> None:
    # A client's own spoofed entry on the left is not believed: the first untrusted hop from the
    # right is the address the outermost trusted proxy saw.
    assert BEHIND.of("10.1.2.3", ["1.1.1.1, 203.0.113.9, 10.9.9.9"]) == "203.0.113.9"
    # Several header lines are one list, in order.
    assert BEHIND.of("10.1.2.3", ["1.1.1.1", "203.0.113.9", "10.9.9.9"]) == "203.0.113.9"
    # Every hop trusted: the leftmost.
    assert BEHIND.of("10.1.2.3", ["10.4.4.4, 10.9.9.9"]) == "10.4.4.4"


def test_ports_brackets_and_ipv6_are_understood() -> None:
    behind = ClientAddress.from_setting("10.0.0.0/8,fd00::/8")
    assert behind.of("10.1.2.3", ["203.0.113.9:51234"]) == "203.0.113.9"
    assert behind.of("10.1.2.3", ["[2001:db8::1]:443"]) == "2001:db8::1"
    assert behind.of("fd00::5", ["2001:db8::2"]) == "2001:db8::2"


def test_a_malformed_entry_stops_at_the_proxy_that_wrote_it() -> None:
    assert BEHIND.of("10.1.2.3", ["203.0.113.9, unknown"]) == "10.1.2.3"
    assert BEHIND.of("10.1.2.3", ["garbage, 10.9.9.9"]) == "10.9.9.9"


def test_networks_parse_and_a_bad_entry_is_named() -> None:
    assert [str(n) for n in parse_networks(" 10.0.0.0/8 ,, 192.168.1.5 ")] == ["10.0.0.0/8", "192.168.1.5/32"]
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33' is not an IP address")):
        parse_networks("10.0.0.0/8,10.0.0.0/33")


def test_settings_refuse_a_bad_trusted_proxy() -> None:
    with pytest.raises(SettingsError) as info:
        from_mapping({"trusted_proxies": "10.0.0.0/8,balancer"})
    assert info.value.problems == [
        "trusted_proxies entry 'balancer' is not an IP address or CIDR block; use e.g. 10.0.0.0/8,192.168.1.5."]
    assert from_mapping({"trusted_proxies": "10.0.0.0/8, ::1"}).trusted_proxies == "10.0.0.0/8, ::1"
