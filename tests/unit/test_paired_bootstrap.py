"""benchmarks/paired_bootstrap.py: how sure a per-kind WER difference between pipeline and direct is."""

from __future__ import annotations

import pytest

from benchmarks.paired_bootstrap import ClipErrors, by_kind, clip_errors, errors_of, paired_interval, word_edits


def test_word_edits_count_after_the_benchmarks_normalisation() -> None:
    assert word_edits("Ten of clubs.", "10 of clubs") == 0  # numbers spelled out, punctuation gone
    assert word_edits("the cat sat", "a cat sat down") == 2  # one substitution, one insertion
    assert word_edits("", "made up words") == 3  # a no-speech reference: every word is an error


def test_each_side_is_the_mean_over_its_seeds_or_passes() -> None:
    errors = errors_of("one two three four", ["one two three four", "one two three"], ["one two"])
    assert errors == ClipErrors(words=4, direct=0.5, pipeline=2.0)


def test_identical_sides_differ_by_nothing() -> None:
    clips = [ClipErrors(10, 2, 2), ClipErrors(30, 1, 1), ClipErrors(5, 0, 0)]
    gap = paired_interval(clips, resamples=500)
    assert (gap.difference, gap.low, gap.high, gap.worse_share) == (0.0, 0.0, 0.0, 0.0)


def test_the_difference_is_corpus_level_and_a_side_worse_on_every_clip_is_worse_in_every_draw() -> None:
    clips = [ClipErrors(10, 1, 2), ClipErrors(30, 3, 4)]
    gap = paired_interval(clips, resamples=2000)
    assert gap.difference == pytest.approx(2 / 40)  # not the mean of 1/10 and 1/30
    assert gap.low > 0 and gap.worse_share == 1.0
    assert (gap.clips, gap.words) == (2, 40)


def test_a_gap_made_by_one_clip_of_many_has_an_interval_that_reaches_zero() -> None:
    # Two words lost on one clip in twenty: the draws that leave it out see no difference.
    clips = [ClipErrors(20, 1, 1)] * 19 + [ClipErrors(20, 1, 3)]
    gap = paired_interval(clips, resamples=4000, seed=1)
    assert gap.difference == pytest.approx(2 / 400)
    assert gap.low == 0.0 < gap.high
    assert 0.5 < gap.worse_share < 0.8  # P(the clip is drawn at least once) = 1 - 0.95**20 = 0.64


def test_the_same_seed_gives_the_same_interval() -> None:
    clips = [ClipErrors(12, 3, 1), ClipErrors(9, 0, 2), ClipErrors(15, 2, 2)]
    assert paired_interval(clips, resamples=300, seed=7) == paired_interval(clips, resamples=300, seed=7)


def test_nothing_to_draw_is_refused() -> None:
    with pytest.raises(ValueError):
        paired_interval([])
    with pytest.raises(ValueError):
        paired_interval([ClipErrors(0, 1, 1)])
    with pytest.raises(ValueError):
        paired_interval([ClipErrors(5, 1, 1)], resamples=0)


def _clip(kind: str, reference: str, direct: list[str], pipeline: list[str]) -> dict[str, object]:
    return {"kind": kind, "segments": [{"text": reference}], "direct": direct[0], "direct_seeds": direct,
            "pipeline": pipeline[0], "pipeline_runs": pipeline}


def test_an_accuracy_json_is_read_by_kind_without_the_no_speech_clips() -> None:
    run = {"clips": [
        _clip("sentence", "a b c d", ["a b c d"], ["a b c"]),
        _clip("sentence", "e f", ["e x"], ["e f"]),
        _clip("noisy20", "g h i j", ["g h i j", "g h i"], ["g h"]),
        _clip("silence", "", ["words"], [""]),
    ]}
    assert clip_errors(run["clips"][2]) == ClipErrors(words=4, direct=0.5, pipeline=2.0)
    out = by_kind(run, resamples=200)
    assert set(out) == {"sentence", "noisy20", "all speech"}
    assert out["sentence"].difference == 0.0  # one word lost, one word won
    assert out["noisy20"].difference == pytest.approx(1.5 / 4)
    assert out["all speech"].words == 10 and out["all speech"].difference == pytest.approx(1.5 / 10)
