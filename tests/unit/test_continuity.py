"""A session's VAD state rebuilt from its checkpoint continues exactly: same finals (index, times,
audio) as an undisturbed run, whatever message it was cut after. Real webrtcvad, the committed
espeak-ng speech, the worker's own SessionVad; the "stream" is the list of messages."""

from __future__ import annotations

import itertools
import logging

import pytest

from common import continuity
from common.audio import snr_db
from common.settings import Settings
from tests.conftest import pcm_of
from vad_worker.segmenter import FinalReady, Segmenter, SegmenterStart
from vad_worker.seq_order import Chunk
from vad_worker.session import SessionVad, parse_overrides, segmenter_options
from vad_worker.vad_settings import VadSettings

OPTIONS = segmenter_options(VadSettings.from_settings(Settings()))
CHUNK = 3200  # 100 ms, what clients send


def messages() -> list[Chunk]:
    pcm = pcm_of("three_utterances.wav")
    out = [Chunk(i + 1, "audio", pcm[o : o + CHUNK], stream_seq=10 * (i + 1), offset=o)
           for i, o in enumerate(range(0, len(pcm), CHUNK))]
    return [*out, Chunk(len(out) + 1, "end", b"", stream_seq=10 * (len(out) + 1), offset=len(pcm))]


def finals_of(events: list[object]) -> list[tuple[int, int, float, float, int]]:
    return [(e.final_index, e.utterance_index, round(e.start_s, 3), round(e.end_s, 3), len(e.audio))
            for e in events if isinstance(e, FinalReady)]


def undisturbed() -> list[tuple[int, int, float, float, int]]:
    return finals_of(SessionVad("s", OPTIONS, 2).process(messages()))  # type: ignore[arg-type]


def carried_on(cut: int) -> list[tuple[int, int, float, float, int]]:
    """Processes messages up to ``cut``, checkpoints (through its wire encoding), then a new state
    re-reads what the checkpoint asks for and carries on with the rest."""
    msgs = messages()
    first = SessionVad("s", OPTIONS, 2)
    events: list[object] = []
    for chunk in msgs[:cut]:  # one message per batch, a checkpoint after each
        events += first.process([chunk])
        cp = continuity.decode(continuity.encode(first.checkpoint()))
    replay = [c for c in msgs if cp.resume_stream_seq and cp.resume_stream_seq <= c.stream_seq]
    second = SessionVad("s", OPTIONS, 2, cp, replayable=bool(cp.resume_stream_seq))
    if second.resumed_from:
        events += second.replay(replay)
    events += second.process(msgs)  # the consumer redelivers everything: seen ones are skipped
    return finals_of(events)


def test_the_undisturbed_run_has_three_finals() -> None:
    assert [f[0] for f in undisturbed()] == [1, 2, 3]


@pytest.mark.parametrize("cut", [1, 5, 12, 20, 27, 33, 40, 47, 55, 62, 70, 80])
def test_a_new_owner_gives_the_same_finals(cut: int) -> None:
    """Cut points fall in silence, mid-utterance and right after endpoints."""
    assert carried_on(cut) == undisturbed()


