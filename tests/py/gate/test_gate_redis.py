"""Client-attestation state in Redis for the native gate (--state-url, server/gate_state.c,
docs/protocol.md §1.1 and §1.4): two real shield servers (one with two workers) with the same
secret file and a real redis-server refuse a nonce the other consumed, share sessions and
their monotonic proof times, tell an expired session (session_expired) from an unknown one,
answer 503 overloaded while Redis is down and recover when it is back, and refuse to start
with a bad or unreachable --state-url."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime, timezone

import httpx
import pytest

from conftest import APPS_DIR, SERVER_KIND, RedisServer, free_port, shield_bin
from support.attest_client import Session, error, evidence, get_nonce, header_mode
from support.attest_env import ENV, SECRET  # the simulated dev root and the secret file
from support.attest_redis_cases import (  # noqa: F401  (shared cases, run here with this module's pair)
    test_nonce_consumed_on_one_server_is_refused_by_the_other,
    test_session_shared_and_proofs_monotonic_across_servers,
)
from test_gate import APP, BASE, _has_gate

pytestmark = [
    pytest.mark.skipif(SERVER_KIND != "shield", reason="native gate: shield only"),
    pytest.mark.skipif(
        SERVER_KIND == "shield" and not _has_gate(),
        reason=f"{shield_bin()} predates the native attestation gate",
    ),
]


def _clock(offset: float) -> str:
    t = datetime.fromtimestamp(time.time() + offset, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def pair(server, redis_url):
    a = server(APP, *BASE, "--attest-required", "--state-url", redis_url, env=ENV)
    b = server(APP, *BASE, "--attest-required", "--state-url", redis_url, "--workers", "2", env=ENV)
    with (
        httpx.Client(base_url=a.url, timeout=30) as ca,
        httpx.Client(base_url=b.url, timeout=30) as cb,
    ):
        yield ca, cb


def test_concurrent_replays_exactly_one_wins(pair):
    """The same nonce presented to both servers at once: SET NX lets exactly one through."""
    import concurrent.futures as cf

    a, b = pair
    for _ in range(3):
        n = get_nonce(a)
        h = header_mode(n, evidence(n))
        with cf.ThreadPoolExecutor(6) as ex:
            codes = list(
                ex.map(lambda c: c.get("/whoami", headers=h).status_code, [a, b, a, b, a, b])
            )
        assert sorted(codes) == [200, 401, 401, 401, 401, 401], codes


def test_session_body_digest_through_redis(pair):
    a, b = pair
    s = Session(b)
    assert s.response.status_code == 200, s.response.text
    body = b"x" * 5000
    r = a.post("/echo", content=body, headers=s.headers("POST", "/echo", body))
    assert r.status_code == 200, r.text


def test_unknown_session(pair):
    a, _ = pair
    h = {"X-Attestation-Session": "A" * 32, "X-Attestation-Proof": "t=1, mac=AA"}
    assert error(a.get("/whoami", headers=h)) == (401, "attestation_failed", "session_unknown")


def test_expired_session_is_session_expired(server, pair, redis_url):
    """A server whose clock is past the session's end (--dev --attest-clock, 1 h 2 min on)
    says session_expired, not session_unknown: records outlive their expiry a while."""
    a, _ = pair
    s = Session(a)
    assert s.response.status_code == 200, s.response.text
    later = server(
        APP,
        *BASE,
        "--attest-required",
        "--state-url",
        redis_url,
        "--dev",
        "--attest-clock",
        _clock(3720),
        env=ENV,
    )
    with httpx.Client(base_url=later.url, timeout=30) as c:
        t = int((time.time() + 3720) * 1000)
        r = c.get("/whoami", headers=s.headers("GET", "/whoami", t=t))
        assert error(r) == (401, "attestation_failed", "session_expired")


def test_redis_down_is_503_overloaded_and_recovers(server):
    """Fail closed and say so: no Redis, no attestation (503 + Retry-After), never a hang;
    requests work again once Redis is back on the same port."""
    if not __import__("shutil").which("redis-server"):
        pytest.skip("redis-server is not installed (scripts/bootstrap installs it)")
    r = RedisServer()
    try:
        srv = server(APP, *BASE, "--attest-required", "--state-url", r.url, env=ENV)
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            s = Session(c)
            assert s.response.status_code == 200, s.response.text
            r.proc.terminate()
            r.proc.wait(10)
            n = get_nonce(c)  # issued from the secret: needs no state
            t0 = time.monotonic()
            resp = c.get("/whoami", headers=header_mode(n, evidence(n)))
            assert error(resp) == (503, "attestation_unavailable", "overloaded")
            assert resp.headers["retry-after"] == "1"
            resp = c.get("/whoami", headers=s.headers("GET", "/whoami"))
            assert error(resp) == (503, "attestation_unavailable", "overloaded")
            assert time.monotonic() - t0 < 10
            # Redis back (empty: the session is gone, a fresh nonce works)
            r2 = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(r.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    r.dir,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            r.proc = r2
            deadline = time.monotonic() + 15
            while True:
                n = get_nonce(c)
                resp = c.get("/whoami", headers=header_mode(n, evidence(n)))
                if resp.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert resp.status_code == 200, resp.text
    finally:
        r.stop()


def _start(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(shield_bin()),
            APP,
            "--app-dir",
            str(APPS_DIR),
            "--port",
            str(free_port()),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, **ENV),
    )


def test_bad_state_url_refused_at_start():
    base = ("--attest-types", "simulated", "--trust-simulated", "--state-secret-file", SECRET)
    r = _start(*base, "--state-url", "http://127.0.0.1:6379")
    assert r.returncode != 0 and "--state-url" in r.stderr and "redis://" in r.stderr
    r = _start(*base, "--state-url", "redis://127.0.0.1:notaport")
    assert r.returncode != 0 and "--state-url" in r.stderr
    r = _start(*base, "--state-url", f"redis://127.0.0.1:{free_port()}")
    assert r.returncode != 0 and "cannot connect to Redis" in r.stderr, r.stderr
    r = _start("--state-url", "redis://127.0.0.1:6379")
    assert r.returncode != 0 and "need --attest-types" in r.stderr
