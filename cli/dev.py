"""`asr dev`: the whole stack on one machine, no Docker, no Redis.

Starts a private nats-server (JetStream, loopback, a port the OS picks, so a server already on
4222 is neither used nor disturbed) with its data in --data-dir, then the edge, one VAD worker and
one ASR worker as separate processes. Their logs are prefixed by role. Prints the stream URL
once the edge's /readyz says every role is ready; Ctrl-C stops every child cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from common.nats_server import NatsServer, NatsServerError

ROLES = ("ingest", "vad_worker", "asr_worker")
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 40.0  # above the edge's default drain_timeout_seconds (20)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080, help="edge port (default 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="edge address (default 127.0.0.1)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where JetStream keeps its data (default: a temporary folder removed on exit)")
    parser.add_argument("--redis-url", default="",
                        help="share sessions and caps between edges through this Redis (default: none)")
    parser.add_argument("--edges", type=int, default=1,
                        help="edge processes on PORT, PORT+1, ... (more than 1 needs --redis-url)")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _pump(stream: IO[str], prefix: str, out: IO[str], lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            out.write(f"{prefix} {line}" if line.endswith("\n") else f"{prefix} {line}\n")
            out.flush()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Stack:
    def __init__(
        self, host: str, port: int, data_dir: Path, out: IO[str] = sys.stdout, *, edges: int = 1,
        redis_url: str = "", env: dict[str, str] | None = None, workers: bool = True,
    ) -> None:
        self.host, self.port, self.data_dir, self.out = host, port, data_dir, out
        self.edges, self.redis_url, self.extra_env, self.workers = edges, redis_url, env or {}, workers
        self.nats = NatsServer(data_dir / "nats")
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self._lock = threading.Lock()
        self._pumps: list[threading.Thread] = []

    def say(self, text: str) -> None:
        with self._lock:
            self.out.write(f"[dev] {text}\n")
            self.out.flush()

    def start(self) -> None:
        self.nats.start()
        self.say(f"nats-server with JetStream at {self.nats.url} (data in {self.data_dir})")
        env = dict(os.environ)
        self.vad_http_port, self.asr_http_port = free_port(), free_port()
        env.update(
            ASR_NATS_URL=self.nats.url, ASR_HOST=self.host, ASR_REDIS_URL=self.redis_url,
            ASR_VAD_HTTP_PORT=str(self.vad_http_port), ASR_ASR_HTTP_PORT=str(self.asr_http_port),
            PYTHONUNBUFFERED="1", OMP_WAIT_POLICY="PASSIVE",
        )
        env.update(self.extra_env)
        roles = [(f"ingest-{i + 1}" if self.edges > 1 else "ingest", "ingest", {"ASR_PORT": str(self.port + i)})
                 for i in range(self.edges)]
        if self.workers:
            roles += [("vad_worker", "vad_worker", {}), ("asr_worker", "asr_worker", {})]
        for name, module, own_env in roles:
            self.spawn(name, module, {**env, **own_env})

    def spawn(self, name: str, module: str, env: dict[str, str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, start_new_session=True,
        )
        self.procs[name] = proc
        assert proc.stdout is not None
        pump = threading.Thread(target=_pump, args=(proc.stdout, f"[{name}]", self.out, self._lock), daemon=True)
        pump.start()
        self._pumps.append(pump)
        return proc

    def edge_port(self, index: int) -> int:
        return self.port + index

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_children()
            if all(_ready(f"http://{self.host}:{self.edge_port(i)}/readyz") for i in range(self.edges)):
                return
            time.sleep(0.25)
        raise RuntimeError(f"the stack was not ready within {timeout:.0f} s (see the logs above)")

    def check_children(self) -> None:
        for role, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                raise RuntimeError(f"{role} exited with code {code} (see its log above)")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for role, proc in self.procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{role} did not stop in {STOP_TIMEOUT_S:.0f} s: killing it")
                proc.kill()
                proc.wait()
        for pump in self._pumps:
            pump.join(2.0)
        for proc in self.procs.values():
            if proc.stdout is not None:
                proc.stdout.close()
        self.nats.stop()


def run(args: argparse.Namespace) -> int:
    if args.edges < 1 or (args.edges > 1 and not args.redis_url):
        print("asr dev: --edges N needs N >= 1, and --redis-url when N > 1 (edges share sessions there)",
              file=sys.stderr)
        return 2
    for port in range(args.port, args.port + args.edges):
        if _port_taken(args.host, port):
            print(f"asr dev: port {port} on {args.host} is in use; pick another with --port", file=sys.stderr)
            return 2
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="asr-dev-")
        data_dir = Path(tmp.name)
    else:
        data_dir = args.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(args.host, args.port, data_dir, edges=args.edges, redis_url=args.redis_url)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    old_term = signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        stack.start()
        stack.wait_ready()
        for i in range(args.edges):
            stack.say(f"ready: stream audio to ws://{args.host}:{args.port + i}/v1/stream")
        stack.say(f"try: asr stream FILE.wav --url ws://{args.host}:{args.port}/v1/stream")
        stack.say("press Ctrl-C to stop")
        while not stopping.is_set():
            stack.check_children()
            stopping.wait(0.5)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, NatsServerError) as exc:
        print(f"asr dev: {exc}", file=sys.stderr)
        code = 1
    finally:
        stack.say("stopping")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        signal.signal(signal.SIGTERM, old_term)
        if tmp is not None:
            tmp.cleanup()
        stack.say("stopped")
    return code
