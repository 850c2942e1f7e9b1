"""The server proves its own TEE natively (gate/server_evidence.c, docs/protocol.md §4): the
shield binary with --tee simulated answers GET /.well-known/shield/attestation (fresh evidence
per nonce, bound to D(nonce, binding CBOR) and to the key of the TLS certificate of the very
connection), the health endpoint (cached evidence and its age; 503 when the TEE cannot produce
evidence), and --attach-server-attestation's headers on every response; the Python client
(shield_asgi.client.AttestedClient) attests against it and refuses a wrong measurement and a
replayed document; the endpoints refuse a bad nonce (400), other methods (405) and a client
beyond its rate (503 + Retry-After); a TEE named by --tee that is absent stops the server at
start-up naming the device.  The simulated dev root is the run's own (support/server_attest)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time

import httpx
import pytest

from conftest import SERVER_KIND, scaled, shield_bin, wait_for
from support.attest_client import b64d
from support.server_attest import (
    DATA_HOME,
    DEFAULT_PCR0,
    OTHER_PCR0,
    PKI,
    REPLAY_APP,
    b64e_nonce,
    ca_ctx,
    dev_root,
    env,
    spki_sha256,
    tls_args,
)

pytestmark = pytest.mark.skipif(
    SERVER_KIND != "shield", reason="the server's own endpoints are the shield binary's"
)

APP = "app_fastapi:app"
ATTEST = "/.well-known/shield/attestation"
HEALTH = "/.well-known/shield/health"
ZERO = bytes(32)


def serve(fresh_server, *args, data_home=DATA_HOME, **extra):
    e = env(**extra)
    e["XDG_DATA_HOME"] = str(data_home)
    return fresh_server(APP, "--tee", "simulated", *args, env=e)


def plain(srv) -> httpx.Client:
    return httpx.Client(base_url=srv.url, timeout=scaled(30))


def tls(srv) -> httpx.Client:
    return httpx.Client(
        base_url=f"https://127.0.0.1:{srv.port}", verify=ca_ctx(), timeout=scaled(30)
    )


def verify_sim(evidence: bytes, nonce: bytes, binding: bytes, root: bytes | None = None):
    from shield_asgi import _native

    return _native.verify(
        evidence,
        "simulated",
        at=time.time(),
        nonce=nonce,
        public_key=binding,
        trust_simulated=True,
        simulated_root=root or dev_root(),
    )


def check_document(doc: dict, nonce: bytes, spki_sha: bytes | None) -> None:
    """§4's document exactly, its evidence binding D(nonce, binding.cbor)."""
    from shield_asgi import _native
    from shield_asgi.server_attestation import binding_cbor, decode_binding

    assert set(doc) == {"tee_type", "evidence", "nonce", "binding", "measurements", "issued_at"}
    assert doc["tee_type"] == "simulated"
    assert b64d(doc["nonce"]) == nonce
    assert abs(doc["issued_at"] - time.time()) < scaled(120)
    b = doc["binding"]
    assert set(b) == {"tls_spki_sha256", "hpke_key_config", "version", "cbor"}
    assert b["version"] == 1 and b["hpke_key_config"] is None
    assert b["tls_spki_sha256"] == (spki_sha.hex() if spki_sha else None)
    cbor = b64d(b["cbor"])
    assert cbor == binding_cbor(spki_sha, None)  # RFC 8949 §4.2.1, byte for byte
    assert decode_binding(cbor) == (spki_sha, None)
    r = verify_sim(b64d(doc["evidence"]), nonce, cbor)
    assert r.verified, (r.reason, r.message)
    assert r.user_data == _native.binding_digest(nonce, cbor)  # D of §1.2
    assert doc["measurements"] == dict(r.measurements)
    assert doc["measurements"]["PCR0"] == DEFAULT_PCR0


