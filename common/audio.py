"""Audio conversion: WAV files and sample rates to PCM s16le 16 kHz mono.

Pure numpy, no I/O except :func:`read_wav`. Used by the CLI client (file -> wire format) and by
the edge when a client streams at another ``?sample_rate=`` (:class:`StreamResampler`).

Resampling is libsoxr (python-soxr) in streaming mode, which band-limits as it converts. The
one-shot :func:`resample_s16` is the streaming resampler fed in one piece, so chunked and one-shot
outputs agree up to the last bit of rounding.
"""

from __future__ import annotations

import struct
import wave
from os import PathLike
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

TARGET_RATE = 16000
"""The rate of everything behind the edge: PCM s16le mono at 16 kHz."""

_CONVERT_HINT = "sox {path} -r 16000 -c 1 -b 16 out.wav"
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_QUALITY = "HQ"  # libsoxr "high quality": 20-bit precision, linear phase

Floats = npt.NDArray[np.float64]


class AudioFormatError(ValueError):
    """A file that is not audio this service can read, with what was found and how to fix it."""

    def __init__(self, path: str, found: str, *, decoders: bool = False) -> None:
        self.path = path
        self.found = found  # what the file turned out to be, e.g. "IEEE float WAV (format 3)"
        need = (
            "need a WAV file or audio that FFmpeg decodes (mp3, m4a, ogg, flac, a video's sound track)"
            if decoders else "need a PCM WAV file (8/16/24/32-bit integer samples, any rate and channel count)"
        )
        super().__init__(f"{path}: {found}; {need}. Convert with: {_CONVERT_HINT.format(path=path)}")


def pcm_duration_s(nbytes: int, rate: int = TARGET_RATE) -> float:
    """Seconds of audio in ``nbytes`` of PCM s16le mono at ``rate`` Hz."""
    return nbytes / (2 * rate)


# --- resampling --------------------------------------------------------------------------------


def _to_s16(samples: Floats) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


class StreamResampler:
    """Chunk-by-chunk resampler of PCM s16le mono, continuous across chunk boundaries.

    libsoxr (python-soxr) in streaming mode, "HQ" quality: a linear-phase polyphase filter with
    its anti-alias lowpass built in, so downsampling does not fold content above the new Nyquist
    frequency back into the speech band. The filter holds back a few milliseconds of output until
    later input arrives; between chunks it also keeps an odd trailing byte. Call :meth:`flush` once
    at the end of the stream for the remaining tail; the total output is then
    ``ceil(n_in * to_rate / from_rate)`` samples. ``from_rate == to_rate`` passes bytes through.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._passthrough = from_rate == to_rate
        self._odd_byte = b""
        self._stream = None if self._passthrough else soxr.ResampleStream(
            from_rate, to_rate, 1, dtype="float32", quality=_QUALITY)
        self._n_in = 0  # input samples received
        self._n_out = 0  # output samples emitted
        self._flushed = False

    def __repr__(self) -> str:
        return f"StreamResampler({self.from_rate} -> {self.to_rate}, in={self._n_in}, out={self._n_out})"

    def process(self, pcm: bytes) -> bytes:
        """Resample the next chunk; returns the output samples that are complete so far."""
        if self._flushed:
            raise RuntimeError("StreamResampler.process() after flush()")
        if self._passthrough:
            return pcm
        data = self._odd_byte + pcm
        usable = len(data) - len(data) % 2
        self._odd_byte = data[usable:]
        samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32)
        return _to_s16(self._resample(samples, last=False))

    def flush(self) -> bytes:
        """Emit the tail of the stream; the resampler accepts no more input afterwards."""
        if self._passthrough:
            self._flushed = True
            return b""
        return _to_s16(self.flush_float())

    def process_float(self, samples: Floats) -> Floats:
        """:meth:`process` on samples already decoded to float (int16 scale)."""
        if self._flushed:
            raise RuntimeError("StreamResampler.process_float() after flush()")
        if self._passthrough:
            return samples
        return self._resample(samples.astype(np.float32), last=False)

    def flush_float(self) -> Floats:
        """:meth:`flush` returning float samples (int16 scale)."""
        if self._flushed:
            return np.zeros(0)
        self._flushed = True
        if self._passthrough:
            return np.zeros(0)
        return self._resample(np.zeros(0, dtype=np.float32), last=True)

    def _resample(self, samples: npt.NDArray[np.float32], *, last: bool) -> Floats:
        assert self._stream is not None
        self._n_in += len(samples)
        out = self._stream.resample_chunk(samples, last=last)
        if last:
            # libsoxr rounds the total length to nearest; the contract is ceil(n_in * to / from).
            want = -(-self._n_in * self.to_rate // self.from_rate) - self._n_out
            out = np.concatenate([out, np.zeros(max(0, want - len(out)), dtype=out.dtype)])[:max(0, want)]
        self._n_out += len(out)
        result: Floats = out.astype(np.float64)
        return result


def _resample_float(samples: Floats, from_rate: int, to_rate: int) -> Floats:
    if from_rate == to_rate:
        return samples
    resampler = StreamResampler(from_rate, to_rate)
    return np.concatenate([resampler.process_float(samples), resampler.flush_float()])


def resample_s16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole buffer of PCM s16le mono from ``from_rate`` to ``to_rate`` Hz."""
    if from_rate == to_rate:
        return pcm
    resampler = StreamResampler(from_rate, to_rate)
    return resampler.process(pcm) + resampler.flush()


