"""Speculative finals: a final decoded before its endpoint, kept for the final job to take.

A final's audio is known once the trailing pad of non-speech (``trailing_pad_ms``) follows the
last voiced frame, but the endpoint comes only after ``endpointing_ms`` of it (with the defaults
120-380 ms later, 280-680 ms in the dictation profile). The VAD worker then sends a speculative
job (a partial job marked ``speculative``, holding the audio, acoustic context and
``final_index`` the final will have). Any ASR worker decodes it with the final's settings (beam,
prompt, context), publishes the text as a partial and stores the recognition here, in the KV
bucket ``BUCKET``, under ``<session>.f<final_index>`` with a digest of everything the decode
depended on.

The worker that takes the final job looks its key up (`SpeculationStore.take`):

* a stored recognition with the same digest is the final: nothing is decoded twice;
* a speculation with the same digest still running on some worker is waited for, at most
  ``wait_s`` (a worker killed mid-decode costs the final that much, never the final itself);
  the waiting final's decoding slot serves other jobs meanwhile. The speculating worker says on
  core NATS (``subjects.speculation_stored``) when the entry is decided, so the final reads the
  bucket again then, not every few milliseconds; a notice that is lost costs at most ``POLL_S``;
* no entry, another digest (speech resumed, the prompt changed, the bucket lost it) or a wait
  that ran out: the final is decoded as usual, and says so in the bucket (`final_taken`), so that
  a speculative job of it fetched later (it waited for a slot longer than the final did) is
  skipped instead of decoded for nothing.

A speculation can only save time: the final never depends on it, and a wrong one is never used
because its digest differs. Entries expire after ``speculation_ttl_s`` (`common.bus_timing`); the
bucket is a cache, kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from enum import StrEnum

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from asr_worker.transcriber import Recognition, TranscriberOptions
from common import bus, subjects
from common.bus_timing import TIMING
from common.kv import ensure_bucket
from common.messages import AsrJob

log = logging.getLogger(__name__)

BUCKET = subjects.SPECULATION_BUCKET
POLL_S = 0.25
"""How often a waiting final looks at a running speculation without being told it is decided."""
NO_NOTICE_POLL_S = 0.01
"""The same for a store with no NATS connection to be told on."""


class Outcome(StrEnum):
    USED = "used"  # the stored recognition was the final's
    WAITED = "waited"  # used, after waiting for the speculation to finish
    TIMEOUT = "timeout"  # waited wait_s in vain; decoded
    NONE = "none"  # no speculation with this input; decoded


class _Entry(msgspec.Struct, frozen=True):
    digest: str
    recognition: Recognition | None = None  # None: still being decoded
    final_taken: bool = False  # the final found no speculation and is decoded: a later one is moot


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Entry)


def key(session_id: str, final_index: int) -> str:
    return f"{session_id}.f{final_index}"


def decoder_id(options: TranscriberOptions) -> str:
    """The decoder's options as text that is the same in every worker process: sets are sorted
    (their repr follows the process's string hash seed, which differs between processes)."""
    return json.dumps(dataclasses.asdict(options), sort_keys=True, default=sorted)


def digest(job: AsrJob, prompt: str, decoder: str) -> str:
    """What a final's decode depends on: its audio, its acoustic context, its prompt and the
    decoder's options (``decoder``: `decoder_id`)."""
    h = hashlib.blake2b(digest_size=16)
    for part in (job.audio, job.context_audio, prompt.encode(), decoder.encode()):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


async def bucket(js: JetStreamContext, replicas: int | None = None) -> KeyValue:
    """The bucket, in memory (a cache: losing it costs only time); ``common.streams`` creates it
    (again after a reconnect: a lone nats-server that restarts loses it)."""
    return await ensure_bucket(js, BUCKET, TIMING.speculation_ttl_s, replicas, memory=True)


class SpeculationStore:
    """Speculative recognitions in ``kv``; a final waits at most ``wait_s`` for a running one.
    With ``nc``, a decided entry is announced and a waiting final listens for it."""

    def __init__(self, kv: KeyValue, wait_s: float, nc: NATS | None = None) -> None:
        self.kv = kv
        self.wait_s = wait_s
        self.nc = nc

    async def _decided(self, name: str) -> None:
        if self.nc is not None:
            await self.nc.publish(subjects.speculation_stored(name), b"")

    async def started(self, name: str, dig: str) -> None:
        """A speculation of ``dig`` is being decoded (a final of the same input will wait)."""
        await self.kv.put(name, _encoder.encode(_Entry(dig)))

    async def finished(self, name: str, dig: str, recognition: Recognition) -> None:
        await self.kv.put(name, _encoder.encode(_Entry(dig, recognition)))
        await self._decided(name)

    async def failed(self, name: str, dig: str) -> None:
        """The speculation of ``dig`` will not finish (its decode failed or was cancelled): a final
        waiting for it decodes at once. A newer speculation of the same final is left alone."""
        found = await self._read(name)
        if found is not None and found[0].digest == dig and found[0].recognition is None:
            with contextlib.suppress(KeyWrongLastSequenceError):  # replaced meanwhile: not ours
                await self.kv.delete(name, last=found[1])
                await self._decided(name)

    async def final_taken(self, name: str) -> None:
        """The final is decoded without a speculation: one fetched after this is not worth decoding."""
        await self.kv.put(name, _encoder.encode(_Entry("", final_taken=True)))

    async def moot(self, name: str) -> bool:
        """The final of ``name`` is already being decoded (`final_taken`): skip its speculation."""
        entry = await self._get(name)
        return entry is not None and entry.final_taken

    async def take(self, name: str, dig: str, waiting: Callable[[], None] | None = None,
                   ) -> tuple[Recognition | None, Outcome]:
        """The speculative recognition of this input, if there is (or soon will be) one.
        ``waiting`` is called once, when it turns out the speculation is still running."""
        deadline = time.monotonic() + self.wait_s
        waited = False
        told = asyncio.Event()
        notices: Subscription | None = None
        try:
            while True:
                entry = await self._get(name)
                if entry is None or entry.digest != dig:
                    return None, Outcome.NONE
                if entry.recognition is not None:
                    return entry.recognition, Outcome.WAITED if waited else Outcome.USED
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, Outcome.TIMEOUT
                if not waited and waiting is not None:
                    waiting()
                if self.nc is None:
                    await asyncio.sleep(min(NO_NOTICE_POLL_S, left))
                elif notices is None:  # listen first, then look again: a notice in between is not missed
                    notices = await self.nc.subscribe(subjects.speculation_stored(name), cb=bus.setter(told))
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(told.wait(), min(POLL_S, left))
                    told.clear()
                waited = True
        finally:
            if notices is not None:
                with contextlib.suppress(nats.errors.Error):
                    await notices.unsubscribe()

    async def _get(self, name: str) -> _Entry | None:
        found = await self._read(name)
        return found[0] if found is not None else None

    async def _read(self, name: str) -> tuple[_Entry, int] | None:
        """The entry and its revision; None when there is none (deleted, expired, unreadable)."""
        try:
            found = await self.kv.get(name)
        except KeyNotFoundError:
            return None
        if not found.value:
            return None
        try:
            return _decoder.decode(found.value), found.revision or 0
        except msgspec.DecodeError:
            log.warning("speculation %s is unreadable; decoding the final", name)
            return None
