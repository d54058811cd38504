"""Revisions wait for the slots that finals leave (asr_worker.revisions), in a real ASR worker with
the real model on a real nats-server: a final stored while revisions are queued is decoded and
published first; a revision that waited past ``revision_max_lag_ms`` is given up with an empty
outcome (an edge ending the session stops waiting for it) and the next one is decoded."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
from nats.aio.msg import Msg

from asr_worker.asr_settings import AsrSettings
from asr_worker.background_reviser import BackgroundReviser
from asr_worker.revisions import PendingRevision
from asr_worker.transcriber import Transcriber
from asr_worker.worker import AsrWorker, transcriber_options
from common import bus, subjects
from common.bus_settings import BusSettings
from common.messages import AsrJob, Revision, Transcript, encode, result_decoder
from common.nats_server import NatsServer
from common.settings import Settings, replace
from tests.conftest import THREE_UTTERANCES, pcm_of
from tests.helpers import wer

pytestmark = pytest.mark.slow

BYTES_PER_S = 32000


def _no_process(self: BackgroundReviser) -> None:
    raise RuntimeError("cannot start the revision process")


@pytest.mark.parametrize("nice", [-1, 19], ids=["slots", "revision-process-failed-to-start"])
async def test_a_final_goes_before_queued_revisions_and_a_late_one_is_given_up(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch, nice: int
) -> None:
    # Revisions in the worker's own slot, where a final must go first: asked for (revision_nice -1),
    # or because the revision process did not start.
    monkeypatch.setattr(BackgroundReviser, "start", _no_process)
    settings = replace(Settings(), nats_url=nats_server.url, asr_http_port=0, worker_id="asr1", asr_concurrency=1,
                       speculative_finals=False, revision_max_lag_ms=5000, revision_nice=nice)
    pcm = pcm_of("three_utterances.wav")
    one, two = int(3.7 * BYTES_PER_S), int(8.0 * BYTES_PER_S)  # in the pauses between the sentences
    first, second, rest = pcm[:one], pcm[one:two], pcm[two:]
    sid = "revisionqueue1"

    def stored(index: int, text: str) -> Transcript:
        return Transcript(session_id=sid, utterance_id=f"u{index}", is_final=True, text=text, start_s=0.0,
                          end_s=len(first) / BYTES_PER_S, final_index=index, context=text, avg_logprob=-1.0)

    asr = AsrSettings.from_settings(settings)
    worker = AsrWorker(asr, Transcriber(transcriber_options(asr)))
    now = time.monotonic()
    # Queued before the worker runs: one that has waited a minute already, one just queued.
    worker.revisions.put(PendingRevision(stored(1, "stale words"), first, second, queued_at=now - 60))
    worker.revisions.put(PendingRevision(stored(2, "fresh words"), second, rest, queued_at=now + 60))

    nc = await nats.connect(nats_server.url)
    seen: list[tuple[str, Transcript | Revision]] = []
    got_all = asyncio.Event()

    async def note(msg: Msg) -> None:
        result = result_decoder.decode(msg.data)
        assert isinstance(result, (Transcript, Revision))
        seen.append((msg.subject.rsplit(".", 1)[-1], result))
        if len(seen) == 3:
            got_all.set()

    stop = asyncio.Event()
    run = None
    jnc, js = await bus.connect_jetstream(BusSettings.from_settings(settings), "test")  # creates the streams
    try:
        await nc.subscribe(f"results.{sid}.*", cb=note)
        job = AsrJob(session_id=sid, utterance_id="u3", is_final=True, audio=rest, start_s=0.0,
                     end_s=len(rest) / BYTES_PER_S, final_index=3, created_at=time.time())
        await js.publish(subjects.FINAL_JOBS, encode(job))
        run = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(got_all.wait(), 120)
    finally:
        stop.set()
        if run is not None:
            await asyncio.wait_for(run, 60)
        await nc.close()
        await bus.close(jnc)
    kinds = [(kind, r.final_index) for kind, r in seen]
    assert kinds == [("final", 3), ("revision", 1), ("revision", 2)], kinds
    final, stale, fresh = (r for _, r in seen)
    assert wer(THREE_UTTERANCES[2], final.text) <= 0.3, final.text
    assert stale.text == "" and stale.words == ()  # given up, not decoded
    assert wer(THREE_UTTERANCES[1], fresh.text) <= 0.3, fresh.text  # decoded: the words changed
    assert len(worker.revisions) == 0
    assert worker.reviser is None


async def test_a_final_decoded_before_its_predecessor_was_stored_waits_for_it_then_revises_or_carries_it(
    nats_server: NatsServer,
) -> None:
    """Final 3 is decoded while final 2 is still being decoded elsewhere (here: not stored until
    the test stores it). Final 3 is published only once final 2 is stored: it then announces and
    runs the revision of a final 2 with words, and carries the audio of a final 2 without words
    (its text holds both utterances, from final 2's start). A predecessor that never comes lets
    final 3 go out after ``revision_max_lag_ms``, announcing nothing."""
    settings = replace(Settings(), nats_url=nats_server.url, asr_http_port=0, worker_id="asr1", asr_concurrency=1,
                       speculative_finals=False, revision_max_lag_ms=6000)
    pcm = pcm_of("three_utterances.wav")
    one, two = int(3.7 * BYTES_PER_S), int(8.0 * BYTES_PER_S)
    second, rest = pcm[one:two], pcm[two:]
    asr = AsrSettings.from_settings(settings)
    worker = AsrWorker(asr, Transcriber(transcriber_options(asr)))
    nc = await nats.connect(nats_server.url)
    seen: dict[str, list[tuple[float, Transcript | Revision]]] = {}
    arrived = asyncio.Event()

    async def note(msg: Msg) -> None:
        result = result_decoder.decode(msg.data)
        assert isinstance(result, (Transcript, Revision))
        seen.setdefault(msg.subject, []).append((time.monotonic(), result))
        arrived.set()

    async def next_on(subject: str, count: int) -> list[tuple[float, Transcript | Revision]]:
        while len(seen.get(subject, [])) < count:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 60)
        return seen[subject]

    def final_two(sid: str, text: str) -> Transcript:
        return Transcript(session_id=sid, utterance_id="u2", is_final=True, text=text, start_s=3.7, end_s=8.0,
                          final_index=2, avg_logprob=-1.0 if text else 0.0, context="Please call me back.")

    sessions = ("waitsforits2", "empty2", "never2comes")
    stop = asyncio.Event()
    jnc, js = await bus.connect_jetstream(BusSettings.from_settings(settings), "test")
    run = asyncio.create_task(worker.run(stop))
    try:
        await nc.subscribe("results.>", cb=note)
        for sid in sessions:
            job = AsrJob(session_id=sid, utterance_id="u3", is_final=True, audio=rest, start_s=8.0,
                         end_s=13.0, final_index=3, previous_audio=second, created_at=time.time())
            await js.publish(subjects.FINAL_JOBS, encode(job))
        await asyncio.sleep(4.0)  # time enough to decode all three (about 0.5 s each here)
        assert not seen, seen  # each waits for its final 2
        # The other worker stores final 2 of two sessions: one with words, one without.
        stored_at = time.monotonic()
        await js.publish(subjects.result_final("waitsforits2"), encode(final_two("waitsforits2", "wrong words")))
        await js.publish(subjects.result_final("empty2"), encode(final_two("empty2", "")))
        (_, announcing), = (await next_on(subjects.result_final("waitsforits2"), 2))[1:]
        (_, revised), = await next_on(subjects.result_revision("waitsforits2"), 1)
        (_, carrying), = (await next_on(subjects.result_final("empty2"), 2))[1:]
        (given_up_at, alone), = await next_on(subjects.result_final("never2comes"), 1)
        await asyncio.sleep(1.0)  # a stray revision of never2comes' final 2 would be here by now
    finally:
        stop.set()
        await asyncio.wait_for(run, 60)
        await nc.close()
        await bus.close(jnc)
    assert isinstance(announcing, Transcript) and announcing.final_index == 3 and announcing.revising
    assert wer(THREE_UTTERANCES[2], announcing.text) <= 0.3, announcing.text
    assert isinstance(revised, Revision) and revised.final_index == 2 and revised.utterance_id == "u2"
    assert wer(THREE_UTTERANCES[1], revised.text) <= 0.3, revised.text
    assert isinstance(carrying, Transcript) and carrying.final_index == 3 and not carrying.revising
    assert wer(f"{THREE_UTTERANCES[1]} {THREE_UTTERANCES[2]}", carrying.text) <= 0.3, carrying.text
    assert carrying.start_s == 3.7 and carrying.end_s == 13.0
    assert carrying.carried_s == pytest.approx(len(second) / BYTES_PER_S)
    assert isinstance(alone, Transcript) and not alone.revising and alone.carried_s == 0.0
    assert wer(THREE_UTTERANCES[2], alone.text) <= 0.3, alone.text
    assert given_up_at - stored_at >= 1.0  # published after waiting revision_max_lag_ms (6 s), not at once
    assert subjects.result_revision("never2comes") not in seen
