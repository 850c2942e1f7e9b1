"""The server proves its own TEE from Python (docs/protocol.md §4): AttestationRouter served by
a real FastAPI app over TLS on 127.0.0.1, under uvicorn and under the real shield binary: the
attestation document (its fields, the deterministic binding CBOR, evidence bound to the
client's nonce and to the TLS key), bad nonces (400, §3-style body), the per-client token
bucket (503 + Retry-After), the health report from cached evidence (content, age, refresh, 503
when the provider fails), and the provider interface (named explicitly, run off the loop)."""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import time

import cbor2
import httpx
import pytest

from conftest import scaled
from support.server_attest import (
    DATA_DIR,
    DEFAULT_PCR0,
    PKI,
    ca_ctx,
    dev_root,
    kinds_param,
    spki_sha256,
    start,
    tls_args,
)


def b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def client(srv) -> httpx.Client:
    # generous: a sanitized shield binary is slow, and the machine may be busy
    return httpx.Client(
        base_url=f"https://127.0.0.1:{srv.port}", verify=ca_ctx(), timeout=scaled(30)
    )


def verify_sim(evidence: bytes, nonce: bytes, binding: bytes):
    from shield_asgi import _native

    return _native.verify(
        evidence,
        "simulated",
        at=time.time(),
        nonce=nonce,
        public_key=binding,
        trust_simulated=True,
        simulated_root=dev_root(),
    )


# -- the binding CBOR (no server) ------------------------------------------------------------


def test_binding_cbor_is_rfc8949_deterministic():
    from shield_asgi.server_attestation import binding_cbor, decode_binding

    spki = bytes(range(32))
    # RFC 8949 §4.2.1 by hand: map(3), keys 1 2 3 in order, bstr(32) / null / unsigned 1
    assert binding_cbor(spki, None) == b"\xa3\x01\x58\x20" + spki + b"\x02\xf6\x03\x01"
    assert binding_cbor(None, b"\x00\x20") == b"\xa3\x01\xf6\x02\x42\x00\x20\x03\x01"
    assert decode_binding(binding_cbor(spki, b"k")) == (spki, b"k")
    for bad in (
        b"\xa3\x03\x01\x01\x58\x20" + spki + b"\x02\xf6",  # keys out of order
        b"\xa3\x01\x58\x20" + spki + b"\x02\xf6\x03\x18\x01",  # 1 not in its shortest form
        cbor2.dumps({1: spki, 2: None, 3: 2}),  # another version
        cbor2.dumps({1: spki, 2: None}),  # a key missing
        cbor2.dumps({1: spki[:31], 2: None, 3: 1}),  # not a SHA-256
        b"\xff",
    ):
        with pytest.raises(ValueError):
            decode_binding(bad)
    with pytest.raises(ValueError):
        binding_cbor(b"short", None)


# -- the endpoints over TLS ------------------------------------------------------------------


@kinds_param()
def test_attestation_document(fresh_server, kind):
    """§4's JSON exactly; the evidence binds D(our nonce, binding.cbor) and the certificate's
    key.  Under shield the router reads the certificate from the connection (no tls_certfile)."""
    extra = {"SHIELD_TEST_CERTFILE": PKI["server.pem"]} if kind == "uvicorn" else {}
    srv = start(fresh_server, kind, *tls_args(), **extra)
    nonce = secrets.token_bytes(32)
    with client(srv) as c:
        for path in ("/attestation", "/.well-known/shield/attestation"):
            r = c.get(path, params={"nonce": b64e(nonce)})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/json"
            assert r.headers["cache-control"] == "no-store"
            doc = r.json()
            assert set(doc) == {
                "tee_type",
                "evidence",
                "nonce",
                "binding",
                "measurements",
                "issued_at",
            }
            assert doc["tee_type"] == "simulated" and doc["nonce"] == b64e(nonce)
            b = doc["binding"]
            assert set(b) == {"tls_spki_sha256", "hpke_key_config", "version", "cbor"}
            assert b["tls_spki_sha256"] == spki_sha256().hex()
            assert b["hpke_key_config"] is None and b["version"] == 1
            cbor = b64d(b["cbor"])
            assert cbor2.loads(cbor) == {1: spki_sha256(), 2: None, 3: 1}
            assert cbor == cbor2.dumps(cbor2.loads(cbor), canonical=True)
            res = verify_sim(b64d(doc["evidence"]), nonce, cbor)
            assert res.verified, res.message
            assert doc["measurements"] == res.measurements
            assert doc["measurements"]["PCR0"] == DEFAULT_PCR0
            assert isinstance(doc["issued_at"], int)
            assert not verify_sim(b64d(doc["evidence"]), secrets.token_bytes(32), cbor).verified


