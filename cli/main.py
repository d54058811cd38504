"""The `asr` console script: `asr dev` runs the local stack, `asr stream` is a client."""

from __future__ import annotations

import argparse
import sys

from cli import dev, stream


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asr", description="Real-time speech-to-text service")
    sub = parser.add_subparsers(dest="command", required=True)
    dev.add_arguments(sub.add_parser("dev", help="run the whole stack on this machine (no Docker, no Redis)"))
    stream.add_arguments(sub.add_parser("stream", help="stream a WAV file and print its transcript"))
    args = parser.parse_args(argv)
    if args.command == "dev":
        return dev.run(args)
    return stream.run(args)


if __name__ == "__main__":
    sys.exit(main())
