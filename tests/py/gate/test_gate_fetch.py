"""What the server's verification needs at run time (issue #5): the shared TEE vectors through
the HTTP path of the real `shield` server (server/gate.c + gate_verify.c over
sh_attest_verify_fetching), with keys and collateral from files or fetched from loopback HTTPS
servers started here with a test CA (support/fetch_servers.py's VectorServer: the vectors' own
VCEKs, AMD cert chains, Intel PCS collateral and MAA JWKS at the KDS/PCS/JWKS paths; here also
OpenID discovery, slow and huge answers).

Freshness, honestly: the vectors were captured by others, so their report data / nonce claims
cannot hold a nonce this server issued.  They are replayed with the clock pinned to their
valid-at time (`--dev --attest-clock`) under a development policy: "freshness": "timestamp"
for maa and gcp (§1.3: the token's iat within max_age; the signed content is consumed), and
"freshness": "none" + "allow_unfresh": true for sev-snp, azure-snp, tdx and sgx (no nonce; the
document is still single-use).  The nonce-bound path is covered by Confidential Space OIDC
tokens generated here (eat_nonce = base64url(D), §1.2), signed by a test key that the server
finds through OpenID discovery at a local issuer, in header and session modes."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import subprocess
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from conftest import SERVER_KIND, free_port, scaled, shield_bin
from support.attest_client import Session, b64e, error, get_nonce
from support.fetch_servers import SGX_OPT_IN, VectorServer, vector_der  # skips sans cryptography
from support.verify_cli import VECTORS

pytestmark = [
    pytest.mark.skipif(SERVER_KIND != "shield", reason="native gate: shield only"),
    pytest.mark.skipif(
        not (VECTORS / "MANIFEST.md").exists(),
        reason=f"attestation vectors not found at {VECTORS} (set SHIELD_VECTORS)",
    ),
]

APP = "app_attest_plain:app"
MAA_ISS = "https://sharedwus.wus.attest.azure.net"
MAA_AT = "2022-05-31T23:00:00Z"
MAA_JWKS = VECTORS / "maa" / "sharedwus-certs-2022-05-31.json"
GCP_ISS = "https://confidentialcomputing.googleapis.com"
GCP_AT = "2025-06-23T14:30:00Z"
GCP_AUD = "https://echo.oak.dev"
SNP_AT = "2025-06-01T00:00:00Z"
DCAP_AT = "2025-06-20T00:00:00Z"


class Issuers(VectorServer):
    """VectorServer plus: /.well-known/openid-configuration naming `issuer` (with jwks_uri on
    this server), /slow/<path> (sleeps `delay` s first) and /huge/<path> (a 3 MiB body)."""

    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.issuer = None
        self.delay = 3.0

    def handler(self):
        base, fx = super().handler(), self

        class H(base):
            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                if path.startswith("/slow/"):
                    time.sleep(fx.delay)
                    self.path = self.path[5:]
                if path.startswith("/huge/"):
                    fx.paths.append(self.path)
                    return self.send(200, "application/octet-stream", b"\x30" * (3 << 20))
                if path == "/.well-known/openid-configuration" and fx.issuer:
                    fx.paths.append(self.path)
                    port = self.server.server_address[1]
                    doc = {"issuer": fx.issuer, "jwks_uri": f"https://127.0.0.1:{port}/certs"}
                    return self.send(200, "application/json", json.dumps(doc).encode())
                return super().do_GET()

        return H


@pytest.fixture
def iss(tmp_path):
    s = Issuers(tmp_path)
    s.base = s.serve(tmp_path)
    yield s
    s.close()


def policy(tmp_path, name="p.json", **doc) -> str:
    p = tmp_path / name
    p.write_text(json.dumps({"version": 1, **doc}))
    return str(p)


def dev_policy(tmp_path, **extra) -> str:
    """The development freshness policy for vectors that cannot carry our nonce."""
    return policy(tmp_path, "dev.json", freshness="none", allow_unfresh=True, **extra)


def ts_policy(tmp_path, **extra) -> str:
    return policy(tmp_path, "ts.json", freshness="timestamp", max_age=3600, **extra)


def serve(fresh_server, types, pol, clock=None, *args):
    dev = ("--dev", "--attest-clock", clock) if clock else ()
    return fresh_server(
        APP, "--attest-types", types, "--attest-policy", pol, *dev, *[str(a) for a in args]
    )


def fetch_args(iss_srv, tmp_path, *more):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return (
        "--attest-fetch",
        "--fetch-ca",
        iss_srv.ca_file,
        "--attest-cache-dir",
        tmp_path / "cache",
        *more,
    )


def present(srv, tee, ev, nonce=None):
    token = ev if isinstance(ev, str) else base64.b64encode(ev).decode()
    h = {"X-Attestation-Token": token, "X-Attestation-Type": tee}
    if nonce is not None:
        h["X-Attestation-Nonce"] = b64e(nonce)
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        return c.get("/x", headers=h)


def establish(srv, tee, ev, certs=None):
    """Session mode with evidence that cannot bind our nonce and key: the type is accepted
    and verified (collateral and all), and refused for the binding alone.  certs: the body's
    optional "certs" object (docs/protocol.md §1.4, 2)."""
    spki = (
        x25519.X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        n = get_nonce(c)
        return c.post(
            "/.well-known/shield/attest",
            json={
                "type": tee,
                "evidence": ev if isinstance(ev, str) else b64e(ev),
                "nonce": b64e(n),
                "public_key": b64e(spki),
                **({"certs": certs} if certs is not None else {}),
            },
        )


def ok(r, tee):
    assert r.status_code == 200, r.text
    a = r.json()["attestation"]
    assert a["verified"] and a["tee_type"] == tee and a["mode"] in ("header", "session")
    return a


# ---- start-up refusals (exit 2, naming the flag to add) ------------------------------------


def test_startup_refusals(tmp_path):
    def run(*args):
        return subprocess.run(
            [str(shield_bin()), APP, "--port", "0", *map(str, args)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )

    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    cases = [
        (["--attest-types", "maa"], "--attest-maa-issuer"),
        (["--attest-types", "maa", "--attest-maa-issuer", MAA_ISS], "--attest-maa-jwks"),
        (["--attest-types", "gcp"], "--attest-gcp-audience"),
        (["--attest-types", "nitro,tdx"], "--attest-collateral"),
        (["--attest-types", "sgx"], "--attest-fetch"),
        (["--attest-types", "sev-snp"], "--attest-client-vcek"),
        (["--attest-types", "azure-snp"], "--attest-fetch"),
        (
            [
                "--attest-types",
                "maa",
                "--attest-maa-issuer",
                "http://maa.example",
                "--attest-fetch",
            ],
            "https://",
        ),
        (
            [
                "--attest-types",
                "maa",
                "--attest-maa-issuer",
                MAA_ISS,
                "--attest-maa-jwks",
                tmp_path / "absent.json",
            ],
            "cannot read",
        ),
        (
            ["--attest-types", "tdx", "--attest-collateral", tmp_path / "absent"],
            "--attest-collateral",
        ),
        (
            ["--attest-types", "tdx", "--attest-fetch", "--pcs-url", "ftp://pcs.example"],
            "--pcs-url",
        ),
        (["--attest-types", "sev-snp", "--attest-fetch", "--kds-url", "https://a b"], "--kds-url"),
        (
            ["--attest-types", "sev-snp", "--attest-fetch", "--fetch-ca", tmp_path / "absent.pem"],
            "--fetch-ca",
        ),
        (["--attest-types", "sev-snp", "--attest-fetch", "--fetch-ca", junk], "no PEM certificate"),
        (["--attest-types", "sev-snp", "--attest-fetch", "--attest-offline"], "exclude"),
        (["--attest-types", "sev-snp", "--attest-offline"], "--attest-cache-dir"),
        (["--attest-types", "sev-snp", "--kds-url", "https://kds.example"], "--attest-fetch"),
        (
            ["--attest-types", "sev-snp", "--attest-fetch", "--attest-fetch-timeout", "soon"],
            "--attest-fetch-timeout",
        ),
        (["--attest-types", "nitro", "--attest-maa-issuer", MAA_ISS], "maa in --attest-types"),
        (
            [
                "--attest-types",
                "maa,gcp",
                "--attest-maa-issuer",
                MAA_ISS,
                "--attest-gcp-audience",
                "a",
                "--attest-fetch",
                "--jwks-url",
                "https://x.example/certs",
            ],
            "exactly one",
        ),
        (["--attest-fetch"], "--attest-types"),
    ]
    for args, want in cases:
        r = run(*args)
        assert r.returncode == 2 and want in r.stderr, (args, r.returncode, r.stderr)
    # contents: a JWKS or collateral file that is not JSON (read before any worker forks)
    r = run("--attest-types", "maa", "--attest-maa-issuer", MAA_ISS, "--attest-maa-jwks", junk)
    assert r.returncode == 2 and "is not a JWKS" in r.stderr, r.stderr
    r = run("--attest-types", "tdx", "--attest-collateral", junk)
    assert r.returncode == 2 and "--attest-collateral" in r.stderr, r.stderr
    # a directory without the PCS files: found when the worker loads it (exit 1, named)
    (tmp_path / "pcs").mkdir()
    r = run("--attest-types", "tdx", "--attest-collateral", tmp_path / "pcs")
    assert r.returncode != 0 and "tcbinfo.json" in r.stderr, r.stderr


# ---- maa: the real token, JWKS from a file, by OpenID discovery and from --jwks-url ----------


def test_maa_vector_jwks_file(fresh_server, tmp_path):
    tok = (VECTORS / "maa" / "simpleattest-sgx.jwt").read_text().strip()
    keys = ("--attest-maa-issuer", MAA_ISS, "--attest-maa-jwks", MAA_JWKS)
    srv = serve(fresh_server, "maa", ts_policy(tmp_path, allow_debug=True), MAA_AT, *keys)
    a = ok(present(srv, "maa", tok), "maa")
    assert a["debug"]  # x-ms-sgx-is-debuggable: accepted only because the policy allows it
    assert error(establish(srv, "maa", tok)) == (401, "attestation_failed", "binding_mismatch")
    assert error(present(srv, "maa", tok)) == (401, "attestation_failed", "nonce_replayed")
    # the debuggable enclave under a policy that does not allow debug
    srv = serve(
        fresh_server,
        "maa",
        policy(tmp_path, "t2.json", freshness="timestamp", max_age=3600),
        MAA_AT,
        *keys,
    )
    assert error(present(srv, "maa", tok)) == (403, "attestation_policy", "debug_not_allowed")
    # another configured issuer; a configured audience the token (which has none) lacks
    srv = serve(
        fresh_server,
        "maa",
        ts_policy(tmp_path, allow_debug=True),
        MAA_AT,
        "--attest-maa-issuer",
        "https://other.wus.attest.azure.net",
        "--attest-maa-jwks",
        MAA_JWKS,
    )
    assert error(present(srv, "maa", tok))[2] == "root_untrusted"
    srv = serve(
        fresh_server,
        "maa",
        ts_policy(tmp_path, allow_debug=True),
        MAA_AT,
        *keys,
        "--attest-maa-audience",
        "https://shield.test",
    )
    assert error(present(srv, "maa", tok)) == (401, "attestation_failed", "binding_mismatch")
    # at the real time: expired
    srv = serve(fresh_server, "maa", ts_policy(tmp_path, allow_debug=True), None, *keys)
    assert error(present(srv, "maa", tok))[2] == "expired"


def test_maa_vector_jwks_fetched(fresh_server, tmp_path, iss):
    tok = (VECTORS / "maa" / "simpleattest-sgx.jwt").read_text().strip()
    iss.jwks = MAA_JWKS.read_bytes()
    iss.issuer = MAA_ISS  # the discovery document names the real issuer; we reach it locally
    pol = ts_policy(tmp_path, allow_debug=True)
    srv = serve(
        fresh_server,
        "maa",
        pol,
        MAA_AT,
        "--attest-maa-issuer",
        MAA_ISS,
        *fetch_args(iss, tmp_path, "--attest-maa-discovery-url", iss.base),
    )
    ok(present(srv, "maa", tok), "maa")
    assert iss.paths == ["/.well-known/openid-configuration", "/certs"], iss.paths
    assert len(list((tmp_path / "cache").glob("jwks-*.json"))) == 1
    srv.stop()
    # --jwks-url (the one token type): no discovery
    iss.paths.clear()
    srv = serve(
        fresh_server,
        "maa",
        pol,
        MAA_AT,
        "--attest-maa-issuer",
        MAA_ISS,
        *fetch_args(iss, tmp_path / "b", "--jwks-url", iss.base + "/certs"),
    )
    ok(present(srv, "maa", tok), "maa")
    assert iss.paths == ["/certs"]
    # a discovery document naming another issuer is refused: 503 collateral_missing
    iss.issuer = "https://evil.example"
    srv = serve(
        fresh_server,
        "maa",
        pol,
        MAA_AT,
        "--attest-maa-issuer",
        MAA_ISS,
        *fetch_args(iss, tmp_path / "c", "--attest-maa-discovery-url", iss.base),
    )
    r = present(srv, "maa", tok)
    assert error(r) == (503, "attestation_unavailable", "collateral_missing")
    assert "fetch failed" in r.json()["message"]


# ---- gcp: the real PKI token (pinned root, no JWKS) -----------------------------------------


def test_gcp_vector_pki(fresh_server, tmp_path):
    tok = (VECTORS / "gcp" / "valid.jwt").read_text().strip()
    srv = serve(
        fresh_server,
        "gcp",
        ts_policy(tmp_path, allow_debug=True),
        GCP_AT,
        "--attest-gcp-audience",
        GCP_AUD,
    )
    a = ok(present(srv, "gcp", tok), "gcp")
    assert a["debug"]  # dbgstat "enabled"
    srv = serve(
        fresh_server,
        "gcp",
        policy(tmp_path, "t2.json", freshness="timestamp", max_age=3600),
        GCP_AT,
        "--attest-gcp-audience",
        GCP_AUD,
    )
    assert error(present(srv, "gcp", tok)) == (403, "attestation_policy", "debug_not_allowed")
    srv = serve(
        fresh_server,
        "gcp",
        ts_policy(tmp_path, allow_debug=True),
        GCP_AT,
        "--attest-gcp-audience",
        "https://another.audience",
    )
    assert error(present(srv, "gcp", tok)) == (401, "attestation_failed", "binding_mismatch")


# ---- gcp OIDC: generated tokens bound to our nonce, keys by OpenID discovery ----------------


def _digest(nonce: bytes, spki: bytes = b"") -> bytes:
    """D of docs/protocol.md §1.2, computed here independently of the C code."""
    return hashlib.sha512(
        b"shield-binding-v1\x00"
        + len(nonce).to_bytes(2, "big")
        + nonce
        + len(spki).to_bytes(2, "big")
        + spki
    ).digest()


def test_gcp_oidc_discovery(fresh_server, tmp_path, iss):
    import datetime as dt

    from support import token_gen as tg

    keys = tg.Keys.get()
    iss.jwks = tg.jwks(tg.jwk(keys.rsa, "k1"))
    iss.issuer = GCP_ISS
    aud = "https://shield.test"

    def make(nonce, spki=b""):
        claims = tg.gcp_claims(
            dt.datetime.now(dt.timezone.utc), aud=aud, eat_nonce=[b64e(_digest(nonce, spki))]
        )
        return tg.token(claims, key=keys.rsa, kid="k1")

    srv = serve(
        fresh_server,
        "gcp",
        policy(tmp_path),
        None,
        "--attest-gcp-audience",
        aud,
        "--attest-required",
        *fetch_args(iss, tmp_path, "--attest-gcp-discovery-url", iss.base),
    )
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        n = get_nonce(c)
        r = c.get(
            "/x",
            headers={
                "X-Attestation-Token": make(n),
                "X-Attestation-Type": "gcp",
                "X-Attestation-Nonce": b64e(n),
            },
        )
        a = ok(r, "gcp")
        assert not a["debug"] and a["nonce"] == n.hex()
        assert iss.paths == ["/.well-known/openid-configuration", "/certs"], iss.paths
        # session mode: D binds the client's key too
        s = Session(c, tee="gcp", make_evidence=lambda nonce, spki: make(nonce, spki))
        assert s.response.status_code == 200, s.response.text
        r = c.get("/x", headers=s.headers("GET", "/x"))
        assert ok(r, "gcp")["mode"] == "session"
        # a token for another nonce; signed by a key the issuer does not publish; another aud
        n = get_nonce(c)
        bad = {"X-Attestation-Type": "gcp", "X-Attestation-Nonce": b64e(n)}
        assert (
            error(c.get("/x", headers={**bad, "X-Attestation-Token": make(get_nonce(c))}))[2]
            == "binding_mismatch"
        )
        forged = tg.token(
            json.loads(base64.urlsafe_b64decode(make(n).split(".")[1] + "==")),
            key=keys.rsa2,
            kid="k1",
        )
        assert (
            error(c.get("/x", headers={**bad, "X-Attestation-Token": forged}))[2]
            == "signature_invalid"
        )
        other = tg.token(
            tg.gcp_claims(
                dt.datetime.now(dt.timezone.utc), aud="https://else", eat_nonce=[b64e(_digest(n))]
            ),
            key=keys.rsa,
            kid="k1",
        )
        assert (
            error(c.get("/x", headers={**bad, "X-Attestation-Token": other}))[2]
            == "binding_mismatch"
        )
    assert iss.paths.count("/certs") == 1  # fetched once, then cached
    # the same keys from a file: nothing fetched
    jw = tmp_path / "gcp-jwks.json"
    jw.write_bytes(iss.jwks)
    srv = serve(
        fresh_server,
        "gcp",
        policy(tmp_path),
        None,
        "--attest-gcp-audience",
        aud,
        "--attest-gcp-jwks",
        jw,
    )
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        n = get_nonce(c)
        ok(
            c.get(
                "/x",
                headers={
                    "X-Attestation-Token": make(n),
                    "X-Attestation-Type": "gcp",
                    "X-Attestation-Nonce": b64e(n),
                },
            ),
            "gcp",
        )


# ---- gcp OIDC: key rotation at the issuer (attest/verify_fetch.c retry_rotated) -------------


def test_gcp_oidc_key_rotation(fresh_server, tmp_path, iss):
    """The issuer publishes key B next to A and signs with B while the server still caches the
    JWKS with A only: a token whose kid is not in the cached JWKS makes the server refetch that
    issuer's JWKS (never a token-supplied URL), at most once per issuer per 60 s (attest.h
    SH_ATTEST_JWKS_REFRESH_INTERVAL), so a flood of random kids costs the issuer one request.
    A kid still unknown is refused like any (401 root_untrusted, as `shield verify` says)."""
    import datetime as dt
    import secrets

    from support import token_gen as tg

    keys = tg.Keys.get()
    iss.jwks = tg.jwks(tg.jwk(keys.rsa, "A"))
    iss.issuer = GCP_ISS
    aud = "https://shield.test"

    def headers(c, key, kid):
        n = get_nonce(c)
        claims = tg.gcp_claims(
            dt.datetime.now(dt.timezone.utc), aud=aud, eat_nonce=[b64e(_digest(n))]
        )
        return {
            "X-Attestation-Token": tg.token(claims, key=key, kid=kid),
            "X-Attestation-Type": "gcp",
            "X-Attestation-Nonce": b64e(n),
        }

    def jwks_gets():
        return iss.paths.count("/certs")

    def start(cache):
        return serve(
            fresh_server,
            "gcp",
            policy(tmp_path),
            None,
            "--attest-gcp-audience",
            aud,
            *fetch_args(iss, cache, "--attest-gcp-discovery-url", iss.base),
        )

    srv = start(tmp_path / "a")
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        ok(c.get("/x", headers=headers(c, keys.rsa, "A")), "gcp")
        assert jwks_gets() == 1
        # the issuer rotates; the next token with B is verified, no restart
        iss.jwks = tg.jwks(tg.jwk(keys.rsa, "A"), tg.jwk(keys.rsa2, "B"))
        ok(c.get("/x", headers=headers(c, keys.rsa2, "B")), "gcp")
        assert jwks_gets() == 2
        assert iss.paths.count("/.well-known/openid-configuration") == 1  # keys only
        # both keys now come from the cache
        ok(c.get("/x", headers=headers(c, keys.rsa2, "B")), "gcp")
        ok(c.get("/x", headers=headers(c, keys.rsa, "A")), "gcp")
        # a kid the issuer does not publish, within 60 s of that refetch: refused, not fetched
        r = c.get("/x", headers=headers(c, keys.rsa2, secrets.token_hex(8)))
        assert error(r) == (401, "attestation_failed", "root_untrusted"), r.text
        assert "not in the configured JWKS" in r.json()["message"]
        assert "at most once per 60s" in r.json()["message"], r.text
        assert jwks_gets() == 2
    srv.stop()

    # a fresh server (fresh window) and a flood of random kids, concurrent: one refetch
    iss.jwks = tg.jwks(tg.jwk(keys.rsa, "A"))
    iss.paths.clear()
    srv = start(tmp_path / "b")
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        ok(c.get("/x", headers=headers(c, keys.rsa, "A")), "gcp")
        flood = [headers(c, keys.rsa2, secrets.token_hex(8)) for _ in range(8)]

    def send(h):
        with httpx.Client(base_url=srv.url, timeout=60) as cc:
            return cc.get("/x", headers=h)

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        answers = list(ex.map(send, flood))
    for r in answers:
        assert error(r) == (401, "attestation_failed", "root_untrusted"), r.text
    msgs = [r.json()["message"] for r in answers]
    assert sum("refetched just now" in m for m in msgs) == 1, msgs
    assert sum("at most once per 60s" in m for m in msgs) == len(flood) - 1, msgs
    assert jwks_gets() == 2, iss.paths  # the first fetch and one refetch
    # the bound holds for a genuine rotation too, until the window has passed
    iss.jwks = tg.jwks(tg.jwk(keys.rsa, "A"), tg.jwk(keys.rsa2, "B"))
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        assert error(c.get("/x", headers=headers(c, keys.rsa2, "B")))[2] == "root_untrusted"
    assert jwks_gets() == 2


# ---- tdx / sgx: collateral from a file and fetched from a local PCS -------------------------


def test_dcap_vectors(fresh_server, tmp_path, iss):
    tdx = (VECTORS / "tdx" / "tdx_quote").read_bytes()
    sgx = (VECTORS / "sgx" / "sgx_quote").read_bytes()
    pol = dev_policy(tmp_path, sgx=SGX_OPT_IN["sgx"])
    srv = serve(
        fresh_server,
        "tdx",
        pol,
        DCAP_AT,
        "--attest-collateral",
        VECTORS / "tdx" / "tdx_quote_collateral.json",
    )
    ok(present(srv, "tdx", tdx), "tdx")
    assert error(present(srv, "tdx", tdx))[2] == "nonce_replayed"  # single use, even unfresh
    assert error(establish(srv, "tdx", tdx)) == (401, "attestation_failed", "binding_mismatch")
    srv = serve(
        fresh_server,
        "sgx",
        pol,
        DCAP_AT,
        "--attest-collateral",
        VECTORS / "sgx" / "sgx_quote_collateral.json",
    )
    ok(present(srv, "sgx", sgx), "sgx")
    # fetched from the local PCS serving each vector's own collateral (one at a time: the test
    # PCS answers every CA's PCK CRL with the one of the collateral it holds)
    for tee, quote in (("tdx", tdx), ("sgx", sgx)):
        iss.pcs = {tee: json.loads((VECTORS / tee / f"{tee}_quote_collateral.json").read_text())}
        iss.paths.clear()
        srv = serve(
            fresh_server, tee, pol, DCAP_AT, *fetch_args(iss, tmp_path / tee, "--pcs-url", iss.base)
        )
        ok(present(srv, tee, quote), tee)
        assert any(p.startswith(f"/{tee}/certification/v4/tcb?fmspc=") for p in iss.paths)
        assert f"/{tee}/certification/v4/qe/identity" in iss.paths
        assert "/sgx/certification/v4/rootcacrl" in iss.paths
        srv.stop()
    # without the SGX opt-in the vector's TCB status is refused
    srv = serve(
        fresh_server,
        "sgx",
        dev_policy(tmp_path),
        DCAP_AT,
        "--attest-collateral",
        VECTORS / "sgx" / "sgx_quote_collateral.json",
    )
    assert error(present(srv, "sgx", sgx)) == (403, "attestation_policy", "tcb_out_of_date")


# ---- sev-snp / azure-snp: the VCEK from a local KDS, or in the client's bundle --------------


def _hcl() -> bytes:
    return bytes(json.loads((VECTORS / "sev-snp" / "evidence-genoa.json").read_text())["report"])


def test_snp_vectors(fresh_server, tmp_path, iss):
    import cbor2

    rep = (VECTORS / "sev-snp" / "test-report.bin").read_bytes()
    iss.vceks[("Milan", rep[0x1A0:0x1E0].hex())] = (
        VECTORS / "sev-snp" / "test-vcek.der"
    ).read_bytes()
    iss.chains["Milan"] = (VECTORS / "roots" / "amd-milan-ask-ark.pem").read_bytes()
    hcl = _hcl()
    iss.vceks[("Genoa", hcl[0x20 + 0x1A0 : 0x20 + 0x1E0].hex())] = vector_der(
        VECTORS / "sev-snp" / "vcek-genoa.pem"
    )
    iss.chains["Genoa"] = (VECTORS / "roots" / "amd-genoa-ask-ark.pem").read_bytes()
    pol = dev_policy(tmp_path)
    srv = serve(
        fresh_server,
        "sev-snp,azure-snp",
        pol,
        SNP_AT,
        *fetch_args(iss, tmp_path, "--kds-url", iss.base),
    )
    ok(present(srv, "sev-snp", rep), "sev-snp")
    ok(present(srv, "azure-snp", hcl), "azure-snp")
    for tee, ev in (("sev-snp", rep), ("azure-snp", hcl)):
        assert error(establish(srv, tee, ev)) == (401, "attestation_failed", "binding_mismatch")
    assert [
        p.split("?")[0].split("/")[3]
        for p in iss.paths
        if p.startswith("/vcek/v1/") and "cert_chain" not in p
    ] == ["Milan", "Genoa"]
    srv.stop()
    # offline: the same from the cache dir, the KDS gone
    n = len(iss.paths)
    iss.close()
    srv = serve(
        fresh_server,
        "sev-snp",
        pol,
        SNP_AT,
        "--attest-offline",
        "--attest-cache-dir",
        tmp_path / "cache",
    )
    ok(present(srv, "sev-snp", rep), "sev-snp")
    assert len(iss.paths) == n
    # no fetching: the client sends the VCEK in the bundle (docs/protocol.md §1.5)
    bundle = cbor2.dumps(
        {"report": rep, "certs": {"vcek": (VECTORS / "sev-snp" / "test-vcek.der").read_bytes()}}
    )
    srv = serve(fresh_server, "sev-snp,azure-snp", pol, SNP_AT, "--attest-client-vcek")
    ok(present(srv, "sev-snp", bundle), "sev-snp")
    # session mode: the VCEK may come in the body's "certs" (well-formed ones reach the
    # verifier, which refuses a vector for the binding: it cannot hold our nonce and key)
    vcek = b64e((VECTORS / "sev-snp" / "test-vcek.der").read_bytes())
    assert error(establish(srv, "sev-snp", rep, {"vcek": vcek})) == (
        401,
        "attestation_failed",
        "binding_mismatch",
    )
    for bad in ({"vcek": 1}, {"pck": vcek}, ["vcek"], {"vcek": "!!"}):
        assert error(establish(srv, "sev-snp", rep, bad)) == (
            401,
            "attestation_invalid",
            "malformed",
        )
    azure = cbor2.dumps(
        {"hcl_report": hcl, "vcek": vector_der(VECTORS / "sev-snp" / "vcek-genoa.pem")}
    )
    ok(present(srv, "azure-snp", azure), "azure-snp")
    r = present(srv, "sev-snp", (VECTORS / "sev-snp" / "attestation.bin").read_bytes())
    assert error(r) == (503, "attestation_unavailable", "collateral_missing")  # a bare report
    # the debug vector with its VCEK: refused by the policy
    dbg = cbor2.dumps(
        {
            "report": (VECTORS / "sev-snp" / "attestation.bin").read_bytes(),
            "certs": {"vcek": (VECTORS / "sev-snp" / "vcek.testcer").read_bytes()},
        }
    )
    assert error(present(srv, "sev-snp", dbg)) == (403, "attestation_policy", "debug_not_allowed")


# ---- fetch failures: the right error, no hang ------------------------------------------------


@pytest.mark.parametrize("how", ["down", "slow", "huge", "error"])
def test_fetch_failure(fresh_server, tmp_path, iss, how):
    rep = (VECTORS / "sev-snp" / "test-report.bin").read_bytes()
    iss.vceks[("Milan", rep[0x1A0:0x1E0].hex())] = (
        VECTORS / "sev-snp" / "test-vcek.der"
    ).read_bytes()
    iss.delay = 3.0
    kds = {
        "down": f"https://127.0.0.1:{free_port()}",
        "slow": iss.base + "/slow",
        "huge": iss.base + "/huge",
        "error": iss.base + "/fail",
    }[how]
    srv = serve(
        fresh_server,
        "sev-snp",
        dev_policy(tmp_path),
        SNP_AT,
        *fetch_args(iss, tmp_path, "--kds-url", kds, "--attest-fetch-timeout", "1"),
    )
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        pending = ex.submit(present, srv, "sev-snp", rep)
        if how == "slow":  # the fetch waits on a pool thread: the I/O thread keeps serving
            time.sleep(0.3)
            with httpx.Client(base_url=srv.url, timeout=10) as c:
                t1 = time.monotonic()
                assert c.get("/.well-known/shield/nonce").status_code == 200
                assert time.monotonic() - t1 < scaled(0.5) and not pending.done()
        r = pending.result(timeout=60)
    took = time.monotonic() - t0
    assert error(r) == (503, "attestation_unavailable", "collateral_missing"), r.text
    assert "fetch failed" in r.json()["message"]
    assert took < 15, took  # Milan, Genoa, Turin at most 1 s each
    # the failure is remembered (negative cache): the next request does not wait again
    t0 = time.monotonic()
    assert error(present(srv, "sev-snp", rep))[2] == "collateral_missing"
    assert time.monotonic() - t0 < 2
    # the server stays healthy
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        assert c.get("/.well-known/shield/nonce").status_code == 200
