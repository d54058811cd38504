"""The browser pages the edge serves: the live-caption demo at ``/``, the read-only caption view
at ``/viewer``, and their files under ``/static/`` (plain HTML, CSS and ES modules; no build step).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"

# The pages talk only to this edge; nothing is loaded from elsewhere.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; "
                               "style-src 'self'; script-src 'self'; img-src 'self' data:",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / name, headers=_HEADERS)

    return handler


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/viewer", _page("viewer.html"))
    app.router.add_static("/static/", STATIC, append_version=False)
