"""Caption fan-out: many read-only viewers of one session's captions, one bus subscription.

``GET /v1/sessions/{id}/captions?token=VIEWER_TOKEN[&partials=1]`` (WebSocket). The speaker's
``session_started`` carries the ``viewer_token``: HMAC-SHA256 of the session id under
``viewer_token_secret``, so any edge with the same secret checks it without a lookup.

Per edge and session there is one ``Feed``: it subscribes once to ``results.<session>.*`` on core
NATS, first reads the finals the RESULTS stream holds (so a late joiner gets the last
``viewer_backlog_finals`` of them, numbered with the speaker's ``seq``, as revised), and hands
every final and revision (and partial, to viewers who asked) to each viewer's own ``Outbox``: a
bounded queue and writer task, so a viewer that stops reading is closed with 1008 like any slow
client while the others go on.
The feed ends when the speaker's session has ended and every final was handed out; it is
dropped when its last viewer leaves.

``CaptionState`` is the pure part (ordering, numbering, backlog, partial suppression); ``Feed``
and ``CaptionHub`` are the thin async shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
from aiohttp import WSMsgType, web
from nats.aio.msg import Msg

from common import logs, metrics, subjects, tasks
from common.messages import Result, result_decoder
from ingest import protocol as p
from ingest import stored_results
from ingest.context import EdgeContext
from ingest.delivery import Delivery
from ingest.outbox import Closing, Outbox
from ingest.viewer_tokens import token_valid

log = logging.getLogger(__name__)

REPAIR_AFTER_S = 2.0  # a gap in the finals this long is filled from the RESULTS stream
VIEWER_MAX_MSG_BYTES = 4096  # viewers send nothing we need; anything bigger closes them


# --- the pure part ----------------------------------------------------------------------------


@dataclass
class CaptionState:
    """What viewers of one session see: the speaker's delivery policy (``Delivery``: finals in
    order with the speaker's ``seq``, failures in their place, no partials of finished
    utterances), plus the last ``backlog`` finals for late joiners."""

    backlog: int
    delivery: Delivery = field(default_factory=Delivery)
    recent: deque[dict[str, Any]] = field(init=False)
    ended: bool = False  # the session ended and every final was released

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=max(self.backlog, 1))

    def add(self, result: Result, now: float = 0.0) -> list[tuple[dict[str, Any], str]]:
        """Takes one result; returns (message, kind) pairs to hand to viewers, in order. Kinds:
        ``final`` (never dropped), ``partial`` (only to viewers who asked; droppable),
        ``revision`` (a final's new text, to every viewer; droppable, like the speaker's)."""
        released = self.delivery.add(result, now)
        out: list[tuple[dict[str, Any], str]] = []
        if not self.ended:
            out += [(m, "partial") for m in released.now if m["type"] == "transcript"]
        out += [(m, "revision") for m in released.now if m["type"] == "revision"]
        for msg in self.delivery.take(len(self.delivery.ready)):
            if msg["type"] == "transcript":
                self.recent.append(msg)
            out.append((msg, "final"))
        if not self.ended and self.delivery.complete:
            self.ended = True
            out.append((self.ended_message(), "final"))
        return out

    def ended_message(self) -> dict[str, Any]:
        return {"type": "session_ended", "finals": self.delivery.seq}

    def joiner_backlog(self) -> list[dict[str, Any]]:
        """What a viewer joining now gets first."""
        backlog = list(self.recent)[-self.backlog:] if self.backlog else []
        return [*backlog, self.ended_message()] if self.ended else backlog


# --- the async shell --------------------------------------------------------------------------


class Viewer:
    def __init__(self, out: Outbox, partials: bool) -> None:
        self.out = out
        self.partials = partials
        self.done = asyncio.Event()  # the feed ended or the edge drains: close when delivered
        self.closing = Closing(p.CLOSE_NORMAL, "Session ended")

    def finish(self, closing: Closing) -> None:
        self.closing = closing
        self.done.set()


class Feed:
    """One session's captions on this edge: one subscription, many viewers."""

    def __init__(self, ctx: EdgeContext, session_id: str) -> None:
        self.ctx = ctx
        self.session_id = session_id
        self.log = logs.for_session(log, session_id)
        self.state = CaptionState(ctx.settings.viewer_backlog_finals)
        self.viewers: set[Viewer] = set()
        self.ready = asyncio.Event()
        self.failed: BaseException | None = None
        self._sub: Any = None
        self._loading: list[Result] | None = []  # live results held back while the stream is read
        self._stored = stored_results.FinalsCursor(ctx.js, session_id)  # finals (and revisions) from RESULTS
        self._repairer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Feed {self.session_id} viewers={len(self.viewers)} seq={self.state.delivery.seq}>"

    async def start(self) -> None:
        t0 = time.perf_counter()
        try:
            self._sub = await self.ctx.nc.subscribe(subjects.results(self.session_id), cb=self._on_msg)
            stored: list[Result] = [*await self._stored.read_new()]
            flushed = await stored_results.flushed(self.ctx.js, self.session_id)
            if flushed is not None:
                stored.append(flushed)
            live, self._loading = self._loading or [], None
            for result in [*stored, *live]:
                self._handle(result)
            self._repairer = asyncio.create_task(self._repair(), name=f"captions-repair-{self.session_id}")
            self.log.info("captions %s: feed started in %.3fs (%d stored finals, ended=%s)", self.session_id,
                          time.perf_counter() - t0, self.state.delivery.released, self.state.ended)
        except (TimeoutError, nats.errors.Error, msgspec.DecodeError) as exc:
            self.failed = exc
            raise
        finally:
            self.ready.set()

    async def stop(self) -> None:
        self.log.info("captions %s: feed stopped (seq %d)", self.session_id, self.state.delivery.seq)
        if self._repairer is not None:
            await tasks.stop(self._repairer)
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None

    def join(self, viewer: Viewer) -> None:
        """Backlog first, then live: synchronous, so no final is missed or sent twice."""
        for msg in self.state.joiner_backlog():
            viewer.out.send(msg, droppable=False)
        if self.state.ended:
            viewer.finish(Closing(p.CLOSE_NORMAL, "Session ended"))
        self.viewers.add(viewer)

    async def _on_msg(self, msg: Msg) -> None:
        try:
            result = result_decoder.decode(msg.data)
        except msgspec.DecodeError:
            self.log.error("captions %s: undecodable result on %s", self.session_id, msg.subject)
            return
        if self._loading is not None:
            self._loading.append(result)
        else:
            self._handle(result)

    def _handle(self, result: Result) -> None:
        for msg, kind in self.state.add(result):
            for viewer in self.viewers:
                if kind == "partial" and not viewer.partials:
                    continue
                viewer.out.send(msg, droppable=kind != "final")
        if self.state.ended:
            for viewer in self.viewers:
                viewer.finish(Closing(p.CLOSE_NORMAL, "Session ended"))

    async def _repair(self) -> None:
        """Finals the live subscription missed (a gap that does not close) are read from the stream."""
        while not self.state.ended:
            await asyncio.sleep(REPAIR_AFTER_S)
            if self.state.delivery.due(time.monotonic()):  # a gap: repair (giving up is the speaker edge's)
                try:
                    for stored in await self._stored.read_new():  # finals, and revisions of finals
                        self._handle(stored)
                except (TimeoutError, nats.errors.Error) as exc:
                    self.log.warning("captions %s: could not read stored finals: %r", self.session_id, exc)