# --- WAV files ---------------------------------------------------------------------------------


def _decode_pcm(frames: bytes, sampwidth: int, nchannels: int) -> Floats:
    """Interleaved little-endian PCM to a (frames, channels) float array at int16 scale."""
    if sampwidth == 1:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.float64) - 128) * 256
    elif sampwidth == 2:
        samples = np.frombuffer(frames, dtype="<i2").astype(np.float64)
    elif sampwidth == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        samples = value.astype(np.float64) / 256
    elif sampwidth == 4:
        samples = np.frombuffer(frames, dtype="<i4").astype(np.float64) / 65536
    else:
        raise ValueError(f"unsupported sample width {sampwidth}")
    usable = len(samples) - len(samples) % nchannels
    result: Floats = samples[:usable].reshape(-1, nchannels)
    return result


def _read_extensible(path: Path) -> tuple[int, int, int, bytes]:
    """Parse a WAVE_FORMAT_EXTENSIBLE file (which ``wave`` reads only from Python 3.12 on).

    Returns (channels, sample width in bytes, rate, frames) if its sub-format is integer PCM.
    """
    data = path.read_bytes()
    fmt: bytes | None = None
    frames: bytes | None = None
    offset = 12
    while offset + 8 <= len(data) and (fmt is None or frames is None):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = data[offset + 8 : offset + 8 + size]
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data":
            frames = body
        offset += 8 + size + (size & 1)
    if fmt is None or frames is None or len(fmt) < 40:
        raise AudioFormatError(str(path), "a malformed WAVE_FORMAT_EXTENSIBLE file")
    nchannels, rate = struct.unpack_from("<HI", fmt, 2)
    (bits,) = struct.unpack_from("<H", fmt, 14)
    (sub_format,) = struct.unpack_from("<H", fmt, 24)
    if sub_format != _WAVE_FORMAT_PCM:
        raise AudioFormatError(str(path), f"a non-PCM WAV (extensible sub-format {sub_format})")
    return nchannels, (bits + 7) // 8, rate, frames


def _describe_wave_error(path: Path, error: Exception) -> str:
    text = str(error)
    if text.startswith("unknown format: "):
        code = text.removeprefix("unknown format: ")
        names = {"3": "IEEE float", "6": "A-law", "7": "µ-law", "85": "MP3", "2": "ADPCM"}
        return f"a non-PCM WAV ({names.get(code, 'compressed')}, format {code})"
    with path.open("rb") as file:
        head = file.read(4)
    if head != b"RIFF":
        return f"not a WAV file (starts with {head!r})"
    return f"an unreadable WAV file ({text})"


