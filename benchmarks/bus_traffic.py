"""What the bus carried during a benchmark level: nats-server's own counters, read from its HTTP
monitoring endpoint (``NatsServer(monitor=True)``) before and after the level.

``/varz`` gives the server's totals (messages and bytes in and out); ``/connz`` the same per client
connection, which the roles name ``<role>-<id>`` (``common.bus.connect``): ``ingest``, ``vad``,
``asr``. Figure 4 divides them by the level's audio messages to say how many bus messages each
100 ms chunk costs, and by whom (docs/benchmarks.md). ``delta`` is pure; ``snapshot`` does the
HTTP.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

COUNTERS = ("in_msgs", "out_msgs", "in_bytes", "out_bytes")


@dataclass(frozen=True)
class Snapshot:
    server: dict[str, int]
    """``COUNTERS`` of the whole server."""
    connections: dict[int, tuple[str, dict[str, int]]]
    """Connection id -> (its name, its ``COUNTERS``)."""


@dataclass(frozen=True)
class Traffic:
    server: dict[str, int]
    by_role: dict[str, dict[str, int]]
    """``COUNTERS`` summed over the connections of each role (the name before its first ``-``)."""

    def per(self, count: float) -> dict[str, Any]:
        """Messages in and out per ``count`` (e.g. audio messages), for the server and each role."""
        if count <= 0:
            raise ValueError("count must be positive")
        return {"in": round(self.server["in_msgs"] / count, 2), "out": round(self.server["out_msgs"] / count, 2),
                "by_role": {role: {"in": round(c["in_msgs"] / count, 2), "out": round(c["out_msgs"] / count, 2)}
                            for role, c in sorted(self.by_role.items())}}


def parse(varz: dict[str, Any], connz: dict[str, Any]) -> Snapshot:
    """A snapshot from the JSON of ``/varz`` and ``/connz``."""
    server = {k: int(varz[k]) for k in COUNTERS}
    conns = {int(c["cid"]): (str(c.get("name", "")), {k: int(c.get(k, 0)) for k in COUNTERS})
             for c in connz.get("connections", [])}
    return Snapshot(server, conns)


def role_of(name: str) -> str:
    return name.split("-", 1)[0] if name else "unnamed"


def delta(before: Snapshot, after: Snapshot) -> Traffic:
    """What happened between two snapshots. A connection that is new in ``after`` counts from zero;
    one that closed in between is lost to ``by_role`` (the server's totals still hold it)."""
    server = {k: after.server[k] - before.server[k] for k in COUNTERS}
    by_role: dict[str, dict[str, int]] = {}
    for cid, (name, counts) in after.connections.items():
        old = before.connections.get(cid, (name, dict.fromkeys(COUNTERS, 0)))[1]
        acc = by_role.setdefault(role_of(name), dict.fromkeys(COUNTERS, 0))
        for k in COUNTERS:
            acc[k] += counts[k] - old[k]
    return Traffic(server, by_role)


def snapshot(monitor_url: str, timeout: float = 5.0) -> Snapshot:
    """The server's counters now (every connection: ``limit`` is raised past /connz's 1,024)."""
    def get(path: str) -> dict[str, Any]:
        with urllib.request.urlopen(monitor_url + path, timeout=timeout) as resp:
            out: dict[str, Any] = json.loads(resp.read())
            return out

    return parse(get("/varz"), get("/connz?limit=100000"))
