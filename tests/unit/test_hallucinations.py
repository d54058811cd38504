import math

import numpy as np
import pytest

from asr_worker.hallucinations import (
    KNOWN_HALLUCINATIONS,
    SILENCE_DBFS,
    HallucinationFilter,
    SegmentInfo,
    clean_text,
    level_dbfs,
    normalise,
    repeated_tail,
    strip_annotations,
)

OPTS = HallucinationFilter()
LOUD = -20.0
QUIET = -50.0


def seg(text: str, no_speech: float = 0.01, logprob: float = -0.2, ratio: float = 1.2) -> SegmentInfo:
    return SegmentInfo(text=text, no_speech_prob=no_speech, avg_logprob=logprob, compression_ratio=ratio)


def test_confident_speech_is_kept_and_joined_with_single_spaces():
    segments = [seg(" We will meet at the train station"), seg("  at noon. ")]
    assert clean_text(segments, LOUD, OPTS) == "We will meet at the train station at noon."


def test_no_segments_give_empty_text():
    assert clean_text([], LOUD, OPTS) == ""


# Rule 1: no_speech_prob and avg_logprob together.
def test_segment_marked_silent_by_decoder_is_dropped():
    segments = [seg("Hello there."), seg(" Something odd.", no_speech=0.7, logprob=-1.2)]
    assert clean_text(segments, LOUD, OPTS) == "Hello there."


@pytest.mark.parametrize(("no_speech", "logprob"), [(0.7, -0.5), (0.5, -1.5), (0.6, -1.5), (0.7, -1.0)])
def test_segment_needs_both_conditions_to_be_dropped(no_speech: float, logprob: float):
    assert clean_text([seg("Quiet but sure.", no_speech, logprob)], LOUD, OPTS) == "Quiet but sure."


# Rule 2: repetition loops.
def test_repetition_loop_is_dropped():
    loop = seg(" the the the the the the the the the the", ratio=4.1)
    assert clean_text([seg("Start."), loop], LOUD, OPTS) == "Start."


def test_a_short_phrase_looping_is_dropped_though_it_compresses_poorly():
    """Seen on a telephone-band clip with temperature fallback."""
    loop = seg("See you next time, I'll see you next time, see you next time, see you next time...", ratio=2.1)
    assert clean_text([seg("The candle went out."), loop], LOUD, OPTS) == "The candle went out."


@pytest.mark.parametrize("text", [
    "No, no, no, I said the blue one.",  # a repeat, but not most of it
    "We will meet at the train station at noon and at the bus stop at one.",
    "Bye bye.",  # too short to judge
    "Go, go, go, go!",
])
def test_speech_with_some_repetition_is_kept(text: str):
    assert clean_text([seg(text)], LOUD, OPTS) == text


def test_compression_ratio_at_threshold_is_kept():
    assert clean_text([seg("Fine.", ratio=2.4)], LOUD, OPTS) == "Fine."


# Rule 3: captions and symbols only.
@pytest.mark.parametrize(
    "text", ["♪", " ♪♪ ", "[Music]", "[BLANK_AUDIO]", "(silence)", "*applause*", "...", "-", "🎵 [MUSIC] 🎵"]
)
def test_non_speech_markers_give_empty_text(text: str):
    assert clean_text([seg(text)], LOUD, OPTS) == ""


def test_markers_are_stripped_from_real_speech():
    assert clean_text([seg("[MUSIC] Hello ♪ world (laughs)")], LOUD, OPTS) == "Hello world"


def test_strip_annotations():
    assert strip_annotations("♪ [BLANK_AUDIO]  Hi (coughs) there *sigh*") == "Hi there"


# Rule 4: known phrases only when the audio or the decoder agrees.
@pytest.mark.parametrize(
    "text",
    [
        "Thank you.",
        " Thanks for watching!",
        "Thank you for watching.",
        "you",
        "Bye.",
        "So",
        "Okay.",
        "Subtitles by the Amara.org community",
        "Please subscribe.",
    ],
)
def test_known_phrase_on_quiet_audio_is_dropped(text: str):
    assert clean_text([seg(text)], QUIET, OPTS) == ""


def test_known_phrase_with_unsure_decoder_is_dropped_even_when_loud():
    assert clean_text([seg("Thank you.", no_speech=0.35)], LOUD, OPTS) == ""
    assert clean_text([seg("Thank you.", logprob=-0.8)], LOUD, OPTS) == ""


