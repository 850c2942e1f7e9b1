"""Client attestation for ASGI apps (protocol.md §1–§3): ``AttestationMiddleware``,
``@requires_attestation``, ``attestation_required`` and an OpenAPI security scheme.

Under the ``shield`` server with ``--attest-*`` flags, the server has already verified the
evidence natively and put the result in ``scope["state"]["attestation"]`` (and marked
``scope["extensions"]["shield.attestation"]``); the middleware then only re-checks its own
policy against that result (never re-verifying the evidence, which would trip
``nonce_replayed``).  Under another ASGI server (uvicorn, granian, hypercorn) the middleware
runs the protocol itself with the same C code through ``shield_asgi._native``: the nonce endpoint,
header mode and session mode (HPKE-sealed session key, proof MAC, Content-Digest checked as
the body streams).  Nonce, replay and session state live in-process, or in Redis with
``state_url="redis://…"`` (needed, with a shared ``nonce_secret``, for several workers or
replicas).
"""


import asyncio
import base64
import functools
import hashlib
import hmac
import inspect
import json
import logging
import os
import secrets
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional

from shield_asgi.attestation import ERROR_CLASSES, AttestationResult, check_policy, policy_text
from shield_asgi.integrations.providers import (
    AttestationProvider, canonical_tee_type, provider_for,
)

__all__ = [
    "AttestationMiddleware", "requires_attestation", "attestation_required", "AttestationError",
    "attestation_security", "add_attestation_exception_handler", "MemoryStateStore",
    "RedisStateStore", "NONCE_PATH", "ATTEST_PATH",
]

log = logging.getLogger("shield_asgi.integrations")

NONCE_PATH = "/.well-known/shield/nonce"
ATTEST_PATH = "/.well-known/shield/attest"
NONCE_TTL = 60
PROOF_WINDOW_MS = 60_000
SESSION_GRACE = 600  # seconds an ended session is still recognised (session_expired)
SESSION_INFO = b"shield-session-v1"
MAX_EVIDENCE_HEADER = 64 * 1024
MAX_ATTEST_BODY = 256 * 1024

_STATUS = {
    "attestation_required": 401, "attestation_invalid": 401, "attestation_failed": 401,
    "attestation_policy": 403, "attestation_unavailable": 503,
}


# ---------------------------------------------------------------------------------------------
# Errors (protocol.md §3)
# ---------------------------------------------------------------------------------------------

class AttestationError(Exception):
    """One §3 error: ``reason`` decides the class and the status.  Not an HTTPException on
    purpose: FastAPI would answer {"detail": …}; AttestationMiddleware (or the handler that
    attestation_required registers) answers with the exact §3 body instead."""

    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason
        self.error = ERROR_CLASSES.get(reason, "attestation_invalid")
        self.message = message or reason
        self.status_code = _STATUS[self.error]
        self.headers = {"Retry-After": "1"} if reason == "overloaded" else None
        super().__init__(f"{self.error}: {self.reason}: {self.message}")

    def body(self) -> dict:
        return {"error": self.error, "reason": self.reason, "message": self.message}


def _b64d(s: str | bytes) -> bytes:
    if isinstance(s, bytes):
        s = s.decode("ascii")
    s = s.strip()
    if not s or len(s) % 4 == 1:
        raise ValueError("bad base64")
    s = s.replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


