"""What the server adds to or makes of a response (issue 14): `--header` replaces the default
Server/Date headers instead of adding a second one."""

import pytest
from conftest import RawConn, http_request

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
