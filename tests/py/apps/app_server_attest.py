"""FastAPI app serving AttestationRouter (docs/protocol.md §4) for the tests of
tests/py/integrations/: test_integrations_server_attestation.py and
test_integrations_attested_client.py, under uvicorn or shield.

Environment (the tests set it per server):
  SHIELD_TEST_DATA_DIR   the simulated TEE's dev root directory (SimulatedEvidenceProvider)
  SHIELD_TEST_CERTFILE   the certificate the evidence binds (tls_certfile); unset: the
                         connection's certificate (shield's TLS extension)
  SHIELD_TEST_PCR0       hex of 48 bytes: the simulated PCR0 (another measurement)
  SHIELD_TEST_RATE, SHIELD_TEST_BURST   the per-client token bucket
  SHIELD_TEST_FAIL=1     the provider fails (health 503)
  SHIELD_TEST_NATIVE=1   NativeEvidenceProvider("simulated") (_native.Provider, attest's C
                         provider) instead of SimulatedEvidenceProvider
"""

import os

from fastapi import FastAPI, Request

from shield_asgi.integrations.confidential import AttestationRouter
from shield_asgi.server_attestation import (
    NativeEvidenceProvider,
    ProviderUnavailable,
    SimulatedEvidenceProvider,
)


class FailingProvider(SimulatedEvidenceProvider):
    def generate(self, nonce, binding, *, at):
        raise ProviderUnavailable("the test's TEE is switched off")


pcrs = (
    {0: bytes.fromhex(os.environ["SHIELD_TEST_PCR0"])}
    if os.environ.get("SHIELD_TEST_PCR0")
    else None
)
cls = FailingProvider if os.environ.get("SHIELD_TEST_FAIL") == "1" else SimulatedEvidenceProvider
if os.environ.get("SHIELD_TEST_NATIVE") == "1":
    provider = NativeEvidenceProvider("simulated", simulated_dir=os.environ["SHIELD_TEST_DATA_DIR"])
else:
    provider = cls(data_dir=os.environ["SHIELD_TEST_DATA_DIR"], pcrs=pcrs)

router = AttestationRouter(
    provider,
    tls_certfile=os.environ.get("SHIELD_TEST_CERTFILE") or None,
    rate=float(os.environ.get("SHIELD_TEST_RATE", "50")),
    burst=int(os.environ.get("SHIELD_TEST_BURST", "50")),
)

app = FastAPI()
hits = {"data": 0}
app.include_router(router)  # GET /attestation, /attestation/health
app.include_router(router.router, prefix="/.well-known/shield")  # the client's default path


@app.get("/data")
async def data(request: Request):
    hits["data"] += 1
    a = (request.scope.get("state") or {}).get("attestation")
    return {
        "ok": True,
        "client_tee": a.tee_type if a is not None else None,
        "client_verified": bool(a.verified) if a is not None else None,
    }


@app.api_route("/whoami", methods=["GET", "POST"])
async def whoami(request: Request):
    """How the client attested this request (docs/protocol.md §2: mode, session), and the body
    the app received."""
    a = (request.scope.get("state") or {}).get("attestation")
    return {
        "mode": a.mode if a is not None else None,
        "session": a.session if a is not None else None,
        "tee_type": a.tee_type if a is not None else None,
        "verified": bool(a.verified) if a is not None else None,
        "body": (await request.body()).decode(),
    }


@app.get("/hits")
async def get_hits():
    """How many requests reached /data (a test's proof that one never did)."""
    return hits


@app.post("/echo")
async def echo(request: Request):
    return {"body": (await request.body()).decode()}
