"""The address a connection comes from, for the per-address limits, behind trusted proxies.

Behind a load balancer every WebSocket reaches the edge from the balancer's address, so
``max_connections_per_ip`` and ``max_connects_per_ip_per_minute`` would count all clients as one.
Proxies say whom they forwarded for in ``X-Forwarded-For`` (each hop appends the address it
received the request from), but any client can send that header too, so it is believed only
from the proxies named in ``trusted_proxies``:

* the TCP peer is not a trusted proxy (or none is configured): the peer is the client, and the
  header is ignored;
* otherwise the header's addresses are read from the right, skipping trusted proxies; the first
  address that is not one is the client. If every address is trusted, the leftmost is. An entry
  that is not an IP address stops the walk: the last trusted hop, which appended it, is counted.

Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(setting: str) -> tuple[Network, ...]:
    """``trusted_proxies``: comma-separated addresses or CIDR blocks; ``ValueError`` names a bad entry."""
    networks = []
    for entry in (e.strip() for e in setting.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR block") from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    """An address as proxies write it: bare, or with a port ("1.2.3.4:5678", "[2001:db8::1]:443")."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ClientAddress:
    trusted: tuple[Network, ...] = ()

    @classmethod
    def from_setting(cls, setting: str) -> ClientAddress:
        return cls(parse_networks(setting))

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def of(self, peer: str | None, forwarded_for: Iterable[str] = ()) -> str:
        """The client's address for a connection from ``peer`` with these ``X-Forwarded-For``
        header values (in the order received); "?" when the peer is unknown."""
        if peer is None:
            return "?"
        hop = _address(peer)
        if hop is None or not self.trusted or not self._is_trusted(hop):
            return peer
        chain = [entry for value in forwarded_for for entry in value.split(",") if entry.strip()]
        for entry in reversed(chain):
            address = _address(entry)
            if address is None:
                break
            hop = address
            if not self._is_trusted(address):
                break
        return str(hop)
