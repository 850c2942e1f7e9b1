"""The server proving its own TEE (issue 16, docs/protocol.md §4): what it costs the app.

The fastapi_json route (same app object), served by shield only, in three set-ups whose
req/s are divided by plain ``fastapi_json``'s (the "÷ baseline" columns; a case and its
baseline take turns, run by run):

- ``fastapi_tee_on``: ``--tee simulated``: the server can answer the attestation and health
  endpoints (their evidence made on the gate's pool threads), but the measured route asks
  nothing of them: the price of the gate standing in front of the app;
- ``fastapi_tee_attach``: ``--tee simulated --attach-server-attestation``: every response also
  carries ``X-Server-Attestation`` (the cached evidence, ~4 KB base64url) and
  ``X-Server-TEE-Type``;
- ``tee_health``: ``GET /.well-known/shield/health`` itself, answered in C from the cached
  evidence (no Python), for scale.

Target (issue 16): the first two ≥ 0.97× plain.  The simulated dev root that signs the
evidence lives in the case's work directory (``XDG_DATA_HOME``), created at start-up.
"""

from fastapi_json import app  # noqa: F401  (the served object: the same route, the same code)

# BENCH must be a literal (the harness reads it with ast.literal_eval).
BENCH = [
    {
        "name": "fastapi_tee_on",
        "order": 31,
        "app": "app",
        "path": "/items/42",
        "requires": ["fastapi", "pydantic"],
        "servers": ["shield"],
        "env": {"XDG_DATA_HOME": "{work}/xdg"},
        "server_args": {"shield": ["--tee", "simulated"]},
        "expect_status": 200,
        "expect_json": {"id": 42, "name": "item-42", "price": 4.2, "tags": ["bench", "shield"]},
        "baseline": "fastapi_json",
        "description": "fastapi_json under --tee simulated (server attestation endpoints on, "
        "not called).",
    },
    {
        "like": "fastapi_tee_on",
        "name": "fastapi_tee_attach",
        "order": 32,
        "server_args": {"shield": ["--tee", "simulated", "--attach-server-attestation"]},
        "expect_headers": {"x-server-tee-type": "simulated"},
        "smoke": ["shield"],
        "description": "fastapi_json with --attach-server-attestation: X-Server-Attestation "
        "(cached evidence) and X-Server-TEE-Type on every response.",
    },
    {
        "name": "tee_health",
        "order": 33,
        "app": "app",
        "path": "/.well-known/shield/health",
        "requires": ["fastapi", "pydantic"],
        "servers": ["shield"],
        "env": {"XDG_DATA_HOME": "{work}/xdg"},
        "server_args": {"shield": ["--tee", "simulated"]},
        "expect_status": 200,
        "expect_json_subset": {"status": "ok"},
        "baseline": "fastapi_json",
        "description": "The cached TEE health endpoint (native, no Python), for scale.",
    },
]
