"""Tell real speech from Whisper's well-known non-speech hallucinations.

Whisper was trained on subtitled video, so on silence, noise or music it tends to "hear" the
captions that usually accompany them: "Thank you.", "Thanks for watching!", "♪", "[BLANK_AUDIO]",
or it loops on one phrase. The rules here are pure functions over the per-segment statistics the
decoder already reports, plus the audio level of the utterance; nothing here loads a model.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SILENCE_DBFS = -120.0
"""Level reported for digital silence or empty audio, instead of -inf."""

_ANNOTATION = re.compile(r"\[[^\[\]]{0,40}\]|\([^()]{0,40}\)|\*[^*]{0,40}\*")
"""Sound-event captions: ``[MUSIC]``, ``[BLANK_AUDIO]``, ``(silence)``, ``*applause*``."""
_MUSIC = re.compile(r"[♪♫♬♩🎵🎶]")
_NOT_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """Lowercase, turn punctuation into spaces, collapse whitespace: ``"Thank you!" -> "thank you"``."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


KNOWN_HALLUCINATIONS: frozenset[str] = frozenset(
    normalise(phrase)
    for phrase in (
        "Thank you.",
        "Thank you very much.",
        "Thank you so much.",
        "Thanks.",
        "Thanks for watching!",
        "Thank you for watching!",
        "Thanks for listening.",
        "Thank you for listening.",
        "Please subscribe.",
        "Please subscribe to my channel.",
        "Like and subscribe.",
        "Don't forget to like and subscribe.",
        "See you next time.",
        "See you in the next video.",
        "Subtitles by the Amara.org community",
        "Subtitles by",
        "you",
        "Bye.",
        "Bye bye.",
        "Goodbye.",
        "So.",
        "Okay.",
        "Oh.",
        "Hmm.",
        "Uh.",
        "Um.",
        "I'm sorry.",
        "The end.",
        ".",
        "",
    )
)
"""Phrases Whisper emits on silence or noise, normalised with `normalise`. Each is also a thing people
really say, so matching one only drops the text when the audio or the decoder agrees (see
`HallucinationFilter`)."""


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """The decoder's own statistics for one recognised segment."""

    text: str
    no_speech_prob: float
    """Probability of the no-speech token at the segment start, 0..1."""
    avg_logprob: float
    """Mean natural-log probability of the segment's tokens, <= 0; lower is less sure."""
    compression_ratio: float
    """Length of the text divided by its gzip-compressed length; high means repetition."""


@dataclass(frozen=True, slots=True)
class HallucinationFilter:
    """Thresholds of `clean_text`; the defaults suit tiny.en through large-v3."""

    no_speech_threshold: float = 0.6
    """A segment is silence when no_speech_prob exceeds this *and* avg_logprob is below
    `logprob_threshold`: faster-whisper's and OpenAI's own convention (the pair avoids dropping
    quiet but confidently decoded speech)."""
    logprob_threshold: float = -1.0
    """See `no_speech_threshold`; the same value faster-whisper uses to trigger temperature fallback."""
    loop_min_repeats: int = 3
    """A phrase of 1-4 words said this many times over and making up most of a segment
    (`loop_min_share`) is a decoding loop the compression ratio missed (short loops compress
    poorly): "see you next time, see you next time, see you next time ..."."""
    loop_min_share: float = 0.6
    """See `loop_min_repeats`: the share of the segment's words the repeats must cover."""
    compression_ratio_threshold: float = 2.4
    """Segments compressing better than this are repetition loops ("the the the ..."); 2.4 is the
    value faster-whisper and OpenAI use to reject a decode."""
    quiet_dbfs: float = -45.0
    """Utterances with an RMS level below this (dBFS) are too quiet to trust a known phrase:
    conversational speech at a working microphone sits around -30 to -15 dBFS."""
    phrase_no_speech_threshold: float = 0.3
    """A known phrase is dropped when the decoder put more than this on no-speech ..."""
    phrase_logprob_threshold: float = -0.7
    """... or when its avg_logprob is below this: real "thank you"s decode near -0.3."""
    phrases: frozenset[str] = KNOWN_HALLUCINATIONS
    """Normalised phrases (see `normalise`) that are only trusted from loud, confident audio."""
    repeat_min_words: int = 3
    """A text ending in a phrase of at least this many words said twice in a row ... (`repeated_tail`)"""
    max_words_per_second: float = 4.5
    """... while it holds more words than its audio could at this rate, loses the repeat: Whisper
    says a sentence again into the padding after the speech. Conversation runs at 2-3.5 words a
    second; a real repeat ("Hello? Hello?") leaves the text well under this."""