def read_wav(path: str | PathLike[str]) -> bytes:
    """Read a PCM WAV file of any width, rate and channel count as PCM s16le 16 kHz mono.

    Channels are averaged, the rate converted with :func:`resample_s16`'s resampler. Raises
    :class:`AudioFormatError` for anything that is not integer-PCM WAV audio, ``OSError`` when the
    file cannot be opened.
    """
    file = Path(path)
    if file.stat().st_size == 0:
        raise AudioFormatError(str(file), "an empty file (0 bytes)")
    try:
        with wave.open(str(file), "rb") as wav:
            nchannels, sampwidth, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except wave.Error as error:
        if str(error) == f"unknown format: {_WAVE_FORMAT_EXTENSIBLE}":
            nchannels, sampwidth, rate, frames = _read_extensible(file)
        else:
            raise AudioFormatError(str(file), _describe_wave_error(file, error)) from error
    except EOFError as error:
        raise AudioFormatError(str(file), "a truncated WAV header") from error
    if sampwidth not in (1, 2, 3, 4):
        raise AudioFormatError(str(file), f"a WAV with {sampwidth * 8}-bit samples")
    if nchannels < 1 or rate <= 0:
        raise AudioFormatError(str(file), f"a WAV with {nchannels} channels at {rate} Hz")
    samples = _decode_pcm(frames, sampwidth, nchannels)
    if len(samples) == 0:
        raise AudioFormatError(str(file), "a WAV without audio frames")
    mono: Floats = samples.mean(axis=1)
    return _to_s16(_resample_float(mono, rate, TARGET_RATE))


# --- any audio FFmpeg decodes ------------------------------------------------------------------


def decode_audio(path: str | PathLike[str]) -> bytes:
    """The first audio track of any file FFmpeg decodes (through PyAV, installed with
    faster-whisper): mp3, m4a/AAC, ogg/Vorbis/Opus, flac, video files, … as PCM s16le 16 kHz mono
    (channels mixed down and resampled by FFmpeg's resampler). Raises :class:`AudioFormatError`."""
    import av

    file = str(path)
    out = bytearray()
    try:
        with av.open(file) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioFormatError(file, f"a {container.format.name} file without a sound track", decoders=True)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=TARGET_RATE)
            for frame in container.decode(stream):
                if not isinstance(frame, av.AudioFrame):
                    continue
                for converted in resampler.resample(frame):
                    out += converted.to_ndarray().astype("<i2").tobytes()
            for converted in resampler.resample(None):
                out += converted.to_ndarray().astype("<i2").tobytes()
    except av.FFmpegError as error:
        found = f"not audio FFmpeg can decode ({error.strerror or error})"
        raise AudioFormatError(file, found, decoders=True) from None
    if not out:
        raise AudioFormatError(file, "a file without audio samples", decoders=True)
    return bytes(out)


def read_audio(path: str | PathLike[str]) -> bytes:
    """A WAV file exactly as :func:`read_wav` reads it; anything else (or a WAV that ``read_wav``
    cannot read, e.g. float samples) through :func:`decode_audio`. PCM s16le 16 kHz mono."""
    try:
        return read_wav(path)
    except AudioFormatError as wav_error:
        try:
            return decode_audio(path)
        except AudioFormatError as error:
            raise AudioFormatError(str(path), f"{wav_error.found}, and {error.found}", decoders=True) from None


# --- level -------------------------------------------------------------------------------------

SNR_FRAME_S = 0.03
"""Frames over which `snr_db` measures loudness."""


def snr_db(pcm: bytes, rate: int = TARGET_RATE) -> float:
    """Estimated signal-to-noise ratio of PCM s16le mono speech, in dB: the loud frames (90th
    percentile of 30 ms frame energies) against the quiet ones (10th percentile). An utterance cut
    by the VAD holds pre-roll, pauses between words and the end-of-speech silence, so its quietest
    tenth is the background. Clean speech over a quiet floor gives 40 dB or more; speech in 10 dB
    noise about 15. Audio shorter than ten frames, or silent, gives 0."""
    frame = int(SNR_FRAME_S * rate)
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    n = samples.size // frame
    if n < 10:
        return 0.0
    energy = np.mean(np.square(samples[: n * frame].reshape(n, frame), dtype=np.float64), axis=1)
    quiet, loud = np.percentile(energy, [10, 90])
    if loud <= 0:
        return 0.0
    return float(10 * np.log10(loud / max(quiet, 1.0)))