async def _send_error(send, err: AttestationError) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if err.reason == "overloaded":
        headers.append((b"retry-after", b"1"))
    if err.status_code == 401:
        headers.append((b"www-authenticate", b'Attestation realm="shield"'))
    await send({"type": "http.response.start", "status": err.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send, status: int, obj: dict, allow: Optional[bytes] = None) -> None:
    body = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
    if allow is not None:  # RFC 9110 §15.5.6: a 405 says which methods the resource allows
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> Optional[str]:
    for k, v in scope.get("headers") or ():
        if k.lower() == name:
            return v.decode("latin-1")
    return None


# ---------------------------------------------------------------------------------------------
# Shared state: consumed nonces, replay windows, sessions
# ---------------------------------------------------------------------------------------------

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
        return bool(await self._r.set(self._p + "once:" + key.hex(), b"1", nx=True,
                                      ex=max(1, int(ttl))))

    async def is_consumed(self, key: bytes) -> bool:
        return bool(await self._r.exists(self._p + "once:" + key.hex()))

    async def put_session(self, sid: str, data: dict, ttl: float) -> None:
        k = self._p + "sess:" + sid
        enc = {f: (json.dumps(v) if not isinstance(v, bytes) else "b:" + _b64e(v))
               for f, v in data.items()}
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
            out[f] = _b64d(v[2:]) if v.startswith("b:") else json.loads(v)
        return out, time.time() + max(0, ttl)

    async def advance_session(self, sid: str, t_ms: int) -> bool:
        return bool(await self._advance(keys=[self._p + "sess:" + sid], args=[t_ms]))


# ---------------------------------------------------------------------------------------------
# The protocol (used by the middleware under non-shield servers)
# ---------------------------------------------------------------------------------------------

def _load_secret(nonce_secret) -> tuple[bytes, bool]:
    if nonce_secret is None:
        env = os.environ.get("SHIELD_STATE_SECRET_FILE")
        if env:
            nonce_secret = env
    if nonce_secret is None:
        return secrets.token_bytes(32), False
    if isinstance(nonce_secret, (bytes, bytearray)):
        s = bytes(nonce_secret)
    else:
        with open(nonce_secret, "rb") as f:
            s = f.read()
    if len(s) < 32:
        raise ValueError("the nonce secret must hold at least 32 random bytes")
    return s, True


class _Protocol:
    def __init__(self, *, provider: Optional[AttestationProvider], tee_types, policy,
                 nonce_secret, state_url, store, trust_simulated, session_ttl, clock,
                 max_concurrent) -> None:
        from shield_asgi import _native  # noqa: F401 - fail early when the extension is missing

        self.provider = provider
        self.tee_types = tee_types
        self.policy = policy_text(policy)
        self.secret, shared = _load_secret(nonce_secret)
        if store is None:
            store = RedisStateStore(state_url) if state_url else MemoryStateStore()
        self.store = store
        self.trust_simulated = trust_simulated or bool(provider and provider.trust_simulated)
        self.session_ttl = session_ttl
        self.clock = clock
        # §1.3: a "timestamp" policy lets nitro/maa/gcp header-mode evidence come without a
        # nonce (document age within max_age; the signed content is consumed instead)
        try:
            doc = json.loads(self.policy) if self.policy else {}
        except ValueError:
            doc = {}  # the verifier reports a bad policy itself
        self.timestamp_ok = isinstance(doc, dict) and doc.get("freshness") == "timestamp"
        self.max_age = int(doc.get("max_age") or 300) if isinstance(doc, dict) else 300
        self._sem = asyncio.Semaphore(max_concurrent)
        self._max_concurrent = max_concurrent
        if not shared or not state_url:
            workers = os.environ.get("WEB_CONCURRENCY") or os.environ.get("UVICORN_WORKERS")
            if workers and workers != "1":
                log.warning("AttestationMiddleware with several workers needs a shared "
                            "nonce_secret file and state_url=redis://… (nonces and sessions "
                            "are per process otherwise)")

    def new_nonce(self) -> bytes:
        from shield_asgi import _native

        return _native.nonce_issue(self.secret, self.clock())

    def _type(self, declared: Optional[str]) -> str:
        t = canonical_tee_type(declared) if declared else None
        if declared and t is None:
            raise AttestationError("unsupported_type", f"unknown evidence type {declared!r}")
        if t is None and self.provider is not None:
            t = self.provider.tee_type
        if t is None:
            raise AttestationError("malformed", "X-Attestation-Type is required")
        if self.tee_types and t not in self.tee_types and not (
                t == "simulated" and self.trust_simulated):
            raise AttestationError("unsupported_type", f"evidence type {t} is not accepted here")
        return t

    async def _check_nonce(self, nonce_s: Optional[str]) -> bytes:
        from shield_asgi import _native

        if not nonce_s:
            raise AttestationError("nonce_invalid", "the nonce is missing")
        try:
            nonce = _b64d(nonce_s)
        except (ValueError, TypeError):
            raise AttestationError("nonce_invalid", "the nonce is not base64url") from None
        bad = _native.nonce_check(self.secret, nonce, self.clock(), NONCE_TTL)
        if bad:
            raise AttestationError(bad, "the nonce is not one this deployment issued"
                                   if bad == "nonce_invalid" else "the nonce has expired")
        if await self.store.is_consumed(b"n" + nonce):
            raise AttestationError("nonce_replayed", "the nonce was already used")
        return nonce

    async def verify(self, evidence: bytes | str, tee_type: str, nonce: Optional[bytes],
                     public_key: bytes) -> AttestationResult:
        """nonce None: timestamp freshness (§1.3), replay keyed by the signed content."""
        from shield_asgi import _native

        if self._sem.locked():
            raise AttestationError("overloaded", "too many verifications in progress")
        kw = self.provider.verify_kwargs() if self.provider else {}
        async with self._sem:
            loop = asyncio.get_running_loop()
            # the native call releases the GIL; a thread keeps the event loop responsive
            r = await loop.run_in_executor(None, functools.partial(
                _native.verify, evidence, tee_type, at=self.clock(), policy=self.policy,
                nonce=nonce, public_key=public_key if nonce is not None else None,
                allow_debug=bool(self.provider and self.provider.allow_debug),
                trust_simulated=self.trust_simulated, **kw))
        if r.verified and self.provider is not None:
            failure = self.provider.check(r)
            if failure:
                raise AttestationError(*failure)
        if not r.verified:
            raise AttestationError(r.reason or "malformed", r.message or "")
        # consumed only by a successful verification (§1.1); the atomic SET NX decides races
        if nonce is None:
            if not r.evidence_sha256:
                raise AttestationError("malformed", "no signed content to key the replay cache")
            key, ttl, what = b"e" + bytes.fromhex(r.evidence_sha256), self.max_age + 10, "evidence"
        else:
            key, ttl, what = b"n" + nonce, NONCE_TTL + 10, "nonce"
        if not await self.store.consume(key, ttl):
            raise AttestationError("nonce_replayed", f"the {what} was already used")
        return r

    async def header_mode(self, scope, token: str) -> AttestationResult:
        if len(token) > MAX_EVIDENCE_HEADER:
            raise AttestationError("malformed", "evidence header too large")
        t = self._type(_header(scope, b"x-attestation-type"))
        nonce_s = _header(scope, b"x-attestation-nonce")
        timestamp = not nonce_s and self.timestamp_ok and t in ("nitro", "maa", "gcp")
        nonce = None if timestamp else await self._check_nonce(nonce_s)
        if t in ("maa", "gcp"):
            evidence: bytes | str = token.encode()
        else:
            try:
                evidence = _b64d(token)
            except (ValueError, TypeError):
                raise AttestationError("malformed", "evidence is not base64") from None
        r = await self.verify(evidence, t, nonce, b"")
        r.mode = "header"
        return r

    async def establish(self, body: bytes) -> dict:
        from shield_asgi import _native

        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError
        except ValueError:
            raise AttestationError("malformed", "the body is not a JSON object") from None
        t = self._type(req.get("type"))
        nonce = await self._check_nonce(req.get("nonce"))
        try:
            pk = _b64d(req["public_key"])
            ev = req["evidence"]
            evidence = ev.encode() if t in ("maa", "gcp") else _b64d(ev)
        except (KeyError, ValueError, TypeError, AttributeError):
            raise AttestationError("malformed", "evidence and public_key are required") from None
        r = await self.verify(evidence, t, nonce, pk)
        key = secrets.token_bytes(32)
        try:
            alg, enc, sealed = _native.seal_to_spki(pk, key, SESSION_INFO)
        except ValueError as e:
            raise AttestationError("malformed", str(e)) from None
        sid = _b64e(secrets.token_bytes(24))
        # kept SESSION_GRACE past its end so a late client hears session_expired (re-attest),
        # not session_unknown (as the native gate, server/gate_state.c)
        await self.store.put_session(sid, {
            "key": key, "last_t": -1, "tee_type": r.tee_type,
            "result": json.dumps(r.to_dict()), "exp": self.clock() + self.session_ttl,
        }, self.session_ttl + SESSION_GRACE)
        out = {"session": sid, "expires_in": int(self.session_ttl), "alg": alg,
               "sealed_key": _b64e(sealed)}
        if enc is not None:
            out["enc"] = _b64e(enc)
        return out

    async def session_mode(self, scope, sid: str) -> tuple[AttestationResult, Optional[str], bytes]:
        """Checks the proof; returns (result, expected Content-Digest or None, key)."""
        from shield_asgi import _native

        got = await self.store.get_session(sid)
        if got is None:
            raise AttestationError("session_unknown", "no such session")
        data, expires = got
        if min(expires, data.get("exp", expires)) <= self.clock():
            raise AttestationError("session_expired", "the session has expired")
        proof = _header(scope, b"x-attestation-proof")
        if not proof:
            raise AttestationError("proof_invalid", "X-Attestation-Proof is missing")
        fields = {}
        for part in proof.split(","):
            k, _, v = part.strip().partition("=")
            fields[k.strip()] = v.strip()
        try:
            t_ms = int(fields["t"])
            mac = _b64d(fields["mac"])
            if not fields["t"].isdigit():
                raise ValueError
        except (KeyError, ValueError):
            raise AttestationError("proof_invalid", "X-Attestation-Proof is malformed") from None
        now_ms = int(self.clock() * 1000)
        if abs(now_ms - t_ms) > PROOF_WINDOW_MS:
            raise AttestationError("proof_invalid", "the proof time is outside ±60 s")
        digest = _header(scope, b"content-digest")
        has_body = (_header(scope, b"transfer-encoding") is not None or
                    (_header(scope, b"content-length") or "0").strip() not in ("", "0"))
        if has_body and not digest:
            raise AttestationError("proof_invalid", "a request with a body needs Content-Digest")
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        want = _native.proof_mac(data["key"], t_ms, scope["method"],
                                 target.decode("latin-1"), digest or "")
        if not hmac.compare_digest(want, mac):
            raise AttestationError("proof_invalid", "the proof MAC does not verify")
        if not await self.store.advance_session(sid, t_ms):
            raise AttestationError("proof_invalid", "the proof time is not after the last one")
        r = AttestationResult(**{k: v for k, v in json.loads(data["result"]).items()
                                 if k not in ("public_key", "user_data", "nonce",
                                              "raw_evidence")})
        r.mode, r.session = "session", sid
        return r, digest, data["key"]


def _parse_content_digest(value: str) -> Optional[bytes]:
    """RFC 9530: sha-256=:<base64>: (other algorithms ignored)."""
    for item in value.split(","):
        k, _, v = item.strip().partition("=")
        if k.strip().lower() == "sha-256":
            v = v.strip()
            if len(v) >= 2 and v[0] == ":" and v[-1] == ":":
                try:
                    return base64.b64decode(v[1:-1], validate=True)
                except ValueError:
                    return None
    return None


# ---------------------------------------------------------------------------------------------
# The middleware
# ---------------------------------------------------------------------------------------------

class AttestationMiddleware:
    """Pure ASGI middleware: client attestation per protocol.md.

    ``require_client_attestation``: requests without evidence get 401 ``missing`` (else they
    pass with no ``attestation`` key; evidence that is presented but fails is always an
    error).  ``exclude_routes``: path prefixes served without attestation.  ``policy``: the
    verifier's policy (dict, JSON or path) and, with ``provider``, what the middleware re-checks
    against a result the shield server verified natively.
    """

    def __init__(self, app, provider=None, tee_type: Optional[str] = None,
                 require_client_attestation: bool = True, policy=None,
                 exclude_routes: Iterable[str] = ("/docs", "/redoc", "/openapi.json",
                                                  "/health"),
                 attestation_header: str = "X-Attestation-Token", *,
                 tee_types: Optional[Iterable[str]] = None, nonce_secret=None,
                 state_url: Optional[str] = None, store=None, trust_simulated: bool = False,
                 session_ttl: float = 3600, clock: Callable[[], float] = time.time,
                 max_concurrent: int = 64) -> None:
        self.app = app
        self.provider = provider_for(provider, tee_type)
        self.required = require_client_attestation
        self.exclude = tuple(exclude_routes or ())
        self.header = attestation_header.lower().encode("latin-1")
        self.policy = policy
        self._policy = _RoutePolicy.of(policy)
        types = {canonical_tee_type(t) for t in (tee_types or ())} - {None}
        self._proto_args = dict(
            provider=self.provider, tee_types=types, policy=policy, nonce_secret=nonce_secret,
            state_url=state_url, store=store, trust_simulated=trust_simulated,
            session_ttl=session_ttl, clock=clock, max_concurrent=max_concurrent)
        self._proto: Optional[_Protocol] = None

    @property
    def protocol(self) -> _Protocol:
        if self._proto is None:
            self._proto = _Protocol(**self._proto_args)
        return self._proto

    def _excluded(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.exclude)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        try:
            if "shield.attestation" in (scope.get("extensions") or {}):
                return await self._native(scope, receive, send)
            return await self._own(scope, receive, send)
        except AttestationError as e:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _send_error(send, e)

    # -- under shield: the server verified; re-check our own expectations --------------------
    async def _native(self, scope, receive, send):
        state = scope.get("state") or {}
        r = state.get("attestation")
        if r is None:
            if self.required and not self._excluded(scope["path"]):
                raise AttestationError("missing", "client attestation is required")
            return await self._call_app(scope, receive, send)
        if not r.verified:
            raise AttestationError(r.reason or "malformed", r.message or "")
        if self.provider is not None:
            failure = self.provider.check(r)
            if failure:
                raise AttestationError(*failure)
        if self._policy is not None:  # our own policy, whatever the server's was
            self._policy.enforce(r)
        return await self._call_app(scope, receive, send)

    # -- under any other server: the whole protocol -------------------------------------------
    async def _own(self, scope, receive, send):
        path, method = scope["path"], scope.get("method", "GET")
        proto = self.protocol
        if path == NONCE_PATH and scope["type"] == "http":
            if method not in ("GET", "HEAD"):
                return await _send_json(send, 405, {"error": "method_not_allowed"}, b"GET, HEAD")
            return await _send_json(send, 200, {"nonce": _b64e(proto.new_nonce()),
                                                "expires_in": NONCE_TTL})
        if path == ATTEST_PATH and scope["type"] == "http":
            if method != "POST":
                return await _send_json(send, 405, {"error": "method_not_allowed"}, b"POST")
            body = await _read_body(receive, MAX_ATTEST_BODY)
            return await _send_json(send, 200, await proto.establish(body))
        excluded = self._excluded(path)
        token = _header(scope, self.header)
        sid = _header(scope, b"x-attestation-session")
        digest = key = None
        if sid:
            r, digest, key = await proto.session_mode(scope, sid)
        elif token:
            r = await proto.header_mode(scope, token)
        elif self.required and not excluded:
            raise AttestationError("missing", "client attestation is required")
        else:
            return await self._call_app(scope, receive, send)
        scope.setdefault("state", {})["attestation"] = r
        if digest is None:
            return await self._call_app(scope, receive, send)
        return await self._call_with_digest(scope, receive, send, digest)

    async def _call_app(self, scope, receive, send):
        # AttestationError raised inside the app (attestation_required dependency) is answered
        # here with the exact §3 body, if the response has not started yet.
        started = False

        async def send_w(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, receive, send_w)
        except AttestationError as e:
            if started:
                raise
            await _send_error(send, e)

    async def _call_with_digest(self, scope, receive, send, digest_header: str):
        """Checks Content-Digest as the body streams (§1.4): the last chunk is held back until
        the hash matches; on a mismatch the app sees a disconnect and the client a 401."""
        want = _parse_content_digest(digest_header)
        if want is None:
            raise AttestationError("proof_invalid", "Content-Digest is not sha-256=:…:")
        h = hashlib.sha256()
        failed = False
        started = False

        async def receive_w():
            nonlocal failed
            msg = await receive()
            if msg["type"] == "http.request":
                h.update(msg.get("body", b""))
                if not msg.get("more_body", False) and not hmac.compare_digest(h.digest(), want):
                    failed = True
                    return {"type": "http.disconnect"}
            return msg

        async def send_w(msg):
            nonlocal started
            if failed:
                return  # the app's answer to a forged body is dropped
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, receive_w, send_w)
        except Exception:
            if not failed:
                raise
        if failed and not started:
            await _send_error(send, AttestationError(
                "proof_invalid", "the body does not match Content-Digest"))