@kinds_param()
def test_bad_nonce_is_400(fresh_server, kind):
    srv = start(fresh_server, kind, *tls_args(), SHIELD_TEST_CERTFILE=PKI["server.pem"])
    with client(srv) as c:
        for params in (
            {},
            {"nonce": ""},
            {"nonce": "abc"},
            {"nonce": b64e(bytes(31))},
            {"nonce": b64e(bytes(33))},
            {"nonce": "!!!!" * 11},
        ):
            r = c.get("/attestation", params=params)
            assert r.status_code == 400, (params, r.text)
            assert r.headers["content-type"] == "application/json"
            body = r.json()
            assert body["error"] == "attestation_invalid" and body["reason"] == "malformed"
            assert "32" in body["message"]


@kinds_param()
def test_rate_limit_is_503_with_retry_after(fresh_server, kind):
    """A bucket of 2 refilled at one token per 1000 s: the third fresh document is refused."""
    srv = start(
        fresh_server,
        kind,
        *tls_args(),
        SHIELD_TEST_CERTFILE=PKI["server.pem"],
        SHIELD_TEST_BURST=2,
        SHIELD_TEST_RATE=0.001,
    )
    with client(srv) as c:
        for _ in range(2):
            assert c.get("/attestation", params={"nonce": b64e(bytes(32))}).status_code == 200
        r = c.get("/attestation", params={"nonce": b64e(bytes(32))})
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        body = r.json()
        assert (body["error"], body["reason"]) == ("attestation_unavailable", "overloaded")
        # the health report is cached evidence: not rate-limited
        assert c.get("/attestation/health").status_code == 200


@kinds_param()
def test_health_report(fresh_server, kind):
    from shield_asgi.server_attestation import CACHED_NONCE, binding_cbor

    srv = start(fresh_server, kind, *tls_args(), SHIELD_TEST_CERTFILE=PKI["server.pem"])
    with client(srv) as c:
        r = c.get("/attestation/health")
        assert r.status_code == 200, r.text
        h = r.json()
        assert h["status"] == "ok"
        tee = h["tee"]
        assert set(tee) == {"type", "measurements", "evidence", "issued_at", "age"}
        assert tee["type"] == "simulated" and tee["measurements"]["PCR0"] == DEFAULT_PCR0
        assert isinstance(tee["age"], int) and tee["age"] >= 0
        # cached evidence binds n = 32 zero bytes and the same binding as fresh documents
        res = verify_sim(b64d(tee["evidence"]), CACHED_NONCE, binding_cbor(spki_sha256(), None))
        assert res.verified, res.message
        again = c.get("/attestation/health").json()["tee"]
        assert again["evidence"] == tee["evidence"] and again["issued_at"] == tee["issued_at"]


