"""The edge: ``init(settings) -> web.Application`` with the WebSocket and HTTP routes.

Long-lived resources (the NATS connection, the worker-presence poller) are owned by
``cleanup_ctx``: created before the first request, cancelled and closed after the last.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from common import bus, metrics, presence, redis_client, streams, tasks
from common.health import healthz, metrics_handler
from ingest import captions, deepgram, pages
from ingest import protocol as p
from ingest.auth import SUBPROTOCOLS, Gatekeeper, Refusal
from ingest.client_address import ClientAddress
from ingest.connection import Connection, NativeWire, Wire
from ingest.context import EdgeContext
from ingest.edge_settings import EdgeSettings
from ingest.jetstream_pipe import JetStreamPipe
from ingest.redis_store import RedisSessionStore
from ingest.session_store import MemorySessionStore, SessionStore
from ingest.websocket import EdgeWebSocket

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", EdgeSettings)
CONTEXT = web.AppKey("context", EdgeContext)

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000


async def stream_handler(request: web.Request) -> web.StreamResponse:
    raw_rate = request.query.get("sample_rate", "16000")
    if not raw_rate.isdigit() or not MIN_SAMPLE_RATE <= int(raw_rate) <= MAX_SAMPLE_RATE:
        return web.json_response(
            p.error(p.INVALID_MESSAGE,
                    f"sample_rate must be a whole number of Hz from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}"),
            status=400,
        )
    return await _serve(request, int(raw_rate), NativeWire())


async def listen_handler(request: web.Request) -> web.StreamResponse:
    """Deepgram's live API (docs/deepgram.md): the same session, another wire format."""
    settings = request.app[SETTINGS]
    try:
        options = deepgram.parse_query(request.query, settings)
    except deepgram.QueryError as exc:
        return web.json_response(deepgram.http_error(400, exc.message), status=400)
    wire = deepgram.DeepgramWire(options, settings)
    return await _serve(request, options.sample_rate, wire, options_header=options.options_header(),
                        refusal_body=deepgram.http_error, protocols=SUBPROTOCOLS)


async def _serve(
    request: web.Request, sample_rate: int, wire: Wire, *, options_header: str = "",
    refusal_body: Callable[[int, str], dict[str, Any]] | None = None, protocols: tuple[str, ...] = (),
) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    settings = ctx.settings
    refusal = ctx.gate.check(request.headers, request.query)
    if refusal is not None:
        return _refuse(ctx, refusal, refusal.code.lower(), refusal_body)
    ip = ctx.client_address.of(request.remote, request.headers.getall("X-Forwarded-For", []))
    refusal = ctx.gate.open(ip)
    if refusal is not None:
        return _refuse(ctx, refusal, "per_ip_limit", refusal_body)
    try:
        ws = EdgeWebSocket(max_msg_size=settings.max_frame_bytes, heartbeat=settings.ws_ping_seconds,
                           compress=False, protocols=protocols)
        await ws.prepare(request)
        _bound_send_buffer(request, settings.client_send_buffer_bytes)
        if ctx.draining:
            for message in wire.render(p.error(p.CAPACITY, "Edge is draining, reconnect to another edge")):
                await ws.send_json(message)
            await ws.close(code=p.CLOSE_DRAINING, message=b"Edge draining")
            return ws
        await Connection(ctx, ws, sample_rate, request.transport, wire=wire, options_header=options_header).run()
        return ws
    finally:
        ctx.gate.close(ip)


def _refuse(
    ctx: EdgeContext, refusal: Refusal, reason: str, body: Callable[[int, str], dict[str, Any]] | None = None,
) -> web.Response:
    """An HTTP answer before the upgrade, counted like the errors sent on open sessions."""
    metrics.SESSIONS_REJECTED.labels(reason).inc()
    ctx.count(f"error.{refusal.code}")
    answer = body(refusal.status, refusal.message) if body else p.error(refusal.code, refusal.message)
    return web.json_response(answer, status=refusal.status)


def _bound_send_buffer(request: web.Request, size: int) -> None:
    """A fixed kernel send buffer: a client that stops reading backs up into its bounded queue
    (and is closed with 1008) instead of into megabytes of autotuned kernel memory."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if size and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def readiness(app: web.Application) -> dict[str, Any]:
    ctx = app.get(CONTEXT)
    workers = ctx.workers if ctx else {}
    checks = {
        "nats": bool(ctx and ctx.nc.is_connected),
        "not_draining": bool(ctx and not ctx.draining),
    }
    if app[SETTINGS].redis.redis_url:
        checks["redis"] = bool(ctx and ctx.store_ok)
    if app[SETTINGS].require_workers_ready:
        checks["vad_worker"] = bool(workers.get("vad"))
        checks["asr_worker"] = bool(workers.get("asr"))
    return {"ready": all(checks.values()), "checks": checks}


async def readyz(request: web.Request) -> web.Response:
    body = readiness(request.app)
    return web.json_response(body, status=200 if body["ready"] else 503)


async def json_metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    cluster, own = await ctx.store.counts()
    limit = _cluster_limit(ctx.settings)
    return web.json_response({
        "worker_id": ctx.edge_id,
        "active_sessions": cluster,
        "edge_active_sessions": own,
        "max_sessions": limit,
        "max_sessions_per_edge": ctx.settings.max_sessions_per_worker,
        "capacity_percent": round(100.0 * cluster / limit, 2),
        "sessions_by_state": await ctx.store.states(),
        "uptime_seconds": round(time.time() - ctx.started_at, 3),
        "draining": ctx.draining,
        "messages_dropped": ctx.totals.get("messages_dropped", 0),
        "slow_client_closes": ctx.totals.get("slow_client_closes", 0),
        "errors_by_code": {k.removeprefix("error."): v for k, v in ctx.totals.items() if k.startswith("error.")},
        "workers": {role: len(ids) for role, ids in ctx.workers.items()},
    })


def _cluster_limit(settings: EdgeSettings) -> int:
    """What the cluster admits: the global cap with Redis, else this lone edge's own cap."""
    if settings.redis.redis_url:
        return settings.max_global_sessions
    return min(settings.max_global_sessions, settings.max_sessions_per_worker)


