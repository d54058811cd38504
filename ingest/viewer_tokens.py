"""Viewer tokens: read-only access to one session's captions, checked without a lookup.

``viewer_token = base64url(HMAC-SHA256(viewer_token_secret, "viewer:" + session_id))``. Every edge
with the same secret accepts it; it grants reading captions only, never sending audio or resuming
(that needs the resume token). With an empty secret each edge process signs with its own random
key: fine for one edge (`asr dev`); a cluster must set the same secret on every edge.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

from ingest.edge_settings import EdgeSettings


@functools.cache
def _process_key() -> bytes:
    """The key when viewer_token_secret is empty: random, this process only."""
    return secrets.token_bytes(32)


def _key(settings: EdgeSettings) -> bytes:
    return settings.viewer_token_secret.encode() if settings.viewer_token_secret else _process_key()


def viewer_token(settings: EdgeSettings, session_id: str) -> str:
    """The read-only token for one session's captions (URL-safe base64, 43 characters)."""
    mac = hmac.new(_key(settings), f"viewer:{session_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def token_valid(settings: EdgeSettings, session_id: str, token: str) -> bool:
    """Constant-time check of a viewer token."""
    return hmac.compare_digest(viewer_token(settings, session_id).encode(), token.encode())
