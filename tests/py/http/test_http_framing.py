"""Request framing and request-target hardening over raw sockets (issue 14): every
Transfer-Encoding that is not exactly one final `chunked` is 400 + close (RFC 9112 §6.3),
chunk extensions are bounded (the class of Node's CVE-2024-22019), absolute-form targets are
routed by their path with the authority as Host (RFC 9112 §3.2.2), fragments and CONNECT never
reach the app, and Host must be a valid authority (RFC 9112 §3.2, RFC 3986 §3.2.2)."""

import base64
import json
import threading

import pytest

from conftest import IncompleteResponse, RawConn, http_request

APP = "app_raw:app"


@pytest.fixture
def srv(server):
    return server(APP)


def refused(srv, raw: bytes, allowed=(400,)):
    """The server answers `raw` with one of `allowed`, closes, and answers nothing after it."""
    with RawConn.to(srv) as c:
        c.send(raw)
        try:
            r = c.read_response()
        except IncompleteResponse as e:
            pytest.fail(f"no response, connection closed (partial {e.partial!r})")
        assert r.status in allowed, r
        assert c.wait_closed(5), "the connection must close after a refused request"
        assert b"HTTP/1.1" not in c.buf, f"a second response followed: {c.buf!r}"
        return r


def served(srv, raw: bytes, method="GET"):
    with RawConn.to(srv) as c:
        c.send(raw)
        return c.read_response(method)


def scope_of(srv, raw: bytes):
    r = served(srv, raw)
    assert r.status == 200, r
    return json.loads(r.body)["scope"]


def b64(v) -> bytes:
    return base64.b64decode(v["bytes"])


def header_values(scope, name: bytes) -> list:
    return [b64(v) for k, v in scope["headers"] if b64(k) == name]


# ---- 1. Transfer-Encoding -------------------------------------------------------------------

NEXT = http_request("GET", "/text")  # what a smuggler hides in the "body"