def strip_annotations(text: str) -> str:
    """Remove sound-event captions and music symbols: ``"♪ [MUSIC] Hi"`` -> ``"Hi"``."""
    return " ".join(_MUSIC.sub(" ", _ANNOTATION.sub(" ", text)).split())


def clean_text(segments: Sequence[SegmentInfo], level_dbfs: float, options: HallucinationFilter) -> str:
    """Return the text of the segments that are real speech, joined with single spaces ("" if none);
    see `speech_segments` for the rules."""
    return " ".join(text for _, text in speech_segments(segments, level_dbfs, options))


def speech_segments(
    segments: Sequence[SegmentInfo], level_dbfs: float, options: HallucinationFilter
) -> list[tuple[int, str]]:
    """(index, cleaned text) of each segment that is real speech, in order ([] if none).

    Rules, in order:
    1. drop a segment that the decoder marks as silence (`no_speech_threshold` and
       `logprob_threshold`, both must hold);
    2. drop a segment that is a repetition loop (`compression_ratio_threshold`, or one short
       phrase repeated over most of it: `loop_min_repeats`, `loop_min_share`);
    3. strip sound-event captions and music symbols, and drop a segment left with no letters or
       digits (``"♪"``, ``"[BLANK_AUDIO]"``, ``"..."``);
    4. drop a segment that is only a known hallucination phrase when the decoder was unsure of it
       (`phrase_no_speech_threshold`, `phrase_logprob_threshold`): Whisper appends "Thank you
       very much." to real speech that ends in a pause;
    5. drop the whole text when it is only a known hallucination phrase and the audio is quiet
       (`quiet_dbfs`) or the decoder was unsure (`phrase_no_speech_threshold`,
       `phrase_logprob_threshold`, over the kept segments).
    """
    kept: list[SegmentInfo] = []
    texts: list[str] = []
    indices: list[int] = []
    for index, seg in enumerate(segments):
        if seg.no_speech_prob > options.no_speech_threshold and seg.avg_logprob < options.logprob_threshold:
            continue
        if seg.compression_ratio > options.compression_ratio_threshold or is_loop(seg.text, options):
            continue
        text = strip_annotations(seg.text)
        plain = normalise(text)
        if not plain:
            continue
        if plain in options.phrases and (seg.no_speech_prob > options.phrase_no_speech_threshold
                                                   or seg.avg_logprob < options.phrase_logprob_threshold):
            continue
        kept.append(seg)
        texts.append(text)
        indices.append(index)
    if not kept:
        return []
    if normalise(" ".join(texts)) in options.phrases and (
        level_dbfs < options.quiet_dbfs
        or max(s.no_speech_prob for s in kept) > options.phrase_no_speech_threshold
        or min(s.avg_logprob for s in kept) < options.phrase_logprob_threshold
    ):
        return []
    return list(zip(indices, texts, strict=True))


def is_loop(text: str, options: HallucinationFilter) -> bool:
    """True when one phrase of 1-4 words, repeated `loop_min_repeats` times or more, makes up at
    least `loop_min_share` of the text's words (and the text has 6 words or more)."""
    words = normalise(text).split()
    if len(words) < 6:
        return False
    for n in range(1, 5):
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        _, count = grams.most_common(1)[0] if grams else ((), 0)
        if count >= options.loop_min_repeats and count * n >= options.loop_min_share * len(words):
            return True
    return False


def repeated_tail(words: Sequence[str], audio_s: float, options: HallucinationFilter) -> int:
    """How many words at the end of ``words`` to drop: each time the text ends in a phrase of at
    least `repeat_min_words` words said twice in a row, and has more words than ``audio_s`` of
    audio holds at `max_words_per_second`, the second copy goes. 0 when the text is left as it is.

    ``"Is there a pharmacy open late near the station? Is there a pharmacy open late near the
    station?"`` from 2.9 s of audio (6.1 words a second; the second copy's words all lie at the
    very end of the audio) becomes the sentence once."""
    if len(words) <= options.max_words_per_second * audio_s:
        return 0  # the audio has time for every word: nothing to compare
    norm = [normalise(w) for w in words]
    n = len(norm)
    while n and n > options.max_words_per_second * audio_s:
        for size in range(n // 2, options.repeat_min_words - 1, -1):
            if norm[n - 2 * size:n - size] == norm[n - size:n]:
                n -= size
                break
        else:
            break
    return len(norm) - n


def level_dbfs(pcm: bytes) -> float:
    """RMS level of PCM s16le audio in dBFS (0 = full-scale square wave); `SILENCE_DBFS` for silence."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return SILENCE_DBFS
    rms = math.sqrt(float(np.mean(np.square(samples)))) / 32768.0
    if rms == 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms))
