"""Cases shared by the two Redis suites (docs/protocol.md §1.1, §1.4): each module defines a
`pair` fixture of two servers (a first one with one worker) sharing one redis-server and one
secret file — integrations/test_integrations_redis.py with uvicorn and the middleware,
gate/test_gate_redis.py with shield's native gate — and imports these."""

from __future__ import annotations

from support.attest_client import Session, error, evidence, get_nonce, header_mode


def test_nonce_consumed_on_one_server_is_refused_by_the_other(pair):
    a, b = pair
    n = get_nonce(a)
    ev = evidence(n)
    r = a.get("/whoami", headers=header_mode(n, ev))
    assert r.status_code == 200, r.text
    assert r.json()["attestation"]["mode"] == "header"
    pid_a = r.json()["pid"]
    for c in (b, a):
        assert error(c.get("/whoami", headers=header_mode(n, ev))) == (
            401,
            "attestation_failed",
            "nonce_replayed",
        )
    n = get_nonce(b)  # B's nonce is good at A (same secret file)
    r = a.get("/whoami", headers=header_mode(n, evidence(n)))
    assert r.status_code == 200 and r.json()["pid"] == pid_a


def test_session_shared_and_proofs_monotonic_across_servers(pair):
    a, b = pair
    s = Session(a)
    assert s.response.status_code == 200, s.response.text
    h = s.headers("GET", "/whoami")
    r = b.get("/whoami", headers=h)
    assert r.status_code == 200, r.text
    got = r.json()["attestation"]
    assert got["session"] == s.id and got["mode"] == "session" and got["verified"]
    # the same proof again, at either server: t is not after the last accepted one
    for c in (a, b):
        assert error(c.get("/whoami", headers=h)) == (401, "attestation_failed", "proof_invalid")
    for c in (a, b, b, a):  # later proofs work anywhere
        assert c.get("/whoami", headers=s.headers("GET", "/whoami")).status_code == 200
