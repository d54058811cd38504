"""The whole pipeline on a real 3-node JetStream cluster with 3 replicas of every stream and KV
bucket: kill -9 one node under 4 live sessions, and nothing spoken is lost or doubled, the
sessions go on, and the node comes back and catches up.

Three nats-server processes with routes (tests/nats_cluster.py), each with its own store; the
edge, a VAD worker and an ASR worker are the real role processes (what `asr dev` starts), given
ASR_NATS_URL listing the three nodes and ASR_STREAM_REPLICAS=3.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from cli.dev import Stack
from common import subjects
from common.bus_settings import BusSettings
from common.messages import Transcript
from tests.conftest import ONE_SENTENCE, THREE_UTTERANCES, pcm_of
from tests.helpers import Client, connect, stored_results, wer
from tests.nats_cluster import NatsCluster, Node

pytestmark = pytest.mark.slow

SESSIONS = 4
STREAMS = (subjects.AUDIO_STREAM, subjects.JOBS_FINAL_STREAM, subjects.JOBS_PARTIAL_STREAM,
           subjects.JOBS_SPECULATIVE_STREAM, subjects.RESULTS_STREAM)
# What a JetStream request may answer while a stream elects a new leader.
# What a publish gets while the stream has no leader (js.publish turns "no responders" into
# NoStreamResponseError).
TRANSIENT = (nats.errors.TimeoutError, nats.errors.NoRespondersError, NoStreamResponseError, ServiceUnavailableError)
BUCKETS = ("KV_" + subjects.WORKERS_BUCKET, "KV_vad_shards")


class ClusterBus:
    """Stands in for the private nats-server of cli.dev.Stack: the roles get the cluster's URLs."""

    def __init__(self, cluster: NatsCluster) -> None:
        self.url = cluster.urls

    def start(self) -> None:
        pass  # the cluster is started (and stopped) by the fixture

    def stop(self) -> None:
        pass


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path / "nats")
    try:
        yield c.start()
    finally:
        c.stop()
        for node in c.nodes:
            print(c.log_tail(node, 1500))


@pytest.fixture
def stack(tmp_path: Path, cluster: NatsCluster) -> Iterator[Stack]:
    log = (tmp_path / "stack.log").open("w")
    env = {"ASR_STREAM_REPLICAS": "3", "ASR_END_FLUSH_TIMEOUT_SECONDS": "60"}
    s = Stack("127.0.0.1", 0, tmp_path, out=log, env=env)
    s.nats = ClusterBus(cluster)  # type: ignore[assignment]
    try:
        s.start()
        s.wait_ready(timeout=180)
        yield s
    finally:
        s.stop()
        log.close()
        print((tmp_path / "stack.log").read_text()[-8000:])


async def stream_info(cluster: NatsCluster, name: str) -> Any:
    nc = await nats.connect(cluster.urls.split(","), connect_timeout=5, max_reconnect_attempts=5)
    try:
        return await nc.jetstream(timeout=10).stream_info(name)
    finally:
        await nc.close()


def stored_last_seq(node: Node) -> dict[str, int]:
    """last_seq of every stream as this node's own store holds it."""
    out: dict[str, int] = {}
    for account in node.jsz().get("account_details", []):
        for stream in account.get("stream_detail", []):
            out[stream["name"]] = int(stream["state"]["last_seq"])
    return out


async def stored_finals(cluster: NatsCluster, session_id: str) -> list[int]:
    """final_index of every final of a session in the RESULTS stream, in stream order (the bus's
    own record: what the service kept, whatever the edge did with it)."""
    nc = await nats.connect(cluster.urls.split(","), connect_timeout=5, max_reconnect_attempts=5)
    try:
        finals = await stored_results(nc.jetstream(timeout=10), subjects.result_final(session_id))
    finally:
        await nc.close()
    assert all(isinstance(f, Transcript) for f in finals), finals
    return [f.final_index for f in finals if isinstance(f, Transcript)]


async def speak(client: Client, pcm: bytes) -> list[dict[str, Any]]:
    """Streams at real time while reading what the edge sends (so finals show in
    ``client.messages`` as they arrive, mid-speech), then ends the session."""
    reading = asyncio.create_task(client.until("session_ended", timeout=180))
    try:
        await client.stream(pcm, chunk_ms=100, realtime=1.0)
        await client.send_json({"type": "end"})
    except BaseException:
        reading.cancel()
        raise
    ended = await reading
    assert ended["metrics"]["audio_bytes_received"] == len(pcm)
    return client.finals()


