"""The recording commands end to end: a session streamed live through the real stack (edge, VAD
worker, ASR worker, nats-server), then `asr sessions`, `transcript`, `export`, `replay`,
`replay --compare` and `delete` run as the installed console script against it (--data-dir, so
they find the stack's private nats-server as a user of `asr dev` would).

One stack is shared by the scenarios of the recorded session; size-bounded retention and
recording-off each need their own settings, hence their own stacks.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.dev import Stack
from tests.conftest import DATA, ONE_SENTENCE, THREE_UTTERANCES, free_port, pcm_of
from tests.helpers import connect, normalise, running_stack, wer
from tests.unit.test_audio_decode import encode

pytestmark = pytest.mark.slow

ASR = str(Path(sys.executable).parent / "asr")
CLI_TIMEOUT_S = 240.0


def asr(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    return subprocess.run([ASR, *args], capture_output=True, text=True, timeout=timeout, check=False)


def assert_user_error(out: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit code 2, one sentence on stderr, no traceback."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    for fragment in fragments:
        assert fragment in out.stderr, out.stderr


def url(stack: Stack) -> str:
    return f"ws://127.0.0.1:{stack.port}/v1/stream"


async def stream_session(stack: Stack, pcm: bytes) -> tuple[str, list[dict[str, Any]]]:
    """Streams PCM at 16 kHz as one live session; returns its id and the finals the client got, as
    revised (what RESULTS keeps and `asr transcript` prints)."""
    async with aiohttp.ClientSession() as http:
        client = await connect(http, url(stack))
        await client.stream(pcm, chunk_ms=100, realtime=2.5)
        await client.send_json({"type": "end"})
        await client.until("session_ended", timeout=90)
        await client.ws.close()
        return str(client.messages[0]["session_id"]), client.shown()


@dataclass(frozen=True)
class Live:
    stack: Stack
    data_dir: Path
    session_id: str
    finals: list[dict[str, Any]]
    pcm: bytes

    @property
    def where(self) -> tuple[str, str]:
        return ("--data-dir", str(self.data_dir))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("replay-stack")
    pcm = pcm_of("three_utterances.wav")
    with running_stack(data_dir, 0, ready_timeout=240) as stack:
        session_id, finals = asyncio.run(stream_session(stack, pcm))
        assert len(finals) == 3, finals
        yield Live(stack, data_dir, session_id, finals, pcm)


def texts(finals: list[dict[str, Any]]) -> list[str]:
    return [f["text"] for f in finals]


@pytest.mark.timeout(600)
def test_export_is_byte_identical_to_the_pcm_sent(live: Live, tmp_path: Path) -> None:
    out = asr("export", live.session_id, "-o", str(tmp_path / "s.wav"), *live.where)
    assert out.returncode == 0, out.stderr
    with wave.open(str(tmp_path / "s.wav"), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert w.readframes(w.getnframes()) == live.pcm


@pytest.mark.timeout(300)
def test_transcript_is_the_finals_as_delivered(live: Live) -> None:
    out = asr("transcript", live.session_id, "--format", "json", *live.where)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["session_id"] == live.session_id
    assert [(f["seq"], f["text"], f["utterance_id"]) for f in doc["finals"]] == [
        (f["seq"], f["text"], f["utterance_id"]) for f in live.finals
    ]
    srt = asr("transcript", live.session_id, "--format", "srt", *live.where)
    assert srt.returncode == 0, srt.stderr
    blocks = srt.stdout.strip().split("\n\n")
    assert [b.splitlines()[2] for b in blocks] == texts(live.finals)
    assert blocks[0].splitlines()[1].startswith("00:00:0") and " --> " in blocks[0]


@pytest.mark.timeout(300)
def test_sessions_lists_the_recorded_session(live: Live) -> None:
    out = asr("sessions", "--since", "1h", "--json", *live.where)
    assert out.returncode == 0, out.stderr
    rows = {r["session_id"]: r for r in json.loads(out.stdout)}
    row = rows[live.session_id]
    assert row["finals"] == 3 and row["ended"] is True and row["audio_kept"] is True
    assert row["audio_s"] == pytest.approx(len(live.pcm) / 32000, abs=0.001)
    assert row["replay_of"] is None and abs(row["started_at"] - time.time()) < 3600
    table = asr("sessions", *live.where)
    assert table.returncode == 0 and live.session_id in table.stdout, table.stderr


@pytest.mark.timeout(600)
def test_replay_with_the_same_settings_gives_the_same_finals(live: Live, tmp_path: Path) -> None:
    out = asr("replay", live.session_id, "--speed", "max", "--format", "json", "-o", str(tmp_path),
              "--progress", "always", *live.where)
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / f"{live.session_id}.json").read_text())
    assert texts(doc["finals"]) == texts(live.finals)
    assert [(f["start_s"], f["end_s"]) for f in doc["finals"]] == [
        (f["start_s"], f["end_s"]) for f in live.finals
    ]
    assert "[" in out.stderr and "#" in out.stderr  # the progress bar
    assert "replayed 1 session(s)" in out.stderr and "3 finals" in out.stderr  # the summary
    # The replay is a session of its own, marked as a replay of the original.
    sessions = json.loads(asr("sessions", "--json", *live.where).stdout)
    replays = [s for s in sessions if s["replay_of"] == live.session_id]
    assert [s["session_id"] for s in replays] == [doc["session_id"]]


@pytest.mark.timeout(600)
def test_compare_prints_the_table_and_documented_json(live: Live, tmp_path: Path) -> None:
    out = asr("replay", live.session_id, "--compare", "--set", "endpointing_ms=500", "-o", str(tmp_path),
              *live.where)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "A: live transcript" and lines[1] == "B: replay with endpointing_ms=500"
    assert lines[2].split()[:2] == ["SESSION", "FINALS"]
    assert lines[3].startswith(live.session_id) and lines[4].startswith("overall")
    doc = json.loads((tmp_path / "compare.json").read_text())
    assert set(doc) == {"a", "b", "sessions", "overall"}
    row = doc["sessions"][0]
    assert set(row) == {"session_id", "a", "b", "word_edits", "substitutions", "deletions", "insertions",
                        "word_diff_rate", "latency_diff_s"}
    assert set(row["a"]) == set(row["b"]) == {"session_id", "finals", "words", "latency_s"}
    assert row["session_id"] == live.session_id and row["a"]["session_id"] == live.session_id
    assert row["b"]["session_id"] != live.session_id
    # Same settings: same words, and the latencies are both measured.
    assert row["word_edits"] == 0 and row["word_diff_rate"] == 0.0 and row["a"]["finals"] == 3
    assert row["a"]["latency_s"] > 0 and row["b"]["latency_s"] > 0 and row["latency_diff_s"] is not None
    assert doc["overall"]["word_edits"] == 0 and doc["overall"]["a"]["words"] == row["a"]["words"]


@pytest.mark.timeout(600)
def test_a_longer_endpointing_joins_the_utterances(live: Live) -> None:
    """The README's example: the pauses between the three sentences are 1.5 s, so with
    endpointing_ms=2000 no pause ends an utterance; only the soft length (soft_utterance_seconds,
    10 s) cuts the 13 s of speech, at its best pause: two finals, the first holding two sentences."""
    out = asr("replay", live.session_id, "--set", "endpointing_ms=2000", "--format", "json", *live.where)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["replay_of"] == live.session_id
    finals = doc["finals"]
    assert len(finals) == 2, finals
    assert wer(" ".join(THREE_UTTERANCES[:2]), finals[0]["text"]) <= 0.25, finals
    assert wer(THREE_UTTERANCES[2], finals[1]["text"]) <= 0.25, finals


@pytest.mark.timeout(300)
def test_user_errors_are_one_sentence_and_exit_2(live: Live, tmp_path: Path) -> None:
    assert_user_error(asr("replay", "no-such-session-123", *live.where), "no-such-session-123 is unknown")
    assert_user_error(asr("export", "no-such-session-123", "-o", str(tmp_path / "x.wav"), *live.where), "unknown")
    assert_user_error(asr("transcript", "no-such-session-123", *live.where), "unknown")
    assert_user_error(asr("replay", live.session_id, "--set", "model=small.en", *live.where), "--set model")
    assert_user_error(asr("replay", live.session_id, "--set", "endpointing_ms=20", *live.where),
                      "endpointing_ms=20 is too short")
    unreachable = f"nats://127.0.0.1:{free_port()}"
    for command in (["sessions"], ["replay", live.session_id], ["export", live.session_id, "-o", "x.wav"],
                    ["transcript", live.session_id], ["delete", live.session_id]):
        assert_user_error(asr(*command, "--nats-url", unreachable), "cannot reach NATS")


async def purge_audio(live: Live, session_id: str) -> None:
    """What audio_retention_seconds does to an old session, done now: its audio leaves AUDIO."""
    import nats

    nc = await nats.connect((live.data_dir / "nats" / "nats.url").read_text().strip())
    try:
        await nc.jetstream().purge_stream("AUDIO", subject=f"audio.*.{session_id}")
    finally:
        await nc.close()


@pytest.mark.timeout(600)
def test_expired_audio_and_delete(live: Live, tmp_path: Path) -> None:
    session_id, finals = asyncio.run(stream_session(live.stack, pcm_of("one_sentence.wav")))
    assert len(finals) == 1
    asyncio.run(purge_audio(live, session_id))
    for command in (["replay", session_id], ["export", session_id, "-o", str(tmp_path / "x.wav")]):
        assert_user_error(asr(*command, *live.where), f"the audio of session {session_id} is no longer kept")
    assert asr("transcript", session_id, *live.where).stdout.strip() == finals[0]["text"]
    out = asr("delete", session_id, *live.where)
    assert out.returncode == 0, out.stderr
    assert f"deleted session {session_id}: 0 audio message(s), 2 result(s)" in out.stdout  # final + flushed
    assert_user_error(asr("transcript", session_id, *live.where), f"session {session_id} is unknown")
    assert_user_error(asr("delete", session_id, *live.where), "unknown")
    assert session_id not in sessions_json(live.where)


# --- size-bounded retention -----------------------------------------------------------------------


def sessions_json(where: tuple[str, str]) -> dict[str, dict[str, Any]]:
    out = asr("sessions", "--json", *where)
    assert out.returncode == 0, out.stderr
    return {r["session_id"]: r for r in json.loads(out.stdout)}


@pytest.mark.timeout(900)
def test_size_bounded_audio_drops_the_oldest_sessions_first(tmp_path: Path) -> None:
    pcm = pcm_of("three_utterances.wav")  # 13 s: 416 KB, so the 4 sessions overflow 1 MiB
    where = ("--data-dir", str(tmp_path))
    with running_stack(tmp_path, 0, ready_timeout=240, env={"ASR_AUDIO_MAX_BYTES": "1048576"}) as stack:
        ids = []
        for _ in range(4):
            session_id, finals = asyncio.run(stream_session(stack, pcm))
            assert len(finals) == 3, finals  # every session, also the newest, was transcribed
            ids.append(session_id)
        rows = sessions_json(where)
        # New audio is still accepted: the newest session is whole, byte for byte.
        assert rows[ids[-1]]["audio_kept"] and rows[ids[-1]]["audio_s"] == pytest.approx(len(pcm) / 32000, abs=0.001)
        out = asr("export", ids[-1], "-o", str(tmp_path / "last.wav"), *where)
        assert out.returncode == 0, out.stderr
        with wave.open(str(tmp_path / "last.wav"), "rb") as w:
            assert w.readframes(w.getnframes()) == pcm
        # The oldest went first: its audio is gone (its results are not), and a replay says why.
        assert not rows[ids[0]]["audio_kept"] and rows[ids[0]]["finals"] == 3, rows
        assert_user_error(asr("replay", ids[0], *where), f"the audio of session {ids[0]} is no longer kept")
        kept = [i for i in ids if rows[i]["audio_kept"]]
        assert kept == ids[len(ids) - len(kept):], rows  # what is left is the newest sessions
    # With the stack stopped, --data-dir starts a nats-server on its store for the command.
    assert not (tmp_path / "nats" / "nats.url").exists()
    rows = sessions_json(where)
    assert set(ids) <= set(rows) and rows[ids[-1]]["audio_kept"]
    assert not (tmp_path / "nats" / "nats.url").exists()  # and stopped it again


# --- recording off --------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_recording_off_keeps_audio_only_for_recovery(tmp_path: Path) -> None:
    window_s = 15
    env = {"ASR_RECORD_AUDIO": "false", "ASR_AUDIO_RECOVERY_SECONDS": str(window_s)}
    pcm = pcm_of("three_utterances.wav")
    where = ("--data-dir", str(tmp_path))
    with running_stack(tmp_path, 0, ready_timeout=240, env=env) as stack:

        async def resumed_session() -> tuple[str, list[dict[str, Any]]]:
            cut = 6 * 32000
            async with aiohttp.ClientSession() as http:
                first = await connect(http, url(stack))
                started = first.messages[0]
                await first.stream(pcm[:cut], chunk_ms=100, realtime=2.5)
                await first.ws.close()  # the connection drops mid-session
                again = await connect(http, url(stack))
                await again.send_json({"type": "reconnect", "previous_session_id": started["session_id"],
                                       "resume_token": started["resume_token"], "last_seq": 0})
                recovered = await again.until("session_recovered", timeout=15)
                assert recovered["previous_metrics"]["audio_bytes_received"] == cut
                await again.stream(pcm[cut:], chunk_ms=100, realtime=2.5)
                await again.send_json({"type": "end"})
                await again.until("session_ended", timeout=90)
                return str(started["session_id"]), again.finals()

        session_id, finals = asyncio.run(resumed_session())
        assert len(finals) == 3, finals  # resume works with recording off
        for final, reference in zip(finals, THREE_UTTERANCES, strict=True):
            assert wer(reference, final["text"]) <= 0.25, (reference, final["text"])
        ended_at = time.monotonic()
        for command in (["replay", session_id], ["export", session_id, "-o", str(tmp_path / "x.wav")]):
            assert_user_error(asr(*command, *where), f"session {session_id} was not recorded", "record_audio off")
        # The transcript is still there; the audio goes once the recovery window has passed.
        out = asr("transcript", session_id, *where)
        assert out.returncode == 0 and normalise(out.stdout) == normalise(" ".join(f["text"] for f in finals))
        deadline = ended_at + window_s + 60
        while sessions_json(where)[session_id]["audio_kept"]:
            assert time.monotonic() < deadline, "audio outlived the recovery window"
            time.sleep(1.0)
        assert sessions_json(where)[session_id]["finals"] == 3


@pytest.mark.timeout(600)
def test_stream_and_replay_take_compressed_audio_and_video(live: Live, tmp_path: Path) -> None:
    mp3 = encode(tmp_path / "speech.mp3", "mp3", "libmp3lame", 16000)
    out = asr("stream", str(mp3), "--url", url(live.stack), timeout=120)
    assert out.returncode == 0, out.stderr
    assert wer(ONE_SENTENCE, out.stdout) <= 0.25, out.stdout
    video = encode(tmp_path / "meeting.mp4", "mp4", "aac", 48000, video=True)
    out = asr("replay", str(video), "--format", "text", *live.where)
    assert out.returncode == 0, out.stderr
    assert wer(ONE_SENTENCE, out.stdout) <= 0.25, out.stdout
    replays = [s for s in sessions_json(live.where).values() if s["replay_of"] == "file:meeting.mp4"]
    assert len(replays) == 1 and replays[0]["finals"] == 1


@pytest.mark.timeout(900)
def test_replay_since_writes_one_file_per_recorded_session(live: Live, tmp_path: Path) -> None:
    asyncio.run(stream_session(live.stack, pcm_of("one_sentence.wav")))  # at least two recorded sessions
    recorded = {sid for sid, row in sessions_json(live.where).items() if row["audio_kept"] and not row["replay_of"]}
    assert len(recorded) >= 2
    out = asr("replay", "--since", "1h", "--concurrency", "1", "--format", "srt", "-o", str(tmp_path), *live.where)
    assert out.returncode == 0, out.stderr
    assert {p.stem for p in tmp_path.glob("*.srt")} == recorded
    assert f"replayed {len(recorded)} session(s)" in out.stderr
    cues = (tmp_path / f"{live.session_id}.srt").read_text().strip().split("\n\n")
    assert [c.splitlines()[2] for c in cues] == texts(live.finals)


@pytest.mark.timeout(600)
def test_export_of_a_44k_client_is_the_edges_16k_resampling(live: Live, tmp_path: Path) -> None:
    """A client at ?sample_rate=44100: the service stores (and exports) its 16 kHz resampling."""
    import numpy as np

    from common.audio import resample_s16

    with wave.open(str(DATA / "one_sentence_44k_stereo.wav"), "rb") as w:
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2).astype(np.int32)
    sent = (stereo.sum(axis=1) // 2).astype("<i2").tobytes()  # what a 44.1 kHz mono client sends

    async def stream_44k() -> str:
        async with aiohttp.ClientSession() as http:
            client = await connect(http, url(live.stack) + "?sample_rate=44100")
            step = 44100 * 2 // 10  # 100 ms
            for i in range(0, len(sent), step):
                await asyncio.wait_for(client.ws.send_bytes(sent[i : i + step]), 10)
            await client.send_json({"type": "end"})
            await client.until("session_ended", timeout=90)
            return str(client.messages[0]["session_id"])

    session_id = asyncio.run(stream_44k())
    out = asr("export", session_id, "-o", str(tmp_path / "s.wav"), *live.where)
    assert out.returncode == 0, out.stderr
    with wave.open(str(tmp_path / "s.wav"), "rb") as w:
        assert w.getframerate() == 16000
        stored = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int32)
    expected = np.frombuffer(resample_s16(sent, 44100, 16000), "<i2").astype(np.int32)
    assert len(stored) == len(expected) == -(-(len(sent) // 2) * 16000 // 44100)  # ceil(n * 16000 / 44100)
    assert int(np.abs(stored - expected).max()) <= 1  # the chunked resampler, up to rounding
