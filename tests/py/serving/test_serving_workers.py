"""Process model: --workers, the supervisor (crash restart, SIGTERM graceful stop, SIGHUP
rolling restart, --limit-max-requests), and state shared across workers (shm table, secret),
seen through the attestation gate that uses it.

Every test runs the real binary; load is driven by client threads over real sockets.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time

import pytest

from conftest import RawConn, http_request, scaled, wait_for

pytestmark = pytest.mark.shield_only

APP = "app_workers:app"


def get_json(srv, target, timeout=10.0, headers=None):
    """One request on a new connection (so the kernel may hand it to any worker)."""
    with RawConn.to(srv, timeout=timeout) as c:
        c.send(http_request("GET", target, headers=headers or {"Connection": "close"}))
        r = c.read_response()
    assert r.status == 200, r
    return json.loads(r.body)


def distinct_pids(srv, want, timeout=20.0):
    """The pids of `want` workers (the others may still be starting when the first serves)."""
    pids = set()
    deadline = time.monotonic() + scaled(timeout)
    while len(pids) < want and time.monotonic() < deadline:
        pids.add(get_json(srv, "/pid")["pid"])
        time.sleep(0.002)
    return pids


class Load:
    """Client threads sending requests until stopped; every outcome is recorded."""

    def __init__(self, srv, target="/sleep?s=0.05", threads=6, keep_alive=False):
        self.srv, self.target, self.keep_alive = srv, target, keep_alive
        self.ok = 0
        self.failures: list[str] = []
        self.pids: set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = RawConn.to(self.srv, timeout=20)
                hdrs = {} if self.keep_alive else {"Connection": "close"}
                conn.send(http_request("GET", self.target, headers=hdrs))
                r = conn.read_response()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                        self.pids.add(json.loads(r.body)["pid"])
                    else:
                        self.failures.append(f"status {r.status}")
                if not self.keep_alive or (r.header("connection") or "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as exc:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failures.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=scaled(30))


def test_workers_serve_from_distinct_processes(fresh_server):
    srv = fresh_server(APP, "--workers", "3")
    pids = distinct_pids(srv, 2)
    assert len(pids) >= 2, f"only one worker answered: {pids}"
    assert srv.proc.pid not in pids  # the supervisor does not serve
    assert "Started parent process" in srv.stderr_text()


# ---- state shared by the workers, seen through the attestation gate (no back door: the
# production binary has no test-only module; the gate's nonces and sessions are the state) ---

GATE_APP = "app_attest:app"


def _gate_args(secret_file=None):
    from support.attest_env import SECRET

    return (
        "--attest-types",
        "simulated",
        "--trust-simulated",
        "--attest-required",
        "--state-secret-file",
        secret_file or SECRET,
    )


def _gate_env():
    from support.attest_env import DATA_HOME, SECRET

    return {"SHIELD_TEST_ATTEST_SECRET": SECRET, "XDG_DATA_HOME": DATA_HOME}


def _gate_client(srv):
    import httpx

    # a new connection per request, so the kernel may hand each to any worker
    return httpx.Client(
        base_url=srv.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    )


def test_shared_table_seen_across_workers_and_survives_restart(fresh_server):
    """A session lives in the shared table: established once, it is served by every worker,
    and by a worker that replaces a killed one; a consumed nonce is refused by all of them."""
    from support.attest_client import Session, error, evidence, get_nonce, header_mode

    srv = fresh_server(GATE_APP, "--workers", "2", *_gate_args(), env=_gate_env())
    with _gate_client(srv) as c:
        s = Session(c)
        assert s.response.status_code == 200, s.response.text

        def whoami():
            r = c.get("/whoami", headers=s.headers("GET", "/whoami"))
            assert r.status_code == 200, r.text
            assert r.json()["attestation"]["session"] == s.id
            return r.json()["pid"]

        pids = set()
        deadline = time.monotonic() + scaled(20)
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(whoami())
        assert len(pids) == 2, f"one session served by both workers: {pids}"
        # a nonce consumed on one worker is consumed for all
        n = get_nonce(c)
        ev = evidence(n)
        assert c.get("/whoami", headers=header_mode(n, ev)).status_code == 200
        for _ in range(6):
            assert error(c.get("/whoami", headers=header_mode(n, ev)))[2] == "nonce_replayed"
        # kill one worker: its replacement serves the session from the table
        victim = pids.pop()
        os.kill(victim, signal.SIGKILL)
        old = {victim} | pids
        fresh = wait_for(
            lambda: (p := whoami()) not in old and p,
            timeout=30,
            interval=0.02,
            what="the replacement worker serving the session",
        )
        assert fresh not in old
    assert "died unexpectedly" in srv.stderr_text()


def test_state_secret_same_in_every_worker(fresh_server):
    """Without --state-secret-file the supervisor makes one secret before forking: a nonce
    issued by any worker verifies on every worker."""
    from support.attest_client import evidence, get_nonce, header_mode
    from support.attest_env import DATA_HOME

    srv = fresh_server(
        GATE_APP,
        "--workers",
        "2",
        "--attest-types",
        "simulated",
        "--trust-simulated",
        "--attest-required",
        env={"XDG_DATA_HOME": DATA_HOME},
    )
    pids = set()
    with _gate_client(srv) as c:
        deadline = time.monotonic() + scaled(20)
        while len(pids) < 2 and time.monotonic() < deadline:
            n = get_nonce(c)
            r = c.get("/whoami", headers=header_mode(n, evidence(n)))
            assert r.status_code == 200, r.text  # issued by one worker, accepted by another
            pids.add(r.json()["pid"])
    assert len(pids) == 2, f"nonces were checked by both workers: {pids}"


def test_state_secret_file(fresh_server, tmp_path):
    """The nonces carry HMAC-SHA256(secret, first 16 bytes)[0:16] (docs/protocol.md §1.1) with the
    secret from --state-secret-file, in every worker."""
    import hmac

    from support.attest_client import get_nonce

    secret = os.urandom(48)
    f = tmp_path / "secret"
    f.write_bytes(secret)
    srv = fresh_server(GATE_APP, "--workers", "2", *_gate_args(str(f)), env=_gate_env())
    with _gate_client(srv) as c:
        for _ in range(8):
            n = get_nonce(c)
            assert n[16:] == hmac.new(secret, n[:16], hashlib.sha256).digest()[:16]


@pytest.mark.parametrize("content", [b"short", None])
def test_state_secret_file_refused(fresh_server, tmp_path, content):
    f = tmp_path / "secret"
    if content is not None:
        f.write_bytes(content)
    srv = fresh_server(APP, "--state-secret-file", str(f), wait=False)
    rc = srv.wait_exit(scaled(15))
    assert rc == 1, srv.describe()
    text = srv.stderr_text()
    assert "--state-secret-file" in text
    assert ("at least 32" in text) if content else ("No such file" in text)


def test_killed_worker_replaced_others_keep_serving(fresh_server):
    srv = fresh_server(APP, "--workers", "2")
    pids = distinct_pids(srv, 2)
    victim = sorted(pids)[0]
    with Load(srv, "/pid", threads=4) as load:
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(load.pids - pids) >= 1, timeout=30, what="a replacement worker")
        time.sleep(0.3)
    # connections the killed process had accepted die with it; everything else is served
    assert load.ok > 20
    assert len(load.failures) <= 4, load.failures
    after = distinct_pids(srv, 2)
    assert victim not in after


def test_sigterm_graceful_under_load_loses_nothing(fresh_server, tmp_path):
    log = tmp_path / "lifespan.log"
    srv = fresh_server(APP, "--workers", "2", env={"SHIELD_TEST_LIFESPAN_LOG": str(log)})
    results, errors = [], []

    def one():
        try:
            results.append(get_json(srv, "/sleep?s=1.0", timeout=20))
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # all 8 are in flight in the app
    srv.signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=scaled(20))
    assert errors == [] and len(results) == 8
    assert srv.wait_exit(scaled(15)) == 0
    lines = log.read_text().split()
    assert lines.count("startup") == 2 and lines.count("shutdown") == 2, lines
    # after the stop nothing listens any more
    with pytest.raises(OSError):
        srv.connect(timeout=1).close()


def test_sigterm_grace_period_bounds_shutdown(fresh_server):
    srv = fresh_server(APP, "--timeout-graceful-shutdown", "0.5")
    c = RawConn.to(srv, timeout=20)
    c.send(http_request("GET", "/sleep?s=30"))
    time.sleep(0.3)
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    rc = srv.wait_exit(scaled(15))
    assert rc == 0
    assert time.monotonic() - t0 < scaled(8)
    assert c.wait_closed(5)
    c.close()


@pytest.mark.parametrize("keep_alive", [False, True])
def test_sighup_rolling_restart_under_load_loses_nothing(fresh_server, keep_alive):
    srv = fresh_server(APP, "--workers", "2")
    before = distinct_pids(srv, 2)
    with Load(srv, "/sleep?s=0.02", threads=6, keep_alive=keep_alive) as load:
        time.sleep(0.5)
        srv.signal(signal.SIGHUP)
        # (keep-alive clients may all stick to one new worker: watch the supervisor instead)
        wait_for(
            lambda: srv.stderr_text().count("finished (exit status 0)") >= 2,
            timeout=40,
            what="both old workers to finish",
        )
        time.sleep(0.5)
    assert load.failures == [], load.failures[:5]
    assert load.ok > 50
    text = srv.stderr_text()
    assert "rolling restart" in text and text.count("stopping the old one") >= 2
    after = distinct_pids(srv, 2)
    assert not (after & before), (before, after)


def test_limit_max_requests_recycles_without_failures(fresh_server):
    srv = fresh_server(
        APP, "--workers", "1", "--limit-max-requests", "10", "--limit-max-requests-jitter", "3"
    )
    with Load(srv, "/pid", threads=3) as load:
        wait_for(lambda: len(load.pids) >= 3, timeout=40, what="two recycles")
    assert load.failures == [], load.failures[:5]
    assert "Maximum request limit" in srv.stderr_text()


def test_startup_failure_exits_with_worker_status(fresh_server):
    srv = fresh_server(
        "app_raw:app",
        "--workers",
        "2",
        "--lifespan",
        "on",
        env={"SHIELD_TEST_FAIL_STARTUP": "boom-marker"},
        wait=False,
    )
    rc = srv.wait_exit(scaled(20))
    assert rc not in (None, 0), srv.describe()
    assert "boom-marker" in srv.stderr_text()


def test_web_concurrency_env_sets_workers(fresh_server):
    srv = fresh_server(APP, env={"WEB_CONCURRENCY": "2"})
    assert len(distinct_pids(srv, 2)) == 2


def test_keep_alive_connection_gets_close_from_leaving_worker(fresh_server):
    srv = fresh_server(APP, "--workers", "1")
    c = RawConn.to(srv, timeout=20)
    c.send(http_request("GET", "/pid"))
    r1 = c.read_response()
    assert r1.status == 200 and r1.header("connection") is None
    old = json.loads(r1.body)["pid"]
    # a slow request on the same connection is in flight while the worker starts leaving
    c.send(http_request("GET", "/sleep?s=1.5"))
    time.sleep(0.3)
    srv.signal(signal.SIGHUP)
    r2 = c.read_response()
    assert r2.status == 200 and json.loads(r2.body)["pid"] == old
    assert (r2.header("connection") or "").lower() == "close"
    assert c.wait_closed(5)
    c.close()
    wait_for(lambda: get_json(srv, "/pid")["pid"] != old, timeout=20, what="the new worker")


# An app whose lifespan startup takes SHIELD_TEST_STARTUP_S seconds (written to tmp_path, so
# the start-up window is wide and deterministic).
SLOW_STARTUP_APP = """
import asyncio, json, os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await asyncio.sleep(float(os.environ["SHIELD_TEST_STARTUP_S"]))
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps({"pid": os.getpid(), "path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
"""


def test_sigterm_during_startup_answers_queued_connections(fresh_server, tmp_path):
    """The supervisor listens before the worker's interpreter is up, so connections queue in
    the backlog while the worker starts.  A SIGTERM in that window must not drop them: the
    worker finishes starting, answers what queued up, then stops (exit status 0)."""
    (tmp_path / "slow_start.py").write_text(SLOW_STARTUP_APP)
    srv = fresh_server(
        "slow_start:app",
        "--app-dir",
        str(tmp_path),
        "--workers",
        "1",
        env={"SHIELD_TEST_STARTUP_S": "2"},
        wait=False,
    )
    # The listener is up almost at once (the supervisor's): connect as soon as it accepts.
    first = None
    deadline = time.monotonic() + scaled(10)
    while first is None:
        try:
            first = RawConn.to(srv, timeout=scaled(30))
        except OSError:
            assert time.monotonic() < deadline, srv.describe()
            time.sleep(0.02)
    conns = [first] + [RawConn.to(srv, timeout=scaled(30)) for _ in range(3)]
    for i, c in enumerate(conns):
        c.send(http_request("GET", f"/queued/{i}"))
    assert "Application startup complete" not in srv.stderr_text(), "startup was not slow"
    srv.signal(signal.SIGTERM)
    for i, c in enumerate(conns):
        r = c.read_response()
        assert r.status == 200 and json.loads(r.body)["path"] == f"/queued/{i}", r
        c.close()
    assert srv.wait_exit(scaled(20)) == 0, srv.describe()
    assert "stops once it is ready" in srv.stderr_text()
