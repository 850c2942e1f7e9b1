"""attest/fetch.c (through the test-only tests/c/fetch-tool, built from
tests/c/attest/fetch_tool.c) against a local HTTPS server started here on loopback, with a test
CA generated here: OpenID discovery + JWKS, AMD KDS (VCEK, cert chain, CRL), Intel PCS/PCCS
(TCB info, QE identity, PCK CRL with their issuer-chain headers); memory and disk caches,
offline mode, negative caching, the rate limit, the allow-lists, and
hostile responses (slow, huge with and without Content-Length, wrong Content-Type, bad body,
errors, redirects, an untrusted certificate, plain http)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tool():
    if os.environ.get("SHIELD_FETCH_TOOL"):
        return os.environ["SHIELD_FETCH_TOOL"]
    # scripts/test builds build/ci; developers' own build dirs come after it.
    found = sorted(
        (REPO / "build").glob("*/tests/c/fetch-tool"), key=lambda p: (p.parts[-4] != "ci", str(p))
    )
    return str(found[0]) if found else None


TOOL = _tool()
pytestmark = pytest.mark.skipif(TOOL is None, reason="tests/c/fetch-tool is not built")
crypto = pytest.importorskip("cryptography")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

T0 = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
T1 = T0 + dt.timedelta(days=30)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn):
    k = ec.generate_private_key(ec.SECP256R1())
    c = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(T1)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(k, hashes.SHA256())
    )
    return k, c


def _leaf(ca_key, ca_cert, cn, san=None):
    k = ec.generate_private_key(ec.SECP256R1())
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(T1)
    )
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return k, b.sign(ca_key, hashes.SHA256())


def _pem(c):
    return c.public_bytes(serialization.Encoding.PEM)


def _der(c):
    return c.public_bytes(serialization.Encoding.DER)


class Fixture:
    def __init__(self, tmp: Path):
        self.ca_key, self.ca = _ca("shield fetch test CA")
        k, cert = _leaf(
            self.ca_key,
            self.ca,
            "127.0.0.1",
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        )
        self.ca_file = tmp / "ca.pem"
        self.ca_file.write_bytes(_pem(self.ca))
        (tmp / "srv.pem").write_bytes(_pem(cert) + _pem(self.ca))
        (tmp / "srv.key").write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        # an independent CA the fetcher does not trust
        ok, other = _ca("untrusted CA")
        k2, cert2 = _leaf(
            ok, other, "127.0.0.1", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        )
        (tmp / "bad.pem").write_bytes(_pem(cert2))
        (tmp / "bad.key").write_bytes(
            k2.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        _, self.vcek = _leaf(self.ca_key, self.ca, "SEV-VCEK")
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca.subject)
            .last_update(T0)
            .next_update(T1)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.crl = crl.public_bytes(serialization.Encoding.DER)
        self.chain = _pem(self.ca) + _pem(self.ca)
        self.hits = Counter()
        self.paths = []
        self.servers = []

    def handler(self):
        fx = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, status, ctype, body, headers=(), length=True):
                self.send_response(status)
                if ctype:
                    self.send_header("Content-Type", ctype)
                for k, v in headers:
                    self.send_header(k, v)
                if length:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass

            def do_GET(self):  # noqa: N802
                u = urllib.parse.urlsplit(self.path)
                segs = u.path.split("/")
                mode = (
                    segs[1]
                    if len(segs) > 1
                    and segs[1]
                    in (
                        "slow",
                        "huge",
                        "hugechunked",
                        "wrongtype",
                        "fail",
                        "notfound",
                        "badbody",
                        "redirect",
                    )
                    else ""
                )
                path = "/" + "/".join(segs[2:]) if mode else u.path
                fx.hits[u.path] += 1
                fx.paths.append(self.path)
                host = f"https://127.0.0.1:{self.server.server_address[1]}"
                if mode == "slow":
                    time.sleep(3)
                if mode == "fail":
                    return self.send(500, "text/plain", b"boom")
                if mode == "notfound":
                    return self.send(404, "text/plain", b"nope")
                if mode == "redirect":
                    return self.send(302, "text/plain", b"", [("Location", host + path)])
                if mode == "huge":
                    return self.send(200, "application/json", b"{" + b" " * (5 << 20) + b"}")
                if mode == "hugechunked":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        for _ in range(80):
                            self.wfile.write(b" " * 65536)
                    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                        pass
                    self.close_connection = True
                    return
                iss = host + ("/" + mode if mode else "")
                chain_hdr = urllib.parse.quote(fx.chain.decode())
                routes = {
                    "/.well-known/openid-configuration": (
                        "application/json",
                        json.dumps({"issuer": iss, "jwks_uri": iss + "/certs"}).encode(),
                        [],
                    ),
                    "/certs": (
                        "application/json; charset=utf-8",
                        json.dumps({"keys": [{"kty": "RSA", "kid": "a"}]}).encode(),
                        [],
                    ),
                    "/sgx/certification/v4/qe/identity": (
                        "application/json",
                        b'{"enclaveIdentity": {}, "signature": "00"}',
                        [("SGX-Enclave-Identity-Issuer-Chain", chain_hdr)],
                    ),
                    "/tdx/certification/v4/qe/identity": (
                        "application/json",
                        b'{"enclaveIdentity": {}, "signature": "00"}',
                        [("SGX-Enclave-Identity-Issuer-Chain", chain_hdr)],
                    ),
                    "/sgx/certification/v4/tcb": (
                        "application/json",
                        b'{"tcbInfo": {}, "signature": "00"}',
                        [("TCB-Info-Issuer-Chain", chain_hdr)],
                    ),
                    "/tdx/certification/v4/tcb": (
                        "application/json",
                        b'{"tcbInfo": {}, "signature": "00"}',
                        [("TCB-Info-Issuer-Chain", chain_hdr)],
                    ),
                    "/sgx/certification/v4/pckcrl": (
                        "application/pkix-crl",
                        fx.crl,
                        [("SGX-PCK-CRL-Issuer-Chain", chain_hdr)],
                    ),
                }
                if path in routes:
                    ct, body, hdrs = routes[path]
                elif (
                    path.startswith("/vcek/v1/")
                    and path.endswith("/cert_chain")
                    or path.endswith("vlek/v1/Genoa/cert_chain")
                ):
                    ct, body, hdrs = "application/x-pem-file", fx.chain, []
                elif path.endswith("/crl"):
                    ct, body, hdrs = "application/pkix-crl", fx.crl, []
                elif path.startswith("/vcek/v1/"):
                    ct, body, hdrs = "application/octet-stream", _der(fx.vcek), []
                else:
                    return self.send(404, "text/plain", b"no route")
                if mode == "wrongtype":
                    ct = "text/html"
                if mode == "badbody":
                    body = (
                        b"<html>not it</html>"
                        if ct.startswith("application/json")
                        else b"\x30\x03\x02\x01"
                    )
                self.send(200, ct, body, hdrs)

        return H

    def serve(self, tmp: Path, cert="srv", tls=True):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        srv.daemon_threads = True
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tmp / f"{cert}.pem", tmp / f"{cert}.key")
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.servers.append(srv)
        return f"{'https' if tls else 'http'}://127.0.0.1:{srv.server_address[1]}"

    def close(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()


@pytest.fixture
def fx(tmp_path):
    f = Fixture(tmp_path)
    f.base = f.serve(tmp_path)
    yield f
    f.close()


def run(fx, *args, ops, ca=True, timeout=30):
    cmd = [TOOL] + (["--ca", str(fx.ca_file)] if ca else []) + [str(a) for a in args] + list(ops)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


NOW = int(time.time())
CHIP = "ab" * 64
# ucode 0x73, snp 0, tee 3, bl 4 (u64 little-endian layout, printed big-endian)
TCB = "7300000000000304"


def test_jwks_discovery_memory_cache(fx):
    iss = fx.base
    out = run(
        fx,
        "--issuer",
        iss,
        ops=[f"at:{NOW}", f"jwks:{iss}", f"jwks:{iss}", f"at:{NOW + 3601}", f"jwks:{iss}"],
    )
    assert [o["ok"] for o in out] == [True] * 3, out
    assert [o["from_cache"] for o in out] == [0, 1, 0]
    assert fx.hits["/certs"] == 2 and fx.hits["/.well-known/openid-configuration"] == 2
    # a configured JWKS URL skips discovery
    out = run(
        fx,
        "--issuer",
        f"https://maa.example={iss}/certs",
        ops=[f"at:{NOW}", "jwks:https://maa.example"],
    )
    assert out[0]["ok"] and fx.hits["/.well-known/openid-configuration"] == 2
    # only configured issuers
    n = sum(fx.hits.values())
    out = run(fx, "--issuer", iss, ops=[f"at:{NOW}", "jwks:https://evil.example", f"openid:{iss}/"])
    assert [o.get("reason") for o in out] == ["policy_denied", "policy_denied"]
    assert sum(fx.hits.values()) == n


def test_openid_issuer_mismatch(fx):
    # the discovery document names another issuer (the server answers with its own URL)
    iss = fx.base + "/"  # trailing slash: differs from the document's "issuer"
    out = run(fx, "--issuer", iss, ops=[f"at:{NOW}", f"jwks:{iss}"])
    assert not out[0]["ok"] and "issuer differs" in out[0]["message"]


def test_amd_kds(fx):
    ops = [
        f"at:{NOW}",
        f"vcek:Milan:{CHIP}:{TCB}",
        f"vcek:Turin:{CHIP}:{TCB}",
        "chain:vcek:Milan",
        "crl:vcek:Milan",
        "chain:vlek:Genoa",
        f"vcek:Siena:{CHIP}:{TCB}",
        "chain:xyz:Milan",
    ]
    out = run(fx, "--kds-url", fx.base, ops=ops)
    assert [o["ok"] for o in out[:5]] == [True] * 5, out
    assert [o["reason"] for o in out[5:]] == ["policy_denied", "policy_denied"]
    vq = [p for p in fx.paths if p.startswith("/vcek/v1/Milan/ab")][0]
    assert vq == f"/vcek/v1/Milan/{CHIP}?blSPL=4&teeSPL=3&snpSPL=0&ucodeSPL=115"
    tq = [p for p in fx.paths if p.startswith("/vcek/v1/Turin/")][0]
    assert tq == f"/vcek/v1/Turin/{'ab' * 8}?fmcSPL=4&blSPL=3&teeSPL=0&snpSPL=0&ucodeSPL=115"
    out = run(
        fx,
        "--kds-url",
        fx.base,
        "--product",
        "Genoa",
        ops=[f"at:{NOW}", "chain:vcek:Milan", "crl:vlek:Genoa"],
    )
    assert out[0]["reason"] == "policy_denied" and out[1]["ok"]


def test_intel_pcs(fx):
    out = run(
        fx,
        "--pcs-url",
        fx.base,
        ops=[
            f"at:{NOW}",
            "tcb:sgx:00906ED50000",
            "tcb:tdx:b0c06f000000",
            "qe:sgx",
            "qe:tdx",
            "pckcrl:processor",
            "pckcrl:platform",
            "tcb:sgx:00906ED5",
            "qe:sev",
            "pckcrl:root",
        ],
    )
    assert [o["ok"] for o in out[:6]] == [True] * 6, out
    for o in out[:6]:
        assert (
            o["chain"].startswith("-----BEGIN CERTIFICATE-----") and o["chain"].count("BEGIN") == 2
        )
    assert [o["reason"] for o in out[6:]] == ["policy_denied"] * 3
    assert "/sgx/certification/v4/tcb?fmspc=00906ed50000" in fx.paths
    assert "/sgx/certification/v4/pckcrl?ca=processor&encoding=der" in fx.paths


def test_disk_cache_offline_and_stale(fx, tmp_path):
    cache = tmp_path / "cache"
    args = ["--kds-url", fx.base, "--pcs-url", fx.base, "--cache", cache]
    out = run(fx, *args, ops=[f"at:{NOW}", "chain:vcek:Milan", "tcb:sgx:00906ed50000"])
    assert all(o["ok"] and o["from_cache"] == 0 for o in out), out
    names = sorted(p.name for p in cache.iterdir())
    assert names == [
        "amd-vcek-Milan-chain.pem",
        "intel-sgx-tcb-00906ed50000.json",
        "intel-sgx-tcb-00906ed50000.json.chain.pem",
    ]
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    n = sum(fx.hits.values())
    # a new process: served from disk without a request
    out = run(fx, *args, ops=[f"at:{NOW}", "chain:vcek:Milan", "tcb:sgx:00906ed50000"])
    assert [o["from_cache"] for o in out] == [2, 2] and out[1]["chain"]
    # offline: files only, whatever their age; nothing else
    out = run(
        fx,
        "--cache",
        cache,
        "--offline",
        ops=[f"at:{NOW + 10**6}", "chain:vcek:Milan", "crl:vcek:Milan"],
    )
    assert out[0]["ok"] and out[0]["from_cache"] == 2
    assert out[1]["reason"] == "collateral_missing" and "offline" in out[1]["message"]
    assert sum(fx.hits.values()) == n
    # past the ttl with the network failing: the old disk copy, marked stale
    out = run(
        fx,
        "--kds-url",
        fx.base + "/fail",
        "--cache",
        cache,
        ops=[f"at:{NOW + 7200}", "chain:vcek:Milan"],
    )
    assert out[0]["ok"] and out[0]["stale"] and out[0]["from_cache"] == 2
    # a corrupt file on disk is not used
    (cache / "amd-vcek-Milan-crl.der").write_bytes(b"garbage")
    out = run(fx, "--cache", cache, "--offline", ops=[f"at:{NOW}", "crl:vcek:Milan"])
    assert not out[0]["ok"]


@pytest.mark.parametrize(
    "mode,needle",
    [
        ("slow", "timed out"),
        ("huge", "larger than"),
        ("hugechunked", "larger than"),
        ("wrongtype", "Content-Type"),
        ("badbody", "not the expected format"),
        ("fail", "status 500"),
        ("notfound", "status 404"),
        ("redirect", "status 302"),
    ],
)
def test_hostile_responses(fx, mode, needle):
    t = time.monotonic()
    out = run(
        fx,
        "--kds-url",
        f"{fx.base}/{mode}",
        "--pcs-url",
        f"{fx.base}/{mode}",
        "--issuer",
        f"{fx.base}/{mode}",
        "--timeout-ms",
        "1000",
        "--max-bytes",
        "65536",
        ops=[f"at:{NOW}", "crl:vcek:Milan", "tcb:sgx:00906ed50000", f"openid:{fx.base}/{mode}"],
    )
    assert all(not o["ok"] and o["reason"] == "collateral_missing" for o in out), out
    assert all(needle in o["message"] for o in out), out
    assert time.monotonic() - t < 15


def test_negative_cache_and_rate_limit(fx):
    bad = f"{fx.base}/fail"
    out = run(
        fx,
        "--kds-url",
        bad,
        ops=[f"at:{NOW}", "crl:vcek:Milan", "crl:vcek:Milan", f"at:{NOW + 61}", "crl:vcek:Milan"],
    )
    assert "status 500" in out[0]["message"] and "recent failure" in out[1]["message"]
    assert "status 500" in out[2]["message"] and fx.hits["/fail/vcek/v1/Milan/crl"] == 2
    ops = (
        [f"at:{NOW}"]
        + [f"vcek:Milan:{i:02x}{CHIP[2:]}:{TCB}" for i in range(3)]
        + [f"at:{NOW + 60}", f"vcek:Milan:{CHIP}:{TCB}"]
    )
    out = run(fx, "--kds-url", fx.base, "--per-minute", "2", ops=ops)
    assert [o["ok"] for o in out] == [True, True, False, True]
    assert "rate limit" in out[2]["message"]


def test_tls_and_plain_http(fx, tmp_path):
    # a server whose certificate does not chain to the configured CA
    other = fx.serve(tmp_path, cert="bad")
    out = run(fx, "--kds-url", other, ops=[f"at:{NOW}", "chain:vcek:Milan"])
    assert not out[0]["ok"] and "certificate" in out[0]["message"].lower()
    # no --ca: the system store does not know the test CA either
    out = run(fx, "--kds-url", fx.base, ops=[f"at:{NOW}", "chain:vcek:Milan"], ca=False)
    assert not out[0]["ok"]
    # plain http: only for an explicitly configured override on loopback
    plain = fx.serve(tmp_path, tls=False)
    out = run(
        fx,
        "--kds-url",
        plain,
        "--pcs-url",
        "http://192.0.2.1:1",
        "--issuer",
        plain,
        ops=[f"at:{NOW}", "chain:vcek:Milan", "qe:sgx", f"jwks:{plain}"],
    )
    assert out[0]["ok"], out
    assert not out[1]["ok"] and "non-https" in out[1]["message"]
    assert (
        not out[2]["ok"] and "non-https" in out[2]["message"]
    )  # discovery URL is never an override
    out = run(fx, "--kds-url", "http://user@127.0.0.1:1", ops=[f"at:{NOW}", "chain:vcek:Milan"])
    assert "non-https" in out[0]["message"]