async def test_losing_one_of_three_nodes_loses_no_final(cluster: NatsCluster, stack: Stack) -> None:
    # Every stream and KV bucket keeps 3 copies, one on each node.
    for name in (*STREAMS, *BUCKETS):
        info = await stream_info(cluster, name)
        assert info.config.num_replicas == 3, name
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2, (name, info.cluster)

    pcm = pcm_of("three_utterances.wav")
    url = f"ws://127.0.0.1:{stack.edge_port(0)}/v1/stream"
    async with aiohttp.ClientSession() as http:
        clients = [await connect(http, url) for _ in range(SESSIONS)]
        talks = [asyncio.create_task(speak(c, pcm)) for c in clients]
        # Kill the node that leads the AUDIO stream once every session has a final: the edge's
        # publishes and the VAD worker's consumers must move to a new leader mid-speech.
        async with asyncio.timeout(90):
            while not all(c.finals() for c in clients):
                assert not any(t.done() for t in talks), [t for t in talks if t.done()]
                await asyncio.sleep(0.1)
        leader = cluster.node((await stream_info(cluster, subjects.AUDIO_STREAM)).cluster.leader)
        print(f"kill -9 {leader.name}, leader of {subjects.AUDIO_STREAM}")
        leader.kill9()

        results = await asyncio.wait_for(asyncio.gather(*talks), 180)
        # First the bus: every final of every session is in RESULTS exactly once...
        async with asyncio.timeout(120):
            while True:
                try:
                    kept = {c.messages[0]["session_id"]: await stored_finals(cluster, c.messages[0]["session_id"])
                            for c in clients}
                except TRANSIENT:  # the RESULTS stream may still be electing its leader: ask again
                    await asyncio.sleep(0.5)
                    continue
                if all(sorted(finals) == [1, 2, 3] for finals in kept.values()):
                    break
                assert all(len(set(finals)) == len(finals) for finals in kept.values()), kept  # no duplicate
                await asyncio.sleep(0.5)
        # ...then each client: it got all of them, in order, once.
        for client, finals in zip(clients, results, strict=True):
            assert [f["seq"] for f in finals] == [1, 2, 3], client.messages  # none lost, none doubled
            for final, reference in zip(finals, THREE_UTTERANCES, strict=True):
                assert wer(reference, final["text"]) <= 0.25, (reference, final["text"])
        for c in clients:
            await c.ws.close()

        # The node comes back on its own store and catches up with what it missed.
        cluster.restart(leader, timeout=90)
        async with asyncio.timeout(90):
            while True:
                try:
                    infos = {name: await stream_info(cluster, name) for name in (*STREAMS, *BUCKETS)}
                except TRANSIENT:
                    await asyncio.sleep(0.5)
                    continue
                behind = {
                    name: [(r.name, r.current, r.lag) for r in info.cluster.replicas or []]
                    for name, info in infos.items()
                    if len(info.cluster.replicas or []) != 2
                    or not all(r.current and not r.lag for r in info.cluster.replicas or [])
                }
                stored = stored_last_seq(leader)
                stale = {
                    name: (stored.get(name), infos[name].state.last_seq)
                    for name in (subjects.AUDIO_STREAM, subjects.RESULTS_STREAM)
                    if stored.get(name) != infos[name].state.last_seq
                }
                if not behind and not stale and leader.healthz() == 200:
                    break
                await asyncio.sleep(0.5)
        assert infos[subjects.AUDIO_STREAM].state.last_seq > 0

        # And the pipeline runs on the whole cluster again.
        one = pcm_of("one_sentence.wav")
        again = await connect(http, url)
        finals = await asyncio.wait_for(speak(again, one), 150)
        assert len(finals) == 1 and wer(ONE_SENTENCE, finals[0]["text"]) <= 0.25, again.messages
        await again.ws.close()


async def test_the_bus_client_moves_to_another_node_and_keeps_publishing(cluster: NatsCluster) -> None:
    """common.bus with ASR_NATS_URL listing the 3 nodes: kill -9 the node it is connected to, and
    it reconnects to another one; JetStream publishes to an R3 stream are acknowledged again once
    the stream has a leader, and nothing acknowledged before is lost."""
    from common import bus
    from common.settings import Settings, replace

    settings = replace(Settings(), nats_url=cluster.urls, stream_replicas=3)
    nc, js = await asyncio.wait_for(bus.connect_jetstream(BusSettings.from_settings(settings), "cluster-test"), 60)
    try:
        acked = [await js.publish("audio.0.bus-test", str(i).encode()) for i in range(20)]
        assert nc.connected_url is not None
        victim = next(n for n in cluster.nodes if n.port == nc.connected_url.port)
        victim.kill9()
        killed_at = asyncio.get_running_loop().time()
        async with asyncio.timeout(60):
            while True:
                try:
                    acked.append(await js.publish("audio.0.bus-test", b"after"))
                    print(f"first acknowledged publish {asyncio.get_running_loop().time() - killed_at:.1f} s "
                          f"after kill -9 {victim.name}")
                    break
                except TRANSIENT:
                    await asyncio.sleep(0.2)
        assert nc.is_connected and nc.connected_url is not None and nc.connected_url.port != victim.port
        info = await js.stream_info(subjects.AUDIO_STREAM)
        assert info.cluster is not None and info.cluster.leader != victim.name
        stored = await js.get_msg(subjects.AUDIO_STREAM, seq=acked[0].seq)
        assert stored.data == b"0"
        assert info.state.last_seq >= acked[-1].seq == acked[0].seq + 20
    finally:
        await bus.close(nc)
