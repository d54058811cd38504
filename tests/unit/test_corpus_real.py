"""The corpus's real recordings (`benchmarks/real_speech`): every recording has a reference, and
where its speech lies is found from its frames' energy (`benchmarks.corpus._speech_bounds`)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from benchmarks.corpus import (
    RATE,
    REAL_AFTER_PASSAGE,
    REAL_PASSAGE,
    REAL_SPEECH,
    _recording,
    _speech_bounds,
    real_clips,
)


def test_every_recording_has_a_reference_and_every_reference_a_recording() -> None:
    refs = json.loads((REAL_SPEECH / "references.json").read_text(encoding="utf-8"))
    stems = {p.stem for p in REAL_SPEECH.glob("*.flac")}
    assert stems == set(refs)
    assert all(refs[s].strip() for s in stems if isinstance(refs[s], str))
    assert set(REAL_PASSAGE) <= stems
    assert REAL_AFTER_PASSAGE in stems


def test_an_aligned_recording_gives_one_segment_per_line_within_its_stretch(tmp_path: Path) -> None:
    refs = json.loads((REAL_SPEECH / "references.json").read_text(encoding="utf-8"))
    lines = refs["sonnet-001"]
    assert all(b[0] == a[1] for a, b in itertools.pairwise(lines))  # the source's lines tile the recording
    clip = next(c for c in real_clips(tmp_path) if c.name == "real-sonnet-001")
    assert [s.text for s in clip.segments] == [line[2] for line in lines]
    for segment, (begin, end, _) in zip(clip.segments, lines, strict=True):
        # 0.5 s of lead-in before the recording; each line's speech lies within its own stretch
        assert 0.5 + begin <= segment.start_s < segment.end_s <= 0.5 + end
    assert sum(s.end_s - s.start_s for s in clip.segments) < 0.9 * (lines[-1][1] - lines[0][0])  # pauses left out


def test_the_clips_made_before_a_recording_was_added_keep_their_seed(tmp_path: Path) -> None:
    """The recordings from REAL_AFTER_PASSAGE on come after the passage: the others keep the index
    their noise floor is seeded by, so their audio is what earlier runs measured."""
    stems = list(json.loads((REAL_SPEECH / "references.json").read_text(encoding="utf-8")))
    k = stems.index(REAL_AFTER_PASSAGE)
    names = [c.name for c in real_clips(tmp_path)]
    assert names == [f"real-{s}" for s in stems[:k]] + ["real-librivox-passage"] + [f"real-{s}" for s in stems[k:]]


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
