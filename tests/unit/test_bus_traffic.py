"""benchmarks.bus_traffic: the bus's messages between two snapshots, by role."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.bus_traffic import delta, parse, role_of


def varz(in_msgs: int, out_msgs: int) -> dict[str, Any]:
    return {"in_msgs": in_msgs, "out_msgs": out_msgs, "in_bytes": 10 * in_msgs, "out_bytes": 10 * out_msgs,
            "server_id": "x"}


def conn(cid: int, name: str, in_msgs: int, out_msgs: int) -> dict[str, Any]:
    return {"cid": cid, "name": name, "in_msgs": in_msgs, "out_msgs": out_msgs, "in_bytes": 10 * in_msgs,
            "out_bytes": 10 * out_msgs}


def test_counts_are_the_difference_and_connections_of_a_role_are_summed() -> None:
    before = parse(varz(100, 100), {"connections": [conn(1, "ingest-a", 50, 40), conn(2, "asr-a", 5, 5)]})
    after = parse(varz(400, 390), {"connections": [conn(1, "ingest-a", 150, 140), conn(2, "asr-a", 15, 25),
                                                   conn(3, "asr-vm-7", 3, 4)]})
    traffic = delta(before, after)
    assert traffic.server == {"in_msgs": 300, "out_msgs": 290, "in_bytes": 3000, "out_bytes": 2900}
    assert traffic.by_role["ingest"]["in_msgs"] == 100
    # A connection that opened in between counts from zero.
    assert traffic.by_role["asr"] == {"in_msgs": 13, "out_msgs": 24, "in_bytes": 130, "out_bytes": 240}


def test_per_divides_by_the_count() -> None:
    traffic = delta(parse(varz(0, 0), {"connections": []}),
                    parse(varz(250, 500), {"connections": [conn(9, "vad-w1", 100, 200)]}))
    assert traffic.per(100) == {"in": 2.5, "out": 5.0, "by_role": {"vad": {"in": 1.0, "out": 2.0}}}
    with pytest.raises(ValueError):
        traffic.per(0)


@pytest.mark.parametrize(("name", "role"), [("vad-vad_worker", "vad"), ("ingest-vm-12043", "ingest"),
                                            ("asr", "asr"), ("", "unnamed")])
def test_role_is_the_name_before_its_first_dash(name: str, role: str) -> None:
    assert role_of(name) == role
