"""The settings an edge reads: its view of ``common.settings.Settings`` (see
``common.settings_view``).

``python -m ingest`` loads and validates the whole ``Settings`` and hands the edge this view, so
every field the edge depends on is listed here and reading any other is a type error. Defaults
and meanings are documented once, in ``Settings`` and settings.toml.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.bus_settings import BusSettings
from common.redis_client import RedisSettings
from common.settings_view import SettingsView


@dataclass(frozen=True, slots=True)
class EdgeSettings(SettingsView):
    bus: BusSettings
    redis: RedisSettings
    effective_worker_id: str
    host: str
    port: int
    # admission and hostile clients
    max_sessions_per_worker: int
    max_global_sessions: int
    max_connections_per_ip: int
    max_connects_per_ip_per_minute: int
    api_keys: str
    allowed_origins: str
    trusted_proxies: str
    max_chunk_bytes: int
    max_frame_bytes: int
    max_realtime_factor: float
    rate_limit_burst_seconds: float
    rate_limit_grace_seconds: float
    require_workers_ready: bool
    # delivery to the client
    max_send_queue_size: int
    slow_send_threshold: int
    client_send_buffer_bytes: int
    idle_timeout_seconds: float
    ws_ping_seconds: float
    # audio to the bus
    audio_batch_ms: int
    publish_linger_ms: int
    max_pending_publishes: int
    # finals, their order and repair
    end_flush_timeout_seconds: float
    final_repair_after_seconds: float
    final_gap_timeout_seconds: float
    final_probe_seconds: float
    max_waiting_finals: int
    revision_end_wait_ms: int
    # session ownership and resume
    orphan_timeout_seconds: float
    edge_heartbeat_seconds: float
    drain_timeout_seconds: float
    resume_window_seconds: float
    max_released_sessions: int
    # caption viewers
    max_viewers_per_edge: int
    viewer_backlog_finals: int
    viewer_token_secret: str
    # what sessions are told (and the Deepgram-compatible endpoint's options are checked against)
    endpointing_ms: int
    max_utterance_seconds: float
    model: str
    language: str


__all__ = ["EdgeSettings"]
