"""A session's finals as the client saw them, written as text, JSON, SRT or WebVTT. Pure, no I/O.

:func:`delivered` turns the finals kept in the RESULTS stream (any order, possibly duplicated,
one per ``final_index``, empty text when nothing was said) into what the edge delivered live:
in index order, the empty ones skipped, numbered ``seq`` 1, 2, 3, … (the edge's rule, see
DESIGN.md). :func:`render` writes them in one of :data:`FORMATS`:

* ``text``: one line per final.
* ``json``: ``{"session_id": …, "finals": [{"type": "transcript", "is_final": true, "seq": N,
  "utterance_id": …, "text": …, "start_s": …, "end_s": …}, …]}``, the client contract's messages.
* ``srt`` / ``vtt``: one cue per final, timed by its ``start_s``/``end_s`` (seconds of session audio).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from common.messages import Transcript

FORMATS = ("text", "json", "srt", "vtt")
EXTENSIONS = {"text": "txt", "json": "json", "srt": "srt", "vtt": "vtt"}


@dataclass(frozen=True, slots=True)
class Final:
    """One delivered final: ``seq`` counts the session's finals with text, from 1."""

    seq: int
    utterance_id: str
    text: str
    start_s: float  # seconds of session audio
    end_s: float
    latency_s: float | None  # end of speech seen by the VAD worker -> final published; None: unknown


def delivered(finals: Iterable[Transcript]) -> list[Final]:
    """The finals in ``final_index`` order, duplicates and empty ones dropped, numbered from 1."""
    by_index: dict[int, Transcript] = {}
    for final in finals:
        if final.is_final:
            by_index.setdefault(final.final_index, final)
    out: list[Final] = []
    for index in sorted(by_index):
        final = by_index[index]
        if not final.text.strip():
            continue
        latency = final.published_at - final.speech_end_at if final.published_at and final.speech_end_at else None
        out.append(Final(len(out) + 1, final.utterance_id, final.text.strip(), final.start_s, final.end_s, latency))
    return out


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def render(session_id: str, finals: list[Final], fmt: str) -> str:
    """The whole transcript in ``fmt`` (one of :data:`FORMATS`), ending with a newline if not empty."""
    if fmt == "text":
        return "".join(f"{f.text}\n" for f in finals)
    if fmt == "json":
        doc = {
            "session_id": session_id,
            "finals": [
                {"type": "transcript", "is_final": True, "seq": f.seq, "utterance_id": f.utterance_id,
                 "text": f.text, "start_s": round(f.start_s, 3), "end_s": round(f.end_s, 3)}
                for f in finals
            ],
        }
        return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    if fmt == "srt":
        return "".join(
            f"{f.seq}\n{_timestamp(f.start_s, ',')} --> {_timestamp(f.end_s, ',')}\n{f.text}\n\n" for f in finals
        )
    if fmt == "vtt":
        cues = "".join(
            f"{f.seq}\n{_timestamp(f.start_s, '.')} --> {_timestamp(f.end_s, '.')}\n{f.text}\n\n" for f in finals
        )
        return "WEBVTT\n\n" + cues
    raise ValueError(f"unknown transcript format {fmt!r}; use one of {', '.join(FORMATS)}")