async def _read_body(receive, limit: int) -> bytes:
    chunks, n = [], 0
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            raise AttestationError("malformed", "the client went away")
        b = msg.get("body", b"")
        n += len(b)
        if n > limit:
            raise AttestationError("malformed", "attestation body too large")
        chunks.append(b)
        if not msg.get("more_body", False):
            return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# FastAPI: security scheme, dependency, decorator
# ---------------------------------------------------------------------------------------------

def attestation_security(header_name: str = "X-Attestation-Token"):
    """FastAPI security dependencies so /docs shows the attestation headers."""
    from fastapi.security import APIKeyHeader

    return (
        APIKeyHeader(name=header_name, scheme_name="ClientAttestation", auto_error=False,
                     description="TEE evidence (protocol.md §1.4 mode 1); with "
                                 "X-Attestation-Type and X-Attestation-Nonce"),
        APIKeyHeader(name="X-Attestation-Session", scheme_name="AttestationSession",
                     auto_error=False,
                     description="session id from POST /.well-known/shield/attest; with "
                                 "X-Attestation-Proof"),
    )


class _RoutePolicy:
    """A verification policy re-applied to results verified elsewhere (protocol.md §2): the
    JSON text is read once; a result whose policy_sha256 is this policy's own was decided by
    this very document (same bytes, same evaluator) and is not evaluated twice."""

    __slots__ = ("text", "sha256")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha256 = hashlib.sha256(text.encode()).hexdigest()
        check_policy(text, AttestationResult(verified=True, tee_type="nitro"))  # loads, or raises

    @classmethod
    def of(cls, policy) -> Optional["_RoutePolicy"]:
        text = policy_text(policy)
        return None if text is None else cls(text)

    def enforce(self, result: AttestationResult) -> None:
        if result.policy_sha256 == self.sha256:
            return
        failure = check_policy(self.text, result)
        if failure:
            raise AttestationError(*failure)


