"""Request parsing strictness and limits: malformed requests get 400 and a closed
connection (request smuggling defences, RFC 9112 §6.3), oversized heads 431, oversized
bodies 413, slow heads time out."""

import time

import pytest

from conftest import IncompleteResponse, RawConn, http_request, scaled

APP = "app_raw:app"


@pytest.fixture
def srv(server):  # per test: cheap (cached per module), restarts a crashed server
    return server(APP)


def expect_400_and_close(srv, raw: bytes, allowed=(400,)):
    with RawConn.to(srv) as c:
        c.send(raw)
        try:
            r = c.read_response()
        except IncompleteResponse as e:
            pytest.fail(f"no response, connection closed (partial {e.partial!r})")
        assert r.status in allowed, r
        assert c.wait_closed(5), "connection must close after a malformed request"
        return r


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n folded: continuation\r\n\r\n",
    ],
    ids=[
        "garbage",
        "no-target",
        "extra-token",
        "bad-version",
        "nul-in-target",
        "space-in-name",
        "no-colon",
        "obs-fold",
    ],
)
def test_malformed_request_400_and_close(srv, raw):
    expect_400_and_close(srv, raw, allowed=(400, 505))


def test_content_length_and_transfer_encoding_400(srv):
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    expect_400_and_close(srv, raw)


def test_duplicate_differing_content_length_400(srv):
    raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"
    expect_400_and_close(srv, raw)


@pytest.mark.parametrize("cl", [b"-1", b"abc", b"1 2", b"+5", b"0x10"])
def test_invalid_content_length_400(srv, cl):
    raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + cl + b"\r\n\r\nabcde"
    expect_400_and_close(srv, raw)


def test_unknown_transfer_encoding_rejected(srv):
    raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc"
    expect_400_and_close(srv, raw, allowed=(400, 501))


def test_bad_chunk_size_400(srv):
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n"
    )
    expect_400_and_close(srv, raw)


def test_chunk_size_overflow_400(srv):
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"
    )
    expect_400_and_close(srv, raw)


def test_smuggled_request_after_bad_request_is_not_served(srv):
    # whatever follows a rejected request on the same connection must never be answered
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\n"
        + http_request("GET", "/text")
    )
    with RawConn.to(srv) as c:
        c.send(raw)
        rest = c.read_to_eof()
    assert rest.startswith(b"HTTP/1.1 400"), rest
    assert rest.count(b"HTTP/1.1 ") == 1, rest


def test_server_still_healthy_after_bad_requests(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/text"))
        assert c.read_response().status == 200


# uvicorn has no header-size limit with httptools (h11's is a different knob).
@pytest.mark.shield_only
def test_oversized_header_block_431(server):
    srv = server(APP, "--max-header-size", "4096")
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/text", {"X-Big": "a" * 3000}))
        assert c.read_response().status == 200
    big = http_request("GET", "/text", {"X-Big": "a" * 5000})
    expect_400_and_close(srv, big, allowed=(431,))


@pytest.mark.shield_only
def test_default_header_limit_is_16k(server):
    srv = server(APP)
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/text", {"X-Big": "a" * 12000}))
        assert c.read_response().status == 200
    expect_400_and_close(srv, http_request("GET", "/text", {"X-Big": "a" * 20000}), allowed=(431,))


@pytest.mark.shield_only
def test_many_small_headers_count_toward_limit(server):
    srv = server(APP, "--max-header-size", "4096")
    hs = [(f"X-H{i}", "v" * 20) for i in range(300)]
    expect_400_and_close(srv, http_request("GET", "/text", hs), allowed=(431,))


# uvicorn has no request-body limit.
@pytest.mark.shield_only
def test_max_body_size_content_length_413(server):
    srv = server(APP, "--max-body-size", "1000")
    with RawConn.to(srv) as c:
        c.send(http_request("POST", "/echo", body=b"a" * 1000))
        assert c.read_response().status == 200
    with RawConn.to(srv) as c:
        # declared too large: answered before the body is even sent
        c.send(http_request("POST", "/echo", {"Content-Length": "1001"}))
        r = c.read_response()
        assert r.status == 413
        assert c.wait_closed(5)


@pytest.mark.shield_only
def test_max_body_size_chunked_413(server):
    srv = server(APP, "--max-body-size", "1000")
    body = b"".join(b"200\r\n" + b"b" * 512 + b"\r\n" for _ in range(4)) + b"0\r\n\r\n"
    with RawConn.to(srv) as c:
        c.send(http_request("POST", "/echo", {"Transfer-Encoding": "chunked"}))
        try:
            c.send(body)
        except OSError:
            pass  # the server may already have answered and closed
        try:
            r = c.read_response()
        except IncompleteResponse as e:
            pytest.fail(f"expected 413, connection closed: {e.partial!r}")
        assert r.status == 413
        assert c.wait_closed(5)


@pytest.mark.shield_only
def test_max_body_size_413_with_expect_continue_sends_no_100(server):
    srv = server(APP, "--max-body-size", "1000")
    with RawConn.to(srv) as c:
        c.send(http_request("POST", "/echo", {"Content-Length": "5000", "Expect": "100-continue"}))
        r = c.read_response(skip_interim=False)
        assert r.status == 413


# uvicorn has no header timeout (--timeout-header).
@pytest.mark.shield_only
def test_slowloris_header_timeout(server):
    srv = server(APP, "--timeout-header", "1")
    with RawConn.to(srv) as c:
        c.send(b"GET /text HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        # dribbling a byte every 0.25 s must not extend the deadline (it is for the whole
        # head, not per read)
        limit = scaled(5)
        t0 = time.monotonic()
        closed = False
        while not closed and time.monotonic() - t0 < limit:
            try:
                c.send(b"a")
            except OSError:
                closed = True
                break
            closed = c.wait_closed(0.25)
        assert closed, f"server kept a dribbling header open for more than {limit} s"
        assert b"HTTP/1.1 200" not in c.buf
        # a 408 before closing is fine; no response at all is fine too
        assert c.buf == b"" or c.buf.startswith(b"HTTP/1.1 408"), c.buf


@pytest.mark.shield_only
def test_header_timeout_does_not_hit_idle_keep_alive_or_slow_app(server):
    srv = server(APP, "--timeout-header", "1", "--timeout-keep-alive", "5")
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/sleep?s=1.5"))
        assert c.read_response().body == b"slept"
        time.sleep(1.3)
        c.send(http_request("GET", "/text"))
        assert c.read_response().status == 200
