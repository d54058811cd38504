"""A development corpus of synthetic speech with exact references, generated deterministically.

    .venv/bin/python -m benchmarks.corpus [--cache DIR] [--list]
    .venv/bin/python -m benchmarks.corpus --test-clips tests/data    # the two clips the e2e tests use

Voices come from three TTS engines of the Debian archive (``apt-get install espeak-ng flite
festival festvox-kallpc16k sox``): espeak-ng with six voice/speed variants, flite with four voices,
festival with its default diphone voice. Texts are the sentences of ``benchmarks/sentences.txt``.
Every choice (voice, sentence, pause, noise) comes from a seeded ``random.Random``/numpy generator,
and TTS output is cached by a hash of (engine, voice, speed, text), so a second run only reads files.

Kinds of clip (``Clip.kind``):

* ``sentence``: one sentence, 0.3-0.8 s of lead-in, 1 s of tail.
* ``continuous``: one voice reading sentences for 20-60 s with pauses of 0.2-0.45 s.
* ``conversation``: two voices taking turns of one or two sentences (0.15-0.3 s between the two),
  0.3-1.0 s between turns; a `Segment` is a whole turn.
* ``noisy20`` / ``noisy10``: two or three sentences with pauses of 0.6 s, plus noise (white, pink or
  brown, seeded) at 20 / 10 dB SNR against the speech.
* ``telephone``: the same kind of clip band-passed to 300-3400 Hz and stored at 8 kHz (it is
  streamed with ``?sample_rate=8000``).
* ``silence``: a faint noise floor only; ``noise``: white, pink or brown noise only, -45 to -25 dBFS.
* ``real``: recordings of people, not TTS (``benchmarks/real_speech``, sources and licences in its
  SOURCES.md): five sentences read for LibriVox, the same five as one 27 s passage, a speaker reading
  playing cards, "go forward ten meters", 11 s of John F. Kennedy's inaugural address and 53 s of
  Shakespeare's first sonnet read for LibriVox (15 lines, 0.2-1 s between them, aligned by its
  source). Each has 0.5 s of lead-in and 1 s of tail (the noise floor) around the recording as
  published; a segment's times are where its 10 ms frames come within 30 dB of the recording's
  loudest (an aligned line: within ``ALIGNED_WITHIN_DB`` of the loudest of its own stretch).

Every clip has a -60 dBFS white-noise floor, so the VAD never sees digital silence. A `Segment`
gives each reference sentence with the time its speech starts and ends in the clip (TTS output is
trimmed to its speech, so these times are exact to about 10 ms).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import tempfile
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.audio import decode_audio

RATE = 16_000
PHONE_RATE = 8_000
SENTENCES = Path(__file__).with_name("sentences.txt")
REAL_SPEECH = Path(__file__).with_name("real_speech")
"""Recordings of people (FLAC) and ``references.json``: file stem -> reference text, or, for a long
recording whose source aligned it, a list of ``[begin_s, end_s, text]`` lines (one `Segment` each)."""
REAL_PASSAGE = ("librivox-0870", "librivox-0880", "librivox-0890", "librivox-0920", "librivox-0930")
"""Consecutive utterances of one reading, joined into one clip with ``REAL_PAUSE_S`` between them."""
REAL_PAUSE_S = 0.25
ALIGNED_WITHIN_DB = 20.0
"""An aligned line's speech: its frames within this of its loudest. Its stretch holds the pause
after it, and a LibriVox floor (an MP3's) lies only 25-35 dB under the speech, so the recordings'
30 dB would count the floor too."""
REAL_AFTER_PASSAGE = "sonnet-001"
"""This recording and the ones after it in ``references.json`` come after the passage, so every
clip made before them keeps its seed (its noise floor) and its audio, byte for byte."""
DEFAULT_CACHE = Path.home() / ".cache" / "realtime-asr" / "corpus-v3"
# v1: sox dithered at random; v2: 8 clips per degraded kind (v3's first 8, byte for byte).
DEGRADED_CLIPS = 24
"""Clips per degraded kind (noisy20, noisy10, telephone). With 8 (about 210 words per kind) one
clip's misheard sentence moved a kind's WER by 2-3 points and decided the comparison with direct
decoding; clip i is the same whatever the count, so a larger count only adds clips."""
FLOOR_DBFS = -60.0


@dataclass(frozen=True, slots=True)
class Voice:
    engine: str  # espeak-ng | flite | festival
    name: str
    speed: int = 0  # words per minute (espeak-ng only)

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.name}" + (f"@{self.speed}" if self.speed else "")


VOICES: tuple[Voice, ...] = (
    Voice("espeak-ng", "en-us", 150),
    Voice("espeak-ng", "en-gb", 160),
    Voice("espeak-ng", "en-us+f3", 145),
    Voice("espeak-ng", "en-gb-scotland", 150),
    Voice("espeak-ng", "en-gb-x-rp+m3", 170),
    Voice("espeak-ng", "en-us+m4", 180),
    Voice("flite", "slt"),
    Voice("flite", "awb"),
    Voice("flite", "rms"),
    Voice("flite", "kal16"),
    Voice("festival", "kal_diphone"),
)


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    start_s: float
    """Where its speech starts in the clip."""
    end_s: float
    """Where its speech ends in the clip (the reference for final latency)."""
    voice: str


@dataclass(frozen=True, slots=True)
class Clip:
    name: str
    kind: str
    rate: int
    duration_s: float
    segments: tuple[Segment, ...]
    path: str

    @property
    def reference(self) -> str:
        return " ".join(s.text for s in self.segments)

    def pcm(self) -> bytes:
        with wave.open(self.path, "rb") as w:
            return w.readframes(w.getnframes())


def sentences() -> list[str]:
    lines = SENTENCES.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# --- synthesis ------------------------------------------------------------------------------


def _tts_command(voice: Voice, text: str, out: Path, text_file: Path) -> list[str]:
    if voice.engine == "espeak-ng":
        return ["espeak-ng", "-v", voice.name, "-s", str(voice.speed), "-w", str(out), text]
    if voice.engine == "flite":
        return ["flite", "-voice", voice.name, "-f", str(text_file), "-o", str(out)]
    if voice.engine == "festival":
        return ["text2wave", "-eval", f"(voice_{voice.name})", "-o", str(out), str(text_file)]
    raise ValueError(f"unknown TTS engine {voice.engine!r}")


def synthesize(voice: Voice, text: str, cache: Path) -> np.ndarray:
    """Speech of ``text`` as float32 at 16 kHz, trimmed to the speech (cached)."""
    key = hashlib.sha256(f"{voice.label}|{text}".encode()).hexdigest()[:20]
    path = cache / "tts" / f"{key}.npy"
    if path.is_file():
        cached: np.ndarray = np.load(path)
        return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw, conv, text_file = Path(tmp, "raw.wav"), Path(tmp, "conv.wav"), Path(tmp, "text.txt")
        text_file.write_text(text + "\n", encoding="utf-8")
        subprocess.run(_tts_command(voice, text, raw, text_file), check=True, capture_output=True, timeout=120)
        # -R: sox dithers when it resamples to 16 bits, from a random seed unless told to repeat
        # itself; +-2 LSB were enough to move tiny.en's WER on the same sentences by a point.
        subprocess.run(["sox", "-R", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(conv)], check=True,
                       capture_output=True, timeout=120)
        with wave.open(str(conv), "rb") as w:
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    audio = _trim(audio)
    peak = float(np.max(np.abs(audio))) or 1.0
    audio = (audio * (0.5 / peak)).astype(np.float32)  # every voice at the same peak level, -6 dBFS
    np.save(path, audio)
    return audio


def _trim(audio: np.ndarray, threshold: float = 0.01, keep_s: float = 0.01) -> np.ndarray:
    """Cut leading and trailing near-silence (TTS engines pad their output)."""
    loud = np.flatnonzero(np.abs(audio) > threshold * float(np.max(np.abs(audio)) or 1.0))
    if loud.size == 0:
        return audio[:0]
    keep = int(keep_s * RATE)
    return audio[max(0, loud[0] - keep) : loud[-1] + keep]


# --- noise and channels -----------------------------------------------------------------------


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise: white, pink (1/f) or brown (1/f^2), shaped in the frequency domain."""
    white = rng.standard_normal(n)
    if kind != "white":
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1 / RATE)
        f[0] = f[1] if n > 1 else 1.0
        spectrum /= np.sqrt(f) if kind == "pink" else f
        white = np.fft.irfft(spectrum, n)
    return (white / (np.sqrt(np.mean(white**2)) or 1.0)).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def telephone(audio: np.ndarray) -> np.ndarray:
    """Band-pass 300-3400 Hz and resample to 8 kHz (what a phone line delivers)."""
    spectrum = np.fft.rfft(audio)
    f = np.fft.rfftfreq(audio.size, 1 / RATE)
    spectrum[(f < 300) | (f > 3400)] = 0
    band = np.fft.irfft(spectrum, audio.size)
    return band[::2].astype(np.float32)  # nothing left above 4 kHz, so decimation does not alias


