"""``asr export SESSION_ID -o file.wav``: the recorded audio of a session as a WAV file.

The WAV's frames are byte for byte the PCM the service stored: s16le mono at 16 kHz, the
payloads of the session's audio messages in order. A client that streamed at another rate
(``?sample_rate=``) gets the edge's 16 kHz resampling of what it sent, not its original bytes.
"""

from __future__ import annotations

import argparse
import sys
import wave
from pathlib import Path
from typing import TextIO

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from cli import nats_access, recordings
from common.audio import TARGET_RATE, pcm_duration_s
from common.settings import Settings


def session_pcm(messages: list[recordings.AudioMessage]) -> bytes:
    """The audio payloads in order; raises if they do not join up (an offset gap)."""
    pcm = bytearray()
    for msg in messages:
        if msg.kind != "audio":
            continue
        if msg.offset != len(pcm):
            raise recordings.RecordingError(
                f"the recording has a gap at {pcm_duration_s(len(pcm)):.2f} s "
                f"(message {msg.seq} starts at {pcm_duration_s(msg.offset):.2f} s); it cannot be exported whole."
            )
        pcm += msg.pcm
    return bytes(pcm)


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(TARGET_RATE)
        wav.writeframes(pcm)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="SESSION_ID")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.wav",
                        help="where to write the WAV (16 kHz mono 16-bit, as stored)")
    nats_access.add_arguments(parser)


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout

    async def body(nc: NATS, js: JetStreamContext, settings: Settings) -> int:
        pcm = session_pcm(await recordings.recorded_audio(js, args.session_id))
        try:
            write_wav(args.output, pcm)
        except OSError as exc:
            raise recordings.RecordingError(f"cannot write {args.output}: {exc.strerror or exc}.") from None
        out.write(f"wrote {args.output}: {pcm_duration_s(len(pcm)):.2f} s of 16 kHz mono audio\n")
        return 0

    return nats_access.run(args, body, stderr or sys.stderr)
