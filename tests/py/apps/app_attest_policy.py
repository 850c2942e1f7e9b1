"""FastAPI app for the policy combinations (tests/py/attest/test_attest_policy.py): the middleware's
own policy (SHIELD_TEST_MW_POLICY: a policy file, or unset) and route policies, enforced on
top of whatever the server's gate decided (`shield --attest-policy`) or, under another server
or without the gate, on top of the middleware's own verification.

Environment: SHIELD_TEST_ATTEST_SECRET (nonce secret file), SHIELD_TEST_MW_POLICY,
SHIELD_TEST_ALLOW_POLICY and SHIELD_TEST_DENY_POLICY (policy files the routes name).
"""

import os

from fastapi import Depends, FastAPI

from shield_asgi.attestation import AttestationResult
from shield_asgi.integrations import (
    AttestationMiddleware,
    attestation_required,
    requires_attestation,
)

ALLOW = os.environ["SHIELD_TEST_ALLOW_POLICY"]
DENY = os.environ["SHIELD_TEST_DENY_POLICY"]

app = FastAPI()
app.add_middleware(
    AttestationMiddleware,
    require_client_attestation=True,
    policy=os.environ.get("SHIELD_TEST_MW_POLICY") or None,
    tee_types=["simulated"],
    nonce_secret=os.environ.get("SHIELD_TEST_ATTEST_SECRET"),
    trust_simulated=True,
)


@app.get("/open")
async def open_route(att: AttestationResult = Depends(attestation_required())):
    return {"tee": att.tee_type}


@app.get("/route-allow")
@requires_attestation(policy=ALLOW)
async def route_allow():
    return {"ok": True}


@app.get("/route-deny")
@requires_attestation(policy=DENY)
async def route_deny():
    return {"ok": True}


@app.get("/dep-deny")
async def dep_deny(att: AttestationResult = Depends(attestation_required(policy=DENY))):
    return {"tee": att.tee_type}


@app.get("/dep-allow")
async def dep_allow(att: AttestationResult = Depends(attestation_required(policy=ALLOW))):
    return {"tee": att.tee_type}
