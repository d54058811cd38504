"""How the recording commands reach a deployment's NATS: ``--nats-url`` or ``--data-dir``.

``--nats-url URL`` (default: the ``nats_url`` setting, i.e. ``ASR_NATS_URL``) connects like the
workers do; credentials go in the URL (``nats://user:password@host:4222``). ``--data-dir DIR``
is the folder of ``asr dev --data-dir DIR``: the private nats-server running on that store is
used (it writes its URL to ``DIR/nats/nats.url``), and when none runs, one is started on the
store for the command and stopped after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TextIO

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import ServiceUnavailableError

from cli.recordings import RecordingError
from common.nats_server import URL_FILE, NatsServer, NatsServerError
from common.settings import Settings, SettingsError, load, mask_secret

CONNECT_TIMEOUT_S = 3
API_TIMEOUT_S = 10.0


class Unreachable(RecordingError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(
            f"cannot reach NATS at {mask_secret('nats_url', url)} ({reason}); pass the service's NATS "
            "with --nats-url URL, or the folder of `asr dev` with --data-dir DIR."
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--nats-url`` / ``--data-dir``, on every recording command."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--nats-url", default=None, metavar="URL",
                       help="NATS of the deployment (default: the nats_url setting, ASR_NATS_URL)")
    where.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                       help="the folder of `asr dev --data-dir DIR` (starts its nats-server if none runs)")


async def _connect(url: str) -> NATS:
    errors: list[str] = []

    async def remember(exc: Exception) -> None:
        errors.append(str(exc) or type(exc).__name__)  # reported once, by the caller

    nc = NATS()
    try:
        await asyncio.wait_for(
            nc.connect(url.split(","), connect_timeout=CONNECT_TIMEOUT_S, max_reconnect_attempts=1,
                       reconnect_time_wait=0, allow_reconnect=False, error_cb=remember, name="asr-cli"),
            CONNECT_TIMEOUT_S * 3,
        )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        with contextlib.suppress(nats.errors.Error, OSError):
            await nc.close()
        raise Unreachable(url, errors[-1] if errors else str(exc) or type(exc).__name__) from None
    return nc


def _running_server(data_dir: Path) -> tuple[Path, str]:
    """The nats-server store of an `asr dev` folder and the URL of the server running on it ("": none)."""
    if not data_dir.is_dir():
        raise RecordingError(f"{data_dir} is not a folder; pass the --data-dir of `asr dev`.")
    store = data_dir.resolve() / "nats"
    url_file = store / URL_FILE
    return store, url_file.read_text().strip() if url_file.is_file() else ""


@contextlib.asynccontextmanager
async def open_bus(args: argparse.Namespace, settings: Settings) -> AsyncIterator[tuple[NATS, JetStreamContext]]:
    """A connection to the deployment's NATS (and its JetStream), closed afterwards."""
    server: NatsServer | None = None
    data_dir: Path | None = args.data_dir
    if data_dir is not None:
        store, url = _running_server(data_dir)
        nc: NATS | None = None
        if url:
            with contextlib.suppress(Unreachable):
                nc = await _connect(url)
        if nc is None:
            try:
                server = await asyncio.to_thread(NatsServer(store).start)
            except NatsServerError as exc:
                raise RecordingError(f"could not start nats-server on {store}: {exc}".rstrip() + ".") from None
            nc = await _connect(server.url)
    else:
        nc = await _connect(args.nats_url or settings.nats_url)
    try:
        yield nc, nc.jetstream(timeout=API_TIMEOUT_S)
    finally:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await asyncio.wait_for(nc.drain(), 5.0)
        if not nc.is_closed:
            await nc.close()
        if server is not None:
            await asyncio.to_thread(server.stop)


Body = Callable[[NATS, JetStreamContext, Settings], Awaitable[int]]


def run(args: argparse.Namespace, body: Body, stderr: TextIO) -> int:
    """Runs ``body`` on the deployment's bus; a :class:`RecordingError` (unknown session, audio
    gone, not recorded, NATS unreachable) or invalid settings print one sentence and return 2."""

    async def main() -> int:
        settings = load()
        async with open_bus(args, settings) as (nc, js):
            return await body(nc, js, settings)

    try:
        return asyncio.run(main())
    except (RecordingError, SettingsError) as exc:
        stderr.write(f"asr {args.command}: {exc}\n")
        return 2
    except ServiceUnavailableError:
        stderr.write(f"asr {args.command}: this NATS has no JetStream, so it is not the service's bus; pass the "
                     "service's NATS with --nats-url URL, or the folder of `asr dev` with --data-dir DIR.\n")
        return 2
    except nats.errors.Error as exc:  # the bus failed mid-command (it was reachable at the start)
        stderr.write(f"asr {args.command}: NATS failed during the command ({exc or type(exc).__name__}); retry.\n")
        return 2
    except KeyboardInterrupt:
        stderr.write("interrupted\n")
        return 130
