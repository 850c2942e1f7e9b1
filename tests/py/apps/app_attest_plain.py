"""Plain ASGI app (no middleware) for tests/py/gate/ (test_gate.py, test_gate_fetch.py): shows
what the shield server put in the scope after verifying client attestation natively
(docs/protocol.md §2)."""

import json


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    a = (scope.get("state") or {}).get("attestation")
    view = None
    if a is not None:
        view = {
            "verified": a.verified,
            "tee_type": a.tee_type,
            "mode": a.mode,
            "debug": a.debug,
            "pcr0": (a.measurements or {}).get("PCR0"),
            "policy_sha256": a.policy_sha256,
            "timestamp": a.timestamp,
            "nonce": a.nonce.hex() if a.nonce else None,
        }
    body = json.dumps(
        {
            "attestation": view,
            "extension": (scope.get("extensions") or {}).get("shield.attestation"),
            "type": type(a).__module__ + "." + type(a).__name__ if a else None,
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
