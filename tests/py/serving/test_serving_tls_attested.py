"""--tls-attested (docs/protocol.md §4): the real shield binary with ``--tee simulated`` makes
its TLS key at start-up (the supervisor, one key for all workers) and serves a self-signed
certificate carrying its evidence in extension 2.23.133.5.4.9, re-issued every
``--tls-attested-ttl`` without dropping connections; ``AttestedClient(attested_tls=True)``
verifies that certificate (not the endpoint) at every handshake, accepts a re-issued
certificate for the same key and refuses another key or evidence its policy rejects.

Waits for a re-issue poll new connections with a scaled deadline; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import http.client
import json
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

from conftest import ServerProcess, scaled, shield_bin, wait_for
from support.server_attest import DEFAULT_PCR0, OTHER_PCR0, dev_root, env, tls_args

pytestmark = pytest.mark.shield_only

APP = "app_workers:app"  # /pid: which worker answered; /scope: the scheme
FASTAPI = "app_fastapi:app"
OID = "2.23.133.5.4.9"
MEDIA = "application/vnd.shield.evidence+cbor"


def attested_args(*extra: str) -> tuple[str, ...]:
    return ("--tls-attested", "--tee", "simulated", *extra)


def _insecure_ctx() -> ssl.SSLContext:
    """The raw view of the certificate: no CA (it is self-signed), no host name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_cert(srv) -> bytes:
    """The DER certificate of a new TLS connection to srv."""
    with socket.create_connection((srv.host, srv.port), timeout=scaled(10)) as s:
        with _insecure_ctx().wrap_socket(s, server_hostname=srv.host) as t:
            return t.getpeercert(True)


def spki_sha256(der: bytes) -> bytes:
    from shield_asgi.server_attestation import spki_of_certificate

    return hashlib.sha256(spki_of_certificate(der)).digest()


def evidence_of(der: bytes) -> tuple[str, bytes, bytes, int]:
    """The extension read independently of the client (cryptography + cbor2)."""
    import cbor2
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(OID))
    assert ext.critical is False
    outer = cbor2.loads(ext.value.value)
    assert isinstance(outer, list) and len(outer) == 2 and outer[0] == MEDIA
    inner = outer[1]
    doc = cbor2.loads(inner)
    assert sorted(doc) == [1, 2, 3, 4]
    # deterministic CBOR (RFC 8949 §4.2.1), both layers
    assert cbor2.dumps(doc, canonical=True) == inner
    assert cbor2.dumps(outer, canonical=True) == ext.value.value
    return doc[1], doc[2], doc[3], doc[4]


