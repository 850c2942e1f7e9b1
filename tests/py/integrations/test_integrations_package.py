"""shield_asgi.integrations as a package: the §3 table comes from the native module (one table,
attest/'s, for the gate and for Python), the names user code imported before the split still
import from both paths, and the protocol engine runs with no ASGI at all (header values and
bodies in, results or AttestationError out)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from conftest import IS_UVICORN

# Pure Python against the installed package: the same in either server mode.
pytestmark = pytest.mark.skipif(IS_UVICORN, reason="no server involved: run once, in shield mode")

# docs/protocol.md §3, as the test's oracle
PROTOCOL_S3 = {
    401: {
        "attestation_required": ["missing"],
        "attestation_invalid": ["malformed", "unsupported_type"],
        "attestation_failed": [
            "signature_invalid",
            "chain_invalid",
            "root_untrusted",
            "revoked",
            "expired",
            "not_yet_valid",
            "binding_mismatch",
            "nonce_invalid",
            "nonce_expired",
            "nonce_replayed",
            "proof_invalid",
            "session_unknown",
            "session_expired",
        ],
    },
    403: {
        "attestation_policy": [
            "debug_not_allowed",
            "measurement_mismatch",
            "tcb_out_of_date",
            "tcb_unsupported",
            "policy_denied",
        ],
    },
    503: {"attestation_unavailable": ["collateral_missing", "collateral_stale", "overloaded"]},
}


def test_the_s3_table_is_the_native_one():
    from shield_asgi import _native
    from shield_asgi.attestation import ERROR_CLASSES, REASONS
    from shield_asgi.integrations import AttestationError
    from shield_asgi.integrations.errors import STATUS

    want = {
        r: (cls, status)
        for status, classes in PROTOCOL_S3.items()
        for cls, reasons in classes.items()
        for r in reasons
    }
    assert _native.REASONS == want
    assert REASONS == _native.REASONS
    assert ERROR_CLASSES == {r: cls for r, (cls, _s) in want.items()}
    assert STATUS == {cls: s for s, classes in PROTOCOL_S3.items() for cls in classes}
    for reason, (cls, status) in want.items():
        e = AttestationError(reason, "m")
        assert (e.error, e.status_code) == (cls, status)
        assert e.body() == {"error": cls, "reason": reason, "message": "m"}
    assert AttestationError("overloaded").headers == {"Retry-After": "1"}


def test_the_public_names_import_from_both_paths():
    import shield_asgi.integrations as integrations
    import shield_asgi.integrations.confidential as confidential

    before = [  # what shield.integrations exported before the split
        "ATTEST_PATH",
        "NONCE_PATH",
        "AttestationError",
        "AttestationMiddleware",
        "MemoryStateStore",
        "RedisStateStore",
        "add_attestation_exception_handler",
        "attestation_required",
        "attestation_security",
        "requires_attestation",
        "AttestationProvider",
        "MAAAttestationProvider",
        "NitroAttestationProvider",
        "SEVAttestationProvider",
        "SGXAttestationProvider",
        "SimulatedAttestationProvider",
        "TDXAttestationProvider",
    ]
    for name in before:
        assert getattr(integrations, name) is getattr(confidential, name), name
    assert sorted(integrations.__all__) == sorted(before)


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def test_the_protocol_engine_needs_no_asgi(tmp_path, monkeypatch):
    from shield_asgi import _native
    from shield_asgi.integrations import AttestationError
    from shield_asgi.integrations.protocol import AttestationProtocol, DigestCheck

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # a dev root of its own (§1.7)
    engine = AttestationProtocol(
        provider=None,
        tee_types={"simulated"},
        policy=None,
        nonce_secret=b"s" * 32,
        state_url=None,
        store=None,
        trust_simulated=True,
        session_ttl=60,
        clock=time.time,
        max_concurrent=4,
    )

    def evidence(nonce: bytes, spki: bytes | None = None) -> bytes:
        return _native.simulated_evidence(nonce, spki, at=time.time())

    async def run():
        # header mode: verified once, then the nonce is spent
        body = engine.nonce_body()
        assert body["expires_in"] == 60
        ev = base64.b64encode(evidence(base64.urlsafe_b64decode(body["nonce"] + "=="))).decode()
        r = await engine.header_mode(ev, "simulated", body["nonce"])
        assert r.verified and r.tee_type == "simulated" and r.mode == "header"
        with pytest.raises(AttestationError) as e:
            await engine.header_mode(ev, "simulated", body["nonce"])
        assert e.value.reason == "nonce_replayed"
        with pytest.raises(AttestationError) as e:
            await engine.header_mode(ev, "no-such-tee", body["nonce"])
        assert e.value.reason == "unsupported_type"

        # a session: establish with an X25519 key, then a proof over method, target and digest
        sk = x25519.X25519PrivateKey.generate()
        spki = sk.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        nonce = engine.new_nonce()
        out = await engine.establish(
            json.dumps(
                {
                    "type": "simulated",
                    "nonce": _b64(nonce),
                    "public_key": _b64(spki),
                    "evidence": _b64(evidence(nonce, spki)),
                }
            ).encode()
        )
        raw_sk = sk.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        pad = "=="
        key = _native.hpke_open(
            raw_sk,
            base64.urlsafe_b64decode(out["enc"] + pad),
            base64.urlsafe_b64decode(out["sealed_key"] + pad),
            b"shield-session-v1",
        )
        body_bytes = b'{"x": 1}'
        digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body_bytes).digest()).decode() + ":"
        t_ms = int(time.time() * 1000)
        mac = _native.proof_mac(key, t_ms, "POST", "/items?a=1", digest)
        proof = f"t={t_ms}, mac={_b64(mac)}"
        r, want_digest, got_key = await engine.session_mode(
            out["session"], proof, "POST", b"/items?a=1", digest, True
        )
        assert r.verified and r.mode == "session" and r.session == out["session"]
        assert want_digest == digest and got_key == key
        check = DigestCheck(want_digest)
        check.update(body_bytes[:3])
        check.update(body_bytes[3:])
        assert check.matches()
        forged = DigestCheck(want_digest)
        forged.update(b"other")
        assert not forged.matches()
        # the same proof again: its time does not move forward
        with pytest.raises(AttestationError) as e:
            await engine.session_mode(out["session"], proof, "POST", b"/items?a=1", digest, True)
        assert e.value.reason == "proof_invalid"
        with pytest.raises(AttestationError) as e:
            await engine.session_mode("nope", proof, "POST", b"/items?a=1", digest, True)
        assert e.value.reason == "session_unknown"

    asyncio.run(run())
