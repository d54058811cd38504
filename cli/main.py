"""The `asr` console script: `asr dev` runs the local stack, `asr stream` is a client, and the
recording commands (`sessions`, `transcript`, `export`, `delete`, `replay`) read JetStream."""

from __future__ import annotations

import argparse
import sys

from cli import dev, export, replay, sessions, stream


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asr", description="Real-time speech-to-text service")
    sub = parser.add_subparsers(dest="command", required=True)
    dev.add_arguments(sub.add_parser("dev", help="run the whole stack on this machine (no Docker, no Redis)"))
    stream.add_arguments(sub.add_parser("stream", help="stream an audio file and print its transcript"))
    sessions.add_sessions_arguments(sub.add_parser("sessions", help="list the recorded sessions"))
    sessions.add_transcript_arguments(sub.add_parser("transcript", help="a session's finals as delivered live"))
    export.add_arguments(sub.add_parser("export", help="a session's recorded audio as a WAV file"))
    sessions.add_delete_arguments(sub.add_parser("delete", help="remove a session's audio and results"))
    replay.add_arguments(sub.add_parser("replay", help="feed recorded sessions back through the pipeline"))
    args = parser.parse_args(argv)
    commands = {
        "dev": dev.run, "stream": stream.run, "sessions": sessions.run_sessions,
        "transcript": sessions.run_transcript, "export": export.run, "delete": sessions.run_delete,
        "replay": replay.run,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
