"""The pure parts of the recording commands: transcript formats, the comparison, the progress
bar, and the parsing of --set, --speed and --since."""

from __future__ import annotations

import argparse
import json

import pytest

from cli import compare
from cli.progress import Progress
from cli.recordings import RecordingError
from cli.replay import MODEL_REFUSED, parse_sets, parse_speed
from cli.sessions import parse_duration
from cli.transcript_formats import Final, delivered, render
from common.messages import Transcript
from common.settings import Settings


def final(index: int, text: str, start: float, end: float, latency: float = 0.0) -> Transcript:
    return Transcript(session_id="s1234567", utterance_id=f"u{index - 1}", is_final=True, text=text,
                      start_s=start, end_s=end, final_index=index, speech_end_at=100.0 if latency else 0.0,
                      published_at=100.0 + latency if latency else 0.0)


# --- delivered ----------------------------------------------------------------------------------


def test_delivered_orders_by_index_drops_duplicates_and_empty_finals_and_numbers_from_1() -> None:
    stored = [final(3, "Third.", 5.0, 6.0), final(1, "First.", 0.0, 1.5, latency=0.4), final(2, "", 2.0, 2.5),
              final(1, "First again?", 0.0, 1.5), final(4, "  Fourth. ", 7.0, 8.25)]
    out = delivered(stored)
    assert [(f.seq, f.text, f.utterance_id) for f in out] == [(1, "First.", "u0"), (2, "Third.", "u2"),
                                                             (3, "Fourth.", "u3")]
    assert out[0].latency_s == pytest.approx(0.4) and out[1].latency_s is None


def test_delivered_ignores_partials() -> None:
    partial = Transcript(session_id="s1234567", utterance_id="u0", is_final=False, text="Fir", start_s=0.0,
                         end_s=1.0)
    assert delivered([partial]) == []


# --- render ----------------------------------------------------------------------------------------

FINALS = [Final(1, "u0", "Hello there.", 0.5, 2.25, None), Final(2, "u1", "General Kenobi!", 3661.0, 3662.5, None)]


def test_text_is_one_line_per_final() -> None:
    assert render("abc", FINALS, "text") == "Hello there.\nGeneral Kenobi!\n"
    assert render("abc", [], "text") == ""


def test_json_holds_the_client_contract_messages() -> None:
    doc = json.loads(render("abcdefgh", FINALS, "json"))
    assert doc == {
        "session_id": "abcdefgh",
        "finals": [
            {"type": "transcript", "is_final": True, "seq": 1, "utterance_id": "u0", "text": "Hello there.",
             "start_s": 0.5, "end_s": 2.25},
            {"type": "transcript", "is_final": True, "seq": 2, "utterance_id": "u1", "text": "General Kenobi!",
             "start_s": 3661.0, "end_s": 3662.5},
        ],
    }


def test_srt_cues_use_commas_and_hours() -> None:
    assert render("abc", FINALS, "srt") == (
        "1\n00:00:00,500 --> 00:00:02,250\nHello there.\n\n"
        "2\n01:01:01,000 --> 01:01:02,500\nGeneral Kenobi!\n\n"
    )


def test_vtt_has_its_header_and_dots() -> None:
    assert render("abc", FINALS, "vtt") == (
        "WEBVTT\n\n"
        "1\n00:00:00.500 --> 00:00:02.250\nHello there.\n\n"
        "2\n01:01:01.000 --> 01:01:02.500\nGeneral Kenobi!\n\n"
    )


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="use one of text, json, srt, vtt"):
        render("abc", FINALS, "docx")


# --- compare --------------------------------------------------------------------------------------------


def test_word_diff_counts_each_kind_of_edit() -> None:
    ref = compare.words("Please call me back, tomorrow morning.")
    assert ref == ["please", "call", "me", "back", "tomorrow", "morning"]
    assert compare.word_diff(ref, ref) == compare.WordDiff(0, 0, 0)
    hyp = compare.words("please call back tomorrow evening okay")
    assert compare.word_diff(ref, hyp) == compare.WordDiff(substitutions=1, deletions=1, insertions=1)
    assert compare.word_diff([], ["a", "b"]) == compare.WordDiff(0, 0, 2)
    assert compare.word_diff(["a", "b"], []) == compare.WordDiff(0, 2, 0)


