"""``asr sessions``, ``asr transcript ID`` and ``asr delete ID``: what the streams keep of sessions.

Exit codes: 0 done, 2 a problem the user can act on (unknown session, NATS unreachable, …: one
sentence on stderr).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import TextIO

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from cli import nats_access, recordings
from cli.transcript_formats import FORMATS, delivered, render
from common.settings import Settings

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``2d`` -> seconds (argparse type: a clear error otherwise)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; use e.g. 90s, 15m, 1h or 2d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _when(started_at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started_at)) if started_at else "-"


def sessions_table(rows: list[recordings.SessionInfo]) -> str:
    """The text form of `asr sessions`: one aligned line per session."""
    lines = [f"{'SESSION':<32}  {'STARTED':<19}  {'AUDIO':>8}  {'FINALS':>6}  {'ENDED':<5}  NOTE"]
    for r in rows:
        notes = []
        if not r.audio_kept:
            notes.append("audio not kept")
        if r.replay_of:
            notes.append(f"replay of {r.replay_of}")
        lines.append(
            f"{r.session_id:<32}  {_when(r.started_at):<19}  {r.audio_s:>7.1f}s  {r.finals:>6}  "
            f"{'yes' if r.ended else 'no':<5}  {', '.join(notes)}".rstrip()
        )
    return "\n".join(lines) + "\n"


def add_sessions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=parse_duration, default=None, metavar="DURATION",
                        help="only sessions started within this long (e.g. 1h, 30m)")
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    nats_access.add_arguments(parser)


def add_transcript_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="SESSION_ID")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default text)")
    nats_access.add_arguments(parser)


def add_delete_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="SESSION_ID")
    nats_access.add_arguments(parser)


def run_sessions(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout

    async def body(nc: NATS, js: JetStreamContext, settings: Settings) -> int:
        rows = await recordings.list_sessions(js, args.since)
        if args.json:
            out.write(json.dumps([r.as_json() for r in rows], indent=2) + "\n")
        else:
            out.write(sessions_table(rows))
        return 0

    return nats_access.run(args, body, stderr or sys.stderr)


def run_transcript(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout

    async def body(nc: NATS, js: JetStreamContext, settings: Settings) -> int:
        if not recordings.valid_id(args.session_id):
            raise recordings.UnknownSession(args.session_id)
        finals, flushed = await recordings.read_results(js, args.session_id)
        if not finals and flushed is None:
            if await recordings.has_audio(js, args.session_id):
                raise recordings.RecordingError(
                    f"session {args.session_id} has no finals yet (its audio is kept: it may still be running)."
                )
            raise recordings.UnknownSession(args.session_id)
        out.write(render(args.session_id, delivered(finals), args.format))
        return 0

    return nats_access.run(args, body, stderr or sys.stderr)


def run_delete(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout

    async def body(nc: NATS, js: JetStreamContext, settings: Settings) -> int:
        audio, results = await recordings.delete_session(js, args.session_id)
        out.write(f"deleted session {args.session_id}: {audio} audio message(s), {results} result(s)\n")
        return 0

    return nats_access.run(args, body, stderr or sys.stderr)
