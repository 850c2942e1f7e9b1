"""What the server adds to or makes of a response (issue 14): `--header` replaces the default
Server/Date headers instead of adding a second one, and an app that fails after
http.response.start but before any body byte still gets its client a 500 (nothing had reached
the wire: the head goes out with the first body bytes)."""

import pytest

from conftest import RawConn, http_request, wait_for

APP = "app_raw:app"


def get(srv, target, method="GET"):
    with RawConn.to(srv) as c:
        c.send(http_request(method, target))
        return c.read_response(method)


# ---- 7. --header Server / Date ---------------------------------------------------------------


def test_header_flag_replaces_the_default_server_header(server):
    srv = server(APP, "--header", "Server: edge-1", "--header", "X-Extra: 1")
    r = get(srv, "/text")
    assert r.header_all("server") == ["edge-1"], r.headers
    assert r.header_all("x-extra") == ["1"]
    assert len(r.header_all("date")) == 1


# uvicorn sends its own date and the flag's.
@pytest.mark.shield_only
def test_header_flag_replaces_the_default_date_header(server):
    srv = server(APP, "--header", "Date: Thu, 01 Jan 2026 00:00:00 GMT")
    r = get(srv, "/text")
    assert r.header_all("date") == ["Thu, 01 Jan 2026 00:00:00 GMT"], r.headers
    assert len(r.header_all("server")) == 1


# uvicorn's own error responses do not carry --header values.
@pytest.mark.shield_only
def test_header_flag_on_the_servers_own_errors(server):
    srv = server(APP, "--header", "server:edge-2")
    with RawConn.to(srv) as c:
        c.send(b"GARBAGE\r\n\r\n")
        r = c.read_response()
    assert r.status == 400 and r.header_all("server") == ["edge-2"], r.headers


# ---- 8. an app that fails after http.response.start ----------------------------------------


# uvicorn writes the head at http.response.start, so it can only close the connection here.


@pytest.fixture
def srv(server):
    return server(APP)


@pytest.mark.shield_only
def test_exception_after_start_before_body_gives_500(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/fail-after-start"))
        r = c.read_response()
        assert r.status == 500
        assert r.header("x-started") is None  # the app's head was never sent
        # nothing was sent before: the connection carries the next request
        c.send(http_request("GET", "/text"))
        assert c.read_response().body == b"hello world\n"
    wait_for(lambda: "raw-fail-after-start-marker" in srv.stderr_text(), what="traceback in stderr")


@pytest.mark.shield_only
def test_return_after_start_before_body_gives_500(srv):
    with RawConn.to(srv) as c:
        c.send(http_request("GET", "/return-after-start"))
        assert c.read_response().status == 500


@pytest.mark.shield_only
def test_head_request_failing_after_start_gives_500(srv):
    r = get(srv, "/fail-after-start", method="HEAD")
    assert r.status == 500
