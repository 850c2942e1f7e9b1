"""Attestation results (docs/protocol.md §2) and a thin wrapper over the native verifier.

``AttestationResult`` is what an app sees in ``request.state.attestation``.  ``verify()``
calls ``shield_asgi._native.verify`` (C: OpenSSL, libcbor), which checks the evidence completely
and fail-closed: ``verified`` is true only when every check, the policy included, passed.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, Iterable, Mapping, Optional

from shield_asgi import _native

__all__ = ["AttestationResult", "verify", "check_policy", "policy_text", "ERROR_CLASSES", "REASONS"]

#: reason code -> (error class, HTTP status), docs/protocol.md §3: the native table (attest/), the
#: one the shield server's gate answers from, never a copy of it
REASONS: dict[str, tuple[str, int]] = dict(_native.REASONS)

#: reason code -> error class (docs/protocol.md §3)
ERROR_CLASSES = {reason: cls for reason, (cls, _status) in REASONS.items()}

_FIELDS = (
    "verified",
    "tee_type",
    "measurements",
    "claims",
    "timestamp",
    "error",
    "reason",
    "message",
    "debug",
    "tcb_status",
    "advisories",
    "public_key",
    "user_data",
    "nonce",
    "evidence_sha256",
    "raw_evidence",
    "mode",
    "session",
    "policy_sha256",
)


def _b64url(b: Optional[bytes]) -> Optional[str]:
    """base64url without padding (docs/protocol.md), None stays None."""
    return None if b is None else base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def _b64url_decode(s: str | bytes) -> bytes:
    """base64url or standard base64, padded or not (what clients send); ValueError otherwise."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    s = s.strip()
    if not s or len(s) % 4 == 1:
        raise ValueError("bad base64")
    s = s.replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class AttestationResult:
    """The outcome of verifying one piece of evidence (every field of docs/protocol.md §2).

    Byte fields (``public_key``, ``user_data``, ``nonce``, ``raw_evidence``) are ``bytes`` or
    None; ``evidence_sha256`` (SHA-256 of the signed content) and ``policy_sha256`` are
    lower-case hex; ``timestamp`` is the verification time in seconds since the epoch.
    """

    __slots__ = _FIELDS

    def __init__(
        self,
        verified: bool = False,
        tee_type: Optional[str] = None,
        measurements: Optional[dict] = None,
        claims: Optional[dict] = None,
        timestamp: Optional[float] = None,
        error: Optional[str] = None,
        reason: Optional[str] = None,
        message: Optional[str] = None,
        debug: bool = False,
        tcb_status: Optional[str] = None,
        advisories: Optional[Iterable[str]] = None,
        public_key: Optional[bytes] = None,
        user_data: Optional[bytes] = None,
        nonce: Optional[bytes] = None,
        evidence_sha256: Optional[str] = None,
        raw_evidence: Optional[bytes] = None,
        mode: Optional[str] = None,
        session: Optional[str] = None,
        policy_sha256: Optional[str] = None,
    ) -> None:
        # fail-closed: a result that claims success must not carry a reason
        self.verified = bool(verified) and reason is None
        self.tee_type = tee_type
        self.measurements = dict(measurements or {})
        self.claims = dict(claims or {})
        self.timestamp = timestamp
        self.reason = reason if reason is not None or self.verified else "malformed"
        self.error = (
            error if error is not None else ERROR_CLASSES.get(self.reason) if self.reason else None
        )
        self.message = message
        self.debug = bool(debug)
        self.tcb_status = tcb_status
        self.advisories = list(advisories or ())
        self.public_key = public_key
        self.user_data = user_data
        self.nonce = nonce
        self.evidence_sha256 = evidence_sha256
        self.raw_evidence = raw_evidence
        self.mode = mode
        self.session = session
        self.policy_sha256 = policy_sha256

    def __bool__(self) -> bool:
        return self.verified

    def __repr__(self) -> str:
        state = "verified" if self.verified else f"rejected: {self.reason}"
        return f"<AttestationResult {self.tee_type} {state}>"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: bytes as base64url unpadded (docs/protocol.md), hex kept as is."""
        d: dict[str, Any] = {}
        for f in _FIELDS:
            v = getattr(self, f)
            if isinstance(v, (bytes, bytearray, memoryview)):
                v = _b64url(bytes(v))
            elif isinstance(v, dict):
                v = dict(v)
            elif isinstance(v, list):
                v = list(v)
            d[f] = v
        return d


def verify(
    evidence: bytes | str,
    tee_type: str,
    *,
    at: float,
    policy: Optional[str | bytes] = None,
    certs: Iterable[bytes] = (),
    nonce: Optional[bytes] = None,
    public_key: Optional[bytes] = None,
    allow_debug: bool = False,
) -> AttestationResult:
    """Verify evidence natively; see ``shield_asgi._native.verify``.  ``at`` is required: the
    verification time is always an explicit input."""
    return _native.verify(
        evidence,
        tee_type,
        at=at,
        policy=policy,
        certs=tuple(certs),
        nonce=nonce,
        public_key=public_key,
        allow_debug=allow_debug,
    )


def policy_text(policy) -> Optional[str]:
    """A policy given as a dict, JSON text/bytes or a path -> the JSON text for the verifier."""
    if policy is None:
        return None
    if isinstance(policy, Mapping):
        return json.dumps(policy)
    if isinstance(policy, (bytes, bytearray)):
        return bytes(policy).decode()
    s = str(policy)
    if not s.lstrip().startswith("{") and os.path.exists(s):
        with open(s, encoding="utf-8") as f:
            return f.read()
    return s


def check_policy(policy, result: Optional[AttestationResult]) -> Optional[tuple[str, str]]:
    """Apply a verification policy (dict, JSON text/bytes or a path; the format of
    ``--attest-policy``) to a result verified earlier, natively and with the same evaluator the
    verifier ends with, without re-verifying the evidence (so nothing is consumed).  Returns
    None when the result satisfies it, else ``(reason, message)`` with a §3 reason.  Fails
    closed: no result, an unverified one, or one lacking a fact the policy constrains is
    refused.  Freshness, ``max_age`` and JWS algorithms exist only at verification time and
    are not re-checked.  Raises ValueError for a policy that does not load."""
    if result is None:
        return "missing", "client attestation is required"
    if not result.verified:
        return result.reason or "malformed", result.message or ""
    text = (
        policy
        if isinstance(policy, str) and policy.lstrip().startswith("{")
        else policy_text(policy)
    )
    if text is None:
        return None
    return _native.policy_check(
        text,
        result.tee_type or "",
        json.dumps(result.measurements or {}),
        json.dumps(result.claims or {}),
        debug=bool(result.debug),
        tcb_status=result.tcb_status,
        advisories=json.dumps(list(result.advisories or ())),
    )
