"""The long-utterance settings: validation and how they reach the segmenter."""

from __future__ import annotations

import pytest

from common.settings import Settings, SettingsError, from_mapping
from vad_worker.session import segmenter_options
from vad_worker.vad_settings import VadSettings


def test_defaults_reach_the_segmenter() -> None:
    opts = segmenter_options(VadSettings.from_settings(from_mapping({})))
    assert (opts.soft_utterance_ms, opts.long_utterance_ms, opts.long_endpointing_ms) == (10000, 2000, 240)
    assert opts.endpointing_ms == 500 and opts.max_utterance_ms == 30000


def test_the_long_endpoint_is_capped_at_endpointing_ms() -> None:
    # The captions profile: one setting is enough, the long endpoint cannot be longer.
    opts = segmenter_options(VadSettings.from_settings(from_mapping({"endpointing_ms": 200})))
    assert (opts.endpointing_ms, opts.long_endpointing_ms) == (200, 200)


def test_zero_turns_the_soft_cut_and_the_second_endpoint_off() -> None:
    opts = segmenter_options(VadSettings.from_settings(Settings(), soft_utterance_seconds=0, long_utterance_seconds=0))
    assert (opts.soft_utterance_ms, opts.long_utterance_ms) == (0, 0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"soft_utterance_seconds": 1}, "soft_utterance_seconds=1.0 must be 0 (off) or from 2"),
        ({"soft_utterance_seconds": 30}, "below max_utterance_seconds=30.0; use 8-15"),
        ({"soft_utterance_seconds": 12, "max_utterance_seconds": 10}, "use 8-15"),
        ({"long_endpointing_ms": 50}, "long_endpointing_ms=50 is outside 100..5000"),
        ({"long_utterance_seconds": -1}, "long_utterance_seconds=-1.0 is outside 0..30"),
    ],
)
def test_invalid_values_say_what_to_use(values: dict[str, float], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_mapping(values)