def test_fresh_evidence_per_nonce_plain_http(fresh_server):
    srv = serve(fresh_server)
    with plain(srv) as c:
        docs = []
        for _ in range(2):
            nonce = secrets.token_bytes(32)
            r = c.get(ATTEST, params={"nonce": b64e_nonce(nonce)})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/json"
            assert r.headers["cache-control"] == "no-store"
            check_document(r.json(), nonce, None)  # plain HTTP: no TLS key bound
            docs.append((nonce, r.json()))
        (n1, d1), (n2, d2) = docs
        assert d1["evidence"] != d2["evidence"]
        # the first document does not verify for the second nonce: D binds its own
        r = verify_sim(b64d(d1["evidence"]), n2, b64d(d1["binding"]["cbor"]))
        assert not r.verified and r.reason == "binding_mismatch"
        r = c.head(ATTEST, params={"nonce": b64e_nonce(secrets.token_bytes(32))})
        assert r.status_code == 200 and r.content == b""
        # the app is served behind the gate, without client attestation (no --attest-types)
        assert c.get("/").status_code == 200
        assert c.get("/.well-known/shield/nonce").status_code == 404  # the app's 404


@pytest.mark.parametrize("cert", ["server", "server2"])
def test_tls_binding_is_the_certificate_the_client_sees(fresh_server, cert):
    import ssl

    from shield_asgi.server_attestation import spki_of_certificate

    srv = serve(fresh_server, *tls_args(cert))
    nonce = secrets.token_bytes(32)
    with tls(srv) as c:
        r = c.get(ATTEST, params={"nonce": b64e_nonce(nonce)})
        assert r.status_code == 200, r.text
        seen = r.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
    assert seen == ssl.PEM_cert_to_DER_cert(PKI[f"{cert}.pem"].read_text())
    import hashlib

    check_document(r.json(), nonce, hashlib.sha256(spki_of_certificate(seen)).digest())
    assert bytes.fromhex(r.json()["binding"]["tls_spki_sha256"]) == spki_sha256(cert)


def attested(srv, **kw):
    from shield_asgi.client import AttestedClient

    opts = dict(
        verify=ca_ctx(),
        trust_simulated=True,
        simulated_root=dev_root(),
        tee_types=["simulated"],
        timeout=scaled(30),
    )
    opts.update(kw)
    return AttestedClient(f"https://127.0.0.1:{srv.port}", **opts)


def test_attested_client_against_the_native_endpoint(fresh_server):
    from shield_asgi.client import ServerAttestationError

    srv = serve(fresh_server, *tls_args())
    sent = []
    hooks = {"request": [lambda req: sent.append(req.url.path)]}
    with attested(srv, expected_measurements={"PCR0": DEFAULT_PCR0}, event_hooks=hooks) as c:
        r = c.get("/")
        assert r.status_code == 200
        assert sent == [ATTEST, "/"]
        (pin,) = c.attestations.values()
        assert pin.result.verified and pin.result.tee_type == "simulated"
        assert pin.result.measurements["PCR0"] == DEFAULT_PCR0
    sent.clear()
    with attested(srv, expected_measurements={"PCR0": OTHER_PCR0}, event_hooks=hooks) as c:
        with pytest.raises(ServerAttestationError) as e:
            c.get("/")
        assert e.value.reason == "measurement_mismatch", e.value
        assert sent == [ATTEST]  # "/" never sent


@pytest.mark.parametrize("echo", [False, True], ids=["as-recorded", "nonce-rewritten"])
def test_attested_client_refuses_a_replayed_native_document(fresh_server, tmp_path, echo):
    """A man in the middle with the server's certificate (uvicorn, tests/py/apps/
    app_attest_replay.py) answers with a document the native endpoint gave for another nonce."""
    from shield_asgi.client import ServerAttestationError

    real = serve(fresh_server, *tls_args())
    with tls(real) as c:
        doc = c.get(ATTEST, params={"nonce": b64e_nonce(secrets.token_bytes(32))}).json()
    recorded = tmp_path / "recorded.json"
    recorded.write_text(json.dumps(doc))
    mitm = fresh_server(
        REPLAY_APP,
        *tls_args(),
        env=env(SHIELD_TEST_REPLAY=recorded, SHIELD_TEST_REPLAY_ECHO=int(echo)),
        kind="uvicorn",
    )
    with attested(mitm) as c:
        with pytest.raises(ServerAttestationError) as e:
            c.get("/data")
        assert e.value.reason == "binding_mismatch", e.value


