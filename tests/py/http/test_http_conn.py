"""HTTP/1.1 connection handling over raw sockets: keep-alive, pipelining, HTTP/1.0,
chunked bodies both ways, Content-Length framing, HEAD, 100-continue, idle timeout,
client disconnects."""

import hashlib
import json
import os
import re
import socket
import time

import pytest

from conftest import RawConn, http_request, wait_for

APP = "app_raw:app"


@pytest.fixture
def srv(server):  # per test: cheap (cached per module), restarts a crashed server
    return server(APP)


def test_keep_alive_several_requests(srv):
    with RawConn.to(srv) as c:
        for i in range(5):
            body = f"body-{i}".encode()
            c.send(http_request("POST", "/echo", body=body))
            r = c.read_response()
            assert r.status == 200 and r.body == body
            assert (r.header("connection") or "").lower() != "close"


def test_pipelining_three_requests_in_one_send(srv):
    reqs = (
        http_request("POST", "/echo", body=b"first")
        + http_request("GET", "/sleep?s=0.1")
        + http_request("POST", "/echo", body=b"third")
    )
    with RawConn.to(srv) as c:
        c.send(reqs)
        assert c.read_response().body == b"first"
        assert c.read_response().body == b"slept"
        assert c.read_response().body == b"third"


def test_pipelining_split_across_sends(srv):
    data = http_request("POST", "/echo", body=b"one") + http_request("POST", "/echo", body=b"two")
    with RawConn.to(srv) as c:
        for i in range(0, len(data), 7):
            c.send(data[i : i + 7])
            time.sleep(0.002)
        assert c.read_response().body == b"one"
        assert c.read_response().body == b"two"