# --- clips ----------------------------------------------------------------------------------


class _Builder:
    """Lays speech and gaps end to end, recording where each sentence's speech lies."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.segments: list[Segment] = []
        self.n = 0

    def gap(self, seconds: float) -> None:
        n = round(seconds * RATE)
        self.parts.append(np.zeros(n, dtype=np.float32))
        self.n += n

    def say(self, voice: Voice, text: str, cache: Path) -> None:
        speech = synthesize(voice, text, cache)
        self.segments.append(Segment(text, round(self.n / RATE, 3), round((self.n + speech.size) / RATE, 3),
                                     voice.label))
        self.parts.append(speech)
        self.n += speech.size

    def audio(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.float32)


def _speech_bounds(audio: np.ndarray, within_db: float = 30.0) -> tuple[float, float]:
    """Seconds where a recording's speech starts and ends: its first and last 10 ms frames within
    ``within_db`` of its loudest frame."""
    frame = RATE // 100
    n = audio.size // frame
    if n == 0:
        return 0.0, audio.size / RATE
    rms = np.sqrt(np.mean(np.square(audio[: n * frame].reshape(n, frame), dtype=np.float64), axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-within_db / 20))
    return round(loud[0] * frame / RATE, 3), round((loud[-1] + 1) * frame / RATE, 3)


def _recording(stem: str) -> np.ndarray:
    pcm = decode_audio(REAL_SPEECH / f"{stem}.flac")  # the edge's own file decoder: s16le 16 kHz mono
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def real_clips(out: Path) -> list[Clip]:
    """The ``real`` kind: each recording on its own, and the LibriVox sentences as one passage."""
    refs: dict[str, str | list[list[Any]]] = json.loads((REAL_SPEECH / "references.json").read_text(encoding="utf-8"))
    singles = [(stem,) for stem in refs]
    later = list(refs).index(REAL_AFTER_PASSAGE)
    clips = []
    for i, group in enumerate([*singles[:later], REAL_PASSAGE, *singles[later:]]):
        b = _Builder()
        b.gap(0.5)
        for k, stem in enumerate(group):
            if k:
                b.gap(REAL_PAUSE_S)
            audio = _recording(stem)
            offset = b.n / RATE
            b.segments += [Segment(text, round(offset + start, 3), round(offset + end, 3), f"real:{stem}")
                           for start, end, text in _real_lines(refs[stem], audio)]
            b.parts.append(audio)
            b.n += audio.size
        b.gap(1.0)
        name = f"real-{group[0]}" if len(group) == 1 else "real-librivox-passage"
        clips.append(_finish(name, "real", b, out, np.random.default_rng(hash_seed("real", i))))
    return clips


def _real_lines(ref: str | list[list[Any]], audio: np.ndarray) -> list[tuple[float, float, str]]:
    """A recording's reference as (start_s, end_s, text) lines, each bounded to its speech: the
    whole recording for one text; each aligned line's own stretch for a list of lines."""
    if isinstance(ref, str):
        return [(*_speech_bounds(audio), ref)]
    lines = []
    for begin, end, text in ref:
        part = audio[round(begin * RATE) : round(end * RATE)]
        start, stop = _speech_bounds(part, within_db=ALIGNED_WITHIN_DB)
        lines.append((begin + start, begin + stop, str(text)))
    return lines


