"""The settings a VAD worker reads: ``python -m vad_worker`` hands the worker this view of the
validated ``Settings`` (``common.settings_view``). Each field is documented in ``Settings``."""

from __future__ import annotations

from dataclasses import dataclass

from common.bus_settings import BusSettings
from common.settings_view import SettingsView


@dataclass(frozen=True, slots=True)
class VadSettings(SettingsView):
    bus: BusSettings
    effective_worker_id: str
    host: str
    vad_http_port: int
    # the worker: threads for webrtcvad, checkpoints, sessions it forgets
    vad_thread_pool_size: int
    vad_checkpoint_seconds: float
    vad_reorder_wait_seconds: float
    idle_timeout_seconds: float
    # the segmenter (vad_worker.segmenter)
    vad_aggressiveness: int
    vad_frame_ms: int
    endpointing_ms: int
    pre_roll_ms: int
    min_speech_ms: int
    trailing_pad_ms: int
    max_utterance_seconds: float
    soft_utterance_seconds: float
    long_utterance_seconds: float
    long_endpointing_ms: int
    partial_interval_ms: int
    vad_max_buffer_bytes: int
    # what goes into the ASR jobs
    acoustic_context_seconds: float
    acoustic_context_max_snr_db: float
    speculative_finals: bool
    revise_finals: bool


__all__ = ["VadSettings"]