def test_bad_nonce_400_and_other_methods_405(fresh_server):
    srv = serve(fresh_server)
    with plain(srv) as c:
        for q in (
            "",
            "?nonce=",
            "?nonce=" + b64e_nonce(bytes(31)),
            "?nonce=" + b64e_nonce(bytes(33)),
            "?nonce=not*base64",
            "?other=" + b64e_nonce(bytes(32)),
        ):
            r = c.get(ATTEST + q)
            assert r.status_code == 400, (q, r.text)
            assert r.json()["error"] == "attestation_invalid"
            assert r.json()["reason"] == "malformed" and "32" in r.json()["message"]
        for path in (ATTEST, HEALTH):
            r = c.post(path, content=b"x")
            assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", path


def test_rate_limit_per_client(fresh_server):
    srv = serve(fresh_server)
    refused = None
    with plain(srv) as c:
        # a burst of 10, then 2 per second: 30 at once cannot all pass
        for _ in range(30):
            r = c.get(ATTEST, params={"nonce": b64e_nonce(secrets.token_bytes(32))})
            if r.status_code == 503:
                refused = r
                break
            assert r.status_code == 200, r.text
        assert refused is not None, "30 requests in a row were never rate-limited"
        assert refused.json()["reason"] == "overloaded"
        assert refused.json()["error"] == "attestation_unavailable"
        assert int(refused.headers["retry-after"]) >= 1
        # the health endpoint (cached) is not rate-limited
        assert c.get(HEALTH).status_code == 200


def test_health_cached_with_its_age(fresh_server):
    from shield_asgi.server_attestation import binding_cbor

    srv = serve(fresh_server, "--health-path", "/healthz")
    with plain(srv) as c:
        r = c.get("/healthz")
        assert r.status_code == 200, r.text
        h = r.json()
        assert h["status"] == "ok"
        t = h["tee"]
        assert set(t) == {"type", "measurements", "evidence", "issued_at", "age"}
        assert t["type"] == "simulated" and t["measurements"]["PCR0"] == DEFAULT_PCR0
        assert isinstance(t["age"], int) and 0 <= t["age"] < 300
        # cached evidence: n = 32 zero bytes, the binding with nulls (no connection bound)
        res = verify_sim(b64d(t["evidence"]), ZERO, binding_cbor(None, None))
        assert res.verified, (res.reason, res.message)
        # served from the cache: the same evidence again
        assert c.get("/healthz").json()["tee"]["evidence"] == t["evidence"]
        assert c.get(HEALTH).status_code == 404  # moved: the default path is the app's


def test_health_over_tls_binds_the_certificate_in_use(fresh_server):
    """Over TLS the cached evidence binds the certificate the server serves (§4: the same
    binding as the attestation endpoint), learnt from the first TLS connection."""
    from shield_asgi.server_attestation import binding_cbor

    srv = serve(fresh_server, *tls_args(), "--attach-server-attestation")
    with tls(srv) as c:
        r = c.get(HEALTH)
        assert r.status_code == 200, r.text
        ev = b64d(r.json()["tee"]["evidence"])
        res = verify_sim(ev, ZERO, binding_cbor(spki_sha256("server"), None))
        assert res.verified, (res.reason, res.message)
        assert not verify_sim(ev, ZERO, binding_cbor(None, None)).verified
        # the headers follow the cache
        assert b64d(c.get("/").headers["x-server-attestation"]) == ev


def corrupt_root(data_home):
    """Make the provider fail at run time: the simulated TEE's signing root becomes garbage
    (the provider reads it for every piece of evidence; attest/simulated.c)."""
    root = data_home / "shield" / "simulated-root.pem"
    saved = root.read_bytes()
    root.write_bytes(b"not a key\n")
    return root, saved


