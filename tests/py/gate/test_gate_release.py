"""Every request the attestation gate holds is released on every path (server/gate.c): an
establishment body (POST /.well-known/shield/attest) that the client aborts, or that
--timeout-body cuts, must leave the in-flight count, free its buffered body, and never make
the worker refuse other clients.  Before the fix, five aborted tiny uploads under
--limit-concurrency 5 made the worker answer 503 to everything, permanently."""

from __future__ import annotations

import socket
import time

import pytest

from conftest import SERVER_KIND, RawConn, free_port, http_request, scaled, wait_for
from support.attest_env import DATA_HOME, SECRET
from support.metrics import scrape

pytestmark = pytest.mark.skipif(SERVER_KIND != "shield", reason="the native gate: shield only")

APP = "app_attest:app"
GATE = (
    "--attest-types",
    "simulated",
    "--trust-simulated",
    "--state-secret-file",
    SECRET,
    "--attest-exclude",
    "/health",
    "--limit-concurrency",
    "5",
)
ENV = {
    "SHIELD_TEST_ATTEST_SECRET": SECRET,
    "XDG_DATA_HOME": DATA_HOME,
    "SHIELD_TEST_ATTEST_OPTIONAL": "1",
}


def _aborted_upload(srv, sent: int = 1000, declared: int = 100_000) -> None:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(
        b"POST /.well-known/shield/attest HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % declared + b"{" + b" " * (sent - 1)
    )
    time.sleep(0.05)  # the gate has read (and buffered) what was sent
    s.close()


def _all_seen_and_closed(mport: int, n: int):
    """The server accepted n connections and has closed them all (so it parsed every head and
    saw every end; on a busy machine that can lag behind the client).  Returns the metrics."""
    return wait_for(
        lambda: (
            (m := scrape(mport))["shield_http_connections_total"] >= n
            and m["shield_http_connections"] == 0
            and m
        ),
        timeout=scaled(15),
        what=f"{n} connections accepted and closed",
    )


def _health_ok(srv) -> bool:
    with RawConn.to(srv, timeout=10) as c:
        c.send(http_request("GET", "/health"))
        r = c.read_response()
        assert r.status == 200, (r.status, r.body[:300])
        return True


def test_aborted_uploads_are_released(fresh_server):
    mport = free_port()
    srv = fresh_server(APP, *GATE, "--metrics-port", str(mport), env=ENV)
    for _ in range(10):  # twice the concurrency limit
        _aborted_upload(srv)
    m = _all_seen_and_closed(mport, 10)
    assert m["shield_http_requests_in_flight"] == 0, "aborted uploads are still in flight"
    for _ in range(10):
        assert _health_ok(srv), "the worker refuses other clients after aborted uploads"
    # a whole establishment still works afterwards (the gate's state is intact)
    with RawConn.to(srv, timeout=10) as c:
        c.send(http_request("GET", "/.well-known/shield/nonce"))
        assert c.read_response().status == 200


def test_stalled_upload_cut_by_timeout_body_is_released(fresh_server):
    mport = free_port()
    srv = fresh_server(APP, *GATE, "--timeout-body", "0.5", "--metrics-port", str(mport), env=ENV)
    conns = []
    for _ in range(6):  # more than --limit-concurrency, each stalled mid-body
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(
            b"POST /.well-known/shield/attest HTTP/1.1\r\nHost: x\r\n"
            b'Content-Length: 5000\r\n\r\n{"type": '
        )
        conns.append(s)
    try:
        m = _all_seen_and_closed(mport, 6)  # the server cut each stalled body and closed
        assert m["shield_http_requests_in_flight"] == 0, "cut uploads are still in flight"
        for _ in range(5):
            assert _health_ok(srv)
    finally:
        for s in conns:
            s.close()