class CaptionHub:
    """This edge's feeds, by session id, and its viewer count."""

    def __init__(self, ctx: EdgeContext) -> None:
        self.ctx = ctx
        self.feeds: dict[str, Feed] = {}
        self.viewers = 0
        self.draining = False

    def __repr__(self) -> str:
        return f"<CaptionHub feeds={len(self.feeds)} viewers={self.viewers}>"

    async def join(self, session_id: str, viewer: Viewer) -> Feed:
        feed = self.feeds.get(session_id)
        if feed is None:
            feed = self.feeds[session_id] = Feed(self.ctx, session_id)
            try:
                await feed.start()
            except BaseException:
                self.feeds.pop(session_id, None)
                await feed.stop()
                raise
        else:
            await feed.ready.wait()
            if feed.failed is not None:
                raise ConnectionError(f"captions feed failed: {feed.failed!r}")
        feed.join(viewer)
        return feed

    async def leave(self, feed: Feed | None, viewer: Viewer) -> None:
        if feed is None:
            return
        feed.viewers.discard(viewer)
        if not feed.viewers and self.feeds.get(feed.session_id) is feed:
            del self.feeds[feed.session_id]
            await feed.stop()

    def drain(self) -> None:
        """The edge shuts down: every viewer gets what is queued, then close 1012 (reconnect elsewhere)."""
        self.draining = True
        for feed in self.feeds.values():
            for viewer in feed.viewers:
                viewer.finish(Closing(p.CLOSE_DRAINING, "Edge draining, reconnect"))


