"""Nothing spoken is lost when VAD workers come and go: real processes (`asr dev --vad-workers 2
--asr-workers 2`, supervised, cli.dev.Stack), real nats-server, the real model, espeak-ng speech.

Every scenario checks the client contract for each session: every utterance's final arrives
exactly once, with the right text (WER bound as in test_pipeline), `seq` 1..N without gaps, the
times of an undisturbed run (the session's time base survives a new owner), and `session_ended`
counting them all.

One stack serves the scenarios in order (module scope): a VAD worker killed with SIGKILL
mid-utterance and later an ASR worker; a graceful VAD restart; a VAD worker joining mid-stream; a
session silent with keepalives past the VAD's idle eviction; a resume after that long; and last, a
nats-server stop/start on the same store and port under live sessions.
"""

from __future__ import annotations

import asyncio
import re
import signal
import urllib.request
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.dev import Stack
from common.settings import Settings, replace
from tests.conftest import THREE_UTTERANCES, pcm_of
from tests.helpers import Client, connect, running_stack, wer
from vad_worker.segmenter import FinalReady
from vad_worker.seq_order import Chunk
from vad_worker.session import SessionVad, segmenter_options
from vad_worker.vad_settings import VadSettings

# Each scenario streams several sessions of 26 s of speech and waits for a takeover; the first also
# starts the stack (two model loads): more than the suite's default 120 s per test on a busy box.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

IDLE_S = 3.0  # the edge's idle timeout; the VAD evicts a silent session's state after 2*3+10 s
EVICT_AFTER_S = IDLE_S * 2 + 10
SPEECH = pcm_of("three_utterances.wav") * 2  # six utterances, 26 s
REFERENCES = THREE_UTTERANCES * 2
BYTES_PER_S = 32000
# A new owner's webrtcvad starts without the old one's adapted noise model, so it may classify the
# first frames after a takeover a little differently: an utterance can start or end a few frames
# earlier or later. Anything beyond this is a lost or shifted time base (the bug this guards).
TIME_TOLERANCE_S = 0.5
REALTIME = 2.0
ENV = {
    "ASR_IDLE_TIMEOUT_SECONDS": str(IDLE_S),
    "ASR_PARTIAL_INTERVAL_MS": "0",  # partials are not the point here; they would only slow the box
    "ASR_END_FLUSH_TIMEOUT_SECONDS": "120",
    "ASR_LOG_LEVEL": "INFO",
}


def reference_times() -> list[tuple[float, float]]:
    """Utterance times of an undisturbed VAD run over SPEECH with the stack's settings."""
    settings = replace(Settings(), partial_interval_ms=0)
    state = SessionVad("reference", segmenter_options(VadSettings.from_settings(settings)), settings.vad_aggressiveness)
    events = state.process([Chunk(1, "audio", SPEECH), Chunk(2, "end", b"")])
    return [(e.start_s, e.end_s) for e in events if isinstance(e, FinalReady)]


TIMES = reference_times()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("vad-failover"), 0, ready_timeout=180, env=ENV,
                       vad_workers=2, asr_workers=2, supervise=True) as stack:
        yield stack


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def url(stack: Stack) -> str:
    return f"ws://127.0.0.1:{stack.port}/v1/stream"


def log_of(stack: Stack) -> str:
    return Path(stack.data_dir / "stack.log").read_text()


def check_session(client: Client, ended: dict[str, Any], first_seq: int = 1) -> None:
    """Finals ``first_seq``..6 of SPEECH, each once, right text and times, all counted."""
    finals = client.finals()
    expected = list(range(first_seq, len(REFERENCES) + 1))
    assert [f["seq"] for f in finals] == expected, [(m["type"], m.get("seq"), m.get("text")) for m in client.messages]
    assert len({f["utterance_id"] for f in finals}) == len(finals)
    for final in finals:
        i = final["seq"] - 1
        assert wer(REFERENCES[i], final["text"]) <= 0.25, (i, REFERENCES[i], final["text"])
        start, end = TIMES[i]
        assert final["start_s"] == pytest.approx(start, abs=TIME_TOLERANCE_S), (i, final)
        assert final["end_s"] == pytest.approx(end, abs=TIME_TOLERANCE_S), (i, final)
    assert ended["metrics"]["transcripts_sent"] == len(REFERENCES)


async def speak(http: aiohttp.ClientSession, stack: Stack, delay: float = 0.0) -> tuple[Client, dict[str, Any]]:
    """One session: SPEECH at REALTIME, then end; returns the client and its session_ended."""
    await asyncio.sleep(delay)
    client = await connect(http, url(stack))
    try:
        await client.stream(SPEECH, chunk_ms=100, realtime=REALTIME)
        await client.send_json({"type": "end"})
        ended = await client.until("session_ended", timeout=240)
    finally:
        await client.ws.close()
    return client, ended


