"""uvicorn flag parity and production flags, each against the real binary: proxy headers,
--limit-concurrency, --timeout-body, --header, --backlog, listeners (IPv6, --uds, --fd,
--vsock-port), the JSON access log with request ids, --metrics-port, --reload.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import (
    APPS_DIR,
    REPO,
    RawConn,
    free_port,
    http_request,
    scaled,
    shield_bin,
    wait_for,
)
from support.metrics import scrape

pytestmark = pytest.mark.shield_only

APP = "app_workers:app"


def request(srv, target, headers=None, method="GET", body=b""):
    with RawConn.to(srv, timeout=10) as c:
        h = {"Connection": "close"}
        h.update(headers or {})
        c.send(http_request(method, target, headers=h, body=body))
        return c.read_response(method)


def scope_of(srv, headers=None):
    r = request(srv, "/scope", headers)
    assert r.status == 200, r
    return json.loads(r.body)


# ---- proxy headers ------------------------------------------------------------------------


def test_proxy_headers_from_trusted_peer(server):
    srv = server(APP)  # default --forwarded-allow-ips 127.0.0.1: the test client is trusted
    s = scope_of(srv, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    assert s["client"] == ["203.0.113.7", 0] and s["scheme"] == "https"
    s = scope_of(srv)
    assert s["client"][0] == "127.0.0.1" and s["scheme"] == "http"


def test_proxy_headers_rightmost_untrusted_hop(server):
    srv = server(APP, "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8")
    # a client-supplied first entry cannot win: the proxy chain appended the real one
    s = scope_of(srv, {"X-Forwarded-For": "6.6.6.6, 198.51.100.4, 10.1.2.3"})
    assert s["client"] == ["198.51.100.4", 0]
    s = scope_of(srv, {"X-Forwarded-For": "10.9.9.9, 10.1.2.3"})  # all trusted: the origin
    assert s["client"] == ["10.9.9.9", 0]


def test_proxy_headers_star_trusts_every_hop(server):
    srv = server(APP, "--forwarded-allow-ips", "*")
    s = scope_of(srv, {"X-Forwarded-For": "192.0.2.1, 198.51.100.4"})
    assert s["client"] == ["192.0.2.1", 0]


def test_proxy_headers_from_untrusted_peer_ignored(server):
    srv = server(APP, "--forwarded-allow-ips", "10.0.0.1")
    s = scope_of(srv, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    assert s["client"][0] == "127.0.0.1" and s["scheme"] == "http"


def test_proxy_headers_env_default(server):
    srv = server(APP, env={"FORWARDED_ALLOW_IPS": "10.0.0.1"})
    s = scope_of(srv, {"X-Forwarded-For": "203.0.113.7"})
    assert s["client"][0] == "127.0.0.1"


def test_no_proxy_headers(server):
    srv = server(APP, "--no-proxy-headers")
    s = scope_of(srv, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    assert s["client"][0] == "127.0.0.1" and s["scheme"] == "http"


def test_rfc7239_forwarded(server):
    srv = server(APP)
    s = scope_of(srv, {"Forwarded": 'for="[2001:db8::1]:4711";proto=https;by=10.0.0.1'})
    assert s["client"] == ["2001:db8::1", 0] and s["scheme"] == "https"
    s = scope_of(srv, {"Forwarded": "for=192.0.2.60;proto=http, for=127.0.0.1"})
    assert s["client"] == ["192.0.2.60", 0] and s["scheme"] == "http"


def test_bad_forwarded_allow_ips_is_a_usage_error(tmp_path):
    r = subprocess.run(
        [str(shield_bin()), APP, "--forwarded-allow-ips", "not-an-ip"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "--forwarded-allow-ips" in r.stderr


# ---- limits and timeouts ------------------------------------------------------------------


def test_limit_concurrency_answers_503(server):
    srv = server(APP, "--limit-concurrency", "1")
    slow = RawConn.to(srv, timeout=10)
    slow.send(http_request("GET", "/sleep?s=1.0"))
    time.sleep(0.3)
    r = request(srv, "/pid")
    assert r.status == 503
    assert slow.read_response().status == 200
    slow.close()
    assert request(srv, "/pid").status == 200  # capacity back


def test_timeout_body_cuts_a_stalled_body(fresh_server, tmp_path):
    log = tmp_path / "events.log"
    srv = fresh_server(APP, "--timeout-body", "0.5", env={"SHIELD_TEST_LIFESPAN_LOG": str(log)})
    c = RawConn.to(srv, timeout=10)
    c.send(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
    t0 = time.monotonic()
    assert c.wait_closed(scaled(5)), "stalled body not cut"
    assert time.monotonic() - t0 < scaled(4)
    assert c.buf.startswith(b"HTTP/1.1 408"), c.buf[:80]
    c.close()
    wait_for(lambda: log.exists() and "disconnect" in log.read_text(), what="app disconnect")
    # a body that keeps trickling in is not cut
    c = RawConn.to(srv, timeout=10)
    c.send(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
    for _ in range(8):
        time.sleep(0.2)
        c.send(b"b")
    r = c.read_response()
    assert r.status == 200 and json.loads(r.body)["received"] == 8
    c.close()


def test_extra_response_headers(server):
    srv = server(APP, "--header", "X-Frame-Options: DENY", "--header", "x-served-by:shield-1")
    r = request(srv, "/pid")
    assert r.header("x-frame-options") == "DENY" and r.header("x-served-by") == "shield-1"
    # also on responses the server makes itself
    with RawConn.to(srv) as c:
        c.send(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400
        r = c.read_response()
    assert r.status == 400 and r.header("x-served-by") == "shield-1"


@pytest.mark.parametrize("bad", ["NoColon", "Bad Name: x", ":x"])
def test_bad_header_flag(bad):
    r = subprocess.run(
        [str(shield_bin()), APP, "--header", bad], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and "--header" in r.stderr


def test_backlog_and_server_date_header_flags(server):
    srv = server(APP, "--backlog", "16", "--no-server-header", "--no-date-header")
    r = request(srv, "/pid")
    assert r.status == 200 and r.header("server") is None and r.header("date") is None


# ---- listeners ----------------------------------------------------------------------------


def _ipv6_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback in this environment")
def test_ipv6_listener(fresh_server):
    srv = fresh_server(APP, "--host", "::1", wait=False)
    port = int(srv.cmd[srv.cmd.index("--port") + 1])

    def get():
        try:
            with socket.create_connection(("::1", port), timeout=2) as s:
                c = RawConn("::1", port, sock=s)
                c.send(http_request("GET", "/scope", headers={"Connection": "close"}))
                return json.loads(c.read_response().body)
        except OSError:
            return None

    s = wait_for(get, timeout=15, what="the IPv6 listener")
    assert s["client"][0] == "::1"


def test_uds_listener_with_workers_and_permissions(fresh_server, tmp_path):
    path = tmp_path / "s.sock"
    srv = fresh_server(APP, "--workers", "2", "--uds-perms", "660", uds=str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    r = request(srv, "/scope", {"X-Forwarded-For": "192.0.2.9"})
    s = json.loads(r.body)
    assert s["client"] == ["192.0.2.9", 0]  # a UNIX-socket peer is a trusted proxy
    r = request(srv, "/scope")
    assert json.loads(r.body)["client"] is None
    srv.stop()
    assert not path.exists(), "the socket file outlived the server"


def test_fd_listener(tmp_path):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    port = lsock.getsockname()[1]
    fd = lsock.fileno()
    errf = open(tmp_path / "stderr", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(shield_bin()),
            APP,
            "--app-dir",
            str(APPS_DIR),
            "--fd",
            str(fd),
            "--workers",
            "2",
            "--no-access-log",
        ],
        pass_fds=[fd],
        stdout=errf,
        stderr=subprocess.STDOUT,
        cwd=str(REPO),
        start_new_session=True,
    )
    try:
        lsock.close()

        def get():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    c = RawConn("127.0.0.1", port, sock=s)
                    c.send(http_request("GET", "/pid", headers={"Connection": "close"}))
                    return c.read_response()
            except OSError:
                return None

        r = wait_for(get, timeout=15, what="the --fd listener")
        assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=scaled(15)) == 0
        errf.close()


def test_vsock_listener(tmp_path):
    af = getattr(socket, "AF_VSOCK", None)
    if af is None:
        pytest.skip("this Python has no AF_VSOCK")
    try:
        probe = socket.socket(af, socket.SOCK_STREAM)
        probe.close()
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            pytest.skip("AF_VSOCK not supported by this kernel (vsock module not loaded)")
        raise
    port = 20000 + os.getpid() % 20000
    errf = open(tmp_path / "stderr", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(shield_bin()),
            APP,
            "--app-dir",
            str(APPS_DIR),
            "--vsock-port",
            str(port),
            "--no-access-log",
        ],
        stdout=errf,
        stderr=subprocess.STDOUT,
        cwd=str(REPO),
        start_new_session=True,
    )
    try:
        cid_local = getattr(socket, "VMADDR_CID_LOCAL", 1)
        last = None

        def get():
            nonlocal last
            if proc.poll() is not None:
                return "exited"
            try:
                s = socket.socket(af, socket.SOCK_STREAM)
                s.settimeout(3)
                s.connect((cid_local, port))
            except OSError as exc:
                last = exc
                return None
            c = RawConn("", 0, sock=s)
            c.send(http_request("GET", "/scope", headers={"Connection": "close"}))
            return c.read_response()

        deadline = time.monotonic() + scaled(10)
        r = None
        while time.monotonic() < deadline:
            r = get()
            if r is not None:
                break
            time.sleep(0.1)
        if r == "exited":
            text = (tmp_path / "stderr").read_text()
            if "not supported" in text:
                pytest.skip(f"vsock listener unavailable: {text.strip()[-200:]}")
            pytest.fail(f"server exited: {text}")
        if r is None:
            pytest.skip(f"cannot reach vsock loopback (vsock_loopback module?): {last!r}")
        assert r.status == 200
        s = json.loads(r.body)
        assert s["client"][0] == str(cid_local)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=scaled(15))
        errf.close()


# ---- access log ---------------------------------------------------------------------------


def test_json_access_log_lines(fresh_server):
    srv = fresh_server(APP, "--access-log", "--access-log-format", "json")
    r = request(srv, '/pid?q="x"', {"X-Forwarded-For": "198.51.100.1"})
    assert r.status == 200
    request(srv, "/nope")

    def lines():
        out = []
        for line in srv.stderr_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out if len(out) >= 2 else None

    ls = wait_for(lines, what="two JSON access log lines")
    a, b = ls[0], ls[1]
    assert a["method"] == "GET" and a["path"] == "/pid" and a["query"] == 'q="x"'
    assert a["status"] == 200 and a["bytes"] == len(r.body) and a["duration_us"] >= 0
    assert a["client"] == "198.51.100.1" and re.fullmatch(r"[0-9a-f]{16}", a["request_id"])
    assert b["status"] == 404 and b["request_id"] != a["request_id"]


def test_common_access_log_has_request_id(fresh_server):
    srv = fresh_server(APP, "--access-log")
    request(srv, "/pid")
    line = wait_for(
        lambda: next(
            (ln for ln in srv.stderr_text().splitlines() if '"GET /pid HTTP/1.1" 200' in ln), None
        ),
        what="log line",
    )
    assert re.search(r"200 \d+ \d+us [0-9a-f]{16}$", line), line


# ---- metrics ------------------------------------------------------------------------------


def test_metrics_move_with_traffic(fresh_server):
    mport = free_port()
    srv = fresh_server(APP, "--workers", "2", "--metrics-port", str(mport))
    m0 = scrape(mport)
    key2 = 'shield_http_requests_total{class="2xx"}'
    for _ in range(10):
        assert request(srv, "/pid").status == 200
    request(srv, "/nope")
    # Counters move when the server has finished writing a response, which can be just after
    # the client has read it: wait for all of them, not only the 2xx one.
    key4 = 'shield_http_requests_total{class="4xx"}'
    m1 = wait_for(
        lambda: (
            (m := scrape(mport))[key2] >= m0.get(key2, 0) + 10
            and m.get(key4, 0) >= 1
            and m["shield_http_request_duration_seconds_count"] >= 11
            and m
        ),
        what="2xx and 4xx counters",
    )
    assert m1['shield_http_requests_total{class="4xx"}'] >= 1
    assert m1["shield_http_request_duration_seconds_count"] >= 11
    assert m1['shield_http_request_duration_seconds_bucket{le="+Inf"}'] >= 11
    assert m1["shield_http_response_body_bytes_total"] > 0
    assert m1["shield_http_connections_total"] >= 11
    # in flight: one slow request
    slow = RawConn.to(srv, timeout=10)
    slow.send(http_request("GET", "/sleep?s=1.0"))
    wait_for(lambda: scrape(mport)["shield_http_requests_in_flight"] == 1, what="in-flight 1")
    assert slow.read_response().status == 200
    slow.close()
    wait_for(lambda: scrape(mport)["shield_http_requests_in_flight"] == 0, what="in-flight 0")
    # a crashed worker counts as a restart
    pid = json.loads(request(srv, "/pid").body)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: scrape(mport)["shield_worker_restarts_total"] >= 1, what="restart count")
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert "# TYPE shield_http_request_duration_seconds histogram" in text


# ---- reload -------------------------------------------------------------------------------


def test_reload_restarts_on_change(fresh_server, tmp_path):
    appdir = tmp_path / "app"
    appdir.mkdir()
    shutil.copy(APPS_DIR / "app_workers.py", appdir / "app_workers.py")
    srv = fresh_server(APP, "--app-dir", str(appdir), "--reload")
    assert json.loads(request(srv, "/version").body)["version"] == "v1"
    time.sleep(0.3)
    src = (appdir / "app_workers.py").read_text().replace('"version": "v1"', '"version": "v2"')
    (appdir / "app_workers.py").write_text(src)
    wait_for(
        lambda: json.loads(request(srv, "/version").body)["version"] == "v2",
        timeout=30,
        what="the reloaded code",
    )
    # a broken edit keeps the running worker serving
    (appdir / "app_workers.py").write_text("this is not python\n")
    time.sleep(2)
    assert json.loads(request(srv, "/version").body)["version"] == "v2"
    assert "changed, reloading" in srv.stderr_text()
    threading.Event().wait(0.1)
