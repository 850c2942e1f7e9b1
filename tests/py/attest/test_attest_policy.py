"""Policies are enforced wherever they are named (docs/protocol.md §2), fail closed, in every
combination of: the server's gate (`shield --attest-policy`: none, allowing, denying), the
middleware's own `policy=` (none, allowing, denying) and a route's `policy=` (none, allowing,
denying; decorator and dependency), under the shield server with and without its native gate
and under uvicorn.  A route or middleware that names a policy must refuse a verified client
that does not satisfy it (403 measurement_mismatch), whoever verified the evidence.

Policies constrain the simulated TEE's PCR0 (its "nitro" section): ALLOW lists the PCR0 the
test evidence carries, DENY another value."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from conftest import SERVER_KIND, uvicorn_available
from support.attest_client import Session, error, evidence, get_nonce, header_mode
from support.attest_env import DATA_HOME, DEFAULT_PCR0, SECRET

ALLOW = os.path.join(DATA_HOME, "policy-allow.json")
DENY = os.path.join(DATA_HOME, "policy-deny.json")
with open(ALLOW, "w") as f:
    json.dump({"version": 1, "nitro": {"pcrs": {"0": [DEFAULT_PCR0]}}}, f)
with open(DENY, "w") as f:
    json.dump({"version": 1, "nitro": {"pcrs": {"0": ["00" * 47 + "01"]}}}, f)
POLICIES = {"none": None, "allow": ALLOW, "deny": DENY}

ROUTES = {  # route -> its own policy
    "/open": "none",
    "/route-allow": "allow",
    "/dep-allow": "allow",
    "/route-deny": "deny",
    "/dep-deny": "deny",
}

# (server, gate policy): the gate verifies natively under shield; otherwise the middleware
# runs the protocol itself (shield without --attest-types, or uvicorn).
SERVERS = [("shield", "allow"), ("shield", "deny"), ("shield", "none"), ("uvicorn", "none")]


def _env(mw: str) -> dict:
    env = {
        "SHIELD_TEST_ATTEST_SECRET": SECRET,
        "XDG_DATA_HOME": DATA_HOME,
        "SHIELD_TEST_ALLOW_POLICY": ALLOW,
        "SHIELD_TEST_DENY_POLICY": DENY,
    }
    if POLICIES[mw]:
        env["SHIELD_TEST_MW_POLICY"] = POLICIES[mw]
    return env


def _start(server, kind: str, gate: str, mw: str):
    if kind == "uvicorn" and not uvicorn_available():
        pytest.skip("uvicorn is not installed in this environment")
    args = []
    if kind == "shield" and gate != "none":
        args = [
            "--attest-types",
            "simulated",
            "--trust-simulated",
            "--state-secret-file",
            SECRET,
            "--attest-required",
            "--attest-policy",
            POLICIES[gate],
        ]
    return server("app_attest_policy:app", *args, env=_env(mw), kind=kind)


@pytest.fixture(
    scope="module",
    params=[(k, g, m) for k, g in SERVERS for m in ("none", "allow", "deny")],
    ids=lambda p: f"{p[0]}-gate_{p[1]}-mw_{p[2]}",
)
def setup(request, server):
    if SERVER_KIND != "shield":
        pytest.skip("the combinations start their own servers (shield and uvicorn)")
    kind, gate, mw = request.param
    return _start(server, kind, gate, mw), gate, mw


def _expect(gate: str, mw: str, route_policy: str) -> int:
    return 403 if "deny" in (gate, mw, route_policy) else 200


def test_header_mode_every_route(setup):
    srv, gate, mw = setup
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for route, rp in ROUTES.items():
            n = get_nonce(c)
            r = c.get(route, headers=header_mode(n, evidence(n)))
            want = _expect(gate, mw, rp)
            if want == 200:
                assert r.status_code == 200, (route, r.text)
            else:
                assert error(r) == (403, "attestation_policy", "measurement_mismatch"), (
                    route,
                    gate,
                    mw,
                    r.status_code,
                    r.text,
                )


def test_session_mode_every_route(setup):
    srv, gate, mw = setup
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        s = Session(c)
        # whoever verifies the evidence refuses the establishment under its own deny policy:
        # the gate, or (no gate) the middleware
        if gate == "deny" or (gate == "none" and mw == "deny"):
            assert error(s.response) == (403, "attestation_policy", "measurement_mismatch")
            return
        assert s.response.status_code == 200, s.response.text
        for route, rp in ROUTES.items():
            r = c.get(route, headers=s.headers("GET", route))
            want = _expect(gate, mw, rp)
            if want == 200:
                assert r.status_code == 200, (route, r.text)
            else:
                assert error(r) == (403, "attestation_policy", "measurement_mismatch"), (
                    route,
                    gate,
                    mw,
                    r.status_code,
                    r.text,
                )


def test_no_evidence_is_refused_everywhere(setup):
    srv, gate, mw = setup
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for route in ROUTES:
            assert error(c.get(route)) == (401, "attestation_required", "missing"), route


def test_policy_check_api():
    """shield_asgi.attestation.check_policy: the route/middleware evaluator, directly."""
    from shield_asgi.attestation import AttestationResult, check_policy

    ok = AttestationResult(verified=True, tee_type="simulated", measurements={"PCR0": DEFAULT_PCR0})
    assert check_policy(ALLOW, ok) is None
    assert check_policy(DENY, ok)[0] == "measurement_mismatch"
    assert check_policy({"version": 1, "nitro": {"pcrs": {"0": [DEFAULT_PCR0]}}}, ok) is None
    # fail closed: no result, an unverified one, a fact the policy needs missing
    assert check_policy(ALLOW, None) == ("missing", "client attestation is required")
    bad = AttestationResult(verified=False, tee_type="simulated", reason="signature_invalid")
    assert check_policy(ALLOW, bad)[0] == "signature_invalid"
    bare = AttestationResult(verified=True, tee_type="simulated")
    assert check_policy(ALLOW, bare)[0] == "measurement_mismatch"
    dbg = AttestationResult(
        verified=True, tee_type="simulated", debug=True, measurements={"PCR0": DEFAULT_PCR0}
    )
    assert check_policy(ALLOW, dbg)[0] == "debug_not_allowed"
    with pytest.raises(ValueError):
        check_policy({"no_such_key": 1}, ok)
