"""FastAPI JSON GET (the fastapi_json route) behind client attestation (issue #9).

Three cases on one app, so their ratios compare like with like:

- ``fastapi_attest_none``: no attestation at all (the baseline of the two others);
- ``fastapi_attest_header``: header mode (docs/protocol.md §1.4, 1): every request carries its own
  simulated evidence bound to its own single-use nonce, so every request costs one full
  verification (COSE signature, chain to the dev root, nonce MAC, binding, policy) plus the
  nonce consumption.  No verification cache can help here: a cache entry is keyed by the
  nonce among other things, and the verifier does not cache at all when simulated evidence is
  trusted (attest/verify.c);
- ``fastapi_attest_session``: session mode (§1.4, 2): sessions are established before the run
  (one verification each, not measured); each measured request carries
  ``X-Attestation-Session`` + ``X-Attestation-Proof`` (an HMAC-SHA256 over t, method and
  target): the verification result is the one cached by the session.

Under shield the app is served as is and the server's native gate (``--attest-*`` flags,
gate/) runs the protocol before Python; under uvicorn and granian the same app runs
wrapped in ``shield_asgi.integrations.AttestationMiddleware`` (``app_mw``), which runs the
protocol in-process through ``shield_asgi._native``.  The route answers the attestation's
``tee_type`` and ``mode``, so the harness's correctness check proves that the verified result
reached the app; a request without evidence must get 401 (``expect_plain_status``).

Requests are prepared by ``HeaderClient`` / ``SessionClient`` (the BENCH "client" key; see
bench/README.md): nonces are minted offline with the state secret the server also reads
(``shield_asgi._native.nonce_issue``), which is what ``GET /.well-known/shield/nonce`` would answer.
"""

import base64
import http.client
import json
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from pydantic import BaseModel

PATH = "/items/42"

# BENCH must be a literal (the harness reads it with ast.literal_eval); "like" starts an entry
# as a copy of an earlier one, its dicts (expect_json) merged into the earlier ones (bench/bench.py
# inherit).
# "{work}" is the case's work directory (bench/out/work/<case>), filled by bench_setup(): the
# state secret the shield gate, the middleware and the client share, and the dev root
# (XDG_DATA_HOME) that signs the simulated evidence.
BENCH = [
    {
        "name": "fastapi_attest_none",
        "order": 40,
        "app": "app",
        "method": "GET",
        "path": "/items/42",
        "requires": ["fastapi", "pydantic", "cryptography"],
        "expect_status": 200,
        "expect_json": {
            "id": 42,
            "name": "item-42",
            "price": 4.2,
            "tags": ["bench", "shield"],
            "tee": None,
            "mode": None,
        },
        "client": "PlainClient",
        "description": "The attestation route with no attestation (no gate, no middleware): "
        "the baseline of fastapi_attest_session. Its requests go through the same replay "
        "client as the attested cases.",
    },
    {
        "like": "fastapi_attest_none",
        "name": "fastapi_attest_none_c16",
        "connections": 16,
        "description": "fastapi_attest_none with 16 connections: the baseline of "
        "fastapi_attest_header.",
    },
    {
        "like": "fastapi_attest_none",
        "name": "fastapi_attest_header",
        "order": 41,
        "app": {"shield": "app", "uvicorn": "app_mw", "granian": "app_mw"},
        "setup": "bench_setup",
        "env": {"XDG_DATA_HOME": "{work}/xdg", "SHIELD_STATE_SECRET_FILE": "{work}/state-secret"},
        "server_args": {
            "shield": [
                "--attest-types",
                "simulated",
                "--trust-simulated",
                "--attest-required",
                "--state-secret-file",
                "{work}/state-secret",
            ]
        },
        "client": "HeaderClient",
        # The gate verifies at most 16 requests at once per client address (gate/pool.c,
        # max_per_client, docs/protocol.md §1.6: 503 overloaded beyond) and every wrk connection
        # comes from 127.0.0.1, so header mode runs with 16 connections on every server.
        "connections": 16,
        "rate_hint": 500,
        "smoke": ["shield"],  # smoke: wrk on shield only; the others answer 2 requests
        "expect_json": {"tee": "simulated", "mode": "header"},  # merged into none's
        "expect_plain_status": 401,
        "baseline": "fastapi_attest_none_c16",
        "description": "Header mode: fresh simulated evidence and nonce on every request, one "
        "full native verification each (shield: the gate in C; uvicorn, granian: "
        "AttestationMiddleware). 16 connections (the gate's per-address cap).",
    },
    {
        "like": "fastapi_attest_header",
        "name": "fastapi_attest_session",
        "order": 42,
        "client": "SessionClient",
        "connections": None,  # the run's --connections (not the header case's 16)
        "rate_hint": 15000,
        "expect_json": {"mode": "session"},
        "baseline": "fastapi_attest_none",
        "description": "Session mode: 5 sessions per connection, established before the run; "
        "each request carries a session id and a proof (HMAC-SHA256, t strictly "
        "increasing per session), no evidence.",
    },
]


