"""Attestation providers with the Shield library's names, verifying for real through
``shield_asgi._native.verify`` (C: OpenSSL, libcbor; fail-closed).

A provider knows one TEE type, how to verify its evidence (type-specific inputs such as the
MAA issuer's JWKS or DCAP collateral) and what this app expects of the result (measurements).
``verify()`` checks the evidence; ``check()`` re-checks only the expectations against a result
someone else verified (the shield server did it natively), never re-verifying the evidence.
"""

from __future__ import annotations

import time
from typing import Iterable, Mapping, Optional

from shield_asgi.attestation import AttestationResult, check_policy, policy_text

__all__ = [
    "AttestationProvider",
    "NitroAttestationProvider",
    "SEVAttestationProvider",
    "MAAAttestationProvider",
    "SGXAttestationProvider",
    "TDXAttestationProvider",
    "SimulatedAttestationProvider",
    "canonical_tee_type",
    "provider_for",
]

_ALIASES = {
    "aws_nitro": "nitro",
    "sev": "sev-snp",
    "gcp_sev": "sev-snp",
    "azure_maa": "maa",
    "intel_sgx": "sgx",
}
TEE_TYPES = ("nitro", "sev-snp", "azure-snp", "azure-tdx", "tdx", "sgx", "maa", "gcp", "simulated")


def canonical_tee_type(name: Optional[str]) -> Optional[str]:
    """docs/protocol.md §0: the Shield library's spellings -> canonical names; None if unknown."""
    if name is None:
        return None
    n = str(name).strip().lower()
    n = _ALIASES.get(n, n)
    return n if n in TEE_TYPES else None


def _norm_hex(v) -> str:
    return (v.hex() if isinstance(v, (bytes, bytearray)) else str(v)).strip().lower()


class AttestationProvider:
    """Base class.  ``expected`` maps measurement names (as in ``result.measurements``) to an
    allowed value or a list of allowed values (hex)."""

    tee_type: str = ""

    def __init__(
        self,
        *,
        expected: Optional[Mapping[str, object]] = None,
        policy=None,
        allow_debug: bool = False,
        trust_simulated: bool = False,
    ) -> None:
        self.expected = {k: self._allowed(v) for k, v in (expected or {}).items()}
        self.policy = policy
        self._policy_text = policy_text(policy)  # read once (a path is read at start-up)
        self.allow_debug = allow_debug
        self.trust_simulated = trust_simulated

    @staticmethod
    def _allowed(v) -> tuple[str, ...]:
        if isinstance(v, (str, bytes, bytearray)):
            return (_norm_hex(v),)
        return tuple(_norm_hex(x) for x in v)

    def verify_kwargs(self) -> dict:
        """Type-specific inputs for ``_native.verify`` (JWKS, collateral, ...)."""
        return {}

    def accepts(self, tee_type: Optional[str]) -> bool:
        return tee_type == self.tee_type or (self.trust_simulated and tee_type == "simulated")

    def verify(
        self,
        evidence,
        *,
        nonce: Optional[bytes] = None,
        public_key: Optional[bytes] = None,
        at: Optional[float] = None,
        tee_type: Optional[str] = None,
    ) -> AttestationResult:
        from shield_asgi import _native

        r = _native.verify(
            evidence,
            tee_type or self.tee_type,
            at=at if at is not None else time.time(),
            policy=self._policy_text,
            nonce=nonce,
            public_key=public_key,
            allow_debug=self.allow_debug,
            trust_simulated=self.trust_simulated,
            **self.verify_kwargs(),
        )
        if r.verified:
            failure = self._expectations(r)  # the policy was applied by the verifier itself
            if failure:
                return _failed(r, *failure)
        return r

    def check(self, result: AttestationResult) -> Optional[tuple[str, str]]:
        """(reason, message) when a result someone else verified (the shield server, natively)
        does not meet this provider's expectations or its policy, else None.  The policy is
        applied to the result's facts by the verifier's own evaluator (never re-verifying)."""
        failure = self._expectations(result)
        if failure is None and self._policy_text is not None:
            failure = check_policy(self._policy_text, result)
        return failure

    def _expectations(self, result: AttestationResult) -> Optional[tuple[str, str]]:
        if not result.verified:
            return result.reason or "malformed", result.message or ""
        if not self.accepts(result.tee_type):
            return "policy_denied", f"TEE type {result.tee_type} is not {self.tee_type}"
        if result.debug and not self.allow_debug:
            return "debug_not_allowed", "evidence comes from a debug TEE"
        for name, allowed in self.expected.items():
            got = (result.measurements or {}).get(name)
            if got is None or got.lower() not in allowed:
                return "measurement_mismatch", f"{name} is not an expected value"
        return None


