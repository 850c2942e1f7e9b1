"""The client-attestation protocol (docs/protocol.md §1–§3) as an engine with no ASGI in it: it
takes header values and bodies and returns verified results or raises ``AttestationError``.
AttestationMiddleware (middleware.py) feeds it from ASGI scopes; any other transport could.

What it does: nonces (§1.1, stateless, HMAC'd with the deployment's secret), header mode and
session establishment (§1.4 modes 1 and 2, verification through ``shield_asgi._native``, off
the event loop), session proofs, the Content-Digest of a session request's body
(``DigestCheck``), and the re-check of a result verified elsewhere against a policy
(``RoutePolicy``, ``check_result``).  State goes through a store (stores.py).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
from typing import Callable, Optional

from shield_asgi import _native
from shield_asgi.attestation import (
    AttestationResult,
    _b64url,
    _b64url_decode,
    check_policy,
    policy_text,
)
from shield_asgi.integrations.errors import AttestationError
from shield_asgi.integrations.providers import AttestationProvider, canonical_tee_type
from shield_asgi.integrations.stores import MemoryStateStore, RedisStateStore

__all__ = [
    "AttestationProtocol",
    "DigestCheck",
    "RoutePolicy",
    "check_result",
    "NONCE_PATH",
    "ATTEST_PATH",
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


class AttestationProtocol:
    """One deployment's protocol state: the nonce secret, the store, the verification limits."""

    def __init__(
        self,
        *,
        provider: Optional[AttestationProvider],
        tee_types,
        policy,
        nonce_secret,
        state_url,
        store,
        trust_simulated,
        session_ttl,
        clock,
        max_concurrent,
    ) -> None:
        self.provider = provider
        self.tee_types = tee_types
        self.policy = policy_text(policy)
        self.secret, shared = _load_secret(nonce_secret)
        if store is None:
            store = RedisStateStore(state_url) if state_url else MemoryStateStore()
        self.store = store
        self.trust_simulated = trust_simulated or bool(provider and provider.trust_simulated)
        self.session_ttl = session_ttl
        self.clock: Callable[[], float] = clock
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
                log.warning(
                    "AttestationMiddleware with several workers needs a shared "
                    "nonce_secret file and state_url=redis://… (nonces and sessions "
                    "are per process otherwise)"
                )

    # -- §1.1 nonces ----------------------------------------------------------------------------
    def new_nonce(self) -> bytes:
        return _native.nonce_issue(self.secret, self.clock())

    def nonce_body(self) -> dict:
        """The body of GET /.well-known/shield/nonce."""
        return {"nonce": _b64url(self.new_nonce()), "expires_in": NONCE_TTL}

    def _type(self, declared: Optional[str]) -> str:
        t = canonical_tee_type(declared) if declared else None
        if declared and t is None:
            raise AttestationError("unsupported_type", f"unknown evidence type {declared!r}")
        if t is None and self.provider is not None:
            t = self.provider.tee_type
        if t is None:
            raise AttestationError("malformed", "X-Attestation-Type is required")
        if (
            self.tee_types
            and t not in self.tee_types
            and not (t == "simulated" and self.trust_simulated)
        ):
            raise AttestationError("unsupported_type", f"evidence type {t} is not accepted here")
        return t

    async def _check_nonce(self, nonce_s: Optional[str]) -> bytes:
        if not nonce_s:
            raise AttestationError("nonce_invalid", "the nonce is missing")
        try:
            nonce = _b64url_decode(nonce_s)
        except (ValueError, TypeError):
            raise AttestationError("nonce_invalid", "the nonce is not base64url") from None
        bad = _native.nonce_check(self.secret, nonce, self.clock(), NONCE_TTL)
        if bad:
            raise AttestationError(
                bad,
                "the nonce is not one this deployment issued"
                if bad == "nonce_invalid"
                else "the nonce has expired",
            )
        if await self.store.is_consumed(b"n" + nonce):
            raise AttestationError("nonce_replayed", "the nonce was already used")
        return nonce

    # -- verification ---------------------------------------------------------------------------
    async def verify(
        self, evidence: bytes | str, tee_type: str, nonce: Optional[bytes], public_key: bytes
    ) -> AttestationResult:
        """nonce None: timestamp freshness (§1.3), replay keyed by the signed content."""
        if self._sem.locked():
            raise AttestationError("overloaded", "too many verifications in progress")
        kw = self.provider.verify_kwargs() if self.provider else {}
        async with self._sem:
            loop = asyncio.get_running_loop()
            # the native call releases the GIL; a thread keeps the event loop responsive
            r = await loop.run_in_executor(
                None,
                functools.partial(
                    _native.verify,
                    evidence,
                    tee_type,
                    at=self.clock(),
                    policy=self.policy,
                    nonce=nonce,
                    public_key=public_key if nonce is not None else None,
                    allow_debug=bool(self.provider and self.provider.allow_debug),
                    trust_simulated=self.trust_simulated,
                    **kw,
                ),
            )
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

    # -- §1.4 mode 1: evidence in headers -------------------------------------------------------
    async def header_mode(
        self, token: str, tee_type: Optional[str], nonce: Optional[str]
    ) -> AttestationResult:
        """X-Attestation-Token, -Type and -Nonce as sent."""
        if len(token) > MAX_EVIDENCE_HEADER:
            raise AttestationError("malformed", "evidence header too large")
        t = self._type(tee_type)
        timestamp = not nonce and self.timestamp_ok and t in ("nitro", "maa", "gcp")
        nonce_b = None if timestamp else await self._check_nonce(nonce)
        if t in ("maa", "gcp"):
            evidence: bytes | str = token.encode()
        else:
            try:
                evidence = _b64url_decode(token)
            except (ValueError, TypeError):
                raise AttestationError("malformed", "evidence is not base64") from None
        r = await self.verify(evidence, t, nonce_b, b"")
        r.mode = "header"
        return r

    # -- §1.4 mode 2: sessions ------------------------------------------------------------------
    async def establish(self, body: bytes) -> dict:
        """The body of POST /.well-known/shield/attest -> the JSON answer (a sealed key)."""
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError
        except ValueError:
            raise AttestationError("malformed", "the body is not a JSON object") from None
        t = self._type(req.get("type"))
        nonce = await self._check_nonce(req.get("nonce"))
        try:
            pk = _b64url_decode(req["public_key"])
            ev = req["evidence"]
            evidence = ev.encode() if t in ("maa", "gcp") else _b64url_decode(ev)
        except (KeyError, ValueError, TypeError, AttributeError):
            raise AttestationError("malformed", "evidence and public_key are required") from None
        r = await self.verify(evidence, t, nonce, pk)
        key = secrets.token_bytes(32)
        try:
            alg, enc, sealed = _native.seal_to_spki(pk, key, SESSION_INFO)
        except ValueError as e:
            raise AttestationError("malformed", str(e)) from None
        sid = _b64url(secrets.token_bytes(24))
        # kept SESSION_GRACE past its end so a late client hears session_expired (re-attest),
        # not session_unknown (as the native gate, server/gate_state.c)
        await self.store.put_session(
            sid,
            {
                "key": key,
                "last_t": -1,
                "tee_type": r.tee_type,
                "result": json.dumps(r.to_dict()),
                "exp": self.clock() + self.session_ttl,
            },
            self.session_ttl + SESSION_GRACE,
        )
        out = {
            "session": sid,
            "expires_in": int(self.session_ttl),
            "alg": alg,
            "sealed_key": _b64url(sealed),
        }
        if enc is not None:
            out["enc"] = _b64url(enc)
        return out

    async def session_mode(
        self,
        sid: str,
        proof: Optional[str],
        method: str,
        target: bytes,
        content_digest: Optional[str],
        has_body: bool,
    ) -> tuple[AttestationResult, Optional[str], bytes]:
        """X-Attestation-Session and -Proof of a request to `target` (path and query as sent),
        its Content-Digest and whether a body follows.  Checks the proof; returns (result,
        the Content-Digest the body must match or None, the session key)."""
        got = await self.store.get_session(sid)
        if got is None:
            raise AttestationError("session_unknown", "no such session")
        data, expires = got
        if min(expires, data.get("exp", expires)) <= self.clock():
            raise AttestationError("session_expired", "the session has expired")
        if not proof:
            raise AttestationError("proof_invalid", "X-Attestation-Proof is missing")
        fields = {}
        for part in proof.split(","):
            k, _, v = part.strip().partition("=")
            fields[k.strip()] = v.strip()
        try:
            t_ms = int(fields["t"])
            mac = _b64url_decode(fields["mac"])
            if not fields["t"].isdigit():
                raise ValueError
        except (KeyError, ValueError):
            raise AttestationError("proof_invalid", "X-Attestation-Proof is malformed") from None
        now_ms = int(self.clock() * 1000)
        if abs(now_ms - t_ms) > PROOF_WINDOW_MS:
            raise AttestationError("proof_invalid", "the proof time is outside ±60 s")
        if has_body and not content_digest:
            raise AttestationError("proof_invalid", "a request with a body needs Content-Digest")
        want = _native.proof_mac(
            data["key"], t_ms, method, target.decode("latin-1"), content_digest or ""
        )
        if not hmac.compare_digest(want, mac):
            raise AttestationError("proof_invalid", "the proof MAC does not verify")
        if not await self.store.advance_session(sid, t_ms):
            raise AttestationError("proof_invalid", "the proof time is not after the last one")
        r = AttestationResult(
            **{
                k: v
                for k, v in json.loads(data["result"]).items()
                if k not in ("public_key", "user_data", "nonce", "raw_evidence")
            }
        )
        r.mode, r.session = "session", sid
        return r, content_digest, data["key"]


