"""A real 3-node NATS JetStream cluster on loopback for tests: three nats-server processes with
routes to each other, each with its own store, on ports picked before start (the routes must
name them) and kept across a restart, so a killed node comes back where clients look for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cli.dev import free_port
from common.nats_server import find_binary

CLUSTER = "asr-test"


class Node:
    def __init__(self, name: str, store: Path, log: Path) -> None:
        self.name, self.store, self.log = name, store, log
        self.port, self.cluster_port, self.http_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def route(self) -> str:
        return f"nats://127.0.0.1:{self.cluster_port}"

    def start(self, routes: list[str]) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        cmd = [
            find_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store),
            "--server_name", self.name, "-m", str(self.http_port), "--cluster_name", CLUSTER,
            "--cluster", self.route, "--routes", ",".join(routes),
        ]
        with self.log.open("a") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def healthz(self) -> int:
        """HTTP status of /healthz: 200 once this node's JetStream (and its streams) are current."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return 0

    def jsz(self) -> dict[str, Any]:
        """/jsz with stream details: what this node itself stores."""
        url = f"http://127.0.0.1:{self.http_port}/jsz?streams=true&consumers=true"
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class NatsCluster:
    def __init__(self, root: Path, size: int = 3) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.nodes = [Node(f"n{i + 1}", root / f"n{i + 1}", root / f"n{i + 1}.log") for i in range(size)]

    @property
    def urls(self) -> str:
        """The comma-separated list that ASR_NATS_URL takes."""
        return ",".join(node.url for node in self.nodes)

    def routes_for(self, node: Node) -> list[str]:
        return [other.route for other in self.nodes if other is not node]

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for node in self.nodes:
            node.start(self.routes_for(node))
        self.wait_healthy(self.nodes, timeout)
        return self

    def restart(self, node: Node, timeout: float = 60.0) -> None:
        node.start(self.routes_for(node))
        self.wait_healthy([node], timeout)

    def wait_healthy(self, nodes: list[Node], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(node.healthz() == 200 for node in nodes):
            for node in nodes:
                if not node.alive():
                    raise RuntimeError(f"nats-server {node.name} exited:\n{self.log_tail(node)}")
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become healthy:\n" + "\n".join(map(self.log_tail, nodes)))
            time.sleep(0.2)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def log_tail(self, node: Node, chars: int = 3000) -> str:
        return f"--- {node.name} ---\n" + (node.log.read_text()[-chars:] if node.log.exists() else "")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