def write_samples(path: Path, samples: np.ndarray, rate: int) -> None:
    """A mono 16-bit WAV of ``samples`` in 16-bit units: rounded and clipped as a sound card would."""
    pcm = np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def _write(path: Path, audio: np.ndarray, rate: int) -> None:
    write_samples(path, audio * 32767.0, rate)


def _finish(name: str, kind: str, b: _Builder, out: Path, rng: np.random.Generator, *, snr_db: float | None = None,
            noise_kind: str = "white", phone: bool = False) -> Clip:
    audio = b.audio()
    floor = noise("white", audio.size, rng) * 10 ** (FLOOR_DBFS / 20)
    if snr_db is not None:
        speech = np.concatenate([audio[int(s.start_s * RATE) : int(s.end_s * RATE)] for s in b.segments])
        level = _rms(speech) / 10 ** (snr_db / 20)
        audio = audio + noise(noise_kind, audio.size, rng) * level
    audio = audio + floor
    rate = RATE
    if phone:
        audio, rate = telephone(audio), PHONE_RATE
    path = out / kind / f"{name}.wav"
    _write(path, audio, rate)
    return Clip(name, kind, rate, round(audio.size / rate, 3), tuple(b.segments), str(path))


def _sentence_clips(texts: list[str], count: int, out: Path, cache: Path) -> list[Clip]:
    clips = []
    for i in range(count):
        rng = random.Random(f"sentence-{i}")
        b = _Builder()
        b.gap(rng.uniform(0.3, 0.8))
        b.say(VOICES[i % len(VOICES)], texts[i], cache)
        b.gap(1.0)
        clips.append(_finish(f"sentence-{i:02d}", "sentence", b, out, np.random.default_rng(i)))
    return clips


