"""TLS in the server: handshakes (1.2, 1.3), HTTP over TLS (keep-alive, pipelining, large
bodies), client certificates, the ASGI tls scope extension, session resumption, certificate
reload on SIGHUP, start-up errors, and hostile or broken clients.

Clients: httpx (through an ssl.SSLContext), Python's ssl sockets driven by RawConn, and
`openssl s_client`.  Certificates are generated per module by support/tls_certs.make_pki.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import httpx
import pytest

from conftest import (
    APPS_DIR,
    IS_UVICORN,
    IncompleteResponse,
    RawConn,
    ServerProcess,
    free_port,
    scaled,
    shield_bin,
)
from support.tls_certs import PASSWORD, make_pki

APP = "app_raw:app"
OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_args(pki, *extra):
    return (
        "--ssl-certfile",
        str(pki["server.pem"]),
        "--ssl-keyfile",
        str(pki["server.key"]),
        *extra,
    )


def https(srv: ServerProcess) -> str:
    return f"https://{srv.host}:{srv.port}"


def client_ctx(pki, *, cert=None, key=None, tls_max=None, tls_min=None, ciphers=None):
    ctx = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    if cert:
        ctx.load_cert_chain(str(pki[cert]), str(pki[key]))
    if tls_max:
        ctx.maximum_version = tls_max
    if tls_min:
        ctx.minimum_version = tls_min
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def tls_conn(srv: ServerProcess, ctx: ssl.SSLContext, timeout: float = 10.0) -> RawConn:
    raw = socket.create_connection((srv.host, srv.port), timeout=scaled(timeout))
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    return RawConn(srv.host, srv.port, timeout, sock=s)


def get_scope(srv, ctx) -> dict:
    with httpx.Client(verify=ctx, timeout=scaled(10)) as c:
        r = c.get(https(srv) + "/scope")
    assert r.status_code == 200, r.text
    return r.json()["scope"]


def pem_norm(text: str) -> str:
    return text.strip().replace("\r\n", "\n")


@pytest.fixture(scope="module")
def tls_srv(server, pki):
    return server(APP, *tls_args(pki))


# ---------------------------------------------------------------- handshakes and scope


@pytest.mark.parametrize(
    "version,wire",
    [(ssl.TLSVersion.TLSv1_3, 0x0304), (ssl.TLSVersion.TLSv1_2, 0x0303)],
    ids=["tls13", "tls12"],
)
@pytest.mark.shield_only
def test_https_scope_and_tls_extension(tls_srv, pki, version, wire):
    ctx = client_ctx(pki, tls_max=version, tls_min=version)
    scope = get_scope(tls_srv, ctx)
    assert scope["scheme"] == "https"
    tls = scope["extensions"]["tls"]
    assert tls["tls_version"] == wire
    assert pem_norm(tls["server_cert"]) == pem_norm(pki["server.pem"].read_text())
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None
    if wire == 0x0304:
        assert tls["cipher_suite"] in (0x1301, 0x1302, 0x1303)
    else:
        assert 0xC000 <= tls["cipher_suite"] <= 0xCCFF  # ECDHE suites


@pytest.mark.shield_only
def test_cipher_suite_is_the_iana_id(tls_srv, pki):
    # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 = {0xC0,0x2B} (RFC 5289)
    ctx = client_ctx(pki, tls_max=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    assert get_scope(tls_srv, ctx)["extensions"]["tls"]["cipher_suite"] == 0xC02B


def test_alpn_http11(tls_srv, pki):
    ctx = client_ctx(pki)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_conn(tls_srv, ctx) as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        c.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().body == b"hello world\n"


@pytest.mark.shield_only
def test_plain_server_has_no_tls_extension(server):
    srv = server(APP)
    r = httpx.get(srv.url + "/scope", timeout=scaled(10))
    scope = r.json()["scope"]
    assert scope["scheme"] == "http"
    assert "tls" not in (scope.get("extensions") or {})


def test_min_version_13(server, pki):
    srv = server(APP, *tls_args(pki, "--ssl-min-version", "1.3"))
    ctx12 = client_ctx(pki, tls_max=ssl.TLSVersion.TLSv1_2)
    with pytest.raises((ssl.SSLError, OSError)):
        tls_conn(srv, ctx12).close()
    with tls_conn(srv, client_ctx(pki)) as c:
        assert c.sock.version() == "TLSv1.3"


# ---------------------------------------------------------------- HTTP over TLS


def test_keep_alive_and_pipelining(tls_srv, pki):
    with tls_conn(tls_srv, client_ctx(pki)) as c:
        for _ in range(3):  # sequential keep-alive
            c.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.read_response().body == b"hello world\n"
        # pipelined: three requests in one TLS record, answered in order
        c.send(
            b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /stream?n=3 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert c.read_response().body == b"hello world\n"
        assert c.read_response().body == b"hello"
        assert c.read_response().body == b"chunk-0\nchunk-1\nchunk-2\n"


def test_requests_split_across_records(tls_srv, pki):
    with tls_conn(tls_srv, client_ctx(pki)) as c:
        req = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
        for i in range(0, len(req), 7):  # one small TLS record per send
            c.send(req[i : i + 7])
            time.sleep(0.01)
        assert c.read_response().body == b"0123456789"


@pytest.mark.parametrize("size", [1, 70_000, 8 * 1024 * 1024])
def test_large_bodies_both_ways(tls_srv, pki, size):
    body = os.urandom(size)
    with httpx.Client(verify=client_ctx(pki), timeout=scaled(30)) as c:
        r = c.post(https(tls_srv) + "/echo", content=body)
        assert r.status_code == 200
        assert r.headers["x-body-sha256"] == hashlib.sha256(body).hexdigest()
        assert r.content == body
        # chunked request body (no content-length), and keep-alive after the big one
        r = c.post(https(tls_srv) + "/echo", content=iter([body[: size // 2], body[size // 2 :]]))
        assert r.content == body


def test_many_connections(tls_srv, pki):
    ctx = client_ctx(pki)
    conns = [tls_conn(tls_srv, ctx) for _ in range(20)]
    try:
        for c in conns:
            c.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in conns:
            assert c.read_response().body == b"hello world\n"
    finally:
        for c in conns:
            c.close()


# ---------------------------------------------------------------- broken and hostile clients


@pytest.mark.shield_only
def test_plain_http_on_tls_port(tls_srv, pki):
    with RawConn.to(tls_srv) as c:
        c.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 400
        assert b"plain HTTP request was sent to HTTPS port" in r.body
        assert c.wait_closed(5)
    # the server carries on
    with tls_conn(tls_srv, client_ctx(pki)) as c:
        c.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200


def test_garbage_handshake_closes_that_connection_only(tls_srv, pki):
    with tls_conn(tls_srv, client_ctx(pki)) as good:
        with RawConn.to(tls_srv) as bad:
            bad.send(b"\x16\x03\x01\x00\x05" + os.urandom(5) + os.urandom(300))
            assert bad.wait_closed(5)
        good.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
        assert good.read_response().status == 200


def test_untrusting_client_does_not_hurt_server(tls_srv, pki):
    ctx = ssl.create_default_context()  # does not trust the test CA: client aborts
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_conn(tls_srv, ctx)
    with tls_conn(tls_srv, client_ctx(pki)) as c:
        c.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200


def test_abrupt_disconnects(tls_srv, pki):
    ctx = client_ctx(pki)
    # 1. mid-handshake: a partial ClientHello, then a reset
    s = socket.create_connection((tls_srv.host, tls_srv.port))
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    # 2. after the handshake, half a request, no close_notify
    c = tls_conn(tls_srv, ctx)
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    c.sock.close()
    # 3. in the middle of a large response
    c = tls_conn(tls_srv, ctx)
    body = b"z" * (4 * 1024 * 1024)
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    c.read_until(b"\r\n\r\n")
    c.close()
    # 4. a streaming response: the app learns of the disconnect
    c = tls_conn(tls_srv, ctx)
    c.send(b"GET /disconnect-stream?id=tls1 HTTP/1.1\r\nHost: x\r\n\r\n")
    c.read_until(b"\r\n\r\n")
    c.close()
    deadline = time.monotonic() + scaled(10)
    with httpx.Client(verify=ctx, timeout=scaled(10)) as h:
        while True:
            ev = h.get(https(tls_srv) + "/disconnects?id=tls1").json()["event"]
            if ev != "streaming" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert ev in (
            "disconnect via receive",
            "send raised ClientDisconnected",
            "send raised OSError",
        ) or ev.startswith("send raised"), ev
        assert h.get(https(tls_srv) + "/text").status_code == 200


@pytest.mark.shield_only
def test_stalled_handshake_is_cut_by_header_timeout(server, pki):
    srv = server(APP, *tls_args(pki, "--timeout-header", "1"))
    with RawConn.to(srv) as c:
        t0 = time.monotonic()
        assert c.wait_closed(scaled(5))
        assert time.monotonic() - t0 >= 0.8
    with RawConn.to(srv) as c:  # a partial ClientHello does not keep it open either
        c.send(b"\x16\x03\x01\x02\x00")
        assert c.wait_closed(scaled(5))


# ---------------------------------------------------------------- client certificates


@pytest.fixture(scope="module")
def mtls_required(server, pki):
    return server(APP, *tls_args(pki, "--ssl-ca-certs", str(pki["ca.pem"]), "--ssl-cert-reqs", "2"))


@pytest.fixture(scope="module")
def mtls_optional(server, pki):
    return server(
        APP, *tls_args(pki, "--ssl-ca-certs", str(pki["ca.pem"]), "--ssl-cert-reqs", "optional")
    )


def _request_fails(srv, ctx):
    """With TLS 1.3 a refused client certificate surfaces on the first read.  A refusal is a TLS
    error or a connection closed without a response; anything else (a malformed response, a
    bug here) propagates and fails the test instead of passing for a refusal."""
    try:
        with tls_conn(srv, ctx) as c:
            c.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
            c.read_response()
    except (OSError, IncompleteResponse) as e:  # ssl.SSLError is an OSError
        return e
    return None


@pytest.mark.shield_only
def test_client_cert_required_present(mtls_required, pki):
    tls = get_scope(mtls_required, client_ctx(pki, cert="client.pem", key="client.key"))[
        "extensions"
    ]["tls"]
    chain = [pem_norm(p) for p in tls["client_cert_chain"]]
    assert chain[0] == pem_norm(pki["client.pem"].read_text())
    # OpenSSL clients complete a lone certificate's chain from their trust store: the CA
    assert chain[1:] in ([], [pem_norm(pki["ca.pem"].read_text())])
    assert tls["client_cert_name"] == "CN=alice,O=Shield Tests"
    assert tls["client_cert_error"] is None


@pytest.mark.shield_only
def test_client_cert_chain_with_intermediate(mtls_required, pki):
    tls = get_scope(
        mtls_required, client_ctx(pki, cert="client_chain.pem", key="client_chain.key")
    )["extensions"]["tls"]
    assert [pem_norm(p) for p in tls["client_cert_chain"]] == [
        pem_norm("-----BEGIN CERTIFICATE-----" + p)
        for p in pki["client_chain.pem"].read_text().split("-----BEGIN CERTIFICATE-----")[1:]
    ]
    assert tls["client_cert_name"] == "CN=bob,O=Shield Tests"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_client_cert_required_absent_or_wrong_ca(mtls_required, pki, version):
    assert _request_fails(mtls_required, client_ctx(pki, tls_max=version)) is not None
    assert (
        _request_fails(
            mtls_required, client_ctx(pki, cert="rogue.pem", key="rogue.key", tls_max=version)
        )
        is not None
    )
    # and the server still serves good clients
    ctx = client_ctx(pki, cert="client.pem", key="client.key", tls_max=version)
    with tls_conn(mtls_required, ctx) as c:
        c.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200


@pytest.mark.shield_only
def test_client_cert_optional(mtls_optional, pki):
    tls = get_scope(mtls_optional, client_ctx(pki))["extensions"]["tls"]
    assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None
    tls = get_scope(mtls_optional, client_ctx(pki, cert="client.pem", key="client.key"))[
        "extensions"
    ]["tls"]
    assert tls["client_cert_name"] == "CN=alice,O=Shield Tests"
    assert (
        _request_fails(mtls_optional, client_ctx(pki, cert="rogue.pem", key="rogue.key"))
        is not None
    )


def test_client_cert_not_requested_by_default(tls_srv, pki):
    ctx = client_ctx(pki, cert="client.pem", key="client.key")
    if IS_UVICORN:
        return
    assert get_scope(tls_srv, ctx)["extensions"]["tls"]["client_cert_chain"] == []


# ---------------------------------------------------------------- openssl s_client


def s_client(
    srv, pki, *args, request=b"GET /text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
):
    cmd = [
        OPENSSL,
        "s_client",
        "-connect",
        f"{srv.host}:{srv.port}",
        "-CAfile",
        str(pki["ca.pem"]),
        "-servername",
        "localhost",
        "-verify_return_error",
        *args,
    ]
    return subprocess.run(cmd, input=request, capture_output=True, timeout=scaled(20))


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
@pytest.mark.parametrize("flag,proto", [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")])
def test_s_client_versions_and_alpn(tls_srv, pki, flag, proto):
    r = s_client(tls_srv, pki, flag, "-alpn", "http/1.1", "-ign_eof")
    out = r.stdout.decode(errors="replace")
    assert f"Protocol  : {proto}" in out or f"New, {proto}" in out, out
    assert "ALPN protocol: http/1.1" in out
    assert "Verify return code: 0 (ok)" in out
    assert "HTTP/1.1 200 OK" in out and "hello world" in out


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
@pytest.mark.parametrize(
    "args",
    [("-tls1_3",), ("-tls1_2",), ("-tls1_2", "-no_ticket")],
    ids=["tls13-ticket", "tls12-ticket", "tls12-session-id"],
)
def test_session_resumption(tls_srv, pki, tmp_path, args):
    sess = tmp_path / "sess.pem"
    first = s_client(tls_srv, pki, *args, "-sess_out", str(sess), "-ign_eof")
    assert first.returncode == 0, first.stderr
    assert b"New, " in first.stdout
    assert sess.exists() and sess.stat().st_size > 0
    again = s_client(tls_srv, pki, *args, "-sess_in", str(sess), "-ign_eof")
    out = again.stdout.decode(errors="replace")
    assert "Reused, " in out, out
    assert "hello world" in out


@pytest.mark.shield_only
def test_resumed_session_keeps_client_identity(mtls_required, pki):
    ctx = client_ctx(pki, cert="client.pem", key="client.key", tls_max=ssl.TLSVersion.TLSv1_2)
    with tls_conn(mtls_required, ctx) as c:
        c.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
        c.read_response()
        session = c.sock.session
    raw = socket.create_connection((mtls_required.host, mtls_required.port))
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    with RawConn(mtls_required.host, mtls_required.port, sock=s) as c:
        assert s.session_reused
        c.send(b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
        tls = json.loads(c.read_response().body)["scope"]["extensions"]["tls"]
        assert tls["client_cert_name"] == "CN=alice,O=Shield Tests"
        assert len(tls["client_cert_chain"]) >= 1


# ---------------------------------------------------------------- reload on SIGHUP


def _peer_cert(srv, pki) -> bytes:
    with tls_conn(srv, client_ctx(pki)) as c:
        return c.sock.getpeercert(binary_form=True)


def _der(pem_path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_path.read_text())


def _serving_pid(srv) -> int:
    """The process that serves (the worker when a supervisor runs, else the server itself):
    SIGHUP to it reloads TLS in place (sh_server_reload_tls); SIGHUP to a supervisor is its
    rolling restart."""
    import re

    pids = re.findall(r"Started server process \[(\d+)\]", srv.stderr_text())
    return int(pids[-1]) if pids else srv.proc.pid


@pytest.mark.shield_only
def test_sighup_reloads_certificate_without_dropping_connections(fresh_server, pki, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki["server.pem"], cert)
    shutil.copy(pki["server.key"], key)
    srv = fresh_server(APP, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    assert _peer_cert(srv, pki) == _der(pki["server.pem"])
    old = tls_conn(srv, client_ctx(pki))
    old.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
    assert old.read_response().status == 200

    shutil.copy(pki["server2.pem"], cert)
    shutil.copy(pki["server2.key"], key)
    worker = _serving_pid(srv)
    os.kill(worker, signal.SIGHUP)
    deadline = time.monotonic() + scaled(5)
    while _peer_cert(srv, pki) != _der(pki["server2.pem"]):
        assert time.monotonic() < deadline, "new certificate not served after SIGHUP"
        time.sleep(0.05)
    # the connection made before the reload is still served
    old.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
    assert old.read_response().body == b"hello world\n"
    old.close()

    # a broken file: the reload fails loudly and the current certificate stays
    key.write_text("not a key\n")
    os.kill(worker, signal.SIGHUP)
    deadline = time.monotonic() + scaled(5)
    while "TLS reload failed" not in srv.stderr_text():
        assert time.monotonic() < deadline, srv.stderr_text()
        time.sleep(0.05)
    assert _peer_cert(srv, pki) == _der(pki["server2.pem"])
    assert srv.alive() and _serving_pid(srv) == worker  # reloaded in place, no restart


# ---------------------------------------------------------------- start-up errors


def _run_shield(*args, timeout=20):
    cmd = [str(shield_bin()), APP, "--app-dir", str(APPS_DIR), "--port", "0", *args]
    return subprocess.run(
        cmd, capture_output=True, timeout=scaled(timeout), stdin=subprocess.DEVNULL
    )


@pytest.mark.shield_only
@pytest.mark.parametrize(
    "case,expect",
    [
        ("missing-cert", "No such file"),
        ("missing-key", "No such file"),
        ("mismatch", "does not match"),
        ("not-a-cert", "--ssl-certfile"),
        ("encrypted-no-password", "encrypted"),
        ("wrong-password", "wrong --ssl-keyfile-password"),
        ("bad-ca", "--ssl-ca-certs"),
        ("bad-ciphers", "--ssl-ciphers"),
    ],
)
def test_startup_errors(pki, tmp_path, case, expect):
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    c, k = str(pki["server.pem"]), str(pki["server.key"])
    args = {
        "missing-cert": ["--ssl-certfile", str(tmp_path / "nope.pem"), "--ssl-keyfile", k],
        "missing-key": ["--ssl-certfile", c, "--ssl-keyfile", str(tmp_path / "nope.key")],
        "mismatch": ["--ssl-certfile", c, "--ssl-keyfile", str(pki["other.key"])],
        "not-a-cert": ["--ssl-certfile", str(junk), "--ssl-keyfile", k],
        "encrypted-no-password": ["--ssl-certfile", c, "--ssl-keyfile", str(pki["server_enc.key"])],
        "wrong-password": [
            "--ssl-certfile",
            c,
            "--ssl-keyfile",
            str(pki["server_enc.key"]),
            "--ssl-keyfile-password",
            "nope",
        ],
        "bad-ca": [
            "--ssl-certfile",
            c,
            "--ssl-keyfile",
            k,
            "--ssl-ca-certs",
            str(junk),
            "--ssl-cert-reqs",
            "2",
        ],
        "bad-ciphers": ["--ssl-certfile", c, "--ssl-keyfile", k, "--ssl-ciphers", "NOPE-NOPE"],
    }[case]
    r = _run_shield(*args)
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0
    assert expect in err, err
    assert "Traceback" not in err


@pytest.mark.shield_only
@pytest.mark.parametrize(
    "args",
    [
        ["--ssl-keyfile", "k.pem"],
        ["--ssl-certfile", "c.pem", "--ssl-cert-reqs", "maybe"],
        ["--ssl-certfile", "c.pem", "--ssl-cert-reqs", "2"],  # no --ssl-ca-certs
        ["--ssl-certfile", "c.pem", "--ssl-min-version", "1.1"],
        ["--ssl-certfile"],
        ["--ssl-foo", "x"],
    ],
)
def test_usage_errors(args):
    r = _run_shield(*args)
    assert r.returncode == 2, r.stderr
    assert b"--ssl" in r.stderr


def test_encrypted_key_with_password(server, pki):
    srv = server(
        APP,
        "--ssl-certfile",
        str(pki["server.pem"]),
        "--ssl-keyfile",
        str(pki["server_enc.key"]),
        "--ssl-keyfile-password",
        PASSWORD,
    )
    with tls_conn(srv, client_ctx(pki)) as c:
        c.send(b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().status == 200


@pytest.mark.shield_only
def test_native_hello_over_tls(pki):
    port = free_port()
    p = subprocess.Popen(
        [str(shield_bin()), "--native-hello", "--port", str(port), *tls_args(pki)],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + scaled(10)
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with httpx.Client(verify=client_ctx(pki), timeout=scaled(10)) as c:
            for _ in range(3):
                assert c.get(f"https://127.0.0.1:{port}/").text == "Hello, world!"
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=scaled(10))
    assert p.returncode == 0, err