def test_an_unsure_known_phrase_after_real_speech_is_dropped():
    """Seen with a prompt and the previous utterance as context: real speech, then a segment
    "Thank you very much." with no_speech 0.50 and avg_logprob -1.25 in the trailing pause."""
    speech = seg(" The museum guides spoke quietly.", no_speech=0.0, logprob=-0.14)
    tail = seg(" Thank you very much.", no_speech=0.50, logprob=-1.25)
    assert clean_text([speech, tail], LOUD, OPTS) == "The museum guides spoke quietly."
    assert clean_text([speech, seg(" Thank you very much.")], LOUD, OPTS) == (
        "The museum guides spoke quietly. Thank you very much.")


def test_known_phrase_loud_and_confident_is_kept():
    assert clean_text([seg(" Thank you.")], LOUD, OPTS) == "Thank you."


def test_known_phrase_across_segments_is_matched_as_a_whole():
    assert clean_text([seg("Thank you"), seg(" for watching!")], QUIET, OPTS) == ""


def test_known_phrase_inside_longer_text_is_kept_even_when_quiet():
    assert clean_text([seg("Thank you for the report.")], QUIET, OPTS) == "Thank you for the report."


def test_phrase_level_boundary_is_strict():
    assert clean_text([seg("Okay.")], -45.0, OPTS) == "Okay."
    assert clean_text([seg("Okay.")], -45.1, OPTS) == ""


def test_custom_options_are_honoured():
    opts = HallucinationFilter(compression_ratio_threshold=3.0, phrases=frozenset({"hello"}))
    assert clean_text([seg("Hello!", ratio=2.8)], QUIET, opts) == ""
    assert clean_text([seg("Thank you.", ratio=2.8)], QUIET, opts) == "Thank you."


def test_normalise():
    assert normalise("  Thank   YOU! ") == "thank you"
    assert normalise("Subtitles by the Amara.org community") == "subtitles by the amara org community"
    assert normalise("...") == ""


def test_phrase_set_is_normalised():
    assert {"thank you", "thanks for watching", "you", "bye", "", "so", "okay"} <= KNOWN_HALLUCINATIONS
    assert all(normalise(p) == p for p in KNOWN_HALLUCINATIONS)


def pcm(samples: np.ndarray) -> bytes:
    return samples.astype("<i2").tobytes()


def test_level_of_silence_and_empty_audio_is_the_floor():
    assert level_dbfs(b"") == SILENCE_DBFS
    assert level_dbfs(pcm(np.zeros(1600))) == SILENCE_DBFS


def test_level_of_full_scale_square_wave_is_zero():
    assert level_dbfs(pcm(np.tile([32767, -32767], 800))) == pytest.approx(0.0, abs=0.001)


def test_level_of_half_scale_sine_is_minus_nine():
    t = np.arange(16000) / 16000
    expected = 20 * math.log10(0.5 / math.sqrt(2))  # -9.03 dB
    sine = np.round(16384 * np.sin(2 * math.pi * 440 * t))
    assert level_dbfs(pcm(sine)) == pytest.approx(expected, abs=0.01)


def test_level_of_single_lsb_and_odd_length():
    assert level_dbfs(pcm(np.ones(100))) == pytest.approx(20 * math.log10(1 / 32768))  # -90.3 dB
    assert level_dbfs(pcm(np.ones(100)) + b"\x01") == pytest.approx(20 * math.log10(1 / 32768))


# --- a sentence said again into the padding (`repeated_tail`) ------------------------------------

PHARMACY = "Is there a pharmacy open late near the station?"


def _tail(text: str, audio_s: float) -> str:
    words = text.split()
    return " ".join(words[: len(words) - repeated_tail(words, audio_s, HallucinationFilter())])


def test_a_sentence_repeated_faster_than_anyone_speaks_is_said_once():
    # The case seen: 18 words from 2.94 s of audio (6.1 words a second).
    assert _tail(f"{PHARMACY} {PHARMACY}", 2.94) == PHARMACY
    assert _tail(f"Sure. {PHARMACY} {PHARMACY} {PHARMACY}", 3.5) == f"Sure. {PHARMACY}"


def test_a_repeat_the_audio_has_time_for_is_kept():
    assert _tail(f"{PHARMACY} {PHARMACY}", 6.0) == f"{PHARMACY} {PHARMACY}"  # 3 words a second
    assert _tail("Hello? Hello? Hello?", 0.5) == "Hello? Hello? Hello?"  # one word: not a sentence


def test_fast_speech_without_a_repeat_is_kept():
    text = "the quick brown fox jumps over the lazy dog and runs away"
    assert _tail(text, 1.0) == text


def test_the_repeat_is_compared_without_case_or_punctuation():
    assert _tail("Open late near the station? open late, near the station.", 1.0) == "Open late near the station?"