def https_get(srv, path: str) -> dict:
    conn = http.client.HTTPSConnection(
        srv.host, srv.port, context=_insecure_ctx(), timeout=scaled(10)
    )
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def wait_reissued(srv, old: bytes, timeout: float = 20.0) -> bytes:
    """A new connection's certificate once it is no longer `old`."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        der = peer_cert(srv)
        if der != old:
            return der
        if time.monotonic() > deadline:
            pytest.fail(f"the certificate was not re-issued in time\n{srv.describe()}")
        time.sleep(0.2)


def test_certificate_carries_verifiable_evidence(fresh_server):
    from cryptography import x509

    from shield_asgi import _native
    from shield_asgi.server_attestation import binding_cbor

    srv = fresh_server(APP, *attested_args(), env=env())
    der = peer_cert(srv)
    cert = x509.load_der_x509_certificate(der)
    assert cert.version == x509.Version.v3
    assert cert.issuer == cert.subject  # self-signed
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert life == datetime.timedelta(seconds=3600 + 300)  # ttl (default) + margin
    tee, evidence, binding, issued_at = evidence_of(der)
    assert tee == "simulated"
    assert issued_at == int(cert.not_valid_before_utc.timestamp())
    # §4: the binding CBOR of this very certificate's key, no HPKE key
    assert binding == binding_cbor(spki_sha256(der), None)
    # the evidence verifies with D(n = 32 zero bytes, k = binding)
    r = _native.verify(
        evidence,
        "simulated",
        at=time.time(),
        nonce=bytes(32),
        public_key=binding,
        trust_simulated=True,
        simulated_root=dev_root(),
    )
    assert r.verified, r.message
    assert r.measurements["PCR0"] == DEFAULT_PCR0
    assert bytes(r.user_data) == _native.binding_digest(bytes(32), binding)
    # ... and not with another nonce
    r = _native.verify(
        evidence,
        "simulated",
        at=time.time(),
        nonce=b"\x01" * 32,
        public_key=binding,
        trust_simulated=True,
        simulated_root=dev_root(),
    )
    assert not r.verified and r.reason == "binding_mismatch"
    # and the server serves HTTPS with it
    assert https_get(srv, "/scope")["scheme"] == "https"


def test_same_key_across_workers(fresh_server):
    srv = fresh_server(APP, *attested_args("--workers", "2"), env=env())
    seen: dict[int, bytes] = {}
    deadline = time.monotonic() + scaled(30)
    while len(seen) < 2:
        if time.monotonic() > deadline:
            pytest.fail(f"only worker(s) {sorted(seen)} answered\n{srv.describe()}")
        conn = http.client.HTTPSConnection(
            srv.host, srv.port, context=_insecure_ctx(), timeout=scaled(10)
        )
        try:
            conn.request("GET", "/pid")
            pid = json.loads(conn.getresponse().read())["pid"]
            seen[pid] = conn.sock.getpeercert(True)
        finally:
            conn.close()
    a, b = seen.values()
    assert spki_sha256(a) == spki_sha256(b)  # one key, made by the supervisor
    assert a == b  # and one certificate, issued once for all workers


def test_reissue_keeps_connections_and_key(fresh_server):
    """--tls-attested-ttl 2: new certificates (serial, issued_at, evidence) for the same key;
    a keep-alive connection opened before keeps working across re-issues."""
    from cryptography import x509

    srv = fresh_server(
        APP, *attested_args("--tls-attested-ttl", "2", "--timeout-keep-alive", "120"), env=env()
    )
    kept = http.client.HTTPSConnection(
        srv.host, srv.port, context=_insecure_ctx(), timeout=scaled(10)
    )
    try:
        kept.request("GET", "/pid")
        pid = json.loads(kept.getresponse().read())["pid"]
        first = kept.sock.getpeercert(True)
        second = wait_reissued(srv, first)
        third = wait_reissued(srv, second)
        c1, c2 = x509.load_der_x509_certificate(first), x509.load_der_x509_certificate(second)
        assert c1.serial_number != c2.serial_number
        assert spki_sha256(first) == spki_sha256(second) == spki_sha256(third)
        assert c2.not_valid_after_utc - c2.not_valid_before_utc == datetime.timedelta(
            seconds=2 + 300
        )
        e1, e2 = evidence_of(first), evidence_of(second)
        assert e2[3] >= e1[3] and e2[1] != e1[1]  # issued_at, fresh evidence
        # the connection from before the re-issues: same socket, same certificate, served
        for _ in range(3):
            kept.request("GET", "/pid")
            assert json.loads(kept.getresponse().read())["pid"] == pid
            assert kept.sock.getpeercert(True) == first
    finally:
        kept.close()
    assert "re-issued" in srv.stderr_text()


def attested_client(srv, cls=None, **kw):
    from shield_asgi.client import AttestedClient

    opts = dict(
        attested_tls=True,
        trust_simulated=True,
        simulated_root=dev_root(),
        tee_types=["simulated"],
        expected_measurements={"PCR0": DEFAULT_PCR0},
        timeout=scaled(30),
    )
    opts.update(kw)
    return (cls or AttestedClient)(f"https://127.0.0.1:{srv.port}", **opts)


class Certs:
    """Hooks recording the request paths sent and the certificate of each response."""

    def __init__(self):
        self.sent, self.certs = [], []

    def hooks(self):
        def on_response(r):
            ssl_object = r.extensions["network_stream"].get_extra_info("ssl_object")
            self.certs.append(ssl_object.getpeercert(True))

        return {
            "request": [lambda req: self.sent.append(req.url.path)],
            "response": [on_response],
        }


def test_client_verifies_the_certificate_and_accepts_its_reissue(fresh_server):
    srv = fresh_server(FASTAPI, *attested_args("--tls-attested-ttl", "2"), env=env())
    rec = Certs()
    with attested_client(srv, event_hooks=rec.hooks()) as c:
        r = c.get("/", headers={"Connection": "close"})  # the next request: a new connection
        assert r.status_code == 200
        (pin,) = c.attestations.values()
        assert pin.origin == ("https", "127.0.0.1", srv.port)
        assert pin.result.verified and pin.result.tee_type == "simulated"
        assert pin.tls_spki_sha256 == spki_sha256(rec.certs[0])
        # the endpoint is never asked: the certificate is the proof
        assert rec.sent == ["/"]
        wait_reissued(srv, rec.certs[0])
        r = c.get("/")
        assert r.status_code == 200
        assert rec.certs[1] != rec.certs[0]  # a new connection, a re-issued certificate
        assert spki_sha256(rec.certs[1]) == spki_sha256(rec.certs[0])
        assert rec.sent == ["/", "/"]


def test_async_client(fresh_server):
    from shield_asgi.client import AsyncAttestedClient

    srv = fresh_server(FASTAPI, *attested_args(), env=env())

    async def go():
        async with attested_client(srv, AsyncAttestedClient) as c:
            r = await c.get("/")
            assert r.status_code == 200
            (pin,) = c.attestations.values()
            assert pin.result.verified

    asyncio.run(go())


def test_client_refuses_a_certificate_that_changes_key_mid_session(fresh_server):
    """The server is replaced on the same port by one with another key (a new --tls-attested
    process, whose evidence is just as valid): the client's next connection is refused at its
    handshake, before the request is sent."""
    from shield_asgi.client import ServerAttestationError

    first = fresh_server(FASTAPI, *attested_args(), env=env())
    rec = Certs()
    with attested_client(first, event_hooks=rec.hooks()) as c:
        assert c.get("/", headers={"Connection": "close"}).status_code == 200
        first.stop()
        second = ServerProcess(
            FASTAPI, *attested_args(), "--access-log", env=env(), port=first.port
        )
        try:
            second.start()
            assert spki_sha256(peer_cert(second)) != spki_sha256(rec.certs[0])
            with pytest.raises(ServerAttestationError) as e:
                c.get("/items/1")
            assert e.value.reason == "binding_mismatch", e.value
            assert "another key" in str(e.value)
            # /items/1 never reached the server (refused at the handshake, before sending);
            # a request made after it is logged, so the log is complete up to there
            https_get(second, "/async")
            wait_for(lambda: "/async" in second.stderr_text(), scaled(10), what="access log")
            assert "/items/1" not in second.stderr_text()
        finally:
            second.stop()
            second.cleanup()


def test_client_refuses_evidence_its_policy_rejects(fresh_server):
    from shield_asgi.client import ServerAttestationError

    srv = fresh_server(FASTAPI, *attested_args(), env=env())
    cases = [
        ({"expected_measurements": {"PCR0": OTHER_PCR0}}, "measurement_mismatch"),
        (
            {"policy": {"version": 1, "nitro": {"pcrs": {"0": [OTHER_PCR0]}}}},
            "measurement_mismatch",
        ),
        (
            {"tee_types": ["sev-snp"], "trust_simulated": False, "simulated_root": None},
            "root_untrusted",
        ),
        (
            {"simulated_root": _native_root(tempfile.mkdtemp(prefix="shield-other-root-"))},
            None,
        ),  # another dev root: the chain does not end at it
    ]
    for kw, reason in cases:
        rec = Certs()
        with attested_client(srv, event_hooks=rec.hooks(), **kw) as c:
            with pytest.raises(ServerAttestationError) as e:
                c.get("/")
            if reason:
                assert e.value.reason == reason, (kw, e.value)
            assert rec.sent == [], kw  # nothing sent


def test_client_refuses_an_expired_certificate(fresh_server):
    """The client's clock past notAfter (ttl 60 + 300 s margin) while the evidence inside,
    valid 3 hours, still verifies: the certificate's own dates are checked."""
    from shield_asgi.client import ServerAttestationError

    srv = fresh_server(FASTAPI, *attested_args("--tls-attested-ttl", "60"), env=env())
    with attested_client(srv, clock=lambda: time.time() + 60 + 300 + 120) as c:
        with pytest.raises(ServerAttestationError) as e:
            c.get("/")
        assert e.value.reason == "expired", e.value
    with attested_client(srv, clock=lambda: time.time() - 3600) as c:
        with pytest.raises(ServerAttestationError) as e:
            c.get("/")
        assert e.value.reason == "not_yet_valid", e.value


