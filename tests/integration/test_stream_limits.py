"""Retention settings reach JetStream (real nats-server): size caps, record_audio off, and the
gauges of how full the kept streams are."""

from __future__ import annotations

import nats
from prometheus_client import REGISTRY

from common import stream_usage, subjects
from common.bus_settings import BusSettings
from common.nats_server import NatsServer
from common.settings import Settings, replace
from common.streams import RECORD_AUDIO_KEY, ensure_streams


def gauge(name: str, stream: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"stream": stream})


async def test_caps_and_recording_switch_are_applied_and_updated_in_place(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream(timeout=10)
        settings = replace(Settings(), audio_max_bytes=2 * 1048576, results_max_bytes=1048576)
        await ensure_streams(js, BusSettings.from_settings(settings))
        audio = (await js.stream_info(subjects.AUDIO_STREAM)).config
        results = (await js.stream_info(subjects.RESULTS_STREAM)).config
        recording = (audio.metadata or {}).get(RECORD_AUDIO_KEY)
        assert (audio.max_bytes, audio.max_age, recording) == (2 * 1048576, 3600, "true")
        assert results.max_bytes == 1048576
        await js.publish("audio.0.session-1", b"\0" * 32000, headers={subjects.H_KIND: "audio"})

        # A deployment switches recording off: the same stream, now kept only for recovery.
        changed = replace(settings, record_audio=False, audio_recovery_seconds=30, audio_max_bytes=0)
        await ensure_streams(js, BusSettings.from_settings(changed))
        audio = (await js.stream_info(subjects.AUDIO_STREAM)).config
        recording = (audio.metadata or {}).get(RECORD_AUDIO_KEY)
        assert (audio.max_age, audio.duplicate_window, recording) == (30, 30, "false")
        assert audio.max_bytes == -1  # 0: no cap
        assert (await js.stream_info(subjects.AUDIO_STREAM)).state.messages == 1  # nothing lost by the update

        await stream_usage.measure(js)
        audio_bytes = gauge("asr_stream_bytes", "AUDIO")
        assert audio_bytes is not None and audio_bytes > 32000
        assert gauge("asr_stream_max_bytes", "AUDIO") == 0
        assert gauge("asr_stream_max_bytes", "RESULTS") == 1048576
    finally:
        await nc.close()
