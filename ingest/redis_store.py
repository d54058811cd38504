"""Sessions in Redis: exact cluster-wide admission, ownership, orphan cleanup and resume.

Keys (one Redis primary; the scripts derive per-edge keys, so Redis Cluster is not supported):

    asr:count                     sessions counted cluster-wide (INCR/DECR only inside scripts)
    asr:edges                     edge ids that have held sessions
    asr:edge:<edge>:sessions      the sessions counted on that edge (its count is SCARD)
    asr:edge:<edge>:alive         the edge's heartbeat, with a TTL
    asr:session:<id>              hash: edge_id, owner, epoch, state, token_hash, sample_rate,
                                  created_at, last_activity_at, audio_bytes_received,
                                  transcripts_sent, final_index_released

Invariant: a session is counted exactly when it is a member of its owner's sessions set, and
``asr:count`` is the sum of those sets. Every change to counts is one Lua script, so admission
is O(1) and atomic and a session is released exactly once however it ends.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common import logs
from ingest.session_store import RESUMABLE, Admit, ResumeError, SessionRecord, check_sample_rate, token_matches

log = logging.getLogger(__name__)

GLOBAL = "asr:count"
EDGES = "asr:edges"


def _str(value: bytes | str) -> str:
    """The client decodes responses; this only narrows redis-py's bytes | str for the type checker."""
    return value.decode() if isinstance(value, bytes) else value


def _edge_sessions(edge: str) -> str:
    return f"asr:edge:{edge}:sessions"


def _edge_alive(edge: str) -> str:
    return f"asr:edge:{edge}:alive"


def _session(session_id: str) -> str:
    return f"asr:session:{session_id}"


# KEYS: global, my sessions set, edges, session hash
# ARGV: max_global, max_edge, session_id, edge, token_hash, sample_rate, now, owner
_ADMIT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return 'global_full' end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 'edge_full' end
redis.call('INCR', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[4], 'edge_id', ARGV[4], 'state', 'created', 'token_hash', ARGV[5],
  'sample_rate', ARGV[6], 'created_at', ARGV[7], 'last_activity_at', ARGV[7],
  'audio_bytes_received', '0', 'transcripts_sent', '0', 'owner', ARGV[8])
redis.call('PERSIST', KEYS[4])
return 'ok'
"""

# KEYS: global, session hash.  ARGV: session_id, edge, new state, now, ttl, owner ('' = any)
# Releases only if the session is counted on that edge and held by that owner (a connection; ''
# for orphan cleanup). A missing hash still releases the count, so counts cannot leak.
_RELEASE = """
local set = 'asr:edge:' .. ARGV[2] .. ':sessions'
if redis.call('SISMEMBER', set, ARGV[1]) == 0 then return 0 end
local holder = redis.call('HGET', KEYS[2], 'owner')
if ARGV[6] ~= '' and holder and holder ~= ARGV[6] then return 0 end
redis.call('SREM', set, ARGV[1])
local owner = redis.call('HGET', KEYS[2], 'edge_id')
if owner and owner ~= ARGV[2] then return 0 end
redis.call('DECR', KEYS[1])
if owner then
  redis.call('HSET', KEYS[2], 'state', ARGV[3], 'last_activity_at', ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return 1
"""

# KEYS: global, session hash, my sessions set, edges, fresh session hash.
# ARGV: session_id, me, now, owner, fresh session id, ttl
# The swap: the asking connection's fresh session (counted here, held by owner) gives its place to
# the resumed one in the same step, so a resume never needs a second free place and caps hold.
# Returns the new epoch, or why not.
_RESUME = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 'unknown' end
local state = redis.call('HGET', KEYS[2], 'state')
if state == 'closed' then return 'closed' end
if redis.call('SISMEMBER', KEYS[3], ARGV[5]) == 0 or redis.call('HGET', KEYS[5], 'owner') ~= ARGV[4] then
  return 'no_fresh'
end
redis.call('SREM', KEYS[3], ARGV[5])
redis.call('DECR', KEYS[1])
redis.call('HSET', KEYS[5], 'state', 'closed', 'last_activity_at', ARGV[3])
redis.call('EXPIRE', KEYS[5], ARGV[6])
local owner = redis.call('HGET', KEYS[2], 'edge_id')
if owner and redis.call('SREM', 'asr:edge:' .. owner .. ':sessions', ARGV[1]) == 1 then
  redis.call('DECR', KEYS[1])
end
redis.call('INCR', KEYS[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[2])
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
redis.call('HSET', KEYS[2], 'edge_id', ARGV[2], 'state', 'active', 'last_activity_at', ARGV[3], 'owner', ARGV[4])
redis.call('PERSIST', KEYS[2])
return epoch
"""

# KEYS: session hash.
# ARGV: owner, state, last_activity_at, audio_bytes_received, transcripts_sent, final_index_released
_UPDATE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'last_activity_at', ARGV[3],
  'audio_bytes_received', ARGV[4], 'transcripts_sent', ARGV[5], 'final_index_released', ARGV[6])