async def _bus(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    edge_id = settings.effective_worker_id
    nc, js = await bus.connect_jetstream(settings.bus, f"ingest-{edge_id}")
    store = await _open_store(settings, edge_id)
    metrics.MAX_SESSIONS.set(_cluster_limit(settings))
    metrics.MAX_SESSIONS_PER_EDGE.set(settings.max_sessions_per_worker)
    pipe = JetStreamPipe(nc, settings.publish_linger_ms / 1000)
    ctx = app[CONTEXT] = EdgeContext(settings=settings, nc=nc, js=js, store=store, edge_id=edge_id,
                                     gate=Gatekeeper.from_settings(settings), pipe=pipe,
                                     client_address=ClientAddress.from_setting(settings.trusted_proxies))
    await ctx.pipe.start()
    await streams.when_ready(lambda: presence.bucket(js), settings.bus)  # the bucket exists before it is read
    poller = asyncio.create_task(_poll_workers(ctx), name="poll-workers")
    keeper = asyncio.create_task(_keep_store(ctx), name="session-store")
    log.info("edge %s connected to NATS %s", edge_id, nc.connected_url.netloc if nc.connected_url else "?")
    try:
        yield
    finally:
        await tasks.stop(poller, keeper)
        await ctx.pipe.close()
        await store.close()
        await bus.close(nc)


async def _open_store(settings: EdgeSettings, edge_id: str) -> SessionStore:
    if not settings.redis.redis_url:
        return MemorySessionStore(edge_id, settings.max_sessions_per_worker, settings.max_global_sessions,
                                  retention_s=settings.resume_window_seconds,
                                  max_released=settings.max_released_sessions)
    store = RedisSessionStore(
        redis_client.connect(settings.redis, decode_responses=True), edge_id, settings.max_sessions_per_worker,
        settings.max_global_sessions,
        retention_s=settings.bus.results_retention_seconds, orphan_timeout_s=settings.orphan_timeout_seconds,
        heartbeat_s=settings.edge_heartbeat_seconds,
    )
    await store.start()
    return store


async def _keep_store(ctx: EdgeContext) -> None:
    """Heartbeats this edge and releases orphans of dead edges; notes whether the store answers."""
    interval = ctx.settings.edge_heartbeat_seconds
    last_cleanup = 0.0
    while True:
        try:
            await ctx.store.heartbeat()
            await ctx.retry_releases()
            if time.monotonic() - last_cleanup >= max(interval, ctx.settings.orphan_timeout_seconds / 4):
                last_cleanup = time.monotonic()
                released = await ctx.store.cleanup_orphans()
                metrics.ORPHANS_RELEASED.inc(released)
            ctx.store_ok = True
        except (OSError, RedisError) as exc:
            if ctx.store_ok:
                log.error("session store unreachable: %s", exc)
            ctx.store_ok = False
        await asyncio.sleep(interval)


async def _poll_workers(ctx: EdgeContext) -> None:
    while True:
        try:
            ctx.workers = await presence.live_workers(ctx.js)
        except Exception as exc:  # bus hiccup: keep the last view, try again
            log.warning("could not read worker presence: %s", exc)
        await asyncio.sleep(1.0)


async def _drain(app: web.Application) -> None:
    """SIGTERM: admit nobody, let every session's pending finals reach its client, then close the
    clients with 1012 so they resume on another edge (bounded by drain_timeout_seconds)."""
    ctx = app.get(CONTEXT)
    if ctx is None:
        return
    ctx.draining = True
    metrics.EDGE_DRAINING.set(1)
    log.info("draining %d sessions", len(ctx.connections))
    await asyncio.gather(*(conn.drain(ctx.settings.drain_timeout_seconds) for conn in list(ctx.connections)))


def init(settings: EdgeSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_bus)
    app.on_shutdown.append(_drain)
    app.router.add_get("/v1/stream", stream_handler)
    app.router.add_get("/v1/listen", listen_handler)
    app.router.add_get("/v1/metrics", json_metrics)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    pages.add_routes(app)
    captions.setup(app, CONTEXT)
    _ = metrics  # the edge's metrics are declared in common.metrics
    return app
