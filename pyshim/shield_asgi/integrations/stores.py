"""State shared by the checks of one deployment (docs/protocol.md §1.1, §1.4): consumed nonces and
evidence, replay windows, sessions.  One interface, two implementations: in-process
(``MemoryStateStore``, one worker) and Redis (``RedisStateStore``, several workers or
replicas).

The interface (all coroutines): ``consume(key, ttl) -> bool`` (True when not consumed before,
and now is), ``is_consumed(key) -> bool``, ``put_session(sid, data, ttl)``,
``get_session(sid) -> (data, expires_at) | None``, ``advance_session(sid, t_ms) -> bool``
(atomically: the proof time only moves forward).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Optional

from shield_asgi.attestation import _b64url, _b64url_decode
from shield_asgi.integrations.errors import AttestationError

__all__ = ["MemoryStateStore", "RedisStateStore"]


class MemoryStateStore:
    """In-process state with TTLs (one worker).  Thread-safe; bounded by expiry sweeps."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._lock = threading.Lock()
        self._once: dict[bytes, float] = {}
        self._sessions: dict[str, tuple[dict, float]] = {}
        self._max = max_entries

    def _sweep(self, now: float) -> None:
        if len(self._once) > self._max // 2:
            for k in [k for k, exp in self._once.items() if exp <= now]:
                del self._once[k]
        if len(self._sessions) > self._max // 2:
            for k in [k for k, (_, exp) in self._sessions.items() if exp <= now]:
                del self._sessions[k]

    async def consume(self, key: bytes, ttl: float) -> bool:
        """True when `key` was not consumed before (and is now, for ttl seconds)."""
        now = time.time()
        with self._lock:
            self._sweep(now)
            exp = self._once.get(key)
            if exp is not None and exp > now:
                return False
            if len(self._once) >= self._max:
                raise AttestationError("overloaded", "replay cache full")
            self._once[key] = now + ttl
            return True

    async def is_consumed(self, key: bytes) -> bool:
        with self._lock:
            exp = self._once.get(key)
            return exp is not None and exp > time.time()

    async def put_session(self, sid: str, data: dict, ttl: float) -> None:
        with self._lock:
            self._sessions[sid] = (dict(data), time.time() + ttl)

    async def get_session(self, sid: str) -> Optional[tuple[dict, float]]:
        with self._lock:
            v = self._sessions.get(sid)
            return (dict(v[0]), v[1]) if v else None

    async def advance_session(self, sid: str, t_ms: int) -> bool:
        """Atomically: last_t := t_ms only if t_ms > last_t.  True when advanced."""
        with self._lock:
            v = self._sessions.get(sid)
            if not v or t_ms <= v[0].get("last_t", -1):
                return False
            v[0]["last_t"] = t_ms
            return True


class RedisStateStore:
    """State in Redis (several workers or replicas): SET NX EX for consumption, a Lua script
    for the monotonic proof counter, hashes with TTLs for sessions.  Needs redis-py."""

    _ADVANCE = (
        "local v = redis.call('HGET', KEYS[1], 'last_t') "
        "if v == false then if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end v = '-1' end "
        "if tonumber(ARGV[1]) > tonumber(v) then redis.call('HSET', KEYS[1], 'last_t', ARGV[1]) "
        "return 1 end return 0"
    )

    def __init__(self, url: str, prefix: str = "shield:") -> None:
        import redis.asyncio as aioredis  # deferred: optional dependency

        self._r = aioredis.from_url(url)
        self._p = prefix
        self._advance = self._r.register_script(self._ADVANCE)

    async def consume(self, key: bytes, ttl: float) -> bool:
        return bool(
            await self._r.set(self._p + "once:" + key.hex(), b"1", nx=True, ex=max(1, int(ttl)))
        )

    async def is_consumed(self, key: bytes) -> bool:
        return bool(await self._r.exists(self._p + "once:" + key.hex()))

    async def put_session(self, sid: str, data: dict, ttl: float) -> None:
        k = self._p + "sess:" + sid
        enc = {
            f: (json.dumps(v) if not isinstance(v, bytes) else "b:" + _b64url(v))
            for f, v in data.items()
        }
        async with self._r.pipeline(transaction=True) as p:
            p.hset(k, mapping=enc)
            p.expire(k, max(1, int(ttl)))
            await p.execute()

    async def get_session(self, sid: str) -> Optional[tuple[dict, float]]:
        k = self._p + "sess:" + sid
        raw = await self._r.hgetall(k)
        if not raw:
            return None
        ttl = await self._r.ttl(k)
        out = {}
        for f, v in raw.items():
            f, v = f.decode(), v.decode()
            out[f] = _b64url_decode(v[2:]) if v.startswith("b:") else json.loads(v)
        return out, time.time() + max(0, ttl)

    async def advance_session(self, sid: str, t_ms: int) -> bool:
        return bool(await self._advance(keys=[self._p + "sess:" + sid], args=[t_ms]))