def _continuous(index: int, target_s: float, texts: list[str], out: Path, cache: Path,
                voice: Voice | None = None, name: str = "") -> Clip:
    rng = random.Random(f"continuous-{index}")
    voice = voice or VOICES[(index * 5 + 1) % len(VOICES)]
    b = _Builder()
    b.gap(0.5)
    order = rng.sample(range(len(texts)), len(texts))
    for k in order:
        b.say(voice, texts[k], cache)
        if b.n / RATE >= target_s:
            break
        b.gap(rng.uniform(0.2, 0.45))
    b.gap(1.0)
    return _finish(name or f"continuous-{index:02d}", "continuous", b, out, np.random.default_rng(100 + index))


def _conversation(index: int, turns: int, texts: list[str], out: Path, cache: Path,
                  pauses: tuple[float, float] = (0.3, 1.0), voices: tuple[Voice, Voice] | None = None,
                  name: str = "", two_sentence_turns: float = 0.3) -> Clip:
    rng = random.Random(f"conversation-{index}")
    if voices is None:
        first = rng.randrange(len(VOICES))
        second = (first + 1 + rng.randrange(len(VOICES) - 1)) % len(VOICES)
        voices = (VOICES[first], VOICES[second])
    b = _Builder()
    b.gap(0.5)
    order = rng.sample(range(len(texts)), len(texts))
    for turn in range(turns):
        for j in range(1 + (rng.random() < two_sentence_turns)):
            if j:
                b.gap(rng.uniform(0.15, 0.3))  # within a turn: a breath between sentences
            b.say(voices[turn % 2], texts[order.pop()], cache)
        b.gap(rng.uniform(*pauses))
    b.gap(0.6)
    # The reference turns: merge the sentences of one turn (same voice in a row) into one segment.
    merged: list[Segment] = []
    for s in b.segments:
        if merged and merged[-1].voice == s.voice:
            last = merged[-1]
            merged[-1] = Segment(f"{last.text} {s.text}", last.start_s, s.end_s, s.voice)
        else:
            merged.append(s)
    b.segments = merged
    return _finish(name or f"conversation-{index:02d}", "conversation", b, out, np.random.default_rng(200 + index))


def _few_sentences(kind: str, index: int, texts: list[str], out: Path, cache: Path, *,
                   snr_db: float | None = None, noise_kind: str = "white", phone: bool = False) -> Clip:
    rng = random.Random(f"{kind}-{index}")
    voice = VOICES[(index * 3 + 2) % len(VOICES)]
    b = _Builder()
    b.gap(0.5)
    for k in rng.sample(range(len(texts)), 2 + index % 2):
        b.say(voice, texts[k], cache)
        b.gap(0.6)
    b.gap(0.6)
    return _finish(f"{kind}-{index:02d}", kind, b, out, np.random.default_rng(hash_seed(kind, index)),
                   snr_db=snr_db, noise_kind=noise_kind, phone=phone)


def hash_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little")


