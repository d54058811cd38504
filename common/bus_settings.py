"""What the operator sets about the bus: where it is, how many shards, how long it keeps things.

The view of the settings (``common.settings_view``) that every role and tool hands to
``common.bus`` and ``common.streams``: connecting, the streams' limits, and how long a role waits
for the bus at start-up or after an outage. The fixed timings the roles agree on through the bus
are not settings: they are ``common.bus_timing``. Each field's default and meaning are documented
once, in ``common.settings.Settings`` and settings.toml.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.settings_view import SettingsView


@dataclass(frozen=True, slots=True)
class BusSettings(SettingsView):
    nats_url: str
    publish_timeout_seconds: float
    bus_outage_timeout_seconds: float
    audio_shards: int
    stream_replicas: int
    audio_retention_seconds: int
    results_retention_seconds: int
    record_audio: bool
    audio_recovery_seconds: int
    audio_max_bytes: int
    results_max_bytes: int


__all__ = ["BusSettings"]
