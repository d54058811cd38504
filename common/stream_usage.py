"""How full the kept streams are: bytes held and size cap of AUDIO and RESULTS, as gauges.

At the cap JetStream drops the oldest messages (DiscardPolicy.OLD), so recordings and finals are
kept for less than their retention age; the alert ASRStreamNearSizeLimit warns before that.
"""

from __future__ import annotations

import logging

import nats
from nats.js import JetStreamContext

from common import metrics, subjects

log = logging.getLogger(__name__)

KEPT_STREAMS = (subjects.AUDIO_STREAM, subjects.RESULTS_STREAM)


async def measure(js: JetStreamContext) -> None:
    """Sets asr_stream_bytes and asr_stream_max_bytes for each kept stream (skips one that fails)."""
    for stream in KEPT_STREAMS:
        try:
            info = await js.stream_info(stream)
        except (TimeoutError, nats.errors.Error) as exc:
            log.debug("stream info of %s failed: %s", stream, exc)
            continue
        metrics.STREAM_BYTES.labels(stream).set(info.state.bytes)
        cap = info.config.max_bytes or 0
        metrics.STREAM_MAX_BYTES.labels(stream).set(max(cap, 0))
