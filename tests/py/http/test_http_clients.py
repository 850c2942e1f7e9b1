"""Real clients against early responses and half-closed connections (issue 14).

Early responses: an app (or the server's own 413) answers before reading a large body.  The
client keeps sending; it must still read the response, never a reset: small unread bodies are
drained and the connection kept, larger ones get `connection: close` and a lingering close
(the server shuts its write side and discards what the client still sends until its FIN).

Half-close: a client that sends complete requests and then shuts down its write side
(shutdown(SHUT_WR)) gets every answer, then the connection closes.
"""

import http.client
import socket
import threading

import httpx
import pytest

from conftest import IS_UVICORN, RawConn, http_request, scaled

APP = "app_raw:app"
BIG = 10 * 1024 * 1024


@pytest.fixture
def srv(server):
    return server(APP)


# ---- 3. early responses to large unread bodies ---------------------------------------------


def http_client_post(srv, target, body, headers=None):
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=scaled(60))
    try:
        conn.request("POST", target, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read(), r.getheader("connection")
    finally:
        conn.close()


def test_http_client_reads_401_sent_before_a_10mb_body(srv):
    # the app answers 401 without reading: http.client sends the whole body first, then reads
    status, body, connection = http_client_post(srv, "/status?code=401", b"x" * BIG)
    assert status == 401
    if not IS_UVICORN:  # uvicorn drains any size; shield drains 1 MiB, then lingers
        assert (connection or "").lower() == "close"


# uvicorn resets the connection (http.client gets ConnectionResetError) on this one.
@pytest.mark.shield_only
def test_http_client_chunked_10mb_unread(srv):
    def gen():
        for _ in range(BIG // 65536):
            yield b"y" * 65536

    status, _, _ = http_client_post(
        srv, "/status?code=401", gen(), {"Transfer-Encoding": "chunked"}
    )
    assert status == 401


def test_httpx_reads_401_sent_before_a_10mb_body(srv):
    with httpx.Client(timeout=scaled(60)) as h:
        r = h.post(srv.url + "/status?code=401", content=b"x" * BIG)
        assert r.status_code == 401


# uvicorn has no --max-body-size.
@pytest.mark.shield_only
def test_http_client_and_httpx_read_413(server):
    srv = server(APP, "--max-body-size", "1000")
    status, body, connection = http_client_post(srv, "/echo", b"x" * BIG)
    assert status == 413 and (connection or "").lower() == "close"
    with httpx.Client(timeout=scaled(60)) as h:
        assert h.post(srv.url + "/echo", content=b"x" * BIG).status_code == 413


def test_raw_socket_sends_everything_then_reads_the_early_response(srv):
    with RawConn.to(srv, timeout=60) as c:
        head = http_request("POST", "/status?code=401", {"Content-Length": str(BIG)})
        c.send(head + b"z" * BIG)  # must not fail with a reset: the server keeps reading
        r = c.read_response()
        assert r.status == 401
        if not IS_UVICORN:  # uvicorn keeps the connection after draining it all
            assert (r.header("connection") or "").lower() == "close"
            assert c.wait_closed(10)


def test_small_unread_body_keeps_the_connection(srv):
    # a body the server can drain cheaply: the connection carries the next request
    with RawConn.to(srv) as c:
        c.send(http_request("POST", "/status?code=401", body=b"s" * 100_000))
        r = c.read_response()
        assert r.status == 401 and (r.header("connection") or "").lower() != "close"
        c.send(http_request("GET", "/text"))
        assert c.read_response().body == b"hello world\n"


def test_keep_alive_client_after_early_response(srv):
    # http.client reuses the connection when it may, and reconnects when it was closed
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=scaled(60))
    try:
        for body in (b"a" * 1000, b"b" * BIG, b"c" * 1000):
            conn.request("POST", "/status?code=401", body=body)
            r = conn.getresponse()
            r.read()
            assert r.status == 401
        conn.request("GET", "/text")
        assert conn.getresponse().read() == b"hello world\n"
    finally:
        conn.close()


# ---- 4. half-close ---------------------------------------------------------------------------


def half_close_round(srv, raw: bytes) -> bytes:
    with srv.connect(scaled(10)) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                break
            if not d:
                break
            out += d
        return out


# uvicorn answers only a response ready before it handles the FIN (closes the transport):
# 20/20 for /text, 0/20 for the slow route.
@pytest.mark.parametrize(
    "target", ["/text", pytest.param("/sleep?s=0.3", marks=pytest.mark.shield_only)]
)
def test_half_close_after_a_complete_request_is_answered(srv, target):
    got = 0
    for _ in range(20):
        out = half_close_round(srv, http_request("GET", target))
        if out.startswith(b"HTTP/1.1 200"):
            got += 1
    assert got == 20


@pytest.mark.shield_only  # see above: uvicorn drops what it has not answered at the FIN
def test_half_close_after_pipelined_requests_answers_all(srv):
    raw = (
        http_request("POST", "/echo", body=b"first")
        + http_request("GET", "/sleep?s=0.2")
        + http_request("POST", "/echo", body=b"third")
    )
    out = half_close_round(srv, raw)
    assert out.count(b"HTTP/1.1 200") == 3, out
    assert b"first" in out and b"slept" in out and out.endswith(b"third"), out


def test_half_close_with_a_body_the_app_reads_later(srv):
    out = half_close_round(srv, http_request("POST", "/echo", body=b"b" * 300_000))
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    assert out.endswith(b"b" * 1000)


def test_half_close_after_a_truncated_request_closes(srv):
    # the body never completes: nothing to answer, the connection just closes
    raw = http_request("POST", "/echo", {"Content-Length": "100"}) + b"short"
    assert half_close_round(srv, raw) == b""


def test_server_still_serves_after_half_closes(srv):
    threads = [
        threading.Thread(target=half_close_round, args=(srv, http_request("GET", "/text")))
        for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/text"))
        assert c.read_response().status == 200
