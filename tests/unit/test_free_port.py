"""cli.dev.free_port: ports for child processes, out of the way of outgoing connections."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cli import dev


def test_ports_are_outside_the_ephemeral_range_distinct_and_bindable() -> None:
    low, high = dev._ephemeral_range()
    ports = [dev.free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        assert not low <= port <= high
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_or_already_handed_out_is_skipped() -> None:
    given = dev.free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        assert dev._first_free("127.0.0.1", [given, taken, free]) == free
        assert dev._first_free("127.0.0.1", [given, taken, free]) is None  # now handed out too


def test_without_room_outside_the_ephemeral_range_the_os_picks(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    range_file = tmp_path / "range"
    range_file.write_text("1024 65535\n")
    monkeypatch.setattr(dev, "EPHEMERAL_RANGE_FILE", range_file)
    port = dev.free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