def _check(result: Optional[AttestationResult], provider: Optional[AttestationProvider],
           required_tee_types, required_measurements,
           policy: Optional[_RoutePolicy] = None) -> AttestationResult:
    if result is None:
        raise AttestationError("missing", "client attestation is required")
    if not result.verified:
        raise AttestationError(result.reason or "malformed", result.message or "")
    if required_tee_types:
        allowed = {canonical_tee_type(t) for t in required_tee_types}
        if result.tee_type not in allowed:
            raise AttestationError("policy_denied", f"TEE type {result.tee_type} not allowed")
    if provider is not None:
        failure = provider.check(result)
        if failure:
            raise AttestationError(*failure)
    for name, allowed in (required_measurements or {}).items():
        vals = AttestationProvider._allowed(allowed)
        got = (result.measurements or {}).get(name)
        if got is None or got.lower() not in vals:
            raise AttestationError("measurement_mismatch", f"{name} is not an expected value")
    if policy is not None:
        policy.enforce(result)
    return result


def _state_result(request) -> Optional[AttestationResult]:
    return (request.scope.get("state") or {}).get("attestation")


def attestation_required(provider=None, tee_type: Optional[str] = None,
                         required_tee_types: Optional[Iterable[str]] = None,
                         required_measurements: Optional[Mapping[str, Any]] = None,
                         policy=None, header_name: str = "X-Attestation-Token"):
    """``Depends(attestation_required(...))`` -> the verified AttestationResult.

    The evidence is verified by the shield server or by AttestationMiddleware; this checks
    the route's own requirements against that result.  Errors are AttestationError (§3 body
    when the middleware or add_attestation_exception_handler is installed)."""
    from fastapi import Request, Security

    prov = provider_for(provider, tee_type) if (provider or tee_type) else None
    route_policy = _RoutePolicy.of(policy)  # a bad policy fails at decoration, not per request
    token_scheme, session_scheme = attestation_security(header_name)

    async def dependency(request: Request, _t: Optional[str] = Security(token_scheme),
                         _s: Optional[str] = Security(session_scheme)) -> AttestationResult:
        _ensure_handler(request)
        return _check(_state_result(request), prov, required_tee_types, required_measurements,
                      route_policy)

    return dependency