def test_http10_closes_by_default(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/text", version="HTTP/1.0"))
        r = c.read_response()
        assert r.version in ("HTTP/1.1", "HTTP/1.0")
        assert r.status == 200 and r.body == b"hello world\n"
        assert c.wait_closed(5), "HTTP/1.0 connection without keep-alive must close"


# uvicorn ignores "Connection: keep-alive" from HTTP/1.0 clients (always closes).
@pytest.mark.shield_only
def test_http10_keep_alive_on_request(srv):
    with RawConn.to(srv) as c:
        for _ in range(2):
            c.send(http_request("GET", "/text", {"Connection": "keep-alive"}, version="HTTP/1.0"))
            r = c.read_response()
            assert r.status == 200 and r.body == b"hello world\n"
            # RFC 9112 appendix C.2.2: a 1.0 client only keeps the connection if told so
            assert (r.header("connection") or "").lower() == "keep-alive"


# uvicorn sends chunked encoding to HTTP/1.0 clients, which RFC 9112 §7.1 forbids
# (server.h: "HTTP/1.0 closes the connection").
@pytest.mark.shield_only
def test_http10_streaming_is_close_delimited(srv):
    # no chunked encoding for HTTP/1.0: the body ends when the connection closes
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/stream?n=3", version="HTTP/1.0"))
        status, _, _, headers, _ = c.read_head()
        assert status == 200
        assert "chunked" not in dict(headers).get("transfer-encoding", "")
        assert c.read_to_eof() == b"chunk-0\nchunk-1\nchunk-2\n"


def test_connection_close_request_header(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/text", {"Connection": "close"}))
        r = c.read_response()
        assert r.status == 200
        assert c.wait_closed(5)


def test_connection_close_from_app(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/close-header"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"bye"
        assert c.wait_closed(5)


def test_chunked_request_body(srv):
    body = b"hello chunked world"
    chunked = b"5\r\nhello\r\n8\r\n chunked\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    with RawConn.to(srv) as c:
        c.send(http_request("POST", "/echo", {"Transfer-Encoding": "chunked"}) + chunked)
        r = c.read_response()
        assert r.status == 200 and r.body == body
        # the connection is still usable afterwards
        c.send(http_request("POST", "/echo", body=b"next"))
        assert c.read_response().body == b"next"


def test_chunked_request_with_trailers(srv):
    chunked = b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
    with RawConn.to(srv) as c:
        c.send(http_request("POST", "/echo", {"Transfer-Encoding": "chunked"}) + chunked)
        assert c.read_response().body == b"abc"
        c.send(http_request("GET", "/text"))
        assert c.read_response().body == b"hello world\n"


def test_chunked_response_when_streaming(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/stream?n=4"))
        r = c.read_response()
        assert r.status == 200
        assert r.header("transfer-encoding") == "chunked"
        assert r.header("content-length") is None
        assert r.body == b"".join(f"chunk-{i}\n".encode() for i in range(4))


def test_content_length_from_app_single_body(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/text"))
        r = c.read_response()
        assert r.header("content-length") == "12"
        assert r.header("transfer-encoding") is None


# uvicorn uses chunked encoding whenever the app gives no content-length; shield adds
# Content-Length when the first body message is also the last (server.h sh_request_start).
@pytest.mark.shield_only
def test_content_length_added_for_single_body_message(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("POST", "/echo-nocl", body=b"abcdef"))
        r = c.read_response()
        assert r.header("content-length") == "6"
        assert r.header("transfer-encoding") is None
        assert r.body == b"abcdef"


def test_head_has_headers_but_no_body(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("HEAD", "/text"))
        r = c.read_response("HEAD")
        assert r.status == 200
        assert r.header("content-length") == "12"
        # the next response on the connection must start right away (no stray body bytes)
        c.send(http_request("GET", "/text"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello world\n"


def test_head_on_streaming_route(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("HEAD", "/stream?n=3"))
        r = c.read_response("HEAD")
        assert r.status == 200
        c.send(http_request("GET", "/text"))
        assert c.read_response().body == b"hello world\n"


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(srv, code):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", f"/status?code={code}"))
        r = c.read_response()
        assert r.status == code
        assert r.header("transfer-encoding") is None
        # RFC 9110 §8.6: no Content-Length in a 204; in a 304 only the one a 200 would have
        # had (the app gave none here).  A server that adds "content-length: 0" is wrong.
        assert r.header("content-length") is None, r
        c.send(http_request("GET", "/text"))
        assert c.read_response().body == b"hello world\n"


def test_expect_100_continue_when_app_reads(srv):
    body = b"x" * 1000
    with RawConn.to(srv) as c:
        c.send(
            http_request(
                "POST",
                "/expect?read=1",
                {"Expect": "100-continue", "Content-Length": str(len(body))},
            )
        )
        status, _, _, _, _ = c.read_head()
        assert status == 100
        c.send(body)
        r = c.read_response()
        assert r.status == 200 and r.body == b"read:" + body


def test_expect_100_continue_not_sent_when_app_does_not_read(srv):
    with RawConn.to(srv) as c:
        c.send(
            http_request(
                "POST", "/expect?read=0", {"Expect": "100-continue", "Content-Length": "1000"}
            )
        )
        r = c.read_response(skip_interim=False)
        assert r.status == 200 and r.body == b"no-read"


def test_keep_alive_idle_timeout(server):
    srv = server(APP, "--timeout-keep-alive", "1")
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/text"))
        assert c.read_response().status == 200
        t0 = time.monotonic()
        assert c.wait_closed(4), "idle keep-alive connection was not closed"
        assert time.monotonic() - t0 >= 0.5


def test_keep_alive_timer_not_running_during_slow_request(server):
    # the idle timeout applies between requests, not while the app works on one
    srv = server(APP, "--timeout-keep-alive", "1")
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/sleep?s=1.5"))
        assert c.read_response().body == b"slept"


def disconnect_event(srv, key):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", f"/disconnects?id={key}"))
        return json.loads(c.read_response().body)["event"]


def test_client_disconnect_mid_body(srv):
    key = f"body-{time.monotonic_ns()}"
    c = RawConn.to(srv)
    c.send(
        http_request("POST", f"/disconnect-body?id={key}", {"Content-Length": "100000"})
        + b"a" * 1000
    )
    wait_for(lambda: disconnect_event(srv, key) is not None, what="app to start reading")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    ev = wait_for(
        lambda: (e := disconnect_event(srv, key)) and e.startswith("disconnect") and e,
        what="http.disconnect in the app",
    )
    assert ev.startswith("disconnect after")


def test_client_disconnect_mid_stream(srv):
    key = f"stream-{time.monotonic_ns()}"
    c = RawConn.to(srv)
    c.send(http_request("GET", f"/disconnect-stream?id={key}"))
    status, _, _, _, _ = c.read_head()
    assert status == 200
    c.read_exact(100)
    c.close()
    ev = wait_for(
        lambda: (e := disconnect_event(srv, key)) not in (None, "streaming") and e,
        what="the app noticing the disconnect",
    )
    assert ev in ("disconnect via receive", "send raised OSError") or ev.startswith("send raised")


def test_many_connections_open_at_once(srv):
    conns = [RawConn.to(srv) for _ in range(100)]
    try:
        for c in conns:
            c.send(http_request("GET", "/text"))
        for c in conns:
            assert c.read_response().status == 200
    finally:
        for c in conns:
            c.close()


def test_large_echo_raw(srv):
    body = os.urandom(10 << 20)
    with RawConn.to(srv, timeout=30) as c:
        c.send(http_request("POST", "/echo", body=body))
        r = c.read_response()
        assert r.status == 200
        assert len(r.body) == len(body)
        assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(body).hexdigest()
        assert r.header("x-body-sha256") == hashlib.sha256(body).hexdigest()


IMF_FIXDATE = (
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$"
)


def test_date_and_server_headers_by_default(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/text"))
        r = c.read_response()
    assert len(r.header_all("date")) == 1
    assert re.match(IMF_FIXDATE, r.header("date")), r.header("date")
    assert len(r.header_all("server")) == 1


def test_no_server_and_no_date_header_flags(server):
    srv = server(APP, "--no-server-header", "--no-date-header")
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/text"))
        r = c.read_response()
    assert r.status == 200
    assert r.header("server") is None and r.header("date") is None


def test_unix_socket(fresh_server, tmp_path):
    path = tmp_path / "shield.sock"
    srv = fresh_server(APP, uds=str(path))
    with RawConn.to(srv) as c:
        for body in (b"over", b"unix"):
            c.send(http_request("POST", "/echo", body=body))
            assert c.read_response().body == body
        c.send(http_request("GET", "/scope"))
        scope = json.loads(c.read_response().body)["scope"]
    assert scope["type"] == "http" and scope["scheme"] == "http"
    # ASGI: server is [path, None] for a UNIX socket; the peer has no address: client None
    # (both as uvicorn does)
    assert scope["server"] == [str(path), None], scope
    assert scope["client"] is None, scope