@kinds_param()
def test_provider_failure_is_503(fresh_server, kind):
    srv = start(
        fresh_server,
        kind,
        *tls_args(),
        SHIELD_TEST_CERTFILE=PKI["server.pem"],
        SHIELD_TEST_FAIL=1,
    )
    with client(srv) as c:
        r = c.get("/attestation/health")
        assert r.status_code == 503
        h = r.json()
        assert h["status"] == "unavailable" and h["tee"] == {"type": "simulated"}
        assert "switched off" in h["message"]
        r = c.get("/attestation", params={"nonce": b64e(bytes(32))})
        assert r.status_code == 503 and r.json()["error"] == "attestation_unavailable"
        assert "retry-after" not in r.headers


# -- in process: the health cache's age, the provider interface --------------------------------


def test_health_age_and_refresh_with_a_pinned_clock():
    from shield_asgi.server_attestation import ServerAttestation, SimulatedEvidenceProvider

    t0 = float(int(time.time()))
    now = [t0]
    sa = ServerAttestation(
        SimulatedEvidenceProvider(data_dir=str(DATA_DIR)),
        tls_spki=b"not a real key, only hashed",
        health_ttl=100,
        clock=lambda: now[0],
    )
    try:
        status, first = asyncio.run(sa.health())
        assert status == 200 and first["tee"]["age"] == 0
        assert first["tee"]["issued_at"] == int(t0)
        now[0] = t0 + 42
        status, later = asyncio.run(sa.health())
        assert later["tee"]["age"] == 42 and later["tee"]["evidence"] == first["tee"]["evidence"]
        now[0] = t0 + 100  # health_ttl reached: fresh evidence
        status, fresh = asyncio.run(sa.health())
        assert fresh["tee"]["age"] == 0 and fresh["tee"]["issued_at"] == int(t0 + 100)
        assert fresh["tee"]["evidence"] != first["tee"]["evidence"]
    finally:
        sa.close()


def test_generation_runs_off_the_event_loop():
    from shield_asgi.server_attestation import ServerAttestation, SimulatedEvidenceProvider

    threads = []

    class Recording(SimulatedEvidenceProvider):
        def generate(self, nonce, binding, *, at):
            threads.append(threading.current_thread())
            return super().generate(nonce, binding, at=at)

    sa = ServerAttestation(Recording(data_dir=str(DATA_DIR)))

    async def go():
        return await sa.document(bytes(32), client="10.0.0.1"), threading.current_thread()

    try:
        doc, loop_thread = asyncio.run(go())
        assert doc["tee_type"] == "simulated"
        assert threads and all(t is not loop_thread for t in threads)
    finally:
        sa.close()


def test_rate_limit_is_per_client():
    from shield_asgi.server_attestation import (
        RateLimited,
        ServerAttestation,
        SimulatedEvidenceProvider,
    )

    sa = ServerAttestation(SimulatedEvidenceProvider(data_dir=str(DATA_DIR)), rate=0.001, burst=1)

    async def go():
        await sa.document(bytes(32), client="10.0.0.1")
        with pytest.raises(RateLimited) as e:
            await sa.document(bytes(32), client="10.0.0.1")
        assert e.value.retry_after >= 1
        await sa.document(bytes(32), client="10.0.0.2")  # another client has its own bucket

    try:
        asyncio.run(go())
    finally:
        sa.close()


def test_the_provider_is_never_a_silent_default():
    from shield_asgi.integrations.confidential import AttestationRouter
    from shield_asgi.server_attestation import ServerAttestation

    with pytest.raises(TypeError, match="EvidenceProvider"):
        AttestationRouter()
    with pytest.raises(TypeError, match="SimulatedEvidenceProvider"):
        ServerAttestation("simulated")


def test_exported_with_the_shield_library_names():
    import shield_asgi.integrations.confidential as confidential
    from shield_asgi.client import AsyncAttestedClient
    from shield_asgi.integrations.router import AttestationRouter

    assert confidential.AttestationRouter is AttestationRouter
    assert confidential.MutualAttestationClient is AsyncAttestedClient
    assert {"AttestationRouter", "MutualAttestationClient"} <= set(confidential.__all__)
