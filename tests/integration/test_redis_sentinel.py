"""common/redis_client.py against real Redis processes: a plain URL, and a master found through
Sentinel that is still found after Sentinel fails it over to the replica.

One master, one replica and one Sentinel (quorum 1), each a redis-server process started here on
a free port (a Sentinel is `redis-server CONF --sentinel`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common import redis_client
from common.redis_client import RedisSettings
from common.settings import Settings, SettingsError, replace
from tests.conftest import RedisServer, free_port, redis_binary

STEP = 10.0
MASTER = "asrmaster"


class Proc:
    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        with log.open("w") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [redis_binary(), *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        client = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 15
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.stop()
                        raise RuntimeError(f"redis did not start: {log.read_text()[-2000:]}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def server(tmp: Path, name: str, *extra: str) -> Proc:
    port = free_port()
    folder = tmp / name
    folder.mkdir()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    return Proc([*args, *extra], port, tmp / f"{name}.log")


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[tuple[Proc, Proc, Proc]]:
    started: list[Proc] = []
    try:
        master = server(tmp_path, "master")
        started.append(master)
        replica = server(tmp_path, "replica", "--replicaof", "127.0.0.1", str(master.port))
        started.append(replica)
        port = free_port()
        conf = tmp_path / "sentinel.conf"  # Sentinel rewrites its config file: a writable copy
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {master.port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
        )
        sentinel = Proc([str(conf), "--sentinel"], port, tmp_path / "sentinel.log")
        started.append(sentinel)
        yield master, replica, sentinel
    finally:
        for proc in reversed(started):
            proc.stop()


def test_plain_url_connects_to_that_server(redis_server: RedisServer) -> None:
    settings = Settings(redis_url=redis_server.url)

    async def main() -> None:
        client = redis_client.connect(RedisSettings.from_settings(settings), decode_responses=True)
        try:
            await asyncio.wait_for(client.set("k", "v"), STEP)
            info = await asyncio.wait_for(client.info("server"), STEP)
            assert int(info["tcp_port"]) == redis_server.port
            assert await asyncio.wait_for(client.get("k"), STEP) == "v"
        finally:
            await client.aclose()

    asyncio.run(main())


def test_url_credentials_come_from_redis_url() -> None:
    assert redis_client.url_credentials("redis://:s%40cret@ignored:6379/3") == {"db": 3, "password": "s@cret"}
    assert redis_client.url_credentials("") == {"db": 0}
    assert redis_client.sentinel_addresses("a:26379, b:26380") == [("a", 26379), ("b", 26380)]


def test_sentinel_settings_are_validated() -> None:
    with pytest.raises(SettingsError, match="redis_sentinels entry 'sentinel-0' is not HOST:PORT"):
        replace(Settings(), redis_sentinels="sentinel-0")
    with pytest.raises(SettingsError, match=r"stream_replicas=2 .* use 1 for a single nats-server, 3"):
        replace(Settings(), stream_replicas=2)
    with pytest.raises(SettingsError, match="redis_sentinels needs redis_url as well"):
        replace(Settings(), redis_sentinels="a:26379,b:26379")
    ok = replace(Settings(), redis_url="redis://redis:6379/0", redis_sentinels="a:26379,b:26379", stream_replicas=3)
    assert ok.stream_replicas == 3


def test_sentinel_client_follows_the_master_through_a_failover(sentinel_group: tuple[Proc, Proc, Proc]) -> None:
    master, replica, sentinel = sentinel_group
    settings = replace(
        Settings(), redis_url="redis://ignored-host:6379/2", redis_sentinels=f"127.0.0.1:{sentinel.port}",
        redis_sentinel_master=MASTER,
    )

    async def port_of_master(client: redis.asyncio.Redis) -> int:
        info = await asyncio.wait_for(client.info("server"), STEP)
        return int(info["tcp_port"])

    async def main() -> None:
        client = redis_client.connect(RedisSettings.from_settings(settings), decode_responses=True)
        try:
            assert await port_of_master(client) == master.port
            await asyncio.wait_for(client.set("session", "alive"), STEP)
            # Database 2 of redis_url, not the default 0.
            assert int((await asyncio.wait_for(client.client_info(), STEP))["db"]) == 2
            # The replica holds the write before its master dies. It may still be in its first
            # sync: WAIT blocks until it acks or its own timeout, so each WAIT stays well under the
            # client's socket timeout and is asked again until the replica has caught up.
            async with asyncio.timeout(60):
                while await asyncio.wait_for(client.wait(1, 1000), STEP) != 1:
                    pass

            master.kill()
            async with asyncio.timeout(60):
                while True:
                    try:
                        if await port_of_master(client) == replica.port:
                            await client.set("after", "failover")  # writable: it is the master now
                            break
                    except (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError):
                        pass
                    await asyncio.sleep(0.2)
            assert await asyncio.wait_for(client.get("session"), STEP) == "alive"
            assert await asyncio.wait_for(client.get("after"), STEP) == "failover"
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
    finally:
        print(sentinel.log.read_text()[-3000:])
