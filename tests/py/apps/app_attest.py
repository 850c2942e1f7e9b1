"""FastAPI app with client attestation (docs/protocol.md §1–§3), for tests/py/gate/ and
tests/py/integrations/ (and the gate seen through the workers in tests/py/serving/).

Under uvicorn the AttestationMiddleware runs the whole protocol; under `shield --attest-*` the
server verifies natively and the middleware re-checks its own policy.

Environment: SHIELD_TEST_ATTEST_SECRET (nonce secret file), SHIELD_TEST_ATTEST_STATE (redis URL),
SHIELD_TEST_ATTEST_POLICY (policy JSON), SHIELD_TEST_ATTEST_OPTIONAL=1 (not required),
SHIELD_TEST_ATTEST_PCR0 (the PCR0 the middleware's provider expects, hex).
"""

import os

from fastapi import Depends, FastAPI, Request

from shield_asgi.attestation import AttestationResult
from shield_asgi.integrations import (
    AttestationMiddleware,
    SimulatedAttestationProvider,
    attestation_required,
    requires_attestation,
)

pcr0 = os.environ.get("SHIELD_TEST_ATTEST_PCR0")
provider = SimulatedAttestationProvider(expected_pcrs={0: pcr0} if pcr0 else None)

app = FastAPI()
app.add_middleware(
    AttestationMiddleware,
    provider=provider,
    require_client_attestation=os.environ.get("SHIELD_TEST_ATTEST_OPTIONAL") != "1",
    policy=os.environ.get("SHIELD_TEST_ATTEST_POLICY"),
    exclude_routes=["/health", "/docs", "/openapi.json"],
    tee_types=["simulated", "nitro"],
    nonce_secret=os.environ.get("SHIELD_TEST_ATTEST_SECRET"),
    state_url=os.environ.get("SHIELD_TEST_ATTEST_STATE"),
    trust_simulated=True,
)


def _view(a):
    if a is None:
        return None
    return {
        "verified": a.verified,
        "tee_type": a.tee_type,
        "mode": a.mode,
        "session": a.session,
        "pcr0": a.measurements.get("PCR0"),
        "policy_sha256": a.policy_sha256,
        "evidence_sha256": a.evidence_sha256,
    }


@app.get("/health")
def health():
    return {"ok": True}


@app.get("/whoami")
def whoami(request: Request):
    return {"attestation": _view(getattr(request.state, "attestation", None)), "pid": os.getpid()}


@app.get("/scribble")
def scribble(request: Request):
    """Mutates this request's result (tests: no other request may see it)."""
    a = request.state.attestation
    a.measurements["PCR0"] = "scribbled"
    a.claims["scribbled"] = True
    a.advisories.append("scribbled")
    a.tee_type = "scribbled"
    return {"id": id(a)}


@app.post("/echo")
async def echo(request: Request):
    body = await request.body()
    return {"len": len(body), "attestation": _view(request.state.attestation)}


@app.get("/decorated")
@requires_attestation(required_tee_types=["simulated"])
async def decorated():
    return {"ok": True}


@app.get("/decorated-strict")
@requires_attestation(required_measurements={"PCR1": "00" * 48})
def decorated_strict():
    return {"ok": True}


@app.get("/dep")
async def dep(att: AttestationResult = Depends(attestation_required(required_tee_types=["nitro"]))):
    return {"tee": att.tee_type}