def test_a_checkpoint_in_speech_points_at_the_utterance_start() -> None:
    msgs = messages()
    state = SessionVad("s", OPTIONS, 2)
    in_speech = None
    for chunk in msgs:
        state.process([chunk])
        if state.segmenter.in_speech:
            in_speech = state.checkpoint()
            break
    assert in_speech is not None and in_speech.in_speech
    held = next(c for c in msgs if c.stream_seq == in_speech.resume_stream_seq)
    assert held.offset <= in_speech.resume_position * 2 < held.offset + len(held.pcm)
    assert in_speech.resume_position % (OPTIONS.frame_bytes // 2) == 0


def test_after_end_the_checkpoint_says_ended_and_nothing_is_reread() -> None:
    state = SessionVad("s", OPTIONS, 2)
    state.process(messages())
    cp = state.checkpoint()
    assert cp.ended and cp.resume_stream_seq == 0 and cp.finals == 3
    again = SessionVad("s", OPTIONS, 2, cp, replayable=False)
    assert again.process(messages()) == []


def test_a_segmenter_started_at_a_position_continues_time_and_counters() -> None:
    import webrtcvad

    pcm = pcm_of("three_utterances.wav")

    def run(start: SegmenterStart | None) -> tuple[Segmenter, list[tuple[int, int, float, float, int]]]:
        vad = webrtcvad.Vad(2)
        seg = Segmenter(OPTIONS, lambda f: bool(vad.is_speech(f, 16000)), start)
        return seg, finals_of([*seg.push(pcm), *seg.end()])

    _, base = run(None)
    position = 1000 * OPTIONS.frame_bytes // 2  # 30 s in, in samples
    later, shifted = run(SegmenterStart(position=position, utterances=4, finals=7))
    assert len(base) == 3
    assert shifted == [(i + 7, u + 4, round(s0 + position / 16000, 3), round(s1 + position / 16000, 3), n)
                       for i, u, s0, s1, n in base]
    assert later.samples_seen == position + len(pcm) // 2


def test_options_header_is_validated(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    assert parse_overrides('{"endpointing_ms": 800}') == {"endpointing_ms": 800}
    assert parse_overrides(None) == {}
    for bad in ('{"endpointing_ms": 50}', '{"endpointing_ms": 9000}', '{"endpointing_ms": "800"}',
                '{"endpointing_ms": true}', '{"pre_roll_ms": 100}', "[1]", "not json"):
        assert parse_overrides(bad, "sess") == {}, bad
    assert len(caplog.records) == 7
    # Applied to the session and kept in its checkpoint.
    state = SessionVad("s", OPTIONS, 2, continuity.VadCheckpoint(options={"endpointing_ms": 1500}))
    assert state.checkpoint().options == {"endpointing_ms": 1500}
    msgs = messages()
    assert [f[0] for f in finals_of(state.process(msgs))] == [1, 2, 3]  # type: ignore[arg-type]


def test_audio_missing_from_the_stream_keeps_the_time_base() -> None:
    """Messages lost before they were stored (a hole in Asr-Offset) count as silence of their length,
    so later utterances keep their times."""
    msgs = messages()
    holed = msgs[:35] + msgs[40:]  # 3.5-4.0 s lost, in the silence after the first utterance
    state = SessionVad("s", OPTIONS, 2)
    finals = finals_of(state.process(holed))  # type: ignore[arg-type]
    assert state.missing_bytes == 5 * CHUNK
    # Digital silence in place of the lost noise floor may move a cut by a frame or two.
    got, want = [f[2:4] for f in finals], [f[2:4] for f in undisturbed()]
    assert len(got) == len(want) and all(g == pytest.approx(w, abs=0.1) for g, w in zip(got, want, strict=True))


def test_each_final_carries_the_tail_of_the_final_before_it() -> None:
    """Acoustic context: final n+1 carries the last ``context_seconds`` of final n's audio; the
    first final has none, and context_seconds 0 gives none at all."""
    finals = [e for e in SessionVad("s", OPTIONS, 2, context_seconds=1.0).process(messages())
              if isinstance(e, FinalReady)]
    assert len(finals) == 3
    assert finals[0].context == b""
    for before, after in itertools.pairwise(finals):
        assert len(before.audio) > 32000 and after.context == before.audio[-32000:]
    plain = [e for e in SessionVad("s", OPTIONS, 2).process(messages()) if isinstance(e, FinalReady)]
    assert [f.context for f in plain] == [b"", b"", b""]
    assert [f.audio for f in plain] == [f.audio for f in finals]


def test_a_long_context_joins_the_finals_before_it_in_order() -> None:
    """With room for more than one final, the context is the earlier finals' audio joined in
    order, cut at the front to ``context_seconds``."""
    finals = [e for e in SessionVad("s", OPTIONS, 2, context_seconds=25.0).process(messages())
              if isinstance(e, FinalReady)]
    assert len(finals) == 3
    assert finals[1].context == finals[0].audio
    assert finals[2].context == finals[0].audio + finals[1].audio
    short = [e for e in SessionVad("s", OPTIONS, 2, context_seconds=3.0).process(messages())
             if isinstance(e, FinalReady)]
    assert len(finals[0].audio + finals[1].audio) > 3 * 32000
    assert short[2].context == (finals[0].audio + finals[1].audio)[-3 * 32000:]
    # Context and utterance share one decoding window: a long utterance leaves less room.
    narrow = SessionVad("s", OPTIONS, 2, context_seconds=25.0)
    narrow._window_bytes = len(finals[2].audio) + 1000
    tight = [e for e in narrow.process(messages()) if isinstance(e, FinalReady)]
    assert tight[2].context == (finals[0].audio + finals[1].audio)[-1000:]
    narrow_full = SessionVad("s", OPTIONS, 2, context_seconds=25.0)
    narrow_full._window_bytes = 10
    assert all(e.context == b"" for e in narrow_full.process(messages()) if isinstance(e, FinalReady))


def test_a_rebuilt_state_gives_its_first_final_no_context() -> None:
    """The context is not checkpointed: after a rebuild the next final is decoded alone, the one
    after it has context again."""
    msgs = messages()
    first = SessionVad("s", OPTIONS, 2, context_seconds=1.0)
    events = first.process(msgs[:45])
    assert sum(isinstance(e, FinalReady) for e in events) == 1
    cp = first.checkpoint()
    second = SessionVad("s", OPTIONS, 2, cp, replayable=False, context_seconds=1.0)
    later = [e for e in second.process(msgs) if isinstance(e, FinalReady)]
    assert [f.final_index for f in later] == [2, 3]
    assert later[0].context == b"" and later[1].context == later[0].audio[-32000:]


def test_context_goes_only_to_finals_noisier_than_the_bound() -> None:
    """``context_max_snr_db``: a final whose estimated SNR is at or above it is decoded alone; the
    context still remembers it for the finals after it."""
    def finals(bound: float) -> list[FinalReady]:
        vad = SessionVad("s", OPTIONS, 2, context_seconds=25.0, context_max_snr_db=bound)
        return [e for e in vad.process(messages()) if isinstance(e, FinalReady)]

    snrs = [snr_db(f.audio) for f in finals(100.0)]
    assert all(0 < s < 100 for s in snrs)
    assert [f.context for f in finals(0.0)] == [b"", b"", b""]
    every = finals(100.0)
    cut = sorted(snrs)[1] + 0.01  # between the second and third SNR: only the two quieter ones qualify
    gated = finals(cut)
    for f, g, s in zip(every, gated, snrs, strict=True):
        assert g.context == (f.context if s < cut else b"")


def test_revising_gives_each_final_the_previous_finals_whole_audio() -> None:
    """``revise``: from the second final on, each carries the final before it (for its revision),
    with or without acoustic context; not checkpointed, like the context."""
    plain = [e for e in SessionVad("s", OPTIONS, 2).process(messages()) if isinstance(e, FinalReady)]
    assert len(plain) == 3 and all(f.previous == b"" for f in plain)
    for context_s in (0.0, 1.0):
        revised = [e for e in SessionVad("s", OPTIONS, 2, context_seconds=context_s, revise=True).process(messages())
                   if isinstance(e, FinalReady)]
        assert [f.audio for f in revised] == [f.audio for f in plain]
        assert [f.previous for f in revised] == [b"", plain[0].audio, plain[1].audio]
    msgs = messages()
    first = SessionVad("s", OPTIONS, 2, revise=True)
    assert sum(isinstance(e, FinalReady) for e in first.process(msgs[:45])) == 1
    second = SessionVad("s", OPTIONS, 2, first.checkpoint(), replayable=False, revise=True)
    later = [e for e in second.process(msgs) if isinstance(e, FinalReady)]
    assert [f.previous for f in later] == [b"", later[0].audio]


def test_a_previous_final_that_would_overfill_the_job_is_left_out() -> None:
    """Job, context and previous final stay within one decoding window (NATS's max_payload)."""
    vad = SessionVad("s", OPTIONS, 2, revise=True)
    vad._window_bytes = len(max((e.audio for e in SessionVad("s", OPTIONS, 2).process(messages())
                                 if isinstance(e, FinalReady)), key=len)) + 10
    assert all(e.previous == b"" for e in vad.process(messages()) if isinstance(e, FinalReady))
