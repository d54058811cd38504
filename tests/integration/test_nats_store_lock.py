"""One JetStream store, one nats-server (`common.nats_server`): a second server asked to run on a
store in use is refused with a reason, before it starts, so it cannot overwrite the first one's
recordings; once the first stops (or restarts on its own store), the store is free again."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.nats_server import NatsServer, NatsServerError


def test_a_store_in_use_is_refused_and_free_again_once_its_server_stops(tmp_path: Path) -> None:
    store = tmp_path / "nats"
    first, refused = NatsServer(store).start(), NatsServer(store)
    try:
        with pytest.raises(NatsServerError, match=r"in use by another nats-server \(nats://127\.0\.0\.1:\d+\)"):
            refused.start()
        assert refused.proc is None  # nothing was started
        assert first.proc is not None and first.proc.poll() is None  # the first one is untouched
        first.restart()  # its own restart keeps the store
        assert first.proc is not None and first.proc.poll() is None
    finally:
        refused.stop()  # were it started after all, the test still leaves no server behind
        first.stop()
    second = NatsServer(store).start()
    try:
        assert second.proc is not None and second.proc.poll() is None
    finally:
        second.stop()
    NatsServer(tmp_path / "other").start().stop()  # another store is another matter