def _no_speech(kind: str, index: int, out: Path) -> Clip:
    rng = np.random.default_rng(hash_seed(kind, index))
    b = _Builder()
    b.gap(6.0 + index)
    if kind == "silence":
        return _finish(f"silence-{index:02d}", "silence", b, out, rng)
    audio = b.audio()
    level = 10 ** ((-45 + 4 * index) / 20)  # -45 to -25 dBFS
    b.parts = [audio + noise(("white", "pink", "brown")[index % 3], audio.size, rng) * level]
    return _finish(f"noise-{index:02d}", "noise", b, out, rng)


KINDS = ("sentence", "continuous", "conversation", "noisy20", "noisy10", "telephone", "silence", "noise", "real")
NO_SPEECH = ("silence", "noise")
"""The kinds without speech: scored by the words made up on them, not by WER."""
CONTINUOUS_S = (20, 22, 25, 28, 30, 33, 36, 40, 48, 60)


def build(cache: Path = DEFAULT_CACHE) -> list[Clip]:
    """Generates (or reads from the cache) the whole corpus; returns its clips in a fixed order."""
    texts = sentences()
    out = cache / "clips"
    manifest = cache / "manifest.json"
    sources = [SENTENCES, Path(__file__), *sorted(REAL_SPEECH.iterdir())]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        if data.get("digest") == digest:
            return [Clip(**{**c, "segments": tuple(Segment(**s) for s in c["segments"])}) for c in data["clips"]]
    if out.exists():
        shutil.rmtree(out)
    # Sentence clips use the first 44 sentences; the others draw from all of them.
    clips = _sentence_clips(texts, 44, out, cache)
    clips += [_continuous(i, t, texts, out, cache) for i, t in enumerate(CONTINUOUS_S)]
    clips += [_conversation(i, 6 + i % 4, texts, out, cache) for i in range(10)]
    noise_kinds = ("white", "pink", "brown")
    clips += [_few_sentences("noisy20", i, texts, out, cache, snr_db=20.0, noise_kind=noise_kinds[i % 3])
              for i in range(DEGRADED_CLIPS)]
    clips += [_few_sentences("noisy10", i, texts, out, cache, snr_db=10.0, noise_kind=noise_kinds[i % 3])
              for i in range(DEGRADED_CLIPS)]
    clips += [_few_sentences("telephone", i, texts, out, cache, phone=True) for i in range(DEGRADED_CLIPS)]
    clips += [_no_speech("silence", i, out) for i in range(6)]
    clips += [_no_speech("noise", i, out) for i in range(6)]
    clips += real_clips(out)
    manifest.write_text(json.dumps({"digest": digest, "clips": [asdict(c) for c in clips]}, indent=1))
    return clips


def test_clips(folder: Path, cache: Path = DEFAULT_CACHE) -> None:
    """The two clips of tests/integration/test_accuracy.py: WAVs plus a JSON of their references."""
    texts = sentences()
    # Sentences from the second half of the list, so the tests do not share the sentence clips' text.
    tail = texts[120:]
    en_us = VOICES[0]
    long = _continuous(900, 22, tail, folder / "tmp", cache, voice=en_us, name="continuous_22s")
    talk = _conversation(901, 7, tail, folder / "tmp", cache, pauses=(0.4, 0.4),
                         voices=(VOICES[6], VOICES[8]), name="conversation_0.4s", two_sentence_turns=0.0)
    refs = {}
    for clip in (long, talk):
        target = folder / f"{clip.name}.wav"
        Path(clip.path).replace(target)
        refs[clip.name] = [asdict(s) for s in clip.segments]
    shutil.rmtree(folder / "tmp")
    (folder / "accuracy_clips.json").write_text(json.dumps(refs, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--list", action="store_true", help="print one line per clip")
    parser.add_argument("--test-clips", type=Path, help="write the e2e tests' clips into this folder")
    args = parser.parse_args()
    if args.test_clips:
        test_clips(args.test_clips, args.cache)
        return
    clips = build(args.cache)
    if args.list:
        for c in clips:
            print(f"{c.kind:12} {c.name:16} {c.duration_s:6.1f}s {len(c.segments):2d} seg  {c.reference[:60]}")
    by_kind: dict[str, list[Clip]] = {}
    for c in clips:
        by_kind.setdefault(c.kind, []).append(c)
    total = sum(c.duration_s for c in clips)
    print(f"{len(clips)} clips, {total / 60:.1f} min of audio in {args.cache}")
    for kind, group in by_kind.items():
        print(f"  {kind:12} {len(group):3d} clips {sum(c.duration_s for c in group):7.1f} s")


if __name__ == "__main__":
    main()