def requires_attestation(provider=None, tee_type: Optional[str] = None,
                         required_tee_types: Optional[Iterable[str]] = None,
                         required_measurements: Optional[Mapping[str, Any]] = None,
                         policy=None, header_name: str = "X-Attestation-Token"):
    """Route decorator (put it under ``@app.get(...)``): the endpoint needs no request
    parameter; failures answer with the exact §3 JSON."""
    dep = attestation_required(provider, tee_type, required_tee_types, required_measurements,
                               policy, header_name)

    def deco(fn):
        from fastapi import Depends
        from fastapi.responses import JSONResponse

        sig = inspect.signature(fn)
        hidden = "__shield_attestation"
        params = list(sig.parameters.values())
        extra = inspect.Parameter(hidden, inspect.Parameter.KEYWORD_ONLY,
                                  default=Depends(_wrap(dep)))
        new_sig = sig.replace(parameters=[p for p in params if p.kind != p.VAR_KEYWORD] + [extra]
                              + [p for p in params if p.kind == p.VAR_KEYWORD])

        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            outcome = kwargs.pop(hidden)
            if isinstance(outcome, AttestationError):
                return JSONResponse(outcome.body(), status_code=outcome.status_code,
                                    headers=outcome.headers)
            res = fn(*args, **kwargs)
            return await res if inspect.isawaitable(res) else res

        wrapper.__signature__ = new_sig  # type: ignore[attr-defined]
        return wrapper

    return deco


def _wrap(dep):
    """The dependency, returning the error instead of raising it (the decorator answers)."""
    sig = inspect.signature(dep)

    async def inner(**kw):
        try:
            return await dep(**kw)
        except AttestationError as e:
            return e

    inner.__signature__ = sig  # type: ignore[attr-defined]
    return inner


async def _handle(request, exc: AttestationError):
    from fastapi.responses import JSONResponse

    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def _ensure_handler(request) -> None:
    """Registers the §3 handler with the app's running ExceptionMiddleware (Starlette keeps
    its handler dict in the scope), so a failing dependency answers exactly even without
    AttestationMiddleware; if that internal ever changes, the middleware still answers."""
    try:
        handlers = request.scope["starlette.exception_handlers"][0]
        if AttestationError not in handlers:
            handlers[AttestationError] = _handle
    except (KeyError, IndexError, TypeError):
        pass


def add_attestation_exception_handler(app) -> None:
    """FastAPI/Starlette: answer AttestationError with the exact §3 body (for
    Depends(attestation_required()) without AttestationMiddleware)."""
    from fastapi.responses import JSONResponse

    async def handler(request, exc: AttestationError):
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(AttestationError, handler)
