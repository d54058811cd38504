"""The one-line progress bar of ``asr replay``. Pure: the caller writes :meth:`Progress.line`.

Progress is measured in seconds of recorded audio fed back into the pipeline, over all sessions
of the run, plus sessions whose last final arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WIDTH = 24


@dataclass
class Progress:
    total_audio_s: float
    total_sessions: int
    fed_s: dict[str, float] = field(default_factory=dict)  # per replayed session
    sessions_done: int = 0
    finals: int = 0

    def fed(self, session_id: str, audio_s: float) -> None:
        self.fed_s[session_id] = audio_s

    def done(self, finals: int) -> None:
        self.sessions_done += 1
        self.finals += finals

    @property
    def fraction(self) -> float:
        if self.total_audio_s <= 0:
            return self.sessions_done / self.total_sessions if self.total_sessions else 1.0
        return min(1.0, sum(self.fed_s.values()) / self.total_audio_s)

    def line(self, elapsed_s: float) -> str:
        filled = round(self.fraction * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        return (
            f"[{bar}] {self.fraction:4.0%}  audio {sum(self.fed_s.values()):.0f}/{self.total_audio_s:.0f} s  "
            f"sessions {self.sessions_done}/{self.total_sessions}  finals {self.finals}  {elapsed_s:.0f} s"
        )
