"""`benchmarks.accuracy.at_gain`: the corpus played louder or quieter, as a sound card would
deliver it (scaled, rounded, clipped to 16 bits), with everything but the audio kept."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from benchmarks.accuracy import at_gain
from benchmarks.corpus import Clip, Segment, write_samples


def _clip(folder: Path, samples: list[int], rate: int = 16000) -> Clip:
    path = folder / "src" / "c.wav"
    write_samples(path, np.array(samples, dtype=np.float64), rate)
    return Clip("c", "sentence", rate, len(samples) / rate, (Segment("hi", 0.0, 0.1, "v"),), str(path))


def _samples(clip: Clip) -> list[int]:
    return [int(x) for x in np.frombuffer(clip.pcm(), dtype="<i2")]


def test_zero_db_gives_back_the_same_clips(tmp_path: Path) -> None:
    clips = [_clip(tmp_path, [1, 2, 3])]
    assert at_gain(clips, 0.0, tmp_path / "out") is clips


def test_quieter_scales_and_rounds_and_keeps_the_rest(tmp_path: Path) -> None:
    clip = _clip(tmp_path, [1000, -1000, 7, 0], rate=8000)
    [quiet] = at_gain([clip], -20.0, tmp_path / "out")
    assert _samples(quiet) == [100, -100, 1, 0]
    assert Path(quiet.path).parent == tmp_path / "out" / "sentence"
    assert (quiet.name, quiet.kind, quiet.rate, quiet.duration_s, quiet.segments) == \
        (clip.name, clip.kind, clip.rate, clip.duration_s, clip.segments)
    with wave.open(quiet.path, "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)


def test_louder_clips_at_the_16_bit_limits(tmp_path: Path) -> None:
    [loud] = at_gain([_clip(tmp_path, [20000, -20000, 100])], 20.0, tmp_path / "out")
    assert _samples(loud) == [32767, -32768, 1000]


def test_a_changed_clip_is_scaled_again(tmp_path: Path) -> None:
    clip = _clip(tmp_path, [1000, 2000])
    at_gain([clip], -20.0, tmp_path / "out")
    write_samples(Path(clip.path), np.array([3000.0, 4000.0]), 16000)  # the corpus was rebuilt: other audio
    [quiet] = at_gain([clip], -20.0, tmp_path / "out")
    assert _samples(quiet) == [300, 400]
