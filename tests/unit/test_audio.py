"""common.audio: WAV reading, one-shot and streaming resampling."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from common.audio import (
    TARGET_RATE,
    AudioFormatError,
    StreamResampler,
    pcm_duration_s,
    read_wav,
    resample_s16,
    snr_db,
)

DATA = Path(__file__).resolve().parent.parent / "data"
RATE_PAIRS = [(8000, 16000), (48000, 16000), (44100, 16000), (16000, 8000)]


def _s16(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def _pcm(samples: np.ndarray) -> bytes:
    return bytes(np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes())


def _write_wav(path: Path, frames: bytes, *, rate: int, channels: int, width: int) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return path


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


# --- resampling --------------------------------------------------------------------------------


def test_pcm_duration() -> None:
    assert pcm_duration_s(32000) == 1.0
    assert pcm_duration_s(16000, rate=8000) == 1.0


def test_same_rate_is_passthrough() -> None:
    pcm = _pcm(_tone(440, TARGET_RATE, 0.1))
    assert resample_s16(pcm, TARGET_RATE, TARGET_RATE) == pcm
    resampler = StreamResampler(TARGET_RATE, TARGET_RATE)
    assert resampler.process(pcm) == pcm
    assert resampler.flush() == b""


@pytest.mark.parametrize(("from_rate", "to_rate"), RATE_PAIRS)
def test_output_length_and_tone_preserved(from_rate: int, to_rate: int) -> None:
    source = _tone(440, from_rate)
    out = _s16(resample_s16(_pcm(source), from_rate, to_rate))
    assert len(out) == -(-len(source) * to_rate // from_rate)
    expected = _tone(440, to_rate)[: len(out)]
    inner = slice(100, len(out) - 100)  # the edges see the filter's zero padding
    # Linear interpolation between 8 kHz samples of 440 Hz errs by up to (pi f / fs)^2 / 2 = 1.5 %.
    assert np.max(np.abs(out[inner] - expected[inner])) < 0.02 * 10000


@pytest.mark.parametrize("other", [8000, 22050, 44100, 48000])
def test_round_trip_keeps_speech(other: int) -> None:
    speech = read_wav(DATA / "one_sentence.wav")
    back = _s16(resample_s16(resample_s16(speech, TARGET_RATE, other), other, TARGET_RATE))
    original = _s16(speech)
    assert abs(len(back) - len(original)) <= 1
    n = min(len(back), len(original))
    # 8 kHz halves the bandwidth; everything else keeps nearly all of the speech band.
    assert np.corrcoef(back[:n], original[:n])[0, 1] > (0.9 if other == 8000 else 0.99)


def test_downsampling_suppresses_aliases() -> None:
    # 12 kHz at 48 kHz is above the 8 kHz Nyquist of 16 kHz: it must not fold back to 4 kHz.
    out = _s16(resample_s16(_pcm(_tone(12000, 48000)), 48000, 16000))
    assert _rms(out[200:-200]) < 0.01 * 10000 / np.sqrt(2)


@pytest.mark.parametrize(("from_rate", "to_rate"), RATE_PAIRS)
@pytest.mark.parametrize("seed", [0, 1])
def test_chunked_equals_one_shot(from_rate: int, to_rate: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pcm = _pcm(_tone(300, from_rate, 0.5) + rng.normal(0, 2000, int(from_rate * 0.5)))
    one_shot = _s16(resample_s16(pcm, from_rate, to_rate))
    resampler = StreamResampler(from_rate, to_rate)
    pieces = []
    offset = 0
    while offset < len(pcm):
        size = int(rng.integers(1, 3001))  # odd sizes too: a sample may straddle two chunks
        pieces.append(resampler.process(pcm[offset : offset + size]))
        offset += size
    pieces.append(resampler.flush())
    chunked = _s16(b"".join(pieces))
    assert len(chunked) == len(one_shot)
    assert np.max(np.abs(chunked - one_shot)) <= 1


def test_process_after_flush_is_an_error() -> None:
    resampler = StreamResampler(8000, 16000)
    resampler.flush()
    with pytest.raises(RuntimeError):
        resampler.process(b"\x00\x00")


# --- read_wav ----------------------------------------------------------------------------------


def test_16k_mono_is_read_unchanged() -> None:
    with wave.open(str(DATA / "one_sentence.wav"), "rb") as wav:
        raw = wav.readframes(wav.getnframes())
    assert read_wav(DATA / "one_sentence.wav") == raw


def test_44k_stereo_matches_16k_mono() -> None:
    mono = _s16(read_wav(DATA / "one_sentence.wav"))
    converted = _s16(read_wav(DATA / "one_sentence_44k_stereo.wav"))
    assert abs(len(converted) - len(mono)) <= 0.01 * len(mono)
    n = min(len(converted), len(mono))
    assert np.corrcoef(converted[:n], mono[:n])[0, 1] > 0.9


def test_channels_are_averaged(tmp_path: Path) -> None:
    left = np.full(1600, 1000, dtype="<i2")
    right = np.full(1600, -3000, dtype="<i2")
    frames = np.stack([left, right], axis=1).tobytes()
    path = _write_wav(tmp_path / "stereo.wav", frames, rate=TARGET_RATE, channels=2, width=2)
    assert np.all(_s16(read_wav(path)) == -1000)


def test_many_channels(tmp_path: Path) -> None:
    frames = np.tile(np.array([300, 600, 900, 1200], dtype="<i2"), 800).tobytes()
    path = _write_wav(tmp_path / "quad.wav", frames, rate=TARGET_RATE, channels=4, width=2)
    assert np.all(_s16(read_wav(path)) == 750)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_sample_widths(tmp_path: Path, width: int) -> None:
    tone = _tone(440, TARGET_RATE, 0.2, amplitude=0.5)  # full scale = 1.0
    scale = 2 ** (8 * width - 1)
    ints = np.rint(tone * (scale - 1)).astype(np.int64)
    if width == 1:
        frames = (ints + 128).astype(np.uint8).tobytes()
    elif width == 3:
        frames = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        frames = ints.astype(f"<i{width}").tobytes()
    path = _write_wav(tmp_path / f"w{width}.wav", frames, rate=TARGET_RATE, channels=1, width=width)
    out = _s16(read_wav(path))
    assert len(out) == len(tone)
    tolerance = 256 if width == 1 else 1  # 8-bit has 1/256 of 16-bit's resolution
    assert np.max(np.abs(out - tone * 32767)) <= tolerance


def test_24_bit_44k_stereo(tmp_path: Path) -> None:
    tone = _tone(440, 44100, 0.5, amplitude=0.25 * (2**23))
    ints = np.rint(tone).astype(np.int64)
    frames = b"".join(int(v).to_bytes(3, "little", signed=True) * 2 for v in ints)
    path = _write_wav(tmp_path / "w24.wav", frames, rate=44100, channels=2, width=3)
    out = _s16(read_wav(path))
    expected = _tone(440, TARGET_RATE, 0.5, amplitude=0.25 * 32768)[: len(out)]
    assert abs(len(out) - len(expected)) <= 1
    assert np.max(np.abs(out[100:-100] - expected[100:-100])) < 0.01 * 8192


def _extensible_wav(path: Path, frames: bytes, *, sub_format: int, bits: int = 24, channels: int = 2) -> Path:
    """A WAVE_FORMAT_EXTENSIBLE file, as sox writes for more than 16 bits or 2 channels."""
    block = channels * bits // 8
    guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, 16000, 16000 * block, block, bits, 22, bits, 3)
    fmt += struct.pack("<H", sub_format) + guid_tail
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(frames))
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body) + len(frames)) + body + frames)
    return path


def test_extensible_pcm(tmp_path: Path) -> None:
    frames = (1000 * 256).to_bytes(3, "little", signed=True) * 2 * 1600
    path = _extensible_wav(tmp_path / "ext.wav", frames, sub_format=1)
    assert np.all(_s16(read_wav(path)) == 1000)


def test_extensible_float_is_refused(tmp_path: Path) -> None:
    path = _extensible_wav(tmp_path / "ext.wav", b"\x00" * 4 * 2 * 10, sub_format=3, bits=32)
    with pytest.raises(AudioFormatError, match="non-PCM"):
        read_wav(path)


def test_float_wav_is_refused(tmp_path: Path) -> None:
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    samples = np.zeros(160, dtype="<f4").tobytes()
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(samples))
    path = tmp_path / "float.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body) + len(samples)) + body + samples)
    with pytest.raises(AudioFormatError, match="IEEE float") as info:
        read_wav(path)
    assert "sox" in str(info.value) and "-r 16000 -c 1 -b 16" in str(info.value)
    assert info.value.path == str(path)


def test_non_wav_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "song.mp3"
    path.write_bytes(b"ID3\x04\x00" + b"\x00" * 100)
    with pytest.raises(AudioFormatError, match="not a WAV file") as info:
        read_wav(path)
    assert str(path) in str(info.value)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioFormatError, match="empty"):
        read_wav(path)


def test_wav_without_frames_is_refused(tmp_path: Path) -> None:
    path = _write_wav(tmp_path / "silent.wav", b"", rate=TARGET_RATE, channels=1, width=2)
    with pytest.raises(AudioFormatError, match="without audio"):
        read_wav(path)


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_wav(tmp_path / "nope.wav")


def _speech_like(seconds: float, noise_rms: float, rng: np.random.Generator) -> bytes:
    """Bursts of a 300 Hz tone (0.25 s on, 0.1 s off) at RMS ~7000 over white noise of ``noise_rms``."""
    t = np.arange(int(seconds * 16000)) / 16000
    on = (t % 0.35) < 0.25
    signal = 10000 * np.sin(2 * np.pi * 300 * t) * on + rng.normal(0, noise_rms, t.size)
    return np.clip(signal, -32768, 32767).astype("<i2").tobytes()


def test_snr_db_tells_noisy_speech_from_clean() -> None:
    rng = np.random.default_rng(1)
    clean = snr_db(_speech_like(3.0, 30, rng))  # noise ~-60 dBFS
    noisy20 = snr_db(_speech_like(3.0, 700, rng))  # ~20 dB below the tone
    noisy10 = snr_db(_speech_like(3.0, 2200, rng))  # ~10 dB below the tone
    assert clean > 40
    assert 15 < noisy20 < 30
    assert 5 < noisy10 < 20
    assert clean > noisy20 > noisy10


def test_snr_db_of_too_little_or_silent_audio_is_zero() -> None:
    assert snr_db(b"") == 0.0
    assert snr_db(bytes(2 * 16000 * 9 // 100)) == 0.0  # 90 ms: fewer than ten frames
    assert snr_db(bytes(32000)) == 0.0  # one second of digital silence
