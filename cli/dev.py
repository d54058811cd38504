"""`asr dev`: the whole stack on one machine, no Docker, no Redis.

Starts a private nats-server (JetStream, loopback, a port the OS picks, so a server already on
4222 is neither used nor disturbed) with its data in --data-dir, then the edge, --vad-workers VAD
workers and --asr-workers ASR workers as separate processes. Their logs are prefixed by role.
Prints the stream URL once the edge's /readyz says every role is ready; Ctrl-C stops every child
cleanly.

It supervises its children: one that exits (crash, kill, OOM; nats-server too, on its port and
its data) is logged and started again while the rest keeps serving (sessions carry on: see
docs/architecture.md); a child that dies ``CRASH_LOOP_RESTARTS`` times within
``CRASH_LOOP_WINDOW_S`` is reported and the stack stops. A
child that exits because of its configuration (`NOT_RESTARTED`: invalid settings, a model that
cannot be loaded) would only fail again: the stack stops at once. Invalid settings are found before
anything starts: every role reads the same settings, and `asr dev` reads them first.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from common import sizing
from common.nats_server import NatsServer, NatsServerError
from common.settings import SettingsError, load

ROLES = ("ingest", "vad_worker", "asr_worker")
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 40.0  # above the edge's default drain_timeout_seconds (20)
CRASH_LOOP_RESTARTS = 5  # restarts of one child within CRASH_LOOP_WINDOW_S that stop the stack
CRASH_LOOP_WINDOW_S = 60.0
SUPERVISE_EVERY_S = 0.5
NOT_RESTARTED = {2: "its settings are invalid", 3: "its model cannot be loaded"}
"""Exit codes of a role (`common.role.run_worker`, `asr_worker.__main__`) that a restart cannot fix."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080,
                        help="edge port (default 8080; 0: the OS picks free ports, printed when ready)")
    parser.add_argument("--host", default="127.0.0.1", help="edge address (default 127.0.0.1)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where JetStream keeps its data (default: a temporary folder removed on exit)")
    parser.add_argument("--redis-url", default="",
                        help="share sessions and caps between edges through this Redis (default: none)")
    parser.add_argument("--edges", type=int, default=1,
                        help="edge processes on PORT, PORT+1, ... (more than 1 needs --redis-url)")
    parser.add_argument("--vad-workers", type=int, default=1,
                        help="VAD worker processes (default 1; they share the audio shards evenly)")
    parser.add_argument("--asr-workers", type=int, default=None,
                        help="ASR worker processes (default: one single-threaded process per usable core, "
                             "less one core in eight; each loads the model)")


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_FIRST_PRIVATE_PORT = 10000  # below it sit well-known services' ports
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel picks from for outgoing connections (Linux's default if unreadable)."""
    try:
        low, high = (int(x) for x in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, for a child process to bind a moment later.

    Picked outside the kernel's ephemeral range: a port the OS hands out for ``bind(0)`` is also
    one it may give the next outgoing connection of any process (a browser's, a client's) in the
    moment before the child binds it, and then the child dies with "address already in use"
    (seen in CI). Ports are random, never handed out twice by this process, and free when picked.
    """
    low, high = _ephemeral_range()
    spans = [span for span in ((_FIRST_PRIVATE_PORT, low - 1), (high + 1, 65535)) if span[1] - span[0] > 1000]
    port = _first_free(host, (random.randint(*random.choice(spans)) for _ in range(200))) if spans else None
    if port is not None:
        return port
    with socket.socket() as s:  # no room outside the ephemeral range: let the OS pick
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _first_free(host: str, candidates: Iterable[int]) -> int | None:
    """The first candidate not handed out before and free to bind now; remembered as handed out."""
    with _handed_out_lock:
        for port in candidates:
            if port not in _handed_out and not _port_taken(host, port, reuse=False):
                _handed_out.add(port)
                return port
    return None


def _port_taken(host: str, port: int, reuse: bool = True) -> bool:
    with socket.socket() as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


_LISTENING = re.compile(r"edge listening on http://\S+:(\d+)")


def _pump(stream: IO[str], prefix: str, out: IO[str], lock: threading.Lock,
          on_line: Callable[[str], None] | None = None) -> None:
    """Copies a child's output to ``out`` until EOF, then closes ``stream``. EOF can come after
    the child itself is gone: a process it started (an ASR worker's revision process) holds the
    pipe until it exits too. A stream closed by `Stack.stop` (a pump still waiting for that EOF)
    ends the copy quietly."""
    with stream:
        try:
            for line in stream:
                if on_line is not None:
                    on_line(line)
                with lock:
                    out.write(f"{prefix} {line}" if line.endswith("\n") else f"{prefix} {line}\n")
                    out.flush()
        except ValueError:
            if not stream.closed:
                raise
            # "I/O operation on closed file": Stack.stop closed it while this pump waited for EOF.


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class CrashLoop(RuntimeError):
    """A child kept dying: the stack stops rather than restart it forever."""


class Stack:
    def __init__(
        self, host: str, port: int, data_dir: Path, out: IO[str] = sys.stdout, *, edges: int = 1,
        redis_url: str = "", env: dict[str, str] | None = None, workers: bool = True,
        vad_workers: int = 1, asr_workers: int = 1, supervise: bool = False,
        asr_env: dict[str, str] | None = None, nats_monitor: bool = False,
    ) -> None:
        """``supervise``: restart children that exit (what `asr dev` does); without it a dead child
        is an error for ``check_children`` (what most tests want). ``asr_env``: defaults for the ASR
        workers (the pool's sizing); the caller's environment and ``env`` win over them.
        ``nats_monitor``: open nats-server's HTTP monitoring endpoint too (``nats.monitor_url``)."""
        self.host, self.requested_port, self.data_dir, self.out = host, port, data_dir, out
        self.edge_ports: dict[str, int] = {}  # edge name -> the port it listens on (port 0: the OS picked it)
        self.edges, self.redis_url, self.extra_env, self.workers = edges, redis_url, env or {}, workers
        self.vad_workers, self.asr_workers, self.supervise = vad_workers, asr_workers, supervise
        self.asr_env = asr_env or {}
        self.nats = NatsServer(data_dir / "nats", monitor=nats_monitor)
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.http_ports: dict[str, int] = {}  # worker name -> its /metrics, /readyz port
        self.restarts: dict[str, list[float]] = {}  # child name -> when it was restarted
        self.failure: str | None = None  # set when a child crash-loops
        self._specs: dict[str, tuple[str, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._procs_lock = threading.RLock()
        self._pumps: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._env: dict[str, str] = {}

    def say(self, text: str) -> None:
        with self._lock:
            self.out.write(f"[dev] {text}\n")
            self.out.flush()

    def start(self) -> None:
        self.nats.start()
        self.say(f"nats-server with JetStream at {self.nats.url} (data in {self.data_dir})")
        env = dict(os.environ)
        env.update(
            ASR_NATS_URL=self.nats.url, ASR_HOST=self.host, ASR_REDIS_URL=self.redis_url,
            PYTHONUNBUFFERED="1", OMP_WAIT_POLICY="PASSIVE",
        )
        env.update(self.extra_env)
        self._env = env
        for i in range(self.edges):
            name = f"ingest-{i + 1}" if self.edges > 1 else "ingest"
            port = self.requested_port + i if self.requested_port else 0
            self.spawn(name, "ingest", {**env, "ASR_PORT": str(port)})
        if self.workers:
            for _ in range(self.vad_workers):
                self.add_worker("vad_worker")
            for _ in range(self.asr_workers):
                self.add_worker("asr_worker")
        self.vad_http_port = self.http_ports.get(self._name("vad_worker", 1, self.vad_workers), 0)
        self.asr_http_port = self.http_ports.get(self._name("asr_worker", 1, self.asr_workers), 0)
        if self.supervise:
            self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
            self._supervisor.start()

    @staticmethod
    def _name(module: str, index: int, count: int) -> str:
        return module if count == 1 and index == 1 else f"{module}-{index}"

    def add_worker(self, module: str) -> str:
        """Starts one more worker of ``module`` (vad_worker or asr_worker); returns its name."""
        with self._procs_lock:
            existing = sum(1 for name in self._specs if name.startswith(module))
            count = self.vad_workers if module == "vad_worker" else self.asr_workers
            name = self._name(module, existing + 1, max(count, existing + 1))
            port = free_port()
            self.http_ports[name] = port
            variable = "ASR_VAD_HTTP_PORT" if module == "vad_worker" else "ASR_ASR_HTTP_PORT"
            defaults = self.asr_env if module == "asr_worker" else {}
            # A stable worker id: a restarted worker takes its predecessor's place in the live set.
            self.spawn(name, module, {**defaults, **self._env, variable: str(port), "ASR_WORKER_ID": name})
            return name

    def spawn(self, name: str, module: str, env: dict[str, str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, start_new_session=True,
        )
        with self._procs_lock:
            self.procs[name] = proc
            self._specs[name] = (module, env)
        assert proc.stdout is not None
        def note_port(line: str, name: str = name) -> None:
            if module == "ingest" and (m := _LISTENING.search(line)):
                self.edge_ports[name] = int(m.group(1))

        pump = threading.Thread(target=_pump, args=(proc.stdout, f"[{name}]", self.out, self._lock, note_port),
                                daemon=True)
        pump.start()
        self._pumps.append(pump)
        return proc

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_EVERY_S):
            try:
                self.restart_dead()
            except CrashLoop as exc:
                self.failure = str(exc)
                self.say(f"{exc}: stopping the stack")
                return

    def restart_dead(self) -> None:
        """Starts again every child that exited, nats-server too (on its port and its data, so the
        roles reconnect and the streams are as they were); CrashLoop if one keeps dying."""
        with self._procs_lock:
            bus = self.nats.proc
            code = bus.poll() if bus is not None else None
            if code is not None and not self._stopping.is_set():
                self._count_restart("nats-server", code)
                self.say(f"nats-server exited with code {code}: restarting it on {self.nats.url}")
                try:
                    self.nats.restart()
                except NatsServerError as exc:
                    raise CrashLoop(f"nats-server could not be started again: {exc}") from None
            for name, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None or self._stopping.is_set():
                    continue
                if code in NOT_RESTARTED:
                    raise CrashLoop(f"{name} exited with code {code}: {NOT_RESTARTED[code]} (see its log above); "
                                    "not restarting it")
                self._count_restart(name, code)
                self.say(f"{name} exited with code {code}: restarting it")
                module, env = self._specs[name]  # its pump closes its output at EOF
                self.spawn(name, module, env)

    def _count_restart(self, name: str, code: int) -> None:
        """Notes a restart of ``name``; CrashLoop once it would be one too many within the window."""
        now = time.monotonic()
        recent = [t for t in self.restarts.get(name, []) if now - t < CRASH_LOOP_WINDOW_S]
        if len(recent) >= CRASH_LOOP_RESTARTS:
            raise CrashLoop(f"{name} exited {len(recent) + 1} times within {CRASH_LOOP_WINDOW_S:.0f} s "
                            f"(last exit code {code})")
        self.restarts[name] = [*recent, now]

    @property
    def port(self) -> int:
        """The first edge's port."""
        return self.edge_port(0)

    def edge_port(self, index: int) -> int:
        """Edge ``index``'s port: PORT + index, or, when started with port 0, the port the OS gave
        it (read from its log; 0 until it has said)."""
        if self.requested_port:
            return self.requested_port + index
        return self.edge_ports.get(f"ingest-{index + 1}" if self.edges > 1 else "ingest", 0)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_children()
            ports = [self.edge_port(i) for i in range(self.edges)]
            if all(ports) and all(_ready(f"http://{self.host}:{port}/readyz") for port in ports):
                return
            time.sleep(0.25)
        raise RuntimeError(f"the stack was not ready within {timeout:.0f} s (see the logs above)")

    def check_children(self) -> None:
        if self.supervise:
            if self.failure:
                raise CrashLoop(self.failure)
            return
        with self._procs_lock:
            for role, proc in self.procs.items():
                code = proc.poll()
                if code is not None:
                    raise RuntimeError(f"{role} exited with code {code} (see its log above)")

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(5.0)
        with self._procs_lock:
            procs = dict(self.procs)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for role, proc in procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{role} did not stop in {STOP_TIMEOUT_S:.0f} s: killing it")
                proc.kill()
                proc.wait()
        for pump in self._pumps:
            pump.join(2.0)
        for proc in procs.values():
            if proc.stdout is not None:
                proc.stdout.close()
        self.nats.stop()


def run(args: argparse.Namespace) -> int:
    device = "cuda" if os.environ.get("ASR_DEVICE") == "cuda" else "cpu"
    pool = sizing.asr_pool(sizing.usable_cores(), device=device)
    if args.asr_workers is None:
        args.asr_workers = pool.processes
    if args.vad_workers < 1 or args.asr_workers < 1:
        print("asr dev: --vad-workers and --asr-workers need at least 1 each", file=sys.stderr)
        return 2
    if args.edges < 1 or (args.edges > 1 and not args.redis_url):
        print("asr dev: --edges N needs N >= 1, and --redis-url when N > 1 (edges share sessions there)",
              file=sys.stderr)
        return 2
    try:
        load()  # what every role will read: refused here once, not by each child in turn
    except SettingsError as exc:
        print(f"asr dev: {exc}", file=sys.stderr)
        return 2
    for port in range(args.port, args.port + args.edges) if args.port else ():
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
    stack = Stack(args.host, args.port, data_dir, edges=args.edges, redis_url=args.redis_url,
                  vad_workers=args.vad_workers, asr_workers=args.asr_workers, supervise=True,
                  asr_env=pool.env())
    stack.say(f"ASR pool: {args.asr_workers} process(es) x {pool.concurrency} job(s) x {pool.cpu_threads} "
              f"thread(s) on {sizing.usable_cores()} usable core(s) ({device})")
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    old_term = signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        stack.start()
        stack.wait_ready()
        for i in range(args.edges):
            stack.say(f"ready: stream audio to ws://{args.host}:{stack.edge_port(i)}/v1/stream")
        stack.say(f"try: asr stream FILE.wav --url ws://{args.host}:{stack.port}/v1/stream")
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
