"""common.bus_timing: the bus's timings are checked against each other where they are set."""

from __future__ import annotations

import dataclasses

import pytest

from common.bus_settings import BusSettings
from common.bus_timing import TIMING, BusTiming
from common.settings import Settings
from common.streams import consumer_configs, stream_configs


def test_the_defaults_hold_every_tie() -> None:
    assert BusTiming() == TIMING
    assert TIMING.final_in_progress_every_s * 2 <= TIMING.final_ack_wait_s
    assert TIMING.lease_refresh_s + TIMING.lease_margin_s < TIMING.lease_ttl_s


@pytest.mark.parametrize(("changes", "names"), [
    ({"final_in_progress_every_s": 6.0}, "final_in_progress_every_s"),
    ({"lease_refresh_s": 4.0, "lease_margin_s": 4.0}, "lease_refresh_s + lease_margin_s"),
    ({"worker_heartbeat_s": 4.0}, "worker_heartbeat_s"),
    ({"vad_pull_heartbeat_s": 15.0}, "vad_pull_heartbeat_s"),
    ({"final_max_deliver": 0}, "final_max_deliver must be positive"),
    ({"dedupe_window_s": -1.0}, "dedupe_window_s must be positive"),
])
def test_a_value_that_breaks_a_tie_is_refused_with_the_reason(changes: dict[str, float], names: str) -> None:
    with pytest.raises(ValueError, match="BusTiming: .*" + names.replace("+", r"\+")):
        BusTiming(**changes)  # type: ignore[arg-type]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValueError) as err:
        BusTiming(worker_heartbeat_s=5.0, final_max_deliver=0)
    assert "worker_heartbeat_s" in str(err.value) and "final_max_deliver" in str(err.value)


def test_it_cannot_be_changed_in_place() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TIMING.vad_ack_wait_s = 1.0  # type: ignore[misc]


def test_the_streams_and_consumers_use_it() -> None:
    settings = Settings()
    consumers = consumer_configs(BusSettings.from_settings(settings))
    finals = next(iter(v for k, v in consumers.items() if k == "JOBS_FINAL"))[0]
    assert finals.ack_wait == TIMING.final_ack_wait_s and finals.max_deliver == TIMING.final_max_deliver
    assert all(c.ack_wait == TIMING.vad_ack_wait_s for c in consumers["AUDIO"])
    windows = {c.name: c.duplicate_window for c in stream_configs(BusSettings.from_settings(settings))}
    assert windows["JOBS_FINAL"] == TIMING.dedupe_window_s