def test_health_503_and_headers_gone_when_the_tee_fails(fresh_server, tmp_path):
    """--dev $SHIELD_TEE_MAX_AGE=4: the cache is refreshed from 3.2 s on, served 4 s at most.
    With the TEE failing, health turns 503 naming the cause, the attestation endpoint 503
    collateral_missing, the headers go; once the TEE works again, all come back."""
    home = tmp_path / "data"
    (home / "shield").mkdir(parents=True)
    shutil.copy(DATA_HOME / "shield" / "simulated-root.pem", home / "shield")
    srv = serve(
        fresh_server, "--dev", "--attach-server-attestation", data_home=home, SHIELD_TEE_MAX_AGE=4
    )
    with plain(srv) as c:
        r = c.get(HEALTH)
        assert r.status_code == 200 and "x-server-attestation" in r.headers
        root, saved = corrupt_root(home)

        def unavailable():
            r = c.get(HEALTH)
            return r if r.status_code == 503 else None

        r = wait_for(unavailable, timeout=60, what="health 503")
        assert r.json()["status"] == "unavailable"
        assert r.json()["tee"] == {"type": "simulated"}
        assert "dev root" in r.json()["message"], r.json()
        assert "x-server-attestation" not in r.headers  # stale evidence is not shown
        assert "x-server-attestation" not in c.get("/").headers
        r = c.get(ATTEST, params={"nonce": b64e_nonce(secrets.token_bytes(32))})
        assert r.status_code == 503 and r.json()["reason"] == "collateral_missing"
        assert "dev root" in r.json()["message"]
        root.write_bytes(saved)
        wait_for(lambda: c.get(HEALTH).status_code == 200, timeout=60, what="health 200")
        assert "x-server-attestation" in c.get("/").headers


def test_attach_server_attestation_headers(fresh_server):
    from shield_asgi.server_attestation import binding_cbor

    srv = serve(fresh_server, "--attach-server-attestation")
    with plain(srv) as c:
        cached = c.get(HEALTH).json()["tee"]["evidence"]
        for path, status in (("/", 200), ("/no/such/route", 404), (HEALTH, 200)):
            r = c.get(path)
            assert r.status_code == status, path
            assert r.headers["x-server-tee-type"] == "simulated", path
            assert r.headers["x-server-attestation"] == cached, path
        res = verify_sim(b64d(cached), ZERO, binding_cbor(None, None))
        assert res.verified, (res.reason, res.message)
    plain_srv = serve(fresh_server)  # off by default
    with plain(plain_srv) as c:
        assert "x-server-attestation" not in c.get("/").headers


def test_tee_with_client_attestation(fresh_server):
    """--tee with --attest-types --attest-required: the server's endpoints need no client
    evidence; the client-attestation endpoints are there."""
    srv = serve(
        fresh_server, "--attest-types", "simulated", "--trust-simulated", "--attest-required"
    )
    with plain(srv) as c:
        assert c.get("/").status_code == 401
        assert c.get(HEALTH).status_code == 200
        r = c.get(ATTEST, params={"nonce": b64e_nonce(secrets.token_bytes(32))})
        assert r.status_code == 200, r.text
        assert c.get("/.well-known/shield/nonce").status_code == 200


def test_start_up_refusals():
    def run(*args):
        return subprocess.run(
            [str(shield_bin()), APP, "--app-dir", "tests/py/apps", *args],
            capture_output=True,
            text=True,
            timeout=scaled(60),
            env={**env(), "PATH": "/usr/bin:/bin"},
        )

    r = run("--tee", "nitro")
    assert r.returncode == 2 and "/dev/nsm" in r.stderr, r.stderr
    r = run("--tee", "sev-snp")
    assert r.returncode == 2 and "sev-guest" in r.stderr, r.stderr
    r = run("--tee", "gcp")
    assert r.returncode == 2 and "--tee-gcp-audience" in r.stderr, r.stderr
    r = run("--tee", "simulated", "--tee-gcp-audience", "x")
    assert r.returncode == 2 and "--tee gcp" in r.stderr, r.stderr
    for flags in (("--health-path", "/h"), ("--attach-server-attestation",)):
        r = run(*flags)
        assert r.returncode == 2 and "need --tee" in r.stderr, (flags, r.stderr)
    r = run("--tee", "simulated", "--health-path", "health")
    assert r.returncode == 2 and "--health-path" in r.stderr, r.stderr
    r = run("--tee", "simulated", "--health-path", ATTEST)
    assert r.returncode == 2 and "--health-path" in r.stderr, r.stderr
    r = subprocess.run(
        [str(shield_bin()), "--native-hello", "--tee", "simulated"],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert r.returncode == 2 and "--native-hello" in r.stderr, r.stderr