BAD_TE = {
    # the case: an empty field, then Content-Length (the reverse order was refused)
    "empty-then-cl": [("Transfer-Encoding", ""), ("Content-Length", "0")],
    "cl-then-empty": [("Content-Length", "0"), ("Transfer-Encoding", "")],
    "empty-alone": [("Transfer-Encoding", "")],
    "whitespace-only": [("Transfer-Encoding", "   ")],
    "commas-only": [("Transfer-Encoding", " , ")],
    "empty-line-and-chunked": [("Transfer-Encoding", ""), ("Transfer-Encoding", "chunked")],
    "chunked-and-empty-line": [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "")],
    "chunked-gzip": [("Transfer-Encoding", "chunked, gzip")],
    "chunked-twice": [("Transfer-Encoding", "chunked, chunked")],
    "chunked-twice-lines": [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
    "identity": [("Transfer-Encoding", "identity")],
    "xchunked": [("Transfer-Encoding", "xchunked")],
    "chunkedx": [("Transfer-Encoding", "chunkedx")],
    "chunked-param": [("Transfer-Encoding", "chunked;q=1")],
    "te-then-cl": [("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
    "cl-then-te": [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
}


@pytest.mark.parametrize("headers", BAD_TE.values(), ids=BAD_TE.keys())
def test_transfer_encoding_not_exactly_chunked_is_400_and_close(srv, headers):
    raw = http_request("POST", "/echo", headers) + b"0\r\n\r\n" + NEXT
    refused(srv, raw)


# uvicorn accepts a final chunked after another coding, and hands the app the still-encoded
# body; shield implements no other transfer coding, so it cannot frame or decode one.
@pytest.mark.shield_only
@pytest.mark.parametrize(
    "headers",
    [
        [("Transfer-Encoding", "gzip, chunked")],
        [("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")],
    ],
    ids=["gzip-chunked", "gzip-line-chunked-line"],
)
def test_other_codings_before_chunked_are_400_and_close(srv, headers):
    raw = http_request("POST", "/echo", headers) + b"0\r\n\r\n" + NEXT
    refused(srv, raw)


@pytest.mark.parametrize("value", ["chunked", "Chunked", "CHUNKED", "chunked ", " chunked"])
def test_chunked_is_case_insensitive_and_ows_is_not_part_of_the_value(srv, value):
    # RFC 9112 §7: coding names are case-insensitive; RFC 9110 §5.5: surrounding whitespace
    # is not part of a field value.
    raw = http_request("POST", "/echo", [("Transfer-Encoding", value)]) + b"3\r\nabc\r\n0\r\n\r\n"
    r = served(srv, raw)
    assert r.status == 200 and r.body == b"abc"


# uvicorn keeps an HTTP/1.0 keep-alive connection with Transfer-Encoding open.
@pytest.mark.shield_only
def test_http10_with_transfer_encoding_is_answered_then_closed(srv):
    # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing: process
    # it, then close.
    raw = http_request(
        "POST",
        "/echo",
        [("Transfer-Encoding", "chunked"), ("Connection", "keep-alive")],
        version="HTTP/1.0",
    )
    with RawConn.to(srv) as c:
        c.send(raw + b"3\r\nabc\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"abc"
        assert (r.header("connection") or "").lower() == "close", r.headers
        assert c.wait_closed(2)  # well before the 5 s keep-alive timeout


# ---- 2. chunk extensions and trailers ------------------------------------------------------


def send_quietly(c: RawConn, data: bytes) -> None:
    """Send, tolerating a server that already answered and stopped reading."""
    try:
        c.send(data)
    except OSError:
        pass


def post_chunked_and_read(srv, body_parts):
    with RawConn.to(srv, timeout=20) as c:
        c.send(http_request("POST", "/echo", {"Transfer-Encoding": "chunked"}))
        t = threading.Thread(target=lambda: [send_quietly(c, p) for p in body_parts])
        t.start()
        try:
            r = c.read_response()
        except IncompleteResponse as e:
            pytest.fail(f"no response, connection closed (partial {e.partial[:200]!r})")
        finally:
            t.join(30)
        closed = c.wait_closed(10)
        return r, closed


@pytest.mark.shield_only
def test_huge_chunk_extension_is_refused(server):
    # 8 MiB of extension in a 1-byte chunk under --max-body-size 1000 was read and accepted
    srv = server(APP, "--max-body-size", "1000")
    ext = b"1;x=" + b"a" * (8 << 20) + b"\r\nz\r\n0\r\n\r\n"
    r, closed = post_chunked_and_read(srv, [ext])
    assert r.status == 400, r
    assert closed


@pytest.mark.shield_only
def test_many_chunk_extensions_are_bounded_per_request(server):
    # each chunk's extension is small, but together they are far more than the body
    srv = server(APP, "--max-body-size", "1000")
    parts = [b"1;" + b"e" * 200 + b"=v\r\nz\r\n" for _ in range(400)] + [b"0\r\n\r\n"]
    r, closed = post_chunked_and_read(srv, [b"".join(parts)])
    assert r.status == 400, r
    assert closed


def test_small_chunk_extensions_are_accepted(srv):
    raw = http_request("POST", "/echo", {"Transfer-Encoding": "chunked"}) + (
        b'3;name=value;flag;q="quoted value"\r\nabc\r\n2;n=1\r\nde\r\n0;last=1\r\n\r\n'
    )
    r = served(srv, raw)
    assert r.status == 200 and r.body == b"abcde"


@pytest.mark.shield_only
def test_trailers_are_bounded(server):
    srv = server(APP, "--max-header-size", "4096")
    trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 100) for i in range(100))
    r, closed = post_chunked_and_read(srv, [b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n"])
    assert r.status in (400, 431), r
    assert closed


# ---- 5. request targets --------------------------------------------------------------------


# uvicorn routes absolute-form by its path too, but keeps the Host header as sent.
@pytest.mark.shield_only
def test_absolute_form_is_routed_by_its_path_with_the_authority_as_host(srv):
    s = scope_of(
        srv,
        b"GET http://example.com:8080/scope/items/1?a=1&b=%20 HTTP/1.1\r\nHost: other\r\n\r\n",
    )
    assert s["path"] == "/scope/items/1"
    assert b64(s["raw_path"]) == b"/scope/items/1"
    assert b64(s["query_string"]) == b"a=1&b=%20"
    # RFC 9112 §3.2.2: the Host header is replaced by the target's authority
    assert header_values(s, b"host") == [b"example.com:8080"]


@pytest.mark.parametrize("scheme", ["https", "HTTP"])
def test_absolute_form_scheme_variants(srv, scheme):
    raw = f"GET {scheme}://api.example/scope HTTP/1.1\r\nHost: api.example\r\n\r\n".encode()
    s = scope_of(srv, raw)
    assert s["path"] == "/scope" and b64(s["query_string"]) == b""
    assert header_values(s, b"host") == [b"api.example"]


# uvicorn refuses an absolute-form target without a path (httptools).
@pytest.mark.shield_only
def test_absolute_form_without_path_is_slash(srv):
    r = served(srv, b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert r.status == 404 and r.body == b"not found"  # the app's answer for "/"


# uvicorn (httptools) passes fragments, userinfo and other schemes to the app.
_UVICORN_TOO = {"empty-host", "bad-authority", "connect"}
BAD_TARGETS = {
    "userinfo": b"GET http://user@example.com/scope HTTP/1.1\r\nHost: x\r\n\r\n",
    "empty-host": b"GET http:///scope HTTP/1.1\r\nHost: x\r\n\r\n",
    "other-scheme": b"GET ftp://example.com/scope HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-authority": b"GET http://exa mple.com/scope HTTP/1.1\r\nHost: x\r\n\r\n",
    "fragment": b"GET /scope/a#frag HTTP/1.1\r\nHost: x\r\n\r\n",
    "fragment-after-query": b"GET /scope?a=1#frag HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-fragment": b"GET http://example.com/scope#f HTTP/1.1\r\nHost: x\r\n\r\n",
    "connect": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(v, id=k, marks=() if k in _UVICORN_TOO else pytest.mark.shield_only)
        for k, v in BAD_TARGETS.items()
    ],
)
def test_bad_request_targets_never_reach_the_app(srv, raw):
    # the app answers 404 for anything it does not route: a 400 is the server's
    refused(srv, raw, allowed=(400,))


def test_options_asterisk_reaches_the_app(srv):
    r = served(srv, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.status == 404 and r.body == b"not found"  # as uvicorn: the app decides


# ---- 9. Host -------------------------------------------------------------------------------

BAD_HOSTS = [
    "x/y@z",
    "user@example.com",
    "a b",
    "example.com:80x",
    "[::1",
    "[::g]:80",
    "a\\b",
    "exa%2",
    "[::1]x",
]


# uvicorn does not check Host at all (nor its presence, nor repeats).
@pytest.mark.shield_only
@pytest.mark.parametrize("host", BAD_HOSTS)
def test_invalid_host_is_400(srv, host):
    refused(srv, f"GET /text HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "example.com:8080",
        "127.0.0.1:1",
        "[::1]:8000",
        "[v1.fe:x]",
        "ex%41mple",
        "a-b_c~d.e!$&'()*+,;=",
        "x:",
        "",
    ],
)
def test_valid_hosts_are_served(srv, host):
    r = served(srv, f"GET /text HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert r.status == 200, r


@pytest.mark.shield_only
def test_missing_or_repeated_host_on_http11_is_400(srv):
    refused(srv, b"GET /text HTTP/1.1\r\n\r\n")
    refused(srv, b"GET /text HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n")


def test_http10_without_host_is_served(srv):
    r = served(srv, b"GET /text HTTP/1.0\r\n\r\n")
    assert r.status == 200