# --- HTTP -------------------------------------------------------------------------------------

HUB = web.AppKey("captions", CaptionHub)


async def captions_handler(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    settings = hub.ctx.settings
    session_id = request.match_info["session_id"]
    token = request.query.get("token", "")
    if not subjects.valid_session_id(session_id) or not token or not token_valid(settings, session_id, token):
        hub.ctx.count(f"error.{p.UNAUTHORIZED}")
        return web.json_response(p.error(p.UNAUTHORIZED, "Unknown session or wrong viewer token"), status=401)
    ws = web.WebSocketResponse(max_msg_size=VIEWER_MAX_MSG_BYTES, heartbeat=settings.ws_ping_seconds,
                               compress=False)
    await ws.prepare(request)
    _bound_send_buffer(request, settings.client_send_buffer_bytes)
    if hub.draining or hub.ctx.draining:
        await ws.send_json(p.error(p.CAPACITY, "Edge is draining, reconnect to another edge"))
        await ws.close(code=p.CLOSE_DRAINING, message=b"Edge draining")
        return ws
    if hub.viewers >= settings.max_viewers_per_edge:
        hub.ctx.count(f"error.{p.CAPACITY}")
        metrics.CLIENT_ERRORS.labels(p.CAPACITY).inc()
        await ws.send_json(p.error(
            p.CAPACITY, f"Caption viewers at capacity on this edge ({settings.max_viewers_per_edge}), try again later"))
        await ws.close(code=p.CLOSE_CAPACITY, message=b"At capacity")
        return ws
    hub.viewers += 1
    metrics.CAPTION_VIEWERS.inc()
    out = Outbox(ws, request.transport, max_queue=settings.max_send_queue_size,
                 slow_threshold=settings.slow_send_threshold, count=hub.ctx.count, label=f"viewer-{session_id}")
    viewer = Viewer(out, partials=request.query.get("partials", "") in ("1", "true", "yes"))
    feed: Feed | None = None
    try:
        feed = await hub.join(session_id, viewer)
        await _until_done(ws, viewer)
    except (TimeoutError, ConnectionError, nats.errors.Error) as exc:
        log.warning("captions %s: feed unavailable: %r", session_id, exc)
        out.send(p.error(p.INTERNAL, "Captions unavailable, please reconnect"), droppable=False)
        viewer.closing = Closing(p.CLOSE_INTERNAL, "Internal error")
    finally:
        hub.viewers -= 1
        metrics.CAPTION_VIEWERS.dec()
        await asyncio.shield(_close(hub, feed, viewer))
    return ws


async def _close(hub: CaptionHub, feed: Feed | None, viewer: Viewer) -> None:
    await hub.leave(feed, viewer)
    await viewer.out.close(viewer.closing)


async def _until_done(ws: web.WebSocketResponse, viewer: Viewer) -> None:
    """Reads (and ignores) what the viewer sends until it closes, is closed as too slow, or the
    feed is done with it."""

    async def read() -> None:
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return

    reader = asyncio.create_task(read(), name="captions-reader")
    done = asyncio.create_task(viewer.done.wait(), name="captions-done")
    try:
        await asyncio.wait({reader, done}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await tasks.stop(reader, done)


def _bound_send_buffer(request: web.Request, size: int) -> None:
    """As for speakers: a viewer that stops reading fills its bounded queue (1008), not kernel memory."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if size and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def setup(app: web.Application, context: web.AppKey[EdgeContext]) -> None:
    """Adds the viewer route; the hub lives as long as the edge's bus context."""

    async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
        hub = app[HUB] = CaptionHub(app[context])
        try:
            yield
        finally:
            for feed in list(hub.feeds.values()):
                await feed.stop()

    async def on_shutdown(app: web.Application) -> None:
        if HUB in app:
            app[HUB].drain()

    app.cleanup_ctx.append(hub_ctx)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/v1/sessions/{session_id}/captions", captions_handler)
