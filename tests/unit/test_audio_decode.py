"""common.audio.read_audio: WAV as before, and anything FFmpeg decodes through PyAV (mp3, m4a,
ogg, flac, a video's sound track). The compressed files are made here from the committed WAV by
PyAV's own encoders, so nothing is downloaded."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from common.audio import AudioFormatError, read_audio, read_wav

DATA = Path(__file__).resolve().parent.parent / "data"
PCM = read_wav(DATA / "one_sentence.wav")


def encode(path: Path, container_format: str, codec: str, rate: int, *, video: bool = False) -> Path:
    samples = np.frombuffer(PCM, "<i2").reshape(1, -1)
    with av.open(str(path), "w", format=container_format) as out:
        picture = out.add_stream("mpeg4", rate=Fraction(10)) if video else None
        sound = out.add_stream(codec, rate=rate)
        assert isinstance(sound, av.audio.stream.AudioStream)
        sound.layout = "mono"
        sound.time_base = Fraction(1, rate)
        if picture is not None:
            assert isinstance(picture, av.video.stream.VideoStream)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
            for i in range(40):  # 4 s of a grey picture
                image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="rgb24")
                image.pts = i
                for packet in picture.encode(image):
                    out.mux(packet)
            for packet in picture.encode(None):
                out.mux(packet)
        resampler = av.AudioResampler(format=sound.format.name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in sound.encode(piece):
                out.mux(packet)
        for packet in sound.encode(None):
            out.mux(packet)
    return path


def envelope(pcm: bytes) -> npt.NDArray[np.float64]:
    """Loudness of each 20 ms: what a lossy codec keeps, whatever it does to the waveform's phase."""
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    n = len(x) // 320
    loudness: npt.NDArray[np.float64] = np.sqrt((x[: n * 320].reshape(n, 320) ** 2).mean(axis=1))
    return loudness


def similarity(a: bytes, b: bytes) -> float:
    """Best correlation of the two loudness envelopes, b delayed by 0-200 ms (encoder delay)."""
    x, y = envelope(a), envelope(b)
    n = min(len(x), len(y)) - 10
    return max(float(np.corrcoef(x[:n], y[shift : shift + n])[0, 1]) for shift in range(10))


@pytest.mark.parametrize(
    ("name", "container_format", "codec", "rate", "video"),
    [
        ("speech.flac", "flac", "flac", 16000, False),
        ("speech.mp3", "mp3", "libmp3lame", 16000, False),
        ("speech.m4a", "ipod", "aac", 44100, False),
        ("speech.ogg", "ogg", "libopus", 48000, False),
        ("speech.mp4", "mp4", "aac", 48000, True),
    ],
)
def test_compressed_audio_and_video_decode_to_the_same_speech(
    tmp_path: Path, name: str, container_format: str, codec: str, rate: int, video: bool
) -> None:
    pcm = read_audio(encode(tmp_path / name, container_format, codec, rate, video=video))
    assert abs(len(pcm) - len(PCM)) <= 0.1 * len(PCM)  # 16 kHz mono s16: about the same length
    if codec == "flac":
        assert pcm == PCM  # lossless at the service's own rate
    else:
        assert similarity(PCM, pcm) > 0.95, name


def test_wav_is_read_exactly_as_before() -> None:
    assert read_audio(DATA / "one_sentence.wav") == PCM
    assert read_audio(DATA / "one_sentence_44k_stereo.wav") == read_wav(DATA / "one_sentence_44k_stereo.wav")


def test_what_nothing_decodes_is_explained(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio at all")
    with pytest.raises(AudioFormatError) as error:
        read_audio(notes)
    message = str(error.value)
    assert "not a WAV file" in message and "FFmpeg" in message and "mp3" in message and "sox" in message