class Item(BaseModel):
    id: int
    name: str
    price: float
    tags: list[str]
    tee: str | None = None
    mode: str | None = None


app = FastAPI()


@app.get("/items/{item_id}", response_model=Item)
async def read_item(item_id: int, request: Request) -> Item:
    a = getattr(request.state, "attestation", None)
    return Item(
        id=item_id,
        name=f"item-{item_id}",
        price=item_id / 10,
        tags=["bench", "shield"],
        tee=a.tee_type if a else None,
        mode=a.mode if a else None,
    )


def _middleware_app():
    from shield_asgi.integrations import AttestationMiddleware

    # the nonce secret comes from $SHIELD_STATE_SECRET_FILE (the file the shield gate reads)
    return AttestationMiddleware(
        app, tee_types=["simulated"], trust_simulated=True, require_client_attestation=True
    )


app_mw = _middleware_app()


# ------------------------------------------------------------------------------------------
# Harness hooks (bench/README.md): setup once per case, one client per server start


def bench_setup(work: str) -> None:
    """The state secret (shared by the server and the client) and the simulated dev root."""
    from shield_asgi import _native

    os.makedirs(work, exist_ok=True)
    secret = os.path.join(work, "state-secret")
    if not os.path.exists(secret):
        with open(secret, "wb") as f:
            f.write(secrets.token_bytes(32))
    os.environ["XDG_DATA_HOME"] = os.path.join(work, "xdg")
    _native.simulated_root(create=True)


def _b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _secret() -> bytes:
    with open(os.environ["SHIELD_STATE_SECRET_FILE"], "rb") as f:
        return f.read()


def _evidence(secret: bytes, public_key: bytes | None = None) -> tuple[bytes, bytes]:
    """A nonce minted now (what GET /.well-known/shield/nonce answers) and evidence bound to it
    (and to public_key).  The C code releases the GIL, so threads generate in parallel."""
    from shield_asgi import _native

    now = time.time()
    nonce = _native.nonce_issue(secret, now)
    return nonce, _native.simulated_evidence(nonce, public_key, at=now)


class PlainClient:
    """The baselines' requests, replayed by the same wrk script as the attested cases', minus
    the attestation headers.  Why: a wrk `request()` function costs wrk more per request than
    a static request and changes how requests reach the server (seen as CPU per request that
    drifted with the machine's load for the attested cases only), so a baseline sent as a
    static request would credit the server with the client's difference."""

    valid_for = None  # plain requests never expire

    def __init__(self, base_url: str, server: str, connections: int, threads: int) -> None:
        pass

    def requests(self, n: int):
        for _ in range(n):
            yield {"method": "GET", "path": PATH, "headers": {}}