def _failed(r: AttestationResult, reason: str, message: str) -> AttestationResult:
    d = {f: getattr(r, f) for f in r.__slots__}
    d.update(verified=False, reason=reason, error=None, message=message)
    return AttestationResult(**d)


class NitroAttestationProvider(AttestationProvider):
    """AWS Nitro Enclaves.  expected_pcrs: {0: hex, 8: [hex, ...]} (also "PCR0" keys)."""

    tee_type = "nitro"

    def __init__(self, expected_pcrs: Optional[Mapping] = None, **kw) -> None:
        exp = {}
        for k, v in (expected_pcrs or {}).items():
            name = k if str(k).upper().startswith("PCR") else f"PCR{int(k)}"
            exp[name.upper()] = v
        exp.update(kw.pop("expected", None) or {})
        super().__init__(expected=exp, **kw)


class SimulatedAttestationProvider(NitroAttestationProvider):
    """The simulated TEE (docs/protocol.md §1.7), for development and tests only."""

    tee_type = "simulated"

    def __init__(self, expected_pcrs: Optional[Mapping] = None, **kw) -> None:
        kw["trust_simulated"] = True
        super().__init__(expected_pcrs, **kw)


class SEVAttestationProvider(AttestationProvider):
    """AMD SEV-SNP (raw report or CBOR bundle).  certs: VCEK/ASK/ARK (PEM/DER bytes)."""

    tee_type = "sev-snp"

    def __init__(
        self, expected_measurement=None, *, certs: Iterable[bytes] = (), azure: bool = False, **kw
    ) -> None:
        exp = dict(kw.pop("expected", None) or {})
        if expected_measurement is not None:
            exp["measurement"] = expected_measurement
        super().__init__(expected=exp, **kw)
        self.certs = tuple(certs)
        if azure:
            self.tee_type = "azure-snp"

    def verify_kwargs(self) -> dict:
        return {"certs": self.certs}


class MAAAttestationProvider(AttestationProvider):
    """Azure Attestation tokens: the issuer's JWKS document, expected iss and aud."""

    tee_type = "maa"

    def __init__(
        self, jwks=None, issuer: Optional[str] = None, audience: Optional[str] = None, **kw
    ) -> None:
        super().__init__(**kw)
        self.jwks, self.issuer, self.audience = jwks, issuer, audience

    def verify_kwargs(self) -> dict:
        return {"jwks": self.jwks, "issuer": self.issuer, "audience": self.audience}


class _DCAPProvider(AttestationProvider):
    def __init__(self, collateral=None, **kw) -> None:
        super().__init__(**kw)
        self.collateral = collateral

    def verify_kwargs(self) -> dict:
        return {"collateral": self.collateral}


class SGXAttestationProvider(_DCAPProvider):
    """Intel SGX DCAP quotes; collateral: JSON bytes or a path (file or PCS directory)."""

    tee_type = "sgx"

    def __init__(self, collateral=None, mrenclave=None, mrsigner=None, **kw) -> None:
        exp = dict(kw.pop("expected", None) or {})
        if mrenclave is not None:
            exp["MRENCLAVE"] = mrenclave
        if mrsigner is not None:
            exp["MRSIGNER"] = mrsigner
        super().__init__(collateral, expected=exp, **kw)


class TDXAttestationProvider(_DCAPProvider):
    """Intel TDX DCAP quotes; expected: {"MRTD": hex, "RTMR0": hex, ...}."""

    tee_type = "tdx"

    def __init__(self, collateral=None, mrtd=None, **kw) -> None:
        exp = dict(kw.pop("expected", None) or {})
        if mrtd is not None:
            exp["MRTD"] = mrtd
        super().__init__(collateral, expected=exp, **kw)


_BY_TYPE = {
    "nitro": NitroAttestationProvider,
    "simulated": SimulatedAttestationProvider,
    "sev-snp": SEVAttestationProvider,
    "maa": MAAAttestationProvider,
    "sgx": SGXAttestationProvider,
    "tdx": TDXAttestationProvider,
}


def provider_for(
    provider=None, tee_type: Optional[str] = None, **kw
) -> Optional[AttestationProvider]:
    """A provider object, a TEE type name, or None (any type the server accepts)."""
    if isinstance(provider, AttestationProvider):
        return provider
    name = canonical_tee_type(provider if isinstance(provider, str) else tee_type)
    if name is None:
        if provider is not None or tee_type is not None:
            raise ValueError(f"unknown TEE type {provider or tee_type!r}")
        return None
    if name == "azure-snp":
        return SEVAttestationProvider(azure=True, **kw)
    cls = _BY_TYPE.get(name)
    if cls is None:
        p = AttestationProvider(**kw)
        p.tee_type = name
        return p
    return cls(**kw)
