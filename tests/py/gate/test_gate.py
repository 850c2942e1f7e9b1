"""Client attestation verified natively by the shield server (server/gate.c, docs/protocol.md
§1–§3): the cases of integrations/test_integrations_middleware.py (same app, same helpers, same
simulated dev root) against the real `shield` binary with `--attest-*` flags, so the nonce
endpoint, header and session mode, the checks and the §3 errors come from C before Python runs;
the app sees request.state.attestation built from the C result.  Also: mutual-TLS mode, optional
mode, excluded routes, the pool's caps (503 overloaded), consumed nonces and sessions shared by
two workers (and the metrics), flag validation, and a real Nitro vector at its valid-at time
with --dev --attest-clock."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import REPO, SERVER_KIND, scaled, shield_bin
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
from support.attest_client import Session, b64e, error, evidence, get_nonce, header_mode
from support.attest_env import DATA_HOME, DEFAULT_PCR0, ENV, SECRET  # one dev root per run


def _has_gate() -> bool:
    # a missing or unrunnable binary raises here (the module errors): like conftest's fixtures,
    # a binary that is not there fails the tests, it does not skip them
    out = subprocess.run(
        [str(shield_bin()), "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    return "--attest-types" in out and "mutual-TLS modes" in out


pytestmark = [
    pytest.mark.skipif(SERVER_KIND != "shield", reason="native gate: shield only"),
    pytest.mark.skipif(
        SERVER_KIND == "shield" and not _has_gate(),
        reason=f"{shield_bin()} predates the native attestation gate (scripts/bootstrap)",
    ),
]

APP = "app_attest:app"
POLICY = os.path.join(DATA_HOME, "native-policy.json")
with open(POLICY, "w") as f:
    json.dump({"version": 1, "nitro": {"pcrs": {"0": [DEFAULT_PCR0]}}}, f)
BASE = (
    "--attest-types",
    "simulated,nitro",
    "--trust-simulated",
    "--state-secret-file",
    SECRET,
    "--attest-exclude",
    "/health",
    "--attest-exclude",
    "/docs",
    "--attest-exclude",
    "/openapi.json",
)
VECTORS = Path(os.environ.get("SHIELD_VECTORS") or REPO.parent / "shared" / "vectors")


@pytest.fixture(scope="module")
def srv(server):
    return server(APP, *BASE, "--attest-required", "--attest-policy", POLICY, env=ENV)


@pytest.fixture
def client(srv):
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


def test_nonce_endpoint(client):
    r = client.get("/.well-known/shield/nonce")
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    a, b = get_nonce(client), get_nonce(client)
    assert a != b
    assert abs(int.from_bytes(a[1:5], "big") - time.time()) < 5
    r = client.post("/.well-known/shield/nonce")
    assert r.status_code == 405 and r.json() == {"error": "method_not_allowed"}


def test_header_mode_fresh_evidence(client):
    n, ev = fresh(client)
    r = client.get("/whoami", headers=header_mode(n, ev))
    assert r.status_code == 200, r.text
    a = r.json()["attestation"]
    assert a["verified"] and a["tee_type"] == "simulated" and a["mode"] == "header"
    assert a["pcr0"] == DEFAULT_PCR0 and len(a["policy_sha256"]) == 64
    assert len(a["evidence_sha256"]) == 64


def test_header_mode_cli_evidence(client):
    from support.attest_client import evidence_cli

    n = get_nonce(client)
    ev = evidence_cli(shield_bin(), n, dict(os.environ))
    assert client.get("/whoami", headers=header_mode(n, ev)).status_code == 200


def test_alias_type_name(client):
    n, ev = fresh(client)
    r = client.get("/whoami", headers=header_mode(n, ev, tee="simulated"))
    assert r.status_code == 200
    n, ev = fresh(client)  # aws_nitro = nitro; tee_type comes from the anchor (§1.7)
    r = client.get("/whoami", headers=header_mode(n, ev, tee="aws_nitro"))
    assert r.status_code == 200 and r.json()["attestation"]["tee_type"] == "simulated"


def test_replayed_nonce(client):
    n, ev = fresh(client)
    assert client.get("/whoami", headers=header_mode(n, ev)).status_code == 200
    r = client.get("/whoami", headers=header_mode(n, ev))
    assert error(r) == (401, "attestation_failed", "nonce_replayed")
    assert r.headers["www-authenticate"] == 'Attestation realm="shield"'


def test_wrong_measurement_server_policy(client):
    n, ev = fresh(client, pcrs={0: b"\x11" * 48})
    r = client.get("/whoami", headers=header_mode(n, ev))
    assert error(r) == (403, "attestation_policy", "measurement_mismatch")
    assert "pid" not in r.text  # answered by the server, not the app


def test_malformed_and_unsupported(client):
    n = get_nonce(client)
    r = client.get("/whoami", headers=header_mode(n, b"\x00garbage"))
    assert error(r) == (401, "attestation_invalid", "malformed")
    r = client.get("/whoami", headers=header_mode(n, b"\x00garbage", tee="quantum"))
    assert error(r) == (401, "attestation_invalid", "unsupported_type")
    r = client.get("/whoami", headers=header_mode(n, b"\x00garbage", tee="sev-snp"))
    assert error(r) == (401, "attestation_invalid", "unsupported_type")  # not in --attest-types
    h = header_mode(n, b"x")
    h["X-Attestation-Token"] = "!!!not base64!!!"
    assert error(client.get("/whoami", headers=h)) == (401, "attestation_invalid", "malformed")
    h = header_mode(n, b"x")
    del h["X-Attestation-Type"]
    assert error(client.get("/whoami", headers=h)) == (401, "attestation_invalid", "malformed")


def test_forged_and_missing_nonce(client):
    forged = b"\x01" + secrets.token_bytes(31)
    r = client.get("/whoami", headers=header_mode(forged, evidence(forged)))
    assert error(r) == (401, "attestation_failed", "nonce_invalid")
    h = header_mode(forged, b"x")
    del h["X-Attestation-Nonce"]
    assert error(client.get("/whoami", headers=h)) == (401, "attestation_failed", "nonce_invalid")


def test_large_evidence_header_allowed(client):
    # with attestation on the header block limit is 64 KiB (Confidential Space tokens ~11 KB)
    n = get_nonce(client)
    h = header_mode(n, b"\x00" * 30000)
    r = client.get("/whoami", headers=h)
    assert error(r) == (401, "attestation_invalid", "malformed")


def test_refused_with_unread_body(client):
    # answered from C before the body is read: the body is discarded, the connection survives
    n = get_nonce(client)
    body = os.urandom(300_000)
    r = client.post("/echo", content=body, headers=header_mode(n, evidence(n, debug=True)))
    assert error(r) == (403, "attestation_policy", "debug_not_allowed")
    r = client.post("/echo", content=body)
    assert error(r) == (401, "attestation_required", "missing")
    n, ev = fresh(client)
    r = client.post("/echo", content=b"abc", headers=header_mode(n, ev))
    assert r.status_code == 200 and r.json()["len"] == 3


def test_establishment_body_too_large(client):
    """An establishment body over 256 KiB is answered at once (from inside the body callback),
    whether it arrives whole or chunked; the server drains or closes, the client never hangs."""
    big = b"{" + b" " * 300_000 + b"}"
    for content in (big, iter([big[:100_000], big[100_000:]])):
        r = client.post("/.well-known/shield/attest", content=content)
        assert error(r) == (401, "attestation_invalid", "malformed")
        assert "too large" in r.json()["message"]
    assert client.get("/health").status_code == 200


def test_body_after_verification(client):
    n, ev = fresh(client)
    body = os.urandom(300_000)
    r = client.post("/echo", content=body, headers=header_mode(n, ev))
    assert r.status_code == 200, r.text
    assert r.json()["len"] == len(body) and r.json()["attestation"]["mode"] == "header"


# ---- session mode --------------------------------------------------------------------------


def test_session_establishment_headers_and_limits(client):
    """Beyond the shared cases: the sealed key is never cached, an oversized establishment
    body is malformed, and the endpoint is POST only."""
    s = Session(client)
    assert s.response.status_code == 200, s.response.text
    assert s.response.headers["cache-control"] == "no-store"
    r = client.post("/.well-known/shield/attest", content=b"x" * (300 * 1024))
    assert error(r) == (401, "attestation_invalid", "malformed")
    assert client.get("/.well-known/shield/attest").status_code == 405


def test_session_across_workers(fresh_server):
    srv = fresh_server(APP, *BASE, "--attest-required", "--workers", "2", env=ENV)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        s = Session(c)
        assert s.response.status_code == 200, s.response.text
    pids = set()
    for _ in range(30):
        with httpx.Client(base_url=srv.url, timeout=30) as c:  # new connection each time
            r = c.get("/whoami", headers=s.headers("GET", "/whoami"))
            assert r.status_code == 200, r.text
            a = r.json()["attestation"]
            assert a["session"] == s.id and a["tee_type"] == "simulated"
            pids.add(r.json()["pid"])
        if len(pids) == 2:
            break


# ---- mutual TLS: the connection is the session ---------------------------------------------


def test_mtls_mode(server, tmp_path_factory):
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from support.tls_certs import make_pki

    pki = make_pki(tmp_path_factory.mktemp("pki"))
    srv = server(
        APP,
        *BASE,
        "--attest-required",
        "--ssl-certfile",
        pki["server.pem"],
        "--ssl-keyfile",
        pki["server.key"],
        "--ssl-ca-certs",
        pki["ca.pem"],
        "--ssl-cert-reqs",
        "optional",
        env=ENV,
    )
    url = f"https://{srv.host}:{srv.port}"
    spki = (
        x509.load_pem_x509_certificate(pki["client.pem"].read_bytes())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ctx = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    ctx.load_cert_chain(str(pki["client.pem"]), str(pki["client.key"]))
    with httpx.Client(base_url=url, verify=ctx, timeout=30) as c:
        assert error(c.get("/whoami")) == (401, "attestation_required", "missing")
        n = get_nonce(c)
        other = evidence(n, b"\x30\x03\x01\x02\x03")  # bound to another key
        r = c.post(
            "/.well-known/shield/attest",
            json={"type": "simulated", "evidence": b64e(other), "nonce": b64e(n)},
        )
        assert error(r) == (401, "attestation_failed", "binding_mismatch")
        r = c.post(
            "/.well-known/shield/attest",
            json={"type": "simulated", "evidence": b64e(evidence(n, spki)), "nonce": b64e(n)},
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"mode": "mtls", "expires_in": 3600}
        for _ in range(3):  # every later request on this connection is attested
            r = c.get("/whoami")
            assert r.status_code == 200, r.text
            a = r.json()["attestation"]
            assert a["mode"] == "mtls" and a["tee_type"] == "simulated" and a["session"] is None
            assert a["pcr0"] == DEFAULT_PCR0
    # without a client certificate there is no k: the body must carry public_key
    plain = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    with httpx.Client(base_url=url, verify=plain, timeout=30) as c:
        n = get_nonce(c)
        r = c.post(
            "/.well-known/shield/attest",
            json={"type": "simulated", "evidence": b64e(evidence(n, spki)), "nonce": b64e(n)},
        )
        assert error(r) == (401, "attestation_invalid", "malformed")
        assert error(c.get("/whoami")) == (401, "attestation_required", "missing")


# ---- optional mode, workers, flags ---------------------------------------------------------


def test_optional_mode_passes_without_evidence(server):
    srv = server(APP, *BASE, env={**ENV, "SHIELD_TEST_ATTEST_OPTIONAL": "1"})
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.get("/whoami")
        assert r.status_code == 200 and r.json()["attestation"] is None
        n, ev = fresh(c, debug=True)  # presented and failing: an error even when optional
        r = c.get("/whoami", headers=header_mode(n, ev))
        assert error(r) == (403, "attestation_policy", "debug_not_allowed")
        n, ev = fresh(c)
        r = c.get("/whoami", headers=header_mode(n, ev))
        assert r.status_code == 200 and r.json()["attestation"]["verified"]


def test_two_workers_share_consumed_nonces(fresh_server):
    from conftest import free_port
    from support.metrics import scrape

    mport = free_port()
    srv = fresh_server(
        APP, *BASE, "--attest-required", "--workers", "2", "--metrics-port", str(mport), env=ENV
    )
    pids, used = set(), []
    deadline = time.time() + 20
    while len(pids) < 2 and time.time() < deadline:
        with httpx.Client(base_url=srv.url, timeout=30) as c:  # new connection each time
            n, ev = fresh(c)
            r = c.get("/whoami", headers=header_mode(n, ev))
            assert r.status_code == 200, r.text
            pids.add(r.json()["pid"])
            used.append((n, ev))
    if len(pids) < 2:
        pytest.skip("the kernel gave every connection to one worker")
    # every consumed nonce is refused whichever worker gets the replay
    for n, ev in used[:6]:
        for _ in range(2):
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                r = c.get("/whoami", headers=header_mode(n, ev))
                assert error(r) == (401, "attestation_failed", "nonce_replayed")
    # verifications summed over both workers (replays are refused before verifying)
    key = 'shield_attest_verifications_total{type="simulated",mode="header",result="ok"}'
    deadline = time.time() + 10
    while time.time() < deadline and scrape(mport).get(key, 0) < len(used):
        time.sleep(0.1)
    m = scrape(mport)
    assert m[key] == len(used)
    assert m["shield_attest_verify_seconds_count"] == len(used)


def test_pool_caps_overloaded(fresh_server):
    """More concurrent verifications from one address than the per-client cap (16): the rest
    get 503 overloaded with Retry-After, and the app never sees them."""
    import concurrent.futures
    import threading

    # The cap counts verifications at once, so all 24 must be in the pool together: each
    # client connects first (a nonce request), all send at one barrier, and each verification
    # takes long enough (3 s, more under a sanitizer) for the last to arrive on a loaded machine.
    delay_ms = int(scaled(3.0) * 1000)
    srv = fresh_server(
        APP,
        *BASE,
        "--attest-required",
        "--dev",
        env={**ENV, "SHIELD_ATTEST_VERIFY_DELAY_MS": str(delay_ms)},
    )
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        cases = [fresh(c) for _ in range(24)]
    start = threading.Barrier(24)

    def one(case, barrier=None):
        n, ev = case
        with httpx.Client(base_url=srv.url, timeout=scaled(30)) as c:
            c.get("/.well-known/shield/nonce").raise_for_status()  # connected
            if barrier:
                barrier.wait(timeout=scaled(30))
            return c.get("/whoami", headers=header_mode(n, ev))

    with concurrent.futures.ThreadPoolExecutor(24) as ex:
        rs = list(ex.map(lambda case: one(case, start), cases))
    ok = [r for r in rs if r.status_code == 200]
    busy = [r for r in rs if r.status_code == 503]
    assert len(ok) + len(busy) == 24 and len(ok) <= 16 and busy, [r.status_code for r in rs]
    for r in busy:
        assert error(r) == (503, "attestation_unavailable", "overloaded")
        assert r.headers["retry-after"] == "1"
    # the refused ones did not consume their nonces: they pass once the pool is free
    for r, case in zip(rs, cases):
        if r.status_code == 503:
            assert one(case).status_code == 200
            break


def test_flags_validation():
    def run(*args):
        return subprocess.run(
            [str(shield_bin()), APP, *args], capture_output=True, text=True, timeout=30
        )

    r = run("--attest-types", "simulated", "--attest-clock", "2022-10-13T08:58:02Z")
    assert r.returncode == 2 and "--dev" in r.stderr
    r = run("--attest-types", "quantum")
    assert r.returncode == 2 and "quantum" in r.stderr
    r = run("--attest-required")
    assert r.returncode == 2 and "--attest-types" in r.stderr
    r = run("--attest-types", "nitro", "--attest-clock", "yesterday", "--dev")
    assert r.returncode == 2 and "RFC 3339" in r.stderr
    r = run("--attest-types", "nitro", "--attest-exclude", "health")
    assert r.returncode == 2 and "must start with '/'" in r.stderr
    r = subprocess.run(
        [str(shield_bin()), "--native-hello", "--attest-types", "nitro"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "--native-hello" in r.stderr
    r = run("--attest-types", "nitro", "--attest-policy", "/nonexistent/policy.json", "--port", "0")
    assert r.returncode != 0 and "--attest-policy" in r.stderr


# ---- a real Nitro vector at its valid-at time ----------------------------------------------


def _nitro_headers(doc: bytes) -> dict:
    import base64

    return {"X-Attestation-Token": base64.b64encode(doc).decode(), "X-Attestation-Type": "nitro"}


def test_real_nitro_vector_at_its_time(fresh_server):
    doc = VECTORS / "attestation" / "nitro" / "valid-attestation-doc-bytes"
    if not doc.exists():
        pytest.skip(f"shared vectors not found at {VECTORS} (set SHIELD_VECTORS)")
    ev = doc.read_bytes()
    policy = os.path.join(DATA_HOME, "timestamp-policy.json")
    with open(policy, "w") as f:  # §1.3: nitro may use timestamp freshness (no nonce)
        json.dump({"version": 1, "freshness": "timestamp", "max_age": 300}, f)
    args = ("--attest-types", "nitro", "--attest-policy", policy, "--state-secret-file", SECRET)
    srv = fresh_server(
        "app_attest_plain:app", *args, "--dev", "--attest-clock", "2022-10-13T08:58:02Z", env=ENV
    )
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.get("/x", headers=_nitro_headers(ev))
        assert r.status_code == 200, r.text
        body = r.json()
        a = body["attestation"]
        assert body["type"] == "shield_asgi.attestation.AttestationResult"
        assert a["verified"] and a["tee_type"] == "nitro" and a["mode"] == "header"
        assert a["pcr0"].startswith("f4d48b81a460c991") and not a["debug"]
        assert a["timestamp"] == 1665651482.0  # the overridden verification time
        assert body["extension"] == {"policy_sha256": a["policy_sha256"]}
        # the signed content is consumed: the same document is refused the second time
        r = c.get("/x", headers=_nitro_headers(ev))
        assert error(r) == (401, "attestation_failed", "nonce_replayed")
        # with a nonce the server issued (at the overridden time), the document's own nonce
        # does not match: binding_mismatch
        n = get_nonce(c)
        r = c.get("/x", headers=header_mode(n, ev, tee="nitro"))
        assert error(r) == (401, "attestation_failed", "binding_mismatch")
        # no evidence, optional mode: passes with no result but with the marker
        body = c.get("/x").json()
        assert body["attestation"] is None and len(body["extension"]["policy_sha256"]) == 64
    deadline = time.time() + 10  # logged loudly at start-up and on use (the log is async)
    while time.time() < deadline and "NOT the real time" not in srv.stderr_text():
        time.sleep(0.1)
    assert "*** --dev --attest-clock 2022-10-13T08:58:02Z" in srv.stderr_text()
    assert "verifying with --attest-clock" in srv.stderr_text()
    srv.stop()
    # the same document at the real time: expired
    srv2 = fresh_server("app_attest_plain:app", *args, env=ENV)
    assert "--attest-clock" not in srv2.stderr_text()
    with httpx.Client(base_url=srv2.url, timeout=30) as c:
        r = c.get("/x", headers=_nitro_headers(ev))
        assert error(r) == (401, "attestation_failed", "expired")


def test_session_proofs_do_not_fill_the_state_table(fresh_server):
    """Accepted proofs advance the session record in place: a small shared table serves many
    more proofs than it has entries (they once each took an entry for 130 s)."""
    srv = fresh_server(APP, *BASE, "--attest-required", "--state-table-size", "64", env=ENV)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        s = Session(c)
        assert s.response.status_code == 200, s.response.text
        for _ in range(300):
            r = c.get("/whoami", headers=s.headers("GET", "/whoami"))
            assert r.status_code == 200, r.text


def test_session_results_are_per_request(client):
    """The native server builds a session's Python result once and gives each request its own
    copy: what one request's code changes in its result no other request sees."""
    s = Session(client)
    assert s.response.status_code == 200, s.response.text
    before = client.get("/whoami", headers=s.headers("GET", "/whoami")).json()["attestation"]
    assert client.get("/scribble", headers=s.headers("GET", "/scribble")).status_code == 200
    after = client.get("/whoami", headers=s.headers("GET", "/whoami")).json()["attestation"]
    assert after == before and after["pcr0"] == DEFAULT_PCR0 and after["tee_type"] == "simulated"
    assert after["session"] == s.id and after["mode"] == "session"
