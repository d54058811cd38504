"""What an operator scales by: Prometheus metrics of every role move by the right amounts after
real traffic (parsed with prometheus-client's own parser), JSON metrics, and a SIGTERM drain that
closes clients with 1012 only after their pending finals were delivered."""

from __future__ import annotations

import asyncio
import math
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.dev import Stack
from tests.conftest import THREE_UTTERANCES, pcm_of
from tests.helpers import connect, metrics_once_idle, running_stack, wer

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("obs"), 0) as stack:
        yield stack


async def test_every_role_counts_real_traffic(stack: Stack) -> None:
    pcm = pcm_of("three_utterances.wav")
    chunks = math.ceil(len(pcm) / 3200)
    ports = {"edge": stack.port, "vad": stack.vad_http_port, "asr": stack.asr_http_port}
    before = {role: scrape(port) for role, port in ports.items()}
    async with aiohttp.ClientSession() as http:
        client = await connect(http, f"ws://127.0.0.1:{stack.port}/v1/stream")
        await client.ws.send_str('{"type": "nonsense"}')
        await client.until("error")
        await client.stream(pcm, chunk_ms=100, realtime=3.0)
        await client.send_json({"type": "end"})
        await client.until("session_ended", timeout=60)
        assert await client.recv() is None
        body = await metrics_once_idle(http, stack.port)
    assert len(client.finals()) == 3
    partials = len([m for m in client.of_type("transcript") if not m["is_final"]])
    # Worker gauges refresh every few seconds (queue gauges every metrics.PENDING_EVERY_S): wait
    # until they show the finished session.
    async with asyncio.timeout(20):
        while True:
            after = {role: scrape(port) for role, port in ports.items()}
            if (value(after["vad"], "asr_vad_sessions") == 0
                    and value(after["asr"], "asr_jobs_pending", kind="final") == 0
                    and value(after["asr"], "asr_worker_busy_slots") == 0):
                break
            await asyncio.sleep(0.2)

    def edge(name: str, **labels: str) -> float:
        return moved(before["edge"], after["edge"], name, **labels)

    def vad(name: str, **labels: str) -> float:
        return moved(before["vad"], after["vad"], name, **labels)

    def asr(name: str, **labels: str) -> float:
        return moved(before["asr"], after["asr"], name, **labels)

    assert edge("asr_sessions_total") == 1
    assert value(after["edge"], "asr_active_sessions") == 0
    assert edge("asr_chunks_received_total") == chunks
    assert edge("asr_bytes_received_total") == len(pcm)
    assert edge("asr_client_errors_total", code="INVALID_MESSAGE") == 1
    assert edge("asr_request_latency_seconds_count") == chunks + 2  # audio, the bad message, end
    assert edge("asr_messages_sent_total", type="transcript") == 3 + partials
    assert edge("asr_messages_sent_total", type="session_ended") == 1
    assert edge("asr_final_latency_seconds_count") == 3
    assert edge("asr_stage_asr_to_edge_seconds_count") >= 3

    assert vad("asr_vad_jobs_total", kind="final") == 3
    assert vad("asr_vad_frames_total") == len(pcm) // 960 + 1  # 30 ms frames, the remainder padded
    assert vad("asr_vad_audio_seconds_total") == pytest.approx(len(pcm) / 32000)
    assert vad("asr_stage_edge_to_vad_seconds_count") == chunks + 1  # audio and end
    assert value(after["vad"], "asr_vad_shards_owned") == 16
    assert value(after["vad"], "asr_vad_sessions") == 0

    assert asr("asr_jobs_total", kind="final", outcome="ok") == 3
    # Every final says what its speculative decode gave; one that took it ran no model itself.
    outcomes = {o: asr("asr_speculative_finals_total", outcome=o) for o in ("used", "waited", "timeout", "none")}
    assert sum(outcomes.values()) == 3 and outcomes["timeout"] == 0
    decoded = 3 - outcomes["used"] - outcomes["waited"]
    assert asr("asr_inference_seconds_count", kind="final") == decoded
    assert asr("asr_real_time_factor_count", kind="final") == decoded
    # A speculative job may be replaced in the latest-only queue by a newer partial, never decoded.
    assert asr("asr_inference_seconds_count", kind="speculative") <= vad("asr_vad_jobs_total", kind="speculative")
    assert asr("asr_batch_size_count") >= 3
    assert 6.0 < asr("asr_audio_seconds_total", kind="final") < 11.0  # the three utterances' audio
    assert value(after["asr"], "asr_jobs_pending", kind="final") == 0
    assert value(after["asr"], "asr_worker_busy_slots") == 0

    assert body["errors_by_code"] == {"INVALID_MESSAGE": 1}
    assert body["active_sessions"] == 0 and body["messages_dropped"] == 0 and body["slow_client_closes"] == 0


def test_workers_serve_health(stack: Stack) -> None:
    for port in (stack.vad_http_port, stack.asr_http_port):
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                assert resp.status == 200


async def test_sigterm_drains_finals_before_closing_with_1012(tmp_path: Path) -> None:
    with running_stack(tmp_path, 0) as stack:
        pcm = pcm_of("three_utterances.wav")
        async with aiohttp.ClientSession() as http:
            client = await connect(http, f"ws://127.0.0.1:{stack.port}/v1/stream")
            idle = await connect(http, f"ws://127.0.0.1:{stack.port}/v1/stream")
            idle_reader = asyncio.create_task(idle.recv(timeout=120))  # a client reads all the time
            await client.stream(pcm[: 6 * 32000], chunk_ms=100, realtime=2.0)  # into the 2nd sentence
            first = await client.until("transcript", timeout=30)
            while not first["is_final"]:
                first = await client.until("transcript", timeout=30)
            edge = stack.procs["ingest"]
            edge.send_signal(signal.SIGTERM)
            # Everything until the close: the second sentence, cut where the audio stopped, is final 2.
            while await client.recv(timeout=30) is not None:
                pass
            assert client.close_code == 1012, client.last_frame
            finals = client.finals()
            assert [f["seq"] for f in finals] == [1, 2], client.messages
            assert wer(THREE_UTTERANCES[0], finals[0]["text"]) <= 0.25
            assert finals[1]["text"] and THREE_UTTERANCES[1].split()[0] in finals[1]["text"]
            assert await asyncio.wait_for(idle_reader, 30) is None
            assert idle.close_code == 1012, idle.last_frame
            assert await asyncio.to_thread(edge.wait, 30) == 0
            # A client arriving now finds nobody listening (the edge is gone).
            with pytest.raises(aiohttp.ClientError):
                await http.ws_connect(f"ws://127.0.0.1:{stack.port}/v1/stream")