def parse_content_digest(value: str) -> Optional[bytes]:
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


class DigestCheck:
    """A session request's body against its Content-Digest (§1.4), fed as the body streams:
    ``update(chunk)`` per chunk, then ``matches()`` after the last one."""

    __slots__ = ("_want", "_h")

    def __init__(self, content_digest: str) -> None:
        want = parse_content_digest(content_digest)
        if want is None:
            raise AttestationError("proof_invalid", "Content-Digest is not sha-256=:…:")
        self._want = want
        self._h = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self._h.update(chunk)

    def matches(self) -> bool:
        return hmac.compare_digest(self._h.digest(), self._want)


class RoutePolicy:
    """A verification policy re-applied to results verified elsewhere (docs/protocol.md §2): the
    JSON text is read once; a result whose policy_sha256 is this policy's own was decided by
    this very document (same bytes, same evaluator) and is not evaluated twice."""

    __slots__ = ("text", "sha256")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha256 = hashlib.sha256(text.encode()).hexdigest()
        check_policy(text, AttestationResult(verified=True, tee_type="nitro"))  # loads, or raises

    @classmethod
    def of(cls, policy) -> Optional["RoutePolicy"]:
        text = policy_text(policy)
        return None if text is None else cls(text)

    def enforce(self, result: AttestationResult) -> None:
        if result.policy_sha256 == self.sha256:
            return
        failure = check_policy(self.text, result)
        if failure:
            raise AttestationError(*failure)


def check_result(
    result: Optional[AttestationResult],
    provider: Optional[AttestationProvider],
    required_tee_types,
    required_measurements,
    policy: Optional[RoutePolicy] = None,
) -> AttestationResult:
    """A route's own requirements against the request's result (verified by the shield server
    or by AttestationMiddleware); the result, or AttestationError."""
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
