"""Client-attestation cases that must give the same answer whether the protocol runs in the
Python middleware under uvicorn (integrations/test_integrations_middleware.py) or natively in
the shield server (gate/test_gate.py).  Each of those modules imports these, so pytest collects
them there with that module's own `srv` fixture; this file itself holds no test module."""

from __future__ import annotations

import os
import time

from support.attest_client import Session, b64e, error, evidence, get_nonce, header_mode
from support.attest_env import DEFAULT_PCR0


def fresh(client, **kw):
    n = get_nonce(client)
    return n, evidence(n, **kw)


def test_wrong_binding(client):
    n1, ev = fresh(client)
    n2 = get_nonce(client)
    r = client.get("/whoami", headers=header_mode(n2, ev))
    assert error(r) == (401, "attestation_failed", "binding_mismatch")
    # a failed verification does not consume the nonce: the right evidence still passes
    assert client.get("/whoami", headers=header_mode(n1, ev)).status_code == 200


def test_wrong_binding_key(client):
    n = get_nonce(client)
    ev = evidence(n, b"\x30\x03\x01\x02\x03")  # bound to a key; header mode has k empty
    r = client.get("/whoami", headers=header_mode(n, ev))
    assert error(r) == (401, "attestation_failed", "binding_mismatch")


def test_debug(client):
    n, ev = fresh(client, debug=True)
    r = client.get("/whoami", headers=header_mode(n, ev))
    assert error(r) == (403, "attestation_policy", "debug_not_allowed")


def test_expired(client):
    n = get_nonce(client)
    ev = evidence(n, at=time.time() - 4 * 3600)  # leaf certificate valid 3 h
    r = client.get("/whoami", headers=header_mode(n, ev))
    assert error(r) == (401, "attestation_failed", "expired")


def test_tampered_signature(client):
    n, ev = fresh(client)
    bad = ev[:-1] + bytes([ev[-1] ^ 1])
    r = client.get("/whoami", headers=header_mode(n, bad))
    assert error(r) == (401, "attestation_failed", "signature_invalid")


def test_tampered_payload(client):
    n, ev = fresh(client)
    i = ev.index(b"i-shield-simulated-enc0")
    bad = ev[:i] + b"j" + ev[i + 1 :]
    r = client.get("/whoami", headers=header_mode(n, bad))
    assert error(r) == (401, "attestation_failed", "signature_invalid")


def test_missing(client):
    assert error(client.get("/whoami")) == (401, "attestation_required", "missing")


def test_excluded_route(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"ok": True}


def test_decorator_and_dependency(client):
    n, ev = fresh(client)
    assert client.get("/decorated", headers=header_mode(n, ev)).json() == {"ok": True}
    n, ev = fresh(client)
    r = client.get("/decorated-strict", headers=header_mode(n, ev))
    assert error(r) == (403, "attestation_policy", "measurement_mismatch")
    n, ev = fresh(client)
    r = client.get("/dep", headers=header_mode(n, ev))
    assert error(r) == (403, "attestation_policy", "policy_denied")


def test_session_replayed_proof(client):
    s = Session(client)
    h = s.headers("GET", "/whoami")
    assert client.get("/whoami", headers=h).status_code == 200
    assert error(client.get("/whoami", headers=h)) == (401, "attestation_failed", "proof_invalid")
    old = s.headers("GET", "/whoami", t=int(time.time() * 1000) - 120_000)
    assert error(client.get("/whoami", headers=old)) == (401, "attestation_failed", "proof_invalid")


def test_session_body_digest(client):
    s = Session(client)
    body = os.urandom(300_000)
    r = client.post("/echo", content=body, headers=s.headers("POST", "/echo", body))
    assert r.status_code == 200, r.text
    assert r.json()["len"] == len(body) and r.json()["attestation"]["mode"] == "session"
    changed = body[:-1] + bytes([body[-1] ^ 1])
    h = s.headers("POST", "/echo", body)  # digest (and MAC) over the original body
    r = client.post("/echo", content=changed, headers=h)
    assert error(r) == (401, "attestation_failed", "proof_invalid")
    h = s.headers("POST", "/echo")  # a body without Content-Digest
    r = client.post("/echo", content=b"x", headers=h)
    assert error(r) == (401, "attestation_failed", "proof_invalid")
    # the connection and the session still work afterwards
    r = client.post("/echo", content=b"abc", headers=s.headers("POST", "/echo", b"abc"))
    assert r.status_code == 200 and r.json()["len"] == 3


def test_session_valid_and_forged(client):
    s = Session(client)
    assert s.response.status_code == 200, s.response.text
    r = client.get("/whoami?x=1", headers=s.headers("GET", "/whoami?x=1"))
    assert r.status_code == 200, r.text
    a = r.json()["attestation"]
    assert a["mode"] == "session" and a["session"] == s.id and a["tee_type"] == "simulated"
    assert a["pcr0"] == DEFAULT_PCR0
    h = s.headers("GET", "/whoami")
    p = h["X-Attestation-Proof"]
    h["X-Attestation-Proof"] = p[:-2] + ("BB" if p.endswith("AA") else "AA")
    assert error(client.get("/whoami", headers=h)) == (401, "attestation_failed", "proof_invalid")
    h = s.headers("GET", "/other")  # proof for another target
    assert error(client.get("/whoami", headers=h)) == (401, "attestation_failed", "proof_invalid")
    h = s.headers("GET", "/whoami")
    del h["X-Attestation-Proof"]
    assert error(client.get("/whoami", headers=h)) == (401, "attestation_failed", "proof_invalid")


def test_session_unknown_and_bad_establishment(client):
    h = {"X-Attestation-Session": b64e(os.urandom(24)), "X-Attestation-Proof": "t=1, mac=AA"}
    assert error(client.get("/whoami", headers=h)) == (401, "attestation_failed", "session_unknown")
    n = get_nonce(client)
    ev = evidence(n)  # bound to no key: establishing a session with a key must fail
    r = client.post(
        "/.well-known/shield/attest",
        json={
            "type": "simulated",
            "evidence": b64e(ev),
            "nonce": b64e(n),
            "public_key": b64e(b"\x30\x03\x01\x02\x03"),
        },
    )
    assert error(r) == (401, "attestation_failed", "binding_mismatch")
    r = client.post("/.well-known/shield/attest", content=b"[")
    assert error(r) == (401, "attestation_invalid", "malformed")


def test_well_known_405_has_allow(client):
    """RFC 9110 §15.5.6: a 405 from the well-known endpoints says which methods they allow."""
    r = client.post("/.well-known/shield/nonce")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", r.headers
    r = client.get("/.well-known/shield/attest")
    assert r.status_code == 405 and r.headers["allow"] == "POST", r.headers
