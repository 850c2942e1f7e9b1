"""Client attestation end to end (docs/protocol.md §1–§3) with a real FastAPI app
(apps/app_attest.py) under uvicorn, where AttestationMiddleware runs the protocol through
shield_asgi._native: nonces, header mode, session mode (HPKE-sealed key, proofs, Content-Digest),
the exact §3 errors, excluded routes, the decorator and the dependency.  Evidence comes from
the simulated TEE (its dev root in a per-run XDG_DATA_HOME) and is tampered with for the
negative cases."""

from __future__ import annotations

import os
import secrets
import time

import httpx
import pytest

from conftest import REPO, shield_bin
from support.attest_cases import (  # noqa: F401  (shared cases, collected here with this module's client)
    fresh,
    test_debug,
    test_decorator_and_dependency,
    test_excluded_route,
    test_expired,
    test_missing,
    test_session_body_digest,
    test_session_replayed_proof,
    test_session_unknown_and_bad_establishment,
    test_session_valid_and_forged,
    test_tampered_payload,
    test_tampered_signature,
    test_well_known_405_has_allow,
    test_wrong_binding,
    test_wrong_binding_key,
)
from support.attest_client import Session, error, evidence, evidence_cli, get_nonce, header_mode
from support.attest_env import DEFAULT_PCR0, ENV, SECRET  # the per-run dev root and secret


@pytest.fixture(scope="module")
def srv(server):
    return server("app_attest:app", env=ENV, kind="uvicorn")


@pytest.fixture
def client(srv):
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


def test_nonce_endpoint(client):
    a, b = get_nonce(client), get_nonce(client)
    assert a != b
    assert abs(int.from_bytes(a[1:5], "big") - time.time()) < 5


def test_header_mode_fresh_evidence(client):
    n, ev = fresh(client)
    r = client.get("/whoami", headers=header_mode(n, ev))
    assert r.status_code == 200, r.text
    a = r.json()["attestation"]
    assert a["verified"] and a["tee_type"] == "simulated" and a["mode"] == "header"
    assert a["pcr0"] == DEFAULT_PCR0 and len(a["policy_sha256"]) == 64


def test_header_mode_cli_evidence(client):
    n = get_nonce(client)
    ev = evidence_cli(shield_bin(), n, dict(os.environ))
    assert client.get("/whoami", headers=header_mode(n, ev)).status_code == 200


def test_replayed_nonce(client):
    n, ev = fresh(client)
    assert client.get("/whoami", headers=header_mode(n, ev)).status_code == 200
    r = client.get("/whoami", headers=header_mode(n, ev))
    assert error(r) == (401, "attestation_failed", "nonce_replayed")


def test_wrong_measurement(client):
    n, ev = fresh(client, pcrs={0: b"\x11" * 48})
    r = client.get("/whoami", headers=header_mode(n, ev))
    assert error(r) == (403, "attestation_policy", "measurement_mismatch")


def test_malformed_and_unsupported(client):
    n = get_nonce(client)
    r = client.get("/whoami", headers=header_mode(n, b"\x00garbage"))
    assert error(r) == (401, "attestation_invalid", "malformed")
    h = header_mode(n, b"\x00garbage", tee="quantum")
    r = client.get("/whoami", headers=h)
    assert error(r) == (401, "attestation_invalid", "unsupported_type")


def test_forged_and_expired_nonce(client):
    forged = b"\x01" + secrets.token_bytes(31)
    r = client.get("/whoami", headers=header_mode(forged, evidence(forged)))
    assert error(r) == (401, "attestation_failed", "nonce_invalid")


def test_openapi_shows_attestation_headers(client):
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ClientAttestation"]["name"] == "X-Attestation-Token"
    assert schemes["AttestationSession"]["name"] == "X-Attestation-Session"


# ---- session mode --------------------------------------------------------------------------


def test_session_expired_is_not_session_unknown():
    """An ended session is session_expired (attest again), a wrong id session_unknown — the
    same distinction as the native gate.  In-process (Starlette's TestClient) so the
    middleware's clock can be moved past the session's end."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from shield_asgi.integrations import AttestationMiddleware

    now = [time.time()]
    app = FastAPI()

    @app.get("/x")
    def x():
        return {"ok": True}

    mw = AttestationMiddleware(
        app,
        tee_type="simulated",
        nonce_secret=SECRET,
        session_ttl=60,
        trust_simulated=True,
        clock=lambda: now[0],
    )
    with TestClient(mw) as c:
        s = Session(c)
        assert s.response.status_code == 200, s.response.text
        assert c.get("/x", headers=s.headers("GET", "/x")).status_code == 200
        now[0] += 61
        h = s.headers("GET", "/x", t=int(now[0] * 1000))
        assert error(c.get("/x", headers=h)) == (401, "attestation_failed", "session_expired")
        h = {"X-Attestation-Session": "A" * 32, "X-Attestation-Proof": "t=1, mac=AA"}
        assert error(c.get("/x", headers=h)) == (401, "attestation_failed", "session_unknown")


def test_timestamp_freshness_without_nonce_real_nitro_vector():
    """§1.3 in the middleware as in the native gate: under a "timestamp" policy a Nitro
    document may come without a nonce; its signed content is then consumed (replay refused).
    The real vector, verified at its own time (the middleware's clock)."""
    import base64
    import calendar
    from pathlib import Path

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from shield_asgi.integrations import AttestationMiddleware

    vectors = Path(os.environ.get("SHIELD_VECTORS") or REPO.parent / "shared" / "vectors")
    doc = vectors / "attestation" / "nitro" / "valid-attestation-doc-bytes"
    if not doc.exists():
        pytest.skip(f"shared vectors not found at {vectors} (set SHIELD_VECTORS)")
    at = calendar.timegm(time.strptime("2022-10-13T08:58:02", "%Y-%m-%dT%H:%M:%S"))
    app = FastAPI()

    @app.get("/x")
    def x():
        return {"ok": True}

    h = {
        "X-Attestation-Token": base64.b64encode(doc.read_bytes()).decode(),
        "X-Attestation-Type": "nitro",
    }
    strict = AttestationMiddleware(app, tee_type="nitro", nonce_secret=SECRET, clock=lambda: at)
    with TestClient(strict) as c:  # the default (nonce) policy: a nonce is required
        assert error(c.get("/x", headers=h)) == (401, "attestation_failed", "nonce_invalid")
    mw = AttestationMiddleware(
        app,
        tee_type="nitro",
        nonce_secret=SECRET,
        clock=lambda: at,
        policy={"version": 1, "freshness": "timestamp", "max_age": 300},
    )
    with TestClient(mw) as c:
        r = c.get("/x", headers=h)
        assert r.status_code == 200, r.text
        assert error(c.get("/x", headers=h)) == (401, "attestation_failed", "nonce_replayed")