class HeaderClient:
    """Header mode: every request has its own nonce and evidence (single use, §1.1)."""

    valid_for = 60  # seconds: a nonce expires 60 s after it was minted (§1.1)

    def __init__(self, base_url: str, server: str, connections: int, threads: int) -> None:
        self.secret = _secret()

    def requests(self, n: int):
        # ~3.5 ms of signing per evidence: spread over the CPUs the driver may use
        with ThreadPoolExecutor(max(1, len(os.sched_getaffinity(0)))) as ex:
            for nonce, ev in ex.map(lambda _: _evidence(self.secret), range(n)):
                yield {
                    "method": "GET",
                    "path": PATH,
                    "headers": {
                        "X-Attestation-Token": base64.b64encode(ev).decode(),
                        "X-Attestation-Type": "simulated",
                        "X-Attestation-Nonce": _b64e(nonce),
                    },
                }


class SessionClient:
    """Session mode: 5 sessions per wrk connection.

    A session's proofs must arrive with strictly increasing t (§1.4), but wrk hands prepared
    requests to whichever connection is free, so one session per connection is not possible.
    After the first burst, request i uses the steady-state session i mod S, S = 4 x
    connections: the previous use of a session was S requests earlier, and at most
    `connections` requests are in flight at any time, so it was answered long before (the
    server would have to overtake it by 3 x connections requests).  The first requests of each
    batch (one per connection, sent as the connections open) get sessions of their own, used
    once per batch: a server may accept some connections late (uvicorn does, by a few hundred
    requests under load), so their first requests would be overtaken by later uses of the same
    session.  S is a multiple of the wrk thread count, so the harness's round-robin split of
    the prepared requests over threads keeps each steady-state session in one thread.
    """

    valid_for = 55  # seconds: t must be within ±60 s of the server's clock (§1.4)

    def __init__(self, base_url: str, server: str, connections: int, threads: int) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import x25519

        from shield_asgi import _native

        self.steady = max(16, 4 * connections)
        self.steady += -self.steady % threads
        self.burst = connections + 2 * threads + 2
        n = self.steady + self.burst
        secret = _secret()
        keys = [x25519.X25519PrivateKey.generate() for _ in range(n)]
        spkis = [
            k.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            for k in keys
        ]
        with ThreadPoolExecutor(max(1, len(os.sched_getaffinity(0)))) as ex:
            evs = list(ex.map(lambda spki: _evidence(secret, spki), spkis))
        u = urlsplit(base_url)
        local = threading.local()

        def establish(item) -> list:
            key, spki, (nonce, ev) = item
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                conns.append(local.conn)
            body = json.dumps(
                {
                    "type": "simulated",
                    "evidence": _b64e(ev),
                    "nonce": _b64e(nonce),
                    "public_key": _b64e(spki),
                }
            )
            local.conn.request(
                "POST",
                "/.well-known/shield/attest",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            r = local.conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError(f"session establishment: {r.status} {data[:300]!r}")
            a = json.loads(data)
            raw = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            pad = "=" * (-len(a["enc"]) % 4), "=" * (-len(a["sealed_key"]) % 4)
            skey = _native.hpke_open(
                raw,
                base64.urlsafe_b64decode(a["enc"] + pad[0]),
                base64.urlsafe_b64decode(a["sealed_key"] + pad[1]),
                b"shield-session-v1",
            )
            return [a["session"], skey, 0]  # session id, key, last t

        # 4 connections at once: the server verifies while the client parses and unseals
        # (the shield gate allows 16 verifications at once per client address)
        conns: list = []
        try:
            with ThreadPoolExecutor(4) as ex:
                self.sessions = list(ex.map(establish, zip(keys, spkis, evs)))
        finally:
            for c in conns:
                c.close()
        self.i = 0

    def requests(self, n: int):
        from shield_asgi import _native

        base = int(time.time() * 1000)
        burst, steady = self.sessions[: self.burst], self.sessions[self.burst :]
        for j in range(n):
            if j < len(burst):
                s = burst[j]
            else:
                s = steady[self.i % len(steady)]
                self.i += 1
            t = s[2] = max(s[2] + 1, base)
            mac = _native.proof_mac(s[1], t, "GET", PATH, "")
            yield {
                "method": "GET",
                "path": PATH,
                "headers": {
                    "X-Attestation-Session": s[0],
                    "X-Attestation-Proof": f"t={t}, mac={_b64e(mac)}",
                },
            }