return 1
"""

# KEYS: edges.  ARGV: edge.  Forgets an edge with no sessions left.
_FORGET_EDGE = """
if redis.call('SCARD', 'asr:edge:' .. ARGV[1] .. ':sessions') == 0 then
  redis.call('SREM', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


class RedisSessionStore:
    def __init__(
        self,
        redis: str | aioredis.Redis,
        edge_id: str,
        max_per_edge: int,
        max_global: int,
        *,
        retention_s: float,
        orphan_timeout_s: float,
        heartbeat_s: float,
    ) -> None:
        self.edge_id = edge_id
        self.max_per_edge = max_per_edge
        self.max_global = max_global
        self.retention_s = int(retention_s)
        self.orphan_timeout_s = orphan_timeout_s
        self.heartbeat_ttl_ms = int(heartbeat_s * 3 * 1000)
        # A URL, or a client made by common.redis_client.connect (which follows Sentinel failovers);
        # either way responses are decoded to str.
        self.redis = aioredis.Redis.from_url(redis, decode_responses=True) if isinstance(redis, str) else redis
        self._admit = self.redis.register_script(_ADMIT)
        self._release = self.redis.register_script(_RELEASE)
        self._resume = self.redis.register_script(_RESUME)
        self._update = self.redis.register_script(_UPDATE)
        self._forget = self.redis.register_script(_FORGET_EDGE)

    async def start(self) -> None:
        """Sessions still counted on this edge id belong to a previous run of it: release them."""
        await self.redis.ping()
        stale = [_str(v) for v in await self.redis.smembers(_edge_sessions(self.edge_id))]
        for session_id in stale:
            await self._release(keys=[GLOBAL, _session(session_id)],
                                args=[session_id, self.edge_id, "interrupted", time.time(), self.retention_s, ""])
        if stale:
            log.warning("released %d sessions left by a previous run of edge %s", len(stale), self.edge_id)
        await self.heartbeat()

    async def admit(self, record: SessionRecord) -> Admit:
        result = await self._admit(
            keys=[GLOBAL, _edge_sessions(self.edge_id), EDGES, _session(record.session_id)],
            args=[self.max_global, self.max_per_edge, record.session_id, self.edge_id,
                  record.resume_token_hash, record.sample_rate, record.created_at, record.owner],
        )
        return Admit(result)

    async def release(self, session_id: str, owner: str, state: str) -> bool:
        released = await self._release(
            keys=[GLOBAL, _session(session_id)],
            args=[session_id, self.edge_id, state, time.time(), self.retention_s, owner],
        )
        return bool(released)

    async def resume(self, session_id: str, token: str, owner: str, replaces: str,
                     sample_rate: int = 16000) -> SessionRecord:
        if session_id == replaces:
            raise ResumeError("A connection cannot resume its own session")
        stored = {_str(k): _str(v) for k, v in (await self.redis.hgetall(_session(session_id))).items()}
        # The token is checked before anything else is revealed, in constant time.
        if not stored or not token_matches(token, stored.get("token_hash", "")):
            raise ResumeError("Unknown session or wrong resume token")
        if stored.get("state") not in RESUMABLE:
            raise ResumeError(f"Session already {stored.get('state')}; start a new session")
        check_sample_rate(int(stored.get("sample_rate", 16000)), sample_rate)
        result = await self._resume(
            keys=[GLOBAL, _session(session_id), _edge_sessions(self.edge_id), EDGES, _session(replaces)],
            args=[session_id, self.edge_id, time.time(), owner, replaces, self.retention_s],
        )
        if result == "unknown":
            raise ResumeError("Unknown session or wrong resume token")
        if result == "closed":
            raise ResumeError("Session already closed; start a new session")
        if not isinstance(result, int):
            raise ResumeError("reconnect must come from an admitted connection")
        return SessionRecord(
            session_id=session_id,
            edge_id=self.edge_id,
            resume_token_hash=stored["token_hash"],
            owner=owner,
            sample_rate=int(stored.get("sample_rate", 16000)),
            state="active",
            created_at=float(stored.get("created_at", 0)),
            last_activity_at=time.time(),
            audio_bytes_received=int(stored.get("audio_bytes_received", 0)),
            transcripts_sent=int(stored.get("transcripts_sent", 0)),
            final_index_released=int(stored.get("final_index_released", 0)),
            epoch=result,
        )

    async def update(self, record: SessionRecord) -> None:
        await self._update(
            keys=[_session(record.session_id)],
            args=[record.owner, record.state, record.last_activity_at, record.audio_bytes_received,
                  record.transcripts_sent, record.final_index_released],
        )

    async def counts(self) -> tuple[int, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(GLOBAL)
            pipe.scard(_edge_sessions(self.edge_id))
            total, own = await pipe.execute()
        return int(total or 0), int(own)

    async def states(self) -> dict[str, int]:
        """States of this edge's sessions (cluster-wide states would need a scan)."""
        sessions = [_str(v) for v in await self.redis.smembers(_edge_sessions(self.edge_id))]
        out: dict[str, int] = {}
        if sessions:
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid in sessions:
                    pipe.hget(_session(sid), "state")
                for state in await pipe.execute():
                    out[state or "unknown"] = out.get(state or "unknown", 0) + 1
        return out

    async def heartbeat(self) -> None:
        await self.redis.set(_edge_alive(self.edge_id), "1", px=self.heartbeat_ttl_ms)

    async def cleanup_orphans(self) -> int:
        """Releases sessions of edges whose heartbeat is gone, once idle for the orphan timeout."""
        released = 0
        now = time.time()
        for edge in [_str(v) for v in await self.redis.smembers(EDGES)]:
            if edge == self.edge_id or await self.redis.exists(_edge_alive(edge)):
                continue
            for session_id in [_str(v) for v in await self.redis.smembers(_edge_sessions(edge))]:
                last = await self.redis.hget(_session(session_id), "last_activity_at")
                if last is not None and now - float(last) < self.orphan_timeout_s:
                    continue
                if await self._release(keys=[GLOBAL, _session(session_id)],
                                       args=[session_id, edge, "interrupted", now, self.retention_s, ""]):
                    released += 1
                    logs.for_session(log, session_id).info("released orphan session %s of dead edge %s",
                                                           session_id, edge)
            await self._forget(keys=[EDGES], args=[edge])
        return released

    async def close(self) -> None:
        try:
            await self.redis.delete(_edge_alive(self.edge_id))
        except RedisError as exc:
            log.warning("could not remove the heartbeat of edge %s: %s", self.edge_id, exc)
        await self.redis.aclose()
