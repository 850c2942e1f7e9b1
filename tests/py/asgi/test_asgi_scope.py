"""The HTTP scope the server hands a raw ASGI app (ASGI spec "HTTP Connection Scope")."""

import base64
import json

import pytest

from conftest import RawConn, http_request

APP = "app_raw:app"


def b(v) -> bytes:
    assert isinstance(v, dict) and "bytes" in v, f"expected bytes, got {v!r}"
    return base64.b64decode(v["bytes"])


def get_scope(srv, target="/scope", method="GET", headers=None, body=b"", version="HTTP/1.1"):
    with RawConn.to(srv) as c:
        c.send(http_request(method, target, headers, body, version=version))
        r = c.read_response(method)
        assert r.status == 200, r
        data = json.loads(r.body)
        return data["scope"], data["types"], c.sock.getsockname()


@pytest.fixture
def srv(server):  # per test: cheap (cached per module), restarts a crashed server
    return server(APP)


def test_basic_fields(srv):
    scope, types, (_chost, _cport) = get_scope(srv)
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["asgi"].get("spec_version") in ("2.3", "2.4")
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope"
    assert b(scope["raw_path"]) == b"/scope"
    assert b(scope["query_string"]) == b""
    assert scope["root_path"] == ""
    assert types["type"] == "str" and types["method"] == "str" and types["path"] == "str"
    assert types["raw_path"] == "bytes" and types["query_string"] == "bytes"


def test_client_and_server_addresses(srv):
    scope, types, (chost, cport) = get_scope(srv)
    assert list(scope["client"]) == [chost, cport]
    assert list(scope["server"]) == ["127.0.0.1", srv.port]
    assert types["client_items"] == ["str", "int"]
    assert types["server_items"] == ["str", "int"]


def test_percent_decoding_and_raw_path(srv):
    target = "/scope/caf%C3%A9/a%20b/x%2Fy?q=%20x&z=%C3%A9&flag"
    scope, _, _ = get_scope(srv, target)
    assert scope["path"] == "/scope/café/a b/x/y"
    assert b(scope["raw_path"]) == b"/scope/caf%C3%A9/a%20b/x%2Fy"
    assert b(scope["query_string"]) == b"q=%20x&z=%C3%A9&flag"


def test_query_string_only_after_first_question_mark(srv):
    scope, _, _ = get_scope(srv, "/scope?a=1?b=2&c")
    assert scope["path"] == "/scope"
    assert b(scope["query_string"]) == b"a=1?b=2&c"


def test_empty_query_after_question_mark(srv):
    scope, _, _ = get_scope(srv, "/scope?")
    assert scope["path"] == "/scope"
    assert b(scope["query_string"]) == b""


def test_headers_lowercased_byte_pairs_in_order(srv):
    hs = [
        ("Host", "example.test:8080"),
        ("X-Custom-Header", "Some Value"),
        ("X-Multi", "one"),
        ("x-multi", "two"),
        ("ACCEPT", "*/*"),
    ]
    scope, types, _ = get_scope(srv, headers=hs)
    got = [(b(n), b(v)) for n, v in scope["headers"]]
    assert types["headers"] in ("list", "tuple")
    assert types["headers_items"] in (["list:bytes:bytes"], ["tuple:bytes:bytes"])
    want = [
        (b"host", b"example.test:8080"),
        (b"x-custom-header", b"Some Value"),
        (b"x-multi", b"one"),
        (b"x-multi", b"two"),
        (b"accept", b"*/*"),
    ]
    assert got == want


# RFC 9110 §5.5: a field value excludes leading and trailing whitespace.  uvicorn+httptools
# passes trailing OWS through; shield trims (server.h: "surrounding whitespace trimmed").
@pytest.mark.shield_only
def test_header_value_whitespace_trimmed(srv):
    raw = b"GET /scope HTTP/1.1\r\nHost: h\r\nX-Pad:    padded value   \r\n\r\n"
    with RawConn.to(srv) as c:
        c.send(raw)
        r = c.read_response()
    scope = json.loads(r.body)["scope"]
    vals = [b(v) for n, v in scope["headers"] if b(n) == b"x-pad"]
    assert vals == [b"padded value"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_methods(srv, method):
    scope, _, _ = get_scope(srv, method=method, body=b"abc")
    assert scope["method"] == method
    assert scope["body_len"] == 3


def test_http10_version(srv):
    scope, _, _ = get_scope(srv, version="HTTP/1.0")
    assert scope["http_version"] == "1.0"


def test_state_is_a_copy_of_lifespan_state(srv):
    scope, types, _ = get_scope(srv)
    assert types.get("state") == "dict"
    assert scope["state_started"] is True
    assert "started" in scope["state_keys"]


def test_startup_completed_before_first_request(srv):
    scope, _, _ = get_scope(srv)
    assert scope["startup_done_before_request"] is True


def test_root_path(server):
    srv = server(APP, "--root-path", "/api")
    # uvicorn semantics (shield copies them): --root-path is for a proxy that strips the
    # prefix, so the client sends /scope/x and the server *prepends* root_path to path and
    # raw_path (ASGI: path includes root_path); routers strip it again.
    scope, _, _ = get_scope(srv, "/scope/x?y=1")
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/scope/x"
    assert b(scope["raw_path"]) == b"/api/scope/x"
    assert b(scope["query_string"]) == b"y=1"
