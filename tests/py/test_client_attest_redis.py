"""Client-attestation state shared through Redis (protocol.md §1.1): two servers with the same
nonce secret file and --state-url refuse a nonce the other consumed and share sessions.  Starts
a real redis-server (Debian) on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import httpx
import pytest

from attest_client import Session, error, evidence, get_nonce, header_mode
from conftest import free_port
import test_client_attest as base  # noqa: F401 - sets XDG_DATA_HOME and the secret file

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed")


@pytest.fixture(scope="module")
def redis_url():
    port = free_port()
    d = tempfile.mkdtemp(prefix="shield-redis-")
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", d],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    p.terminate()
    p.wait(10)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def pair(server, redis_url):
    env = dict(base.ENV, SHIELD_TEST_ATTEST_STATE=redis_url)
    a = server("app_attest:app", env=env, kind="uvicorn")
    b = server("app_attest:app", "--timeout-keep-alive", "6", env=env, kind="uvicorn")
    with httpx.Client(base_url=a.url, timeout=30) as ca, httpx.Client(base_url=b.url, timeout=30) as cb:
        yield ca, cb


def test_nonce_consumed_on_one_server_is_refused_by_the_other(pair):
    a, b = pair
    n = get_nonce(a)
    ev = evidence(n)
    r = a.get("/whoami", headers=header_mode(n, ev))
    assert r.status_code == 200, r.text
    pid_a = r.json()["pid"]
    r = b.get("/whoami", headers=header_mode(n, ev))
    assert error(r) == (401, "attestation_failed", "nonce_replayed")
    # a nonce issued by B is good at A (same secret file)
    n = get_nonce(b)
    r = a.get("/whoami", headers=header_mode(n, evidence(n)))
    assert r.status_code == 200 and r.json()["pid"] == pid_a


def test_session_shared_and_proofs_monotonic_across_servers(pair):
    a, b = pair
    s = Session(a)
    assert s.response.status_code == 200, s.response.text
    h = s.headers("GET", "/whoami")
    r = b.get("/whoami", headers=h)
    assert r.status_code == 200 and r.json()["attestation"]["session"] == s.id
    assert error(a.get("/whoami", headers=h)) == (401, "attestation_failed", "proof_invalid")
