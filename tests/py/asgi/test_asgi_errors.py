"""What the server does when the app misbehaves: exceptions before/after the response
started, no response at all, header injection, a body longer than its Content-Length."""

import pytest

from conftest import IncompleteResponse, RawConn, http_request, wait_for

APP = "app_raw:app"


@pytest.fixture
def srv(server):  # per test: cheap (cached per module), restarts a crashed server
    return server(APP)


def still_serving(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/text"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello world\n"


def test_exception_before_start_gives_500(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/fail-before"))
        r = c.read_response()
        assert r.status == 500
        assert int(r.header("content-length")) == len(r.body)
    wait_for(lambda: "raw-fail-before-marker" in srv.stderr_text(), what="traceback in stderr")
    assert "Traceback" in srv.stderr_text()
    still_serving(srv)


def test_return_without_response_gives_500(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/no-response"))
        assert c.read_response().status == 500
    still_serving(srv)


def test_exception_after_start_closes_connection(srv):
    # chunked response: the terminating 0-chunk must never be sent, and the connection closes
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/fail-after"))
        status, _, _, _headers, _ = c.read_head()
        assert status == 200
        rest = c.read_to_eof()
        assert b"0\r\n\r\n" not in rest, rest
        assert rest in (b"", b"7\r\npartial\r\n"), rest
    wait_for(lambda: "raw-fail-after-marker" in srv.stderr_text(), what="traceback in stderr")
    still_serving(srv)


def test_exception_after_start_with_content_length_closes(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/fail-after-cl"))
        status, _, _, _headers, _ = c.read_head()
        assert status == 200
        rest = c.read_to_eof()
        assert rest in (b"", b"partial"), rest  # short of the declared 100: client sees it


def test_header_injection_is_refused(srv):
    # The app puts CR LF in a header value.  The server must not emit a split response:
    # either a 500 instead, or a closed connection -- never an x-injected header.
    for target in ("/inject", "/inject-name"):
        with RawConn.to(srv) as c:
            c.send(http_request("GET", target))
            try:
                r = c.read_response()
                data = r.raw_head + r.body
                assert r.status == 500, r
            except IncompleteResponse as e:
                data = e.partial
            data += c.buf
            assert b"x-injected" not in data.lower(), data
    still_serving(srv)


def test_body_longer_than_content_length_is_not_sent(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/overlong"))
        status, _, _, _headers, _ = c.read_head()
        assert status == 200
        # the server must not put more than the declared 5 bytes on the wire; it closes
        rest = c.read_to_eof()
        assert len(rest) <= 5 and b"0123456789"[: len(rest)] == rest, rest
    still_serving(srv)


def test_overlong_on_keepalive_does_not_leak_into_next_response(srv):
    # a pipelined second request must not see the excess bytes as the start of its response
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/overlong") + http_request("GET", "/text"))
        c.read_head()
        rest = c.read_to_eof()
        assert b"56789" not in rest, rest