def test_a_row_and_the_overall_row() -> None:
    a = compare.Side("live1234", [Final(1, "u0", "Please call me back.", 0, 1, 0.5),
                                  Final(2, "u1", "Tomorrow morning.", 2, 3, 0.7)])
    b = compare.Side("replay12", [Final(1, "u0", "Please call me back tomorrow morning.", 0, 3, 0.9)])
    row = compare.compare("live1234", a, b)
    assert (row.a_finals, row.b_finals, row.a_words, row.b_words, row.diff.edits) == (2, 1, 6, 6, 0)
    assert row.a_latency_s == pytest.approx(0.6) and row.latency_diff_s == pytest.approx(0.3)
    doc = row.as_json()
    assert doc["word_diff_rate"] == 0.0 and doc["latency_diff_s"] == pytest.approx(0.3)
    other = compare.compare("other123", compare.Side("o1", [Final(1, "u0", "one two", 0, 1, None)]),
                            compare.Side("o2", [Final(1, "u0", "one three", 0, 1, None)]))
    assert other.word_diff_rate == 0.5 and other.latency_diff_s is None
    total = compare.overall([row, other], a.latencies, b.latencies)
    assert (total.a_words, total.diff.edits, total.a_finals) == (8, 1, 3)
    assert total.word_diff_rate == pytest.approx(1 / 8)
    report = compare.report_json("live transcript", "replay with endpointing_ms=800", [row, other], total)
    assert [s["session_id"] for s in report["sessions"]] == ["live1234", "other123"]
    table = compare.table("live transcript", "replay", [row, other], total).splitlines()
    assert table[0] == "A: live transcript" and table[-1].startswith("overall")
    assert "12.5%" in table[-1] and "+0.30s" in table[3]


# --- progress -----------------------------------------------------------------------------------------


def test_progress_line_counts_audio_fed_and_sessions_done() -> None:
    progress = Progress(total_audio_s=100.0, total_sessions=2)
    assert progress.line(0).startswith("[------------------------]   0%")
    progress.fed("r1", 30.0)
    progress.fed("r1", 50.0)  # the latest position of a session, not a sum
    progress.fed("r2", 25.0)
    progress.done(finals=4)
    line = progress.line(12.3)
    assert line.startswith("[##################------]  75%")
    assert "audio 75/100 s" in line and "sessions 1/2" in line and "finals 4" in line and line.endswith("12 s")


# --- parsing -----------------------------------------------------------------------------------------


def test_set_accepts_endpointing_and_validates_it_like_the_setting() -> None:
    settings = Settings()
    assert parse_sets(["endpointing_ms=800"], settings) == {"endpointing_ms": 800}
    assert parse_sets([], settings) == {}
    # The environment variable's name, as the docs write the settings, means the same setting.
    assert parse_sets(["ASR_ENDPOINTING_MS=800"], settings) == {"endpointing_ms": 800}
    with pytest.raises(RecordingError) as refused_env:
        parse_sets(["ASR_MODEL=small.en"], settings)
    assert str(refused_env.value) == MODEL_REFUSED
    with pytest.raises(RecordingError, match="endpointing_ms=50 is too short"):
        parse_sets(["endpointing_ms=50"], settings)
    with pytest.raises(RecordingError, match="must be a whole number"):
        parse_sets(["endpointing_ms=fast"], settings)
    with pytest.raises(RecordingError, match="not a setting a replay can change"):
        parse_sets(["beam_size=5"], settings)
    with pytest.raises(RecordingError, match="not KEY=VALUE"):
        parse_sets(["endpointing_ms"], settings)
    with pytest.raises(RecordingError) as refused:
        parse_sets(["model=small.en"], settings)
    assert str(refused.value) == MODEL_REFUSED


def test_speed_and_duration() -> None:
    assert parse_speed("max") == 0.0 and parse_speed("1") == 1.0 and parse_speed("2.5") == 2.5
    for bad in ("0", "-1", "fast"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_speed(bad)
    assert [parse_duration(t) for t in ("90", "90s", "15m", "1h", "2d", "1.5h")] == [90, 90, 900, 3600, 172800, 5400]
    with pytest.raises(argparse.ArgumentTypeError, match=r"use e\.g\. 90s, 15m, 1h or 2d"):
        parse_duration("yesterday")
