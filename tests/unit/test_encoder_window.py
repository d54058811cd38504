"""The encoder's window per decode: the configured seconds, longer audio a little more, never past 30 s."""

import pytest

from asr_worker.transcriber import encoder_window


@pytest.mark.parametrize(("audio_s", "window_s", "frames"), [
    (0.5, 15, 1500),
    (3.2, 15, 1500),
    (14.0, 15, 1500),  # exactly the window with its 1 s margin
    (14.2, 15, 1600),  # longer audio: the whole seconds past it plus 1 s
    (20.0, 15, 2100),
    (29.5, 15, 3000),  # never past Whisper's own window
    (3.2, 30, 3000),
    (3.2, 10, 1000),
])
def test_window_frames(audio_s: float, window_s: float, frames: int):
    assert encoder_window(audio_s, window_s) == frames


def test_the_audio_always_fits_its_window():
    for tenths in range(1, 296):
        audio_s = tenths / 10
        assert encoder_window(audio_s, 15) >= audio_s * 100
