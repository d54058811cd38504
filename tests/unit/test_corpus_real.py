"""The corpus's real recordings (`benchmarks/real_speech`): every recording has a reference, and
where its speech lies is found from its frames' energy (`benchmarks.corpus._speech_bounds`)."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.corpus import RATE, REAL_PASSAGE, REAL_SPEECH, _recording, _speech_bounds


def test_every_recording_has_a_reference_and_every_reference_a_recording() -> None:
    refs = json.loads((REAL_SPEECH / "references.json").read_text(encoding="utf-8"))
    stems = {p.stem for p in REAL_SPEECH.glob("*.flac")}
    assert stems == set(refs)
    assert all(refs[s].strip() for s in stems)
    assert set(REAL_PASSAGE) <= stems


def test_speech_bounds_are_the_loud_frames_around_a_quiet_floor() -> None:
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(3 * RATE).astype(np.float32) * 1e-3  # -60 dB floor
    audio[RATE // 2: 2 * RATE] += np.sin(np.arange(3 * RATE // 2) * 0.1).astype(np.float32) * 0.5
    assert _speech_bounds(audio) == (0.5, 2.0)


def test_a_recording_decodes_to_16_khz_mono() -> None:
    audio = _recording("goforward")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size / RATE - 2.79) < 0.01
    start, end = _speech_bounds(audio)
    assert 0.1 < start < end < audio.size / RATE