async def finals_with_keepalives(client: Client, count: int, timeout: float = 120.0) -> None:
    """Reads until ``count`` finals arrived, sending a keepalive every second meanwhile (the idle
    timeout of this stack is short)."""
    async with asyncio.timeout(timeout):
        while len(client.finals()) < count:
            await client.send_json({"type": "keepalive"})
            try:
                msg = await client.recv(timeout=1.0)
            except TimeoutError:
                continue
            assert msg is not None, f"closed ({client.close_code}) before {count} finals: {client.messages}"


def kill(stack: Stack, name: str, sig: int) -> int:
    proc = stack.procs[name]
    proc.send_signal(sig)
    return proc.pid


async def wait_restarted(stack: Stack, name: str, old_pid: int, timeout: float = 60.0) -> None:
    """Until the supervisor has started ``name`` again and it answers /readyz."""
    port = stack.http_ports[name]
    async with asyncio.timeout(timeout):
        while stack.procs[name].pid == old_pid or not await asyncio.to_thread(_ready, port):
            await asyncio.sleep(0.25)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def shards_owned(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(r"^asr_vad_shards_owned (\S+)$", text, re.M)
    assert match, text[:500]
    return int(float(match.group(1)))


# An utterance is open in the first sessions 5.5 s of audio in (the second one spans 4.3-7.4 s).
KILL_VAD_AT_S = 5.5 / REALTIME


async def test_vad_killed_mid_utterance_then_an_asr_worker(stack: Stack, http: aiohttp.ClientSession) -> None:
    assert TIMES[1][0] < 5.5 < TIMES[1][1]
    async with asyncio.timeout(300), asyncio.TaskGroup() as group:
        sessions = [group.create_task(speak(http, stack, delay=0.2 * i)) for i in range(8)]
        await asyncio.sleep(KILL_VAD_AT_S)
        vad_pid = kill(stack, "vad_worker-1", signal.SIGKILL)
        await asyncio.sleep(3.0)
        asr_pid = kill(stack, "asr_worker-1", signal.SIGKILL)
    for client, ended in (t.result() for t in sessions):
        check_session(client, ended)
    await wait_restarted(stack, "vad_worker-1", vad_pid)
    await wait_restarted(stack, "asr_worker-1", asr_pid, timeout=120)
    log = log_of(stack)
    assert "vad_worker-1 exited with code -9: restarting it" in log
    assert "asr_worker-1 exited with code -9: restarting it" in log
    assert "carried on from its checkpoint" in log and "re-reading" in log  # open utterances re-read


async def test_graceful_vad_restart(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with asyncio.timeout(300), asyncio.TaskGroup() as group:
        sessions = [group.create_task(speak(http, stack, delay=0.3 * i)) for i in range(4)]
        await asyncio.sleep(KILL_VAD_AT_S)
        pid = kill(stack, "vad_worker-2", signal.SIGTERM)  # it hands its shards over; dev starts another
    for client, ended in (t.result() for t in sessions):
        check_session(client, ended)
    await wait_restarted(stack, "vad_worker-2", pid)
    assert "vad_worker-2 exited with code 0: restarting it" in log_of(stack)


async def test_a_vad_worker_joining_mid_stream_takes_its_share(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with asyncio.timeout(300), asyncio.TaskGroup() as group:
        sessions = [group.create_task(speak(http, stack, delay=0.3 * i)) for i in range(4)]
        await asyncio.sleep(KILL_VAD_AT_S)
        name = await asyncio.to_thread(stack.add_worker, "vad_worker")
        port = stack.http_ports[name]
        while not await asyncio.to_thread(_ready, port) or await asyncio.to_thread(shards_owned, port) == 0:
            await asyncio.sleep(0.5)  # it owns shards while the sessions still stream
        owned_mid_stream = not all(t.done() for t in sessions)
    assert owned_mid_stream
    for client, ended in (t.result() for t in sessions):
        check_session(client, ended)
    # Three live workers share 16 shards: none holds more than ceil(16/3) = 6 once balanced.
    async with asyncio.timeout(60):
        while True:
            owned = [await asyncio.to_thread(shards_owned, stack.http_ports[n])
                     for n in ("vad_worker-1", "vad_worker-2", name)]
            if sum(owned) == 16 and max(owned) <= 6:
                break
            await asyncio.sleep(0.5)
    assert min(owned) >= 4, owned


async def test_silence_with_keepalives_past_the_vad_idle_eviction_then_speech(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    half = len(SPEECH) // 2
    evictions = log_of(stack).count("dropping its VAD state from memory")

    async def silent_then_speaks() -> tuple[Client, dict[str, Any]]:
        client = await connect(http, url(stack))
        await client.stream(SPEECH[:half], chunk_ms=100, realtime=REALTIME)
        await finals_with_keepalives(client, 3)  # its three finals are out: the VAD state is in silence
        loop = asyncio.get_running_loop()
        quiet_until = loop.time() + EVICT_AFTER_S + 8
        while loop.time() < quiet_until:  # muted: keepalives only, longer than the eviction
            await client.send_json({"type": "keepalive"})
            await asyncio.sleep(1.0)
        await client.stream(SPEECH[half:], chunk_ms=100, realtime=REALTIME)
        await client.send_json({"type": "end"})
        return client, await client.until("session_ended", timeout=240)

    async def drops_then_resumes() -> tuple[Client, dict[str, Any]]:
        first = await connect(http, url(stack))
        started = first.messages[0]
        await first.stream(SPEECH[:half], chunk_ms=100, realtime=REALTIME)
        await finals_with_keepalives(first, 3)
        await first.ws.close()
        await asyncio.sleep(EVICT_AFTER_S + 8)  # the phone is away longer than the VAD keeps state
        again = await connect(http, url(stack))
        await again.send_json({"type": "reconnect", "previous_session_id": started["session_id"],
                               "resume_token": started["resume_token"], "last_seq": 3})
        recovered = await again.until("session_recovered", timeout=15)
        assert recovered["previous_metrics"]["audio_bytes_received"] == half
        await again.stream(SPEECH[half:], chunk_ms=100, realtime=REALTIME)
        await again.send_json({"type": "end"})
        ended = await again.until("session_ended", timeout=240)
        # What the client saw over both connections.
        merged = Client(again.ws)
        merged.messages = first.messages + again.messages
        return merged, ended

    async with asyncio.timeout(300), asyncio.TaskGroup() as group:
        muted_task = group.create_task(silent_then_speaks())
        resumed_task = group.create_task(drops_then_resumes())
    (muted, muted_end), (resumed, resumed_end) = muted_task.result(), resumed_task.result()
    check_session(muted, muted_end)
    check_session(resumed, resumed_end)
    assert log_of(stack).count("dropping its VAD state from memory") >= evictions + 2


async def restart_nats_under(
    stack: Stack, sessions: list[Coroutine[Any, Any, tuple[Client, dict[str, Any]]]]
) -> list[tuple[Client, dict[str, Any]]]:
    """Runs the sessions; KILL_VAD_AT_S in, stops nats-server for 3 s and starts it again on the same
    store and port. A session's failure is raised as a plain AssertionError (pytest 8 on Python
    3.11.7 has crashed formatting the ExceptionGroup of a failed TaskGroup here)."""
    tasks = [asyncio.create_task(session) for session in sessions]
    try:
        await asyncio.sleep(KILL_VAD_AT_S)
        port = stack.nats.port
        await asyncio.to_thread(stack.nats.stop)
        await asyncio.sleep(3.0)  # a short outage
        stack.nats.requested_port = port  # the same address and store: clients reconnect by themselves
        await asyncio.to_thread(stack.nats.start)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 300)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {len(tasks)} sessions failed; the first: {str(failures[0])[:1500]}"
    return [r for r in results if not isinstance(r, BaseException)]


async def test_nats_restart_under_live_sessions(stack: Stack, http: aiohttp.ClientSession) -> None:
    for client, ended in await restart_nats_under(stack, [speak(http, stack, delay=0.3 * i) for i in range(4)]):
        check_session(client, ended)


async def speak_resuming(http: aiohttp.ClientSession, stack: Stack, delay: float) -> tuple[Client, dict[str, Any]]:
    """Like ``speak``, but as the protocol tells a client to behave when the edge closes the
    connection (1011 on a bus outage, 1012, a drop): reconnect with the resume token and the last
    final seen, and go on sending from what the service has. Returns every message of all
    connections, in order."""
    await asyncio.sleep(delay)
    client = await connect(http, url(stack))
    started = client.messages[0]
    seen: list[dict[str, Any]] = []
    sent = 0
    while True:
        try:
            while sent < len(SPEECH):
                await asyncio.wait_for(client.ws.send_bytes(SPEECH[sent : sent + 3200]), 10)
                sent += 3200
                await asyncio.sleep(0.1 / REALTIME)
            await client.send_json({"type": "end"})
            ended = await client.until("session_ended", timeout=240)
            await client.ws.close()
            merged = Client(client.ws)
            merged.messages = seen + client.messages
            return merged, ended
        except (AssertionError, ConnectionError, aiohttp.ClientError):
            await client.ws.close()
            seen += client.messages
            last_seq = max((m["seq"] for m in seen if m["type"] == "transcript" and m["is_final"]), default=0)
            async with asyncio.timeout(90):
                while True:  # the edge may refuse while the bus is away
                    try:
                        client = await connect(http, url(stack))
                        await client.send_json({"type": "reconnect", "previous_session_id": started["session_id"],
                                                "resume_token": started["resume_token"], "last_seq": last_seq})
                        recovered = await client.until("session_recovered", timeout=15)
                        break
                    except (AssertionError, ConnectionError, aiohttp.ClientError, TimeoutError):
                        await asyncio.sleep(1.0)
            sent = recovered["previous_metrics"]["audio_bytes_received"]


async def test_nats_restart_workers_ride_through(stack: Stack, http: aiohttp.ClientSession) -> None:
    """The worker side of a bus restart: whether or not the edge keeps the WebSocket open, a client
    that follows the protocol loses no final. (test_nats_restart_under_live_sessions also asks the
    edge to keep sessions open through a short outage.)"""
    sessions = [speak_resuming(http, stack, delay=0.3 * i) for i in range(4)]
    for client, ended in await restart_nats_under(stack, sessions):
        check_session(client, ended)
