"""``shield_asgi.integrations.confidential.base``: the Shield library's base module
(``shield.integrations.confidential.base``) with its names and signatures, verifying natively.

- ``TEEType``: an Enum whose ``.value`` is the docs/protocol.md §0 name (``TEEType("aws_nitro")``
  and the library's other spellings still resolve).
- ``AttestationResult``, ``AttestationError``, ``AttestationProvider``: this package's own classes
  (docs/protocol.md §2, §3; shield_asgi.integrations.providers), the ones the middleware uses.
- ``KeyReleasePolicy``: required TEE types, measurements, max age, claims; ``evaluate(result)``.
- ``TEEKeyManager``: key release, docs/protocol.md §6.

Key release (§6).  ``TEEKeyManager(password, service, provider, policy=None)`` derives its master
key once, at construction: PBKDF2-HMAC-SHA256(password, SHA-256("shield/tee-key-manager" ‖
service), 600 000, 32).  A key is HKDF-SHA256(master, info = "shield/key-release/v1" ‖ 0x00 ‖
key_id), so every instance and every replica with the same password and service derives the
same keys.  ``get_key`` and ``release_key`` take evidence bound (§1.2) to a fresh nonce from
``new_nonce()`` (the §1.1 format, the deployment's state secret: a nonce issued by one replica
is accepted by another sharing ``nonce_secret``) and to ``public_key`` (k; empty for
``get_key`` without one).  The checks run in §1.6's order: sizes and the key's form, the nonce
(MAC, age within min(60 s, the policy's max age), not consumed), the evidence natively
(``shield_asgi._native.verify``: signatures, chain, root, binding), the provider's expectations
and policy, the ``KeyReleasePolicy``, the key id; only then is the nonce consumed (single use,
through the same state store as the middleware's: a nonce spent on a request cannot release a
key, nor the reverse).  ``release_key`` seals the key to k with ``_native.seal_to_spki`` (the
HPKE used for session keys, info "shield/key-release/v1" ‖ 0x00 ‖ key_id; RSA-OAEP-256 for RSA
keys).

Denials raise ``AttestationError`` with the §3 reason.  A denial never says whether a key id
exists: the key id is looked at only after the evidence and the policy passed, and a key id
outside ``key_ids`` is refused exactly as a policy that does not hold (``policy_denied``, one
message for every policy denial; the detail goes to the audit log only).

Audit: every grant and denial is one record (logger ``shield_asgi.keys``, INFO for grants and
WARNING for denials, the record in ``extra={"shield_audit": …}``; and ``audit=callable`` if
given) with the operation, key id, outcome, reason code, TEE type and the SHA-256 of the
evidence's signed content — never key material, evidence or nonces.

Cache: verification results (before the policy, which is applied on every call) in a bounded
LRU keyed by SHA-256 of (type, evidence, nonce, k), each entry expiring when its nonce stops
being fresh (issue time + min(60 s, the policy's max age)), so evidence presented again while
its nonce is unspent (refused by the policy or for its key id, or set_policy changed since) is
not verified twice, and nothing cached outlives the evidence's freshness.

Fixed from the Shield library (2.3.0): its ``TEEKeyManager`` trusted the providers' parse-only
checks, took evidence with no nonce (replayable), derived keys as SHA-256 of JSON and the
password key, cached derived keys for 60 s whatever the evidence's age, in an unbounded dict,
and verified the evidence twice per ``encrypt_for_tee`` / ``decrypt_in_tee``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from shield_asgi import _native
from shield_asgi.attestation import AttestationResult, _b64url, _b64url_decode
from shield_asgi.integrations.errors import AttestationError
from shield_asgi.integrations.protocol import MAX_ATTEST_BODY, NONCE_TTL, _load_secret
from shield_asgi.integrations.providers import (
    AttestationProvider,
    canonical_tee_type,
    provider_for,
)
from shield_asgi.integrations.stores import MemoryStateStore, RedisStateStore

__all__ = [
    "TEEType",
    "AttestationResult",
    "AttestationError",
    "AttestationProvider",
    "KeyReleasePolicy",
    "TEEKeyManager",
    "KDF_ITERATIONS",
    "KEY_RELEASE_INFO",
    "ENVELOPE_VERSION",
]

log = logging.getLogger("shield_asgi.keys")

#: docs/protocol.md §6
KDF_ITERATIONS = 600_000
KDF_SALT_PREFIX = b"shield/tee-key-manager"
KEY_RELEASE_INFO = b"shield/key-release/v1"
#: encrypt_for_tee's envelope (documented in docs/key-release.md)
ENVELOPE_VERSION = 1
ENVELOPE_AAD = b"shield/tee-envelope/v1"
MAX_KEY_ID = 255  # bytes of UTF-8; the key id travels in HKDF info and in the audit log

# the one message of every policy-stage denial: the same for an unknown key id (docs: a denial
# never leaks whether the key exists)
_POLICY_DENIED = "the attestation does not satisfy the key release policy"


class TEEType(Enum):
    """TEE types (docs/protocol.md §0): ``.value`` is the canonical name.  The Shield library's
    spellings (``"aws_nitro"``, ``"gcp_sev_snp"``, ``"azure_maa"``, ``"intel_sgx"``, ...) resolve
    to the same members: ``TEEType("aws_nitro") is TEEType.NITRO``."""

    NITRO = "nitro"
    SEV_SNP = "sev-snp"
    AZURE_SNP = "azure-snp"
    AZURE_TDX = "azure-tdx"
    TDX = "tdx"
    SGX = "sgx"
    MAA = "maa"
    GCP = "gcp"
    SIMULATED = "simulated"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value):
        if isinstance(value, str):
            v = value.strip().lower()
            name = "sev-snp" if v == "gcp_sev_snp" else canonical_tee_type(v)
            if name is not None:
                return cls(name)
        return None


def _type_name(t) -> Optional[str]:
    """TEEType, a §0 name or a library spelling -> the canonical name (None if unknown)."""
    if isinstance(t, TEEType):
        return t.value
    try:
        return TEEType(t).value
    except ValueError:
        return None


def _hex(v) -> str:
    return (v.hex() if isinstance(v, (bytes, bytearray)) else str(v)).strip().lower()


def _evidence_time(result: AttestationResult) -> Optional[float]:
    """When the evidence was made, where it says so: a Nitro-format document's ``timestamp``
    (ms, also the simulated TEE's), a token's ``iat``; else the verification time
    (``result.timestamp``, §2): for nonce-bound evidence the nonce's age bounds it anyway."""
    c = result.claims or {}
    try:
        if result.tee_type in ("nitro", "simulated") and c.get("timestamp") is not None:
            return float(c["timestamp"]) / 1000.0
        if result.tee_type in ("maa", "gcp") and c.get("iat") is not None:
            return float(c["iat"])
        return None if result.timestamp is None else float(result.timestamp)
    except (TypeError, ValueError):
        return None


@dataclass
class KeyReleasePolicy:
    """When a key may be released (the Shield library's fields).

    ``required_tee_types``: TEEType members or names; empty = any type the provider accepts.
    ``required_measurements``: name (as in ``result.measurements``, e.g. ``"PCR0"``) -> hex
    value or a list of allowed values.  ``max_age_seconds``: how old the evidence may be (its
    nonce's issue time and its own timestamp).  ``allowed_claims``: claim name -> allowed values.
    """

    required_tee_types: List[Union[TEEType, str]] = field(default_factory=list)
    required_measurements: Dict[str, Any] = field(default_factory=dict)
    max_age_seconds: float = 300.0
    allowed_claims: Dict[str, List[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t in self.required_tee_types:
            if _type_name(t) is None:
                raise ValueError(f"unknown TEE type {t!r} in required_tee_types")
        if not self.max_age_seconds > 0:
            raise ValueError("max_age_seconds must be positive")

    def check(
        self, result: Optional[AttestationResult], now: Optional[float] = None
    ) -> Optional[tuple[str, str]]:
        """None when ``result`` satisfies the policy, else (§3 reason, detail).  Fails closed:
        no result, an unverified one or one lacking a constrained fact is refused."""
        if result is None:
            return "missing", "no attestation result"
        if not result.verified:
            return result.reason or "malformed", result.message or "not verified"
        tee = _type_name(result.tee_type)
        if self.required_tee_types:
            allowed = {_type_name(t) for t in self.required_tee_types}
            if tee not in allowed:
                return (
                    "policy_denied",
                    f"TEE type {result.tee_type} is not one of {sorted(allowed)}",
                )
        now = time.time() if now is None else now
        made = _evidence_time(result)
        if made is None or now - made > self.max_age_seconds:
            return "expired", f"the evidence is older than {self.max_age_seconds:g} s"
        for name, want in self.required_measurements.items():
            vals = (
                {_hex(want)}
                if isinstance(want, (str, bytes, bytearray))
                else {_hex(w) for w in want}
            )
            got = (result.measurements or {}).get(name)
            if got is None or _hex(got) not in vals:
                return "measurement_mismatch", f"{name} is not an expected value"
        for name, allowed_values in self.allowed_claims.items():
            claims = result.claims or {}
            if name not in claims or claims[name] not in list(allowed_values):
                return "policy_denied", f"claim {name} is not an allowed value"
        return None

    def evaluate(self, result: AttestationResult) -> bool:
        """The Shield library's call: True when the result satisfies this policy."""
        return self.check(result) is None


class _ResultCache:
    """Bounded LRU of verification results, each with its own expiry (the evidence's
    freshness): memory stays bounded even when every entry comes from a failed verification."""

    def __init__(self, size: int) -> None:
        self.size = max(0, int(size))
        self._d: collections.OrderedDict[bytes, tuple[AttestationResult, float]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes, now: float) -> Optional[AttestationResult]:
        with self._lock:
            v = self._d.get(key)
            if v is None or v[1] <= now:
                if v is not None:
                    del self._d[key]
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v[0]

    def put(self, key: bytes, result: AttestationResult, expires: float) -> None:
        if self.size == 0:
            return
        with self._lock:
            self._d[key] = (result, expires)
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def info(self, now: float) -> dict:
        with self._lock:
            for k in [k for k, (_, exp) in self._d.items() if exp <= now]:
                del self._d[k]
            return {
                "size": len(self._d),
                "max_size": self.size,
                "hits": self.hits,
                "misses": self.misses,
                "expires": sorted(exp for _, exp in self._d.values()),
            }


def _bytes_arg(v, what: str) -> bytes:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        try:
            return _b64url_decode(v)
        except (ValueError, TypeError):
            raise AttestationError("malformed", f"{what} is not base64") from None
    raise AttestationError("malformed", f"{what} must be bytes or base64 text")


class TEEKeyManager:
    """Attestation-gated key release (docs/protocol.md §6; the module docstring says how).

    ``provider``: a provider of this package (``shield_asgi.integrations.providers``, or the
    ``confidential`` modules' classes) or a TEE type name; its expectations and policy apply.
    ``policy``: a ``KeyReleasePolicy`` (default: ``KeyReleasePolicy()``, 300 s max age).
    Keyword-only: ``nonce_secret`` (bytes or a file path, ≥ 32 bytes; default
    ``$SHIELD_STATE_SECRET_FILE`` or a random per-process secret), ``state_url``
    (``redis://…``) or ``store`` (shared with AttestationMiddleware to share consumed nonces),
    ``trust_simulated`` (accept the simulated TEE, development only), ``key_ids`` (the key ids
    that exist; default: any), ``audit`` (callable receiving each audit record; an exception
    from it is raised to the caller and the key is not returned), ``cache_size`` (0 disables
    the cache), ``max_concurrent`` (verifications in flight; more are refused ``overloaded``),
    ``clock``.
    """

    def __init__(
        self,
        password: Union[str, bytes],
        service: str,
        provider: Union[AttestationProvider, str],
        policy: Optional[KeyReleasePolicy] = None,
        *,
        nonce_secret=None,
        state_url: Optional[str] = None,
        store=None,
        trust_simulated: bool = False,
        key_ids: Optional[Iterable[str]] = None,
        audit: Optional[Callable[[dict], None]] = None,
        cache_size: int = 1024,
        max_concurrent: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(provider, AttestationProvider) or isinstance(provider, str):
            self.provider = provider_for(provider)
        else:
            # the Shield library's providers only parse evidence: never trusted for key release
            raise TypeError(
                "TEEKeyManager verifies natively: pass a shield_asgi provider "
                "(shield_asgi.integrations.confidential) or a TEE type name, "
                f"not {type(provider).__name__}"
            )
        if not password:
            raise ValueError("TEEKeyManager needs a non-empty password")
        if not isinstance(service, str):
            raise TypeError("service must be a str")
        if policy is not None and not isinstance(policy, KeyReleasePolicy):
            raise TypeError("policy must be a KeyReleasePolicy")
        self.service = service
        self.policy = policy or KeyReleasePolicy()
        self.secret, _ = _load_secret(nonce_secret)
        if store is None:
            store = RedisStateStore(state_url) if state_url else MemoryStateStore()
        self.store = store
        self.trust_simulated = bool(trust_simulated or self.provider.trust_simulated)
        self.key_ids = (
            None if key_ids is None else frozenset(self._check_key_id(k) for k in key_ids)
        )
        self.audit = audit
        self.clock = clock
        self._cache = _ResultCache(cache_size)
        self._sem = asyncio.Semaphore(max_concurrent)
        # §6: derived ONCE, here (600 000 iterations cost ~0.5 s): never per request, and never
        # for anyone who has not attested (the library's derivation cache could be filled by
        # unauthenticated input)
        pw = password.encode() if isinstance(password, str) else bytes(password)
        salt = hashlib.sha256(KDF_SALT_PREFIX + service.encode()).digest()
        self._master = PBKDF2HMAC(
            algorithm=hashes.SHA256(), length=32, salt=salt, iterations=KDF_ITERATIONS
        ).derive(pw)

    # -- the library's API ---------------------------------------------------------------------
    def set_policy(self, policy: KeyReleasePolicy) -> None:
        """Replace the release policy (applies to the next call; cached verifications too)."""
        if not isinstance(policy, KeyReleasePolicy):
            raise TypeError("policy must be a KeyReleasePolicy")
        self.policy = policy

    def new_nonce(self) -> bytes:
        """A fresh 32-byte nonce (docs/protocol.md §1.1) for the evidence of one call."""
        return _native.nonce_issue(self.secret, self.clock())

    def cache_info(self) -> dict:
        """The verification cache: size, max_size, hits, misses, expiry times (expired entries
        are dropped first)."""
        return self._cache.info(self.clock())

    async def get_key(
        self,
        attestation_evidence,
        key_id: str = "default",
        nonce=None,
        public_key: Optional[bytes] = None,
    ) -> bytes:
        """The 32-byte key ``key_id`` for evidence bound to ``nonce`` (from ``new_nonce()``) and
        ``public_key`` (k, default empty), or AttestationError."""
        await self._authorize("get_key", attestation_evidence, key_id, nonce, public_key)
        return self._derive(key_id)

    async def release_key(
        self, attestation_evidence, key_id: str = "default", nonce=None, public_key=None
    ) -> dict:
        """The key ``key_id`` sealed to ``public_key`` (DER SubjectPublicKeyInfo of an X25519
        key or an RSA key of at least 2048 bits, which the evidence must bind, §1.2):
        ``{"alg", "enc" (HPKE only), "ciphertext", "key_id"}``, bytes as base64url; or
        AttestationError."""
        if public_key is None:
            raise self._deny(
                "release_key", key_id, "malformed", "public_key (DER SPKI) is required"
            )
        try:
            pk = _bytes_arg(public_key, "public_key")
            # §1.6: structural checks before any verification, so no nonce is spent for a key
            # the release could not be sealed to: a trial seal by the very sealer used below
            # (cheap; its refusal names what it accepts)
            _native.seal_to_spki(pk, bytes(32), KEY_RELEASE_INFO)
        except AttestationError as e:
            raise self._deny("release_key", key_id, e.reason, e.message) from None
        except ValueError as e:
            raise self._deny("release_key", key_id, "malformed", str(e)) from None
        await self._authorize("release_key", attestation_evidence, key_id, nonce, pk)
        key = self._derive(key_id)
        alg, enc, sealed = _native.seal_to_spki(pk, key, self._info(key_id))
        out = {"alg": alg, "ciphertext": _b64url(sealed), "key_id": key_id}
        if enc is not None:
            out["enc"] = _b64url(enc)
        return out

    async def encrypt_for_tee(
        self,
        data: bytes,
        attestation_evidence,
        nonce=None,
        *,
        key_id: str = "encryption",
        public_key: Optional[bytes] = None,
    ) -> bytes:
        """``data`` sealed for the attested TEE: a JSON envelope (docs/key-release.md) with
        AES-256-GCM under the key ``key_id``, its header (type, measurements) authenticated."""
        r = await self._authorize(
            "encrypt_for_tee", attestation_evidence, key_id, nonce, public_key
        )
        head = {
            "v": ENVELOPE_VERSION,
            "alg": "AES-256-GCM",
            "key_id": key_id,
            "tee_type": r.tee_type,
            "measurements": dict(r.measurements or {}),
        }
        iv = os.urandom(12)
        ct = AESGCM(self._derive(key_id)).encrypt(iv, bytes(data), self._aad(head))
        return json.dumps({**head, "iv": _b64url(iv), "ciphertext": _b64url(ct)}).encode()

    async def decrypt_in_tee(
        self,
        envelope_data: bytes,
        attestation_evidence,
        nonce=None,
        *,
        public_key: Optional[bytes] = None,
    ) -> bytes:
        """The plaintext of an ``encrypt_for_tee`` envelope, for evidence of the same TEE type
        and measurements; AttestationError when the attestation does not hold, ValueError when
        the envelope is malformed or does not authenticate (tampered, other key)."""
        try:
            env = json.loads(envelope_data)
            head = {f: env[f] for f in ("v", "alg", "key_id", "tee_type", "measurements")}
            iv, ct = _b64url_decode(env["iv"]), _b64url_decode(env["ciphertext"])
            if (
                head["v"] != ENVELOPE_VERSION
                or head["alg"] != "AES-256-GCM"
                or not isinstance(head["key_id"], str)
                or not isinstance(head["measurements"], dict)
                or len(iv) != 12
            ):
                raise ValueError
        except (ValueError, TypeError, KeyError):
            raise ValueError("not an encrypt_for_tee envelope (version 1)") from None
        key_id = head["key_id"]
        await self._authorize(
            "decrypt_in_tee",
            attestation_evidence,
            key_id,
            nonce,
            public_key,
            envelope=head,
        )
        try:
            return AESGCM(self._derive(key_id)).decrypt(iv, ct, self._aad(head))
        except InvalidTag:
            raise ValueError(
                "the envelope does not authenticate (tampered, or sealed under another key)"
            ) from None

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _check_key_id(key_id) -> str:
        if not isinstance(key_id, str) or not key_id or len(key_id.encode()) > MAX_KEY_ID:
            raise ValueError(f"a key id is a non-empty str of at most {MAX_KEY_ID} bytes")
        return key_id

    @staticmethod
    def _info(key_id: str) -> bytes:
        return KEY_RELEASE_INFO + b"\x00" + key_id.encode()

    @staticmethod
    def _aad(head: dict) -> bytes:
        return (
            ENVELOPE_AAD
            + b"\x00"
            + json.dumps(head, sort_keys=True, separators=(",", ":")).encode()
        )

    def _derive(self, key_id: str) -> bytes:
        # §6: HKDF-SHA256 with no salt (RFC 5869 §2.2: HashLen zeros)
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=self._info(key_id)
        ).derive(self._master)

    def _record(self, op, key_id, outcome, reason, message, r: Optional[AttestationResult]):
        rec = {
            "event": "key_release",
            "operation": op,
            "outcome": outcome,
            "key_id": key_id if isinstance(key_id, str) else repr(key_id)[:64],
            "reason": reason,
            "message": message,
            "service": self.service,
            "tee_type": r.tee_type if r is not None else None,
            "evidence_sha256": r.evidence_sha256 if r is not None else None,
            "time": self.clock(),
        }
        level = logging.INFO if outcome == "grant" else logging.WARNING
        log.log(
            level,
            "key release %s: %s key_id=%s reason=%s tee_type=%s evidence_sha256=%s",
            outcome,
            op,
            json.dumps(rec["key_id"]),
            reason,
            rec["tee_type"],
            rec["evidence_sha256"],
            extra={"shield_audit": rec},
        )
        if self.audit is not None:
            self.audit(rec)

    def _deny(
        self,
        op,
        key_id,
        reason: str,
        detail: str,
        r: Optional[AttestationResult] = None,
        public: Optional[str] = None,
    ) -> AttestationError:
        self._record(op, key_id, "deny", reason, detail, r)
        return AttestationError(reason, public or detail)

    def _tee(self, evidence) -> tuple[str, Union[bytes, str]]:
        t = self.provider.tee_type
        if isinstance(evidence, str):
            if t in ("maa", "gcp"):
                return t, evidence  # a JWT is its text (§1.5)
            return t, _bytes_arg(evidence, "evidence")
        if isinstance(evidence, (bytes, bytearray, memoryview)):
            if t not in ("maa", "gcp"):
                return t, bytes(evidence)
            try:
                return t, bytes(evidence).decode("ascii")
            except UnicodeDecodeError:
                raise AttestationError("malformed", "a JWT is ASCII text") from None
        raise AttestationError("malformed", "evidence must be bytes (or a JWT's text)")

    async def _authorize(
        self, op, evidence, key_id, nonce, public_key, envelope: Optional[dict] = None
    ) -> AttestationResult:
        """The checks of one call, in §1.6's order; the verified result, or AttestationError
        (audited either way)."""
        try:
            self._check_key_id(key_id)
        except ValueError as e:
            raise self._deny(op, key_id, "malformed", str(e)) from None
        try:
            t, ev = self._tee(evidence)
            k = b"" if public_key is None else _bytes_arg(public_key, "public_key")
            if len(ev) > MAX_ATTEST_BODY:
                raise AttestationError("malformed", "evidence too large")
            if nonce is None:
                raise AttestationError(
                    "nonce_invalid", "a fresh nonce is required (TEEKeyManager.new_nonce())"
                )
            n = _bytes_arg(nonce, "nonce")
        except AttestationError as e:
            raise self._deny(op, key_id, e.reason, e.message) from None

        now = self.clock()
        # §1.3: a nonce older than the policy's max age is as stale as an expired one
        ttl = int(min(NONCE_TTL, self.policy.max_age_seconds))
        bad = _native.nonce_check(self.secret, n, now, max(1, ttl))
        if bad:
            raise self._deny(
                op,
                key_id,
                bad,
                "the nonce is not one this deployment issued"
                if bad == "nonce_invalid"
                else "the nonce is too old for this policy",
            )
        if await self.store.is_consumed(b"n" + n):
            raise self._deny(op, key_id, "nonce_replayed", "the nonce was already used")

        ck = hashlib.sha256(
            t.encode()
            + b"\x00"
            + (ev.encode() if isinstance(ev, str) else ev)
            + b"\x00"
            + n
            + b"\x00"
            + k
        ).digest()
        r = self._cache.get(ck, now)
        if r is None:
            if self._sem.locked():
                raise self._deny(op, key_id, "overloaded", "too many verifications in progress")
            async with self._sem:
                loop = asyncio.get_running_loop()
                # the native call releases the GIL; a thread keeps the event loop responsive
                r = await loop.run_in_executor(
                    None,
                    functools.partial(
                        _native.verify,
                        ev,
                        t,
                        at=now,
                        policy=self.provider._policy_text,
                        nonce=n,
                        public_key=k,  # empty k is still bound (§1.2), never skipped
                        allow_debug=self.provider.allow_debug,
                        trust_simulated=self.trust_simulated,
                        **self.provider.verify_kwargs(),
                    ),
                )
            issued = int.from_bytes(n[1:5], "big")
            self._cache.put(ck, r, issued + ttl)

        if not r.verified:
            raise self._deny(op, key_id, r.reason or "malformed", r.message or "", r)
        failure = self.provider.check(r)
        if failure is None:
            failure = self.policy.check(r, now)
        if failure is None and envelope is not None:
            if r.tee_type != envelope["tee_type"]:
                failure = "policy_denied", "the envelope was sealed for another TEE type"
            else:
                for name, want in envelope["measurements"].items():
                    if _hex((r.measurements or {}).get(name, "")) != _hex(want):
                        failure = "measurement_mismatch", f"{name} differs from the envelope's"
                        break
        if failure is None and self.key_ids is not None and key_id not in self.key_ids:
            failure = "policy_denied", "unknown key id"
        if failure is not None:
            reason, detail = failure
            public = _POLICY_DENIED if reason in ("policy_denied", "measurement_mismatch") else None
            raise self._deny(op, key_id, reason, detail, r, public)
        # consumed only now, by a grant (§1.1); the atomic SET NX decides races
        if not await self.store.consume(b"n" + n, NONCE_TTL + 10):
            raise self._deny(op, key_id, "nonce_replayed", "the nonce was already used", r)
        self._record(op, key_id, "grant", None, None, r)
        return r