def _native_root(data_dir: str) -> bytes:
    from shield_asgi import _native

    return _native.simulated_root(data_dir)


def test_client_refuses_a_certificate_without_evidence(fresh_server):
    """A plain --ssl-certfile server: attested_tls finds no extension."""
    from shield_asgi.client import ServerAttestationError

    srv = fresh_server(FASTAPI, *tls_args(), env=env())
    with attested_client(srv) as c:
        with pytest.raises(ServerAttestationError) as e:
            c.get("/")
        assert e.value.reason == "missing" and OID in str(e.value)


def test_client_options():
    from shield_asgi.client import AttestedClient

    with pytest.raises(ValueError, match="https"):
        AttestedClient("http://127.0.0.1:1", attested_tls=True, allow_plain=True)
    import httpx

    with pytest.raises(ValueError, match="transport"):
        AttestedClient("https://127.0.0.1:1", attested_tls=True, transport=httpx.HTTPTransport())


@pytest.mark.parametrize(
    "args, words",
    [
        (("--tls-attested",), ["--tls-attested needs --tee"]),
        (("--tls-attested", "--tee", "simulated", "--ssl-certfile", "x.pem"), ["--ssl-certfile"]),
        (("--tls-attested", "--tee", "simulated", "--ssl-keyfile", "x.key"), ["--ssl-keyfile"]),
        (("--tls-attested-ttl", "60"), ["--tls-attested-ttl needs --tls-attested"]),
        (
            ("--tls-attested", "--tee", "simulated", "--tls-attested-ttl", "0"),
            ["--tls-attested-ttl", "'0'"],
        ),
        (
            ("--tls-attested", "--tee", "simulated", "--tls-attested-ttl", "-5"),
            ["--tls-attested-ttl"],
        ),
        (("--tls-attested", "--tee", "simulated", "--tls-attested-ttl", "soon"), ["'soon'"]),
        (("--tls-attested", "--tee", "simulated", "--tls-attested-ttl", "1.5"), ["'1.5'"]),
        (("--tls-attested", "--tee", "simulated", "--tls-attested-ttl", "10501"), ["1-10500"]),
    ],
)
def test_usage_errors(args, words):
    p = subprocess.run(
        [str(shield_bin()), FASTAPI, *args],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        env={**env(), "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 2, (p.returncode, p.stderr)
    for w in words:
        assert w in p.stderr, p.stderr


def test_absent_tee_stops_the_start_up():
    """--tee nitro on a machine without /dev/nsm: the start-up check of --tee (the gate's config
    check, before any key is made) refuses it, exit 2 naming the device."""
    p = subprocess.run(
        [str(shield_bin()), FASTAPI, "--tls-attested", "--tee", "nitro", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        env={**env(), "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "--tee nitro" in p.stderr and "/dev/nsm" in p.stderr, p.stderr
