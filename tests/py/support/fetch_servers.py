"""Loopback HTTPS servers with a test CA generated here, standing in for the collateral and
key services attest/fetch.c talks to (OpenID discovery + JWKS, AMD KDS, Intel PCS/PCCS), shared
by attest/test_attest_fetch.py (the fetcher through tests/c/fetch-tool),
attest/test_attest_verify_fetch.py (`shield verify --fetch`) and gate/test_gate_fetch.py (the
server's gate).

Fixture: the test CA, a server certificate for 127.0.0.1 and one from an untrusted CA, canned
answers at the KDS/PCS/JWKS paths and hostile ones (slow, huge, wrong type, bad body,
redirects), serve()/close().  VectorServer: the same with routes that answer with the shared
vectors' own bytes.  Importing this module skips the importing test module when cryptography is
not installed."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

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


SGX_OPT_IN = {
    "version": 1,
    "sgx": {
        "tcb_statuses": ["UpToDate", "SWHardeningNeeded", "ConfigurationAndSWHardeningNeeded"],
        "allowed_advisories": ["INTEL-SA-00289", "INTEL-SA-00615"],
    },
}


def vector_der(path: Path) -> bytes:
    b = path.read_bytes()
    if b"-----BEGIN" in b:  # one PEM certificate (no parse: vcek-genoa.pem has a zero serial)
        return base64.b64decode(b"".join(b.split(b"-----")[2].split()))
    return b


class VectorServer(Fixture):
    """Fixture (test CA, server certificate, serve/close) with routes that answer
    with the vectors' bytes: vceks {(product, hwid hex): DER}, chains {product: PEM},
    pcs {tee: collateral JSON form}, jwks bytes.  A /fail prefix answers 500."""

    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.vceks: dict = {}
        self.chains: dict = {}
        self.pcs: dict = {}
        self.jwks = b""

    def handler(self):
        fx = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, status, ctype, body, headers=()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                u = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(u.query)
                fx.paths.append(self.path)
                seg = u.path.strip("/").split("/")
                if seg[0] == "fail":
                    return self.send(500, "text/plain", b"boom")
                if len(seg) == 4 and seg[:2] == ["vcek", "v1"]:
                    if seg[3] == "cert_chain" and seg[2] in fx.chains:
                        return self.send(200, "application/x-pem-file", fx.chains[seg[2]])
                    if (seg[2], seg[3]) in fx.vceks:
                        return self.send(
                            200, "application/octet-stream", fx.vceks[(seg[2], seg[3])]
                        )
                if len(seg) >= 4 and seg[1:3] == ["certification", "v4"]:
                    tee, rest = seg[0], "/".join(seg[3:])
                    col = fx.pcs.get(tee) or next(iter(fx.pcs.values()), None)
                    if col is None:
                        return self.send(404, "text/plain", b"no collateral")
                    quote = urllib.parse.quote
                    if (
                        rest == "tcb"
                        and tee in fx.pcs
                        and q.get("fmspc") == [json.loads(col["tcb_info"])["fmspc"].lower()]
                    ):
                        body = '{"tcbInfo":%s,"signature":"%s"}' % (
                            col["tcb_info"],
                            col["tcb_info_signature"],
                        )
                        return self.send(
                            200,
                            "application/json",
                            body.encode(),
                            [("TCB-Info-Issuer-Chain", quote(col["tcb_info_issuer_chain"]))],
                        )
                    if rest == "qe/identity" and tee in fx.pcs:
                        body = '{"enclaveIdentity":%s,"signature":"%s"}' % (
                            col["qe_identity"],
                            col["qe_identity_signature"],
                        )
                        return self.send(
                            200,
                            "application/json",
                            body.encode(),
                            [
                                (
                                    "SGX-Enclave-Identity-Issuer-Chain",
                                    quote(col["qe_identity_issuer_chain"]),
                                )
                            ],
                        )
                    if rest == "pckcrl" and q.get("encoding") == ["der"]:
                        return self.send(
                            200,
                            "application/pkix-crl",
                            bytes.fromhex(col["pck_crl"]),
                            [("SGX-PCK-CRL-Issuer-Chain", quote(col["pck_crl_issuer_chain"]))],
                        )
                    if rest == "rootcacrl":
                        return self.send(
                            200, "application/pkix-crl", bytes.fromhex(col["root_ca_crl"])
                        )
                if u.path == "/certs" and fx.jwks:
                    return self.send(200, "application/json", fx.jwks)
                self.send(404, "text/plain", b"no route")

        return H
