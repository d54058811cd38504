"""Revisions decoded in a child process at a low CPU priority, so that they never hold a slot.

A revision (`Transcriber.revise`) decodes two finals' audio with the finals' beam: about 1.2 times a
final's decode. Run in the worker's own slot, a final fetched meanwhile waited for it when every
other slot was busy too, and that wait is what set the final latency's p95 under load (figure 1
in docs/benchmarks.md: p95 1.48-1.66 s at 12 streams with revisions, 1.06 s without them). Here the
worker hands revisions to one child process with its own copy of the model, started at nice
``revision_nice`` (19 by default): the kernel gives it the CPU that finals and partials leave, so a
final starts at once and runs at nearly full speed beside it, and revisions come later under load
instead of delaying finals.

The child is started with ``spawn`` (the worker runs threads and an event loop, which ``fork``
would copy half-way), loads the model once, and decodes one revision at a time. A child that died
(killed, out of memory) fails the revision in hand; the next one starts a new child. A child whose
worker died (killed, so it could not stop it) exits within ``PARENT_POLL_S``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from asr_worker.transcriber import Recognition, Transcriber, TranscriberOptions

log = logging.getLogger(__name__)

PARENT_POLL_S = 1.0
"""How often the child looks whether its worker is still there."""
CHILD_EXIT_S = 2.0
"""Longest wait, when the reviser stops, for its child to exit by itself (and then once more after
terminating it). Idle, it exits in about 0.1 s; at nice 19 on a machine kept busy by others it
took 3-7 s in a scratch test, and is then terminated."""

_transcriber: Transcriber | None = None  # in the child: its model


def _start_child(options: TranscriberOptions, nice: int) -> None:
    """Initialiser of the child: watch its worker, load the model, then lower its CPU priority (a
    model loaded at nice 19 on a busy machine, as after a worker's restart under load, would wait
    for a free core)."""
    global _transcriber
    threading.Thread(target=_exit_with, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    _transcriber = Transcriber(options)
    os.nice(nice)


def _exit_with(parent: int) -> None:
    """Ends the child once ``parent`` is gone (it is then re-parented): nothing else would, as the
    child holds both ends of the pipe it waits on."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


def _revise_in_child(pcm: bytes, following: bytes, prompt: str, following_text: str) -> Recognition:
    assert _transcriber is not None, "the child's initialiser did not run"
    return _transcriber.revise(pcm, following, prompt=prompt, following_text=following_text)


class BackgroundReviser:
    """`Transcriber.revise` in a child process at nice ``nice`` (one revision at a time)."""

    def __init__(self, options: TranscriberOptions, nice: int) -> None:
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be 0-19, got {nice}")
        self.options = options
        self.nice = nice
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_child, initargs=(self.options, self.nice))
        return self._pool

    def start(self) -> None:
        """Starts the child and loads its model now (else the first revision pays for it)."""
        self._executor().submit(int, 0).result()

    async def revise(self, pcm: bytes, following: bytes, *, prompt: str = "", following_text: str = "") -> Recognition:
        """The revision of ``pcm`` with ``following`` after it, decoded in the child."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), _revise_in_child, pcm, following, prompt,
                                              following_text)
        except BrokenProcessPool:
            log.warning("the revision process died; the next revision starts a new one")
            self.shutdown()
            raise

    def shutdown(self) -> None:
        """Stops the child: queued revisions are dropped, the one in hand may finish within
        ``CHILD_EXIT_S``, then the child is terminated. A child that exits by itself releases what
        it holds; one terminated right after a revision left a semaphore behind, which the
        interpreter reported at exit as "leaked semaphore objects", once per worker."""
        pool, self._pool = self._pool, None
        if pool is not None:
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)  # the child exits after the job in hand
            deadline = time.monotonic() + CHILD_EXIT_S
            for process in processes:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    process.terminate()
                    process.join(CHILD_EXIT_S)
            pool.shutdown(wait=True)  # the child is gone: only the pool's own thread is left to end

    def pids(self) -> list[int]:
        """The child's process id (none before `start` or after `shutdown`)."""
        processes = getattr(self._pool, "_processes", None) or {}
        return [p.pid for p in processes.values() if p.pid is not None]
