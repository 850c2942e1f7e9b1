"""AttestedClient / AsyncAttestedClient (shield_asgi.client, docs/protocol.md §4) against real
servers of AttestationRouter over TLS on 127.0.0.1 (uvicorn and the shield binary): the client
attests, verifies natively, checks the TLS binding of the very connection and pins it before
it sends; it refuses a measurement its policy does not allow, a certificate the evidence does
not bind, a certificate that changes mid-session, replayed evidence, simulated evidence it was
not told to trust, and a rate-limited server; over plain HTTP it needs allow_plain or an
attested HPKE key config.  With its own evidence it and a shield server attest each other, in
each of §1.4's modes: header, session (proofs, Content-Digest, re-establishment on expiry and on
an unknown session, a tampered proof refused) and mutual TLS (the connection is the session; a
new connection is attested again)."""

from __future__ import annotations

import asyncio
import json
import secrets

import httpx
import pytest

from conftest import IS_UVICORN, ServerProcess, scaled
from support.server_attest import (
    APP,
    DATA_DIR,
    DEFAULT_PCR0,
    OTHER_PCR0,
    PKI,
    REPLAY_APP,
    b64e_nonce,
    ca_ctx,
    dev_root,
    env,
    kinds_param,
    start,
    tls_args,
)

POLICY = {"version": 1, "nitro": {"pcrs": {"0": [DEFAULT_PCR0]}}}


def attested(srv, cls=None, **kw):
    from shield_asgi.client import AttestedClient

    opts = dict(
        verify=ca_ctx(),
        trust_simulated=True,
        simulated_root=dev_root(),
        tee_types=["simulated"],
        policy=POLICY,
        timeout=scaled(30),
    )
    opts.update(kw)
    return (cls or AttestedClient)(f"https://127.0.0.1:{srv.port}", **opts)


class Paths:
    """A request hook recording the paths the client sent, in order."""

    def __init__(self):
        self.sent = []

    def hooks(self):
        return {"request": [lambda req: self.sent.append(req.url.path)]}


@kinds_param()
def test_attests_then_sends(fresh_server, kind):
    srv = start(fresh_server, kind, *tls_args(), SHIELD_TEST_CERTFILE=PKI["server.pem"])
    paths = Paths()
    with attested(
        srv, expected_measurements={"PCR0": DEFAULT_PCR0}, event_hooks=paths.hooks()
    ) as c:
        r = c.get("/data")
        assert r.status_code == 200 and r.json()["ok"] is True
        r = c.post("/echo", content=b"secret")
        assert r.json() == {"body": "secret"}
        assert paths.sent == ["/.well-known/shield/attestation", "/data", "/echo"]
        (pin,) = c.attestations.values()
        assert pin.origin == ("https", "127.0.0.1", srv.port)
        assert pin.result.verified and pin.result.tee_type == "simulated"
        assert pin.result.measurements["PCR0"] == DEFAULT_PCR0
        import ssl

        assert pin.certificate == ssl.PEM_cert_to_DER_cert(PKI["server.pem"].read_text())
    # the router's own path, mounted at the root
    with attested(srv, attestation_path="/attestation", event_hooks=(p := Paths()).hooks()) as c:
        assert c.get("/data").status_code == 200
        assert p.sent == ["/attestation", "/data"]


@kinds_param()
def test_refuses_a_measurement_the_policy_does_not_allow(fresh_server, kind):
    from shield_asgi.client import ServerAttestationError

    srv = start(
        fresh_server,
        kind,
        *tls_args(),
        SHIELD_TEST_CERTFILE=PKI["server.pem"],
        SHIELD_TEST_PCR0=OTHER_PCR0,
    )
    for kw in ({}, {"policy": None, "expected_measurements": {"PCR0": DEFAULT_PCR0}}):
        paths = Paths()
        with attested(srv, event_hooks=paths.hooks(), **kw) as c:
            with pytest.raises(ServerAttestationError) as e:
                c.get("/data")
            assert e.value.reason == "measurement_mismatch", e.value
            assert e.value.error == "attestation_policy"
            assert paths.sent == ["/.well-known/shield/attestation"]  # /data never sent
    # the server's real measurement is accepted
    ok = {"version": 1, "nitro": {"pcrs": {"0": [OTHER_PCR0]}}}
    with attested(srv, policy=ok) as c:
        assert c.get("/data").status_code == 200


@kinds_param()
def test_refuses_a_certificate_the_evidence_does_not_bind(fresh_server, kind):
    """The server presents server2's certificate; its evidence binds server's key."""
    from shield_asgi.client import ServerAttestationError

    srv = start(fresh_server, kind, *tls_args("server2"), SHIELD_TEST_CERTFILE=PKI["server.pem"])
    paths = Paths()
    with attested(srv, event_hooks=paths.hooks()) as c:
        with pytest.raises(ServerAttestationError) as e:
            c.get("/data")
        assert e.value.reason == "binding_mismatch" and "certificate" in e.value.message
        assert paths.sent == ["/.well-known/shield/attestation"]
        assert c.attestations == {}


def _hits(srv) -> int:
    with httpx.Client(verify=ca_ctx(), timeout=scaled(30)) as h:
        return h.get(f"https://127.0.0.1:{srv.port}/hits").json()["data"]


@kinds_param()
@pytest.mark.parametrize("flavour", ["sync", "async", "own-transport"])
def test_refuses_a_certificate_that_changes_mid_session(kind, flavour):
    """Attested and pinned on server's certificate; then another server (valid evidence for its
    own certificate, server2) takes the port.  The client's own SSL context refuses the new
    connection at its handshake, so the request never reaches the other server (sync: ssl
    sockets, async: anyio's SSL objects); with a transport of the caller's own, the response is
    refused (the request went out)."""
    from shield_asgi.client import AsyncAttestedClient, ServerAttestationError

    a = ServerProcess(APP, *tls_args(), env=env(SHIELD_TEST_CERTFILE=PKI["server.pem"]), kind=kind)
    b = None
    kw = {}
    if flavour == "own-transport":
        kw["transport"] = httpx.HTTPTransport(verify=ca_ctx())

    async def get(c, path):
        if flavour == "async":
            return await c.get(path)
        return c.get(path)

    async def go():
        nonlocal b
        c = attested(a, AsyncAttestedClient if flavour == "async" else None, **kw)
        try:
            assert (await get(c, "/data")).status_code == 200
            a.stop()
            b = ServerProcess(
                APP,
                *tls_args("server2"),
                env=env(SHIELD_TEST_CERTFILE=PKI["server2.pem"]),
                kind=kind,
                port=a.port,
            )
            b.start()
            # server2 proves itself to a fresh client...
            with attested(b) as other:
                assert other.get("/data").status_code == 200
            assert _hits(b) == 1
            # ...but this session pinned the first certificate
            with pytest.raises(ServerAttestationError) as e:
                await get(c, "/data")
            assert e.value.reason == "binding_mismatch"
            if flavour == "own-transport":
                assert "changed" in e.value.message
                assert _hits(b) == 2  # only the response could be refused
            else:
                assert "handshake" in e.value.message
                assert _hits(b) == 1  # refused before sending
        finally:
            if flavour == "async":
                await c.aclose()
            else:
                c.close()

    try:
        a.start()
        asyncio.run(go())
    finally:
        for s in (a, b):
            if s is not None:
                s.stop()
                s.cleanup()


@pytest.mark.parametrize("echo", [False, True], ids=["as-recorded", "nonce-rewritten"])
def test_refuses_replayed_evidence(fresh_server, tmp_path, echo):
    """A man in the middle with the server's certificate answers with a document recorded for
    an earlier nonce (as is, or with the client's nonce written in)."""
    from shield_asgi.client import ServerAttestationError

    real = start(fresh_server, "uvicorn", *tls_args(), SHIELD_TEST_CERTFILE=PKI["server.pem"])
    with httpx.Client(verify=ca_ctx(), timeout=scaled(30)) as h:
        doc = h.get(
            f"https://127.0.0.1:{real.port}/.well-known/shield/attestation",
            params={"nonce": b64e_nonce(secrets.token_bytes(32))},
        ).json()
    recorded = tmp_path / "recorded.json"
    recorded.write_text(json.dumps(doc))
    mitm = start(
        fresh_server,
        "uvicorn",
        *tls_args(),
        app=REPLAY_APP,
        SHIELD_TEST_REPLAY=recorded,
        SHIELD_TEST_REPLAY_ECHO=int(echo),
    )
    paths = Paths()
    with attested(mitm, event_hooks=paths.hooks()) as c:
        with pytest.raises(ServerAttestationError) as e:
            c.get("/data")
        assert e.value.reason == "binding_mismatch", e.value
        assert paths.sent == ["/.well-known/shield/attestation"]


def test_refuses_simulated_evidence_it_was_not_told_to_trust(fresh_server, tmp_path):
    from shield_asgi import _native
    from shield_asgi.client import AttestedClient, ServerAttestationError

    srv = start(fresh_server, "uvicorn", *tls_args(), SHIELD_TEST_CERTFILE=PKI["server.pem"])
    url = f"https://127.0.0.1:{srv.port}"
    with AttestedClient(url, verify=ca_ctx(), timeout=scaled(30)) as c:
        with pytest.raises(ServerAttestationError) as e:
            c.get("/data")
        assert e.value.reason == "root_untrusted"
    with pytest.raises(ValueError, match="simulated_root"):
        AttestedClient(url, verify=ca_ctx(), trust_simulated=True)
    with pytest.raises(ValueError, match="trust_simulated"):
        AttestedClient(url, verify=ca_ctx(), tee_types=["simulated"])
    other_root = _native.simulated_root(str(tmp_path / "another-dev-root"))
    with attested(srv, simulated_root=other_root) as c:
        with pytest.raises(ServerAttestationError) as e:
            c.get("/data")
        assert e.value.reason in ("root_untrusted", "chain_invalid"), e.value
    with attested(srv, tee_types=["nitro"], trust_simulated=True) as c:
        with pytest.raises(ServerAttestationError) as e:
            c.get("/data")
        assert e.value.reason == "policy_denied"


def test_rate_limited_server_raises_with_retry_after(fresh_server):
    from shield_asgi.client import ServerAttestationError

    srv = start(
        fresh_server,
        "uvicorn",
        *tls_args(),
        SHIELD_TEST_CERTFILE=PKI["server.pem"],
        SHIELD_TEST_BURST=1,
        SHIELD_TEST_RATE=0.001,
    )
    with attested(srv) as c:
        assert c.get("/data").status_code == 200
    with attested(srv) as c:  # a new session needs fresh evidence: the bucket is empty
        with pytest.raises(ServerAttestationError) as e:
            c.get("/data")
        assert e.value.reason == "overloaded" and e.value.retry_after >= 1


@kinds_param()
def test_async_client(fresh_server, kind):
    from shield_asgi.client import AsyncAttestedClient, ServerAttestationError

    srv = start(fresh_server, kind, *tls_args(), SHIELD_TEST_CERTFILE=PKI["server.pem"])
    bad = start(
        fresh_server,
        kind,
        *tls_args(),
        SHIELD_TEST_CERTFILE=PKI["server.pem"],
        SHIELD_TEST_PCR0=OTHER_PCR0,
    )

    async def go():
        async with attested(srv, AsyncAttestedClient) as c:
            r1, r2 = await asyncio.gather(c.get("/data"), c.get("/data"))
            assert r1.status_code == r2.status_code == 200
            assert len(c.attestations) == 1
        async with attested(bad, AsyncAttestedClient) as c:
            with pytest.raises(ServerAttestationError) as e:
                await c.get("/data")
            assert e.value.reason == "measurement_mismatch"

    asyncio.run(go())


def test_plain_http_needs_allow_plain_or_an_hpke_key(fresh_server):
    from shield_asgi.client import AttestedClient, ServerAttestationError

    srv = start(fresh_server, "uvicorn")
    kw = dict(trust_simulated=True, simulated_root=dev_root(), timeout=scaled(30))
    with pytest.raises(ServerAttestationError, match="allow_plain"):
        AttestedClient(srv.url, **kw)
    with AttestedClient(srv.url, allow_plain=True, **kw) as c:
        assert c.get("/data").status_code == 200
        (pin,) = c.attestations.values()
        assert pin.certificate is None and pin.tls_spki_sha256 is None
    # the server binds no HPKE key: a client expecting one refuses it
    with AttestedClient(srv.url, hpke_key_config=b"\x00\x00\x20", **kw) as c:
        with pytest.raises(ServerAttestationError) as e:
            c.get("/data")
        assert e.value.reason == "binding_mismatch"


@pytest.mark.shield_only
@pytest.mark.skipif(IS_UVICORN, reason="the native gate verifies the client: shield only")
def test_mutual_attestation_with_a_shield_server(fresh_server):
    """The shield server verifies the client's header-mode evidence natively (--attest-types,
    --attest-required) while the client verifies the server's through AttestationRouter."""
    from shield_asgi.client import MutualAttestationClient
    from shield_asgi.server_attestation import SimulatedEvidenceProvider

    srv = start(
        fresh_server,
        "shield",
        *tls_args(),
        "--attest-types",
        "simulated",
        "--trust-simulated",
        "--attest-required",
        "--attest-exclude",
        "/.well-known/shield/attestation",
        SHIELD_TEST_CERTFILE=PKI["server.pem"],
    )

    async def go():
        # without its own evidence the client is refused by the server's gate (§3 401)
        async with attested(srv, MutualAttestationClient) as c:
            r = await c.get("/data")
            assert r.status_code == 401 and r.json()["reason"] == "missing"
        own = SimulatedEvidenceProvider(data_dir=str(DATA_DIR))
        async with attested(srv, MutualAttestationClient, provider=own) as c:
            for _ in range(2):  # a fresh nonce and fresh evidence per request
                r = await c.get("/data")
                assert r.status_code == 200, r.text
                assert r.json() == {"ok": True, "client_tee": "simulated", "client_verified": True}

    asyncio.run(go())


# ---- the client's own evidence in session and mutual-TLS mode (docs/protocol.md §1.4) -------


def _gate(fresh_server, *extra, **env_extra):
    """A shield server verifying client evidence natively (session and mTLS modes are the
    gate's) while AttestationRouter serves the server's own §4 attestation."""
    return start(
        fresh_server,
        "shield",
        *tls_args(),
        "--attest-types",
        "simulated",
        "--trust-simulated",
        "--attest-required",
        "--attest-exclude",
        "/.well-known/shield/attestation",
        *extra,
        SHIELD_TEST_CERTFILE=PKI["server.pem"],
        **env_extra,
    )


def _own():
    from shield_asgi.server_attestation import SimulatedEvidenceProvider

    return SimulatedEvidenceProvider(data_dir=str(DATA_DIR))


class Tamper:
    """A request hook that flips one byte of the session proof's MAC (after the client signed)."""

    def __init__(self):
        self.on = False

    def hooks(self):
        def hook(req):
            p = req.headers.get("x-attestation-proof")
            if self.on and p:
                head, mac = p.rsplit("mac=", 1)
                req.headers["x-attestation-proof"] = (
                    head + "mac=" + ("A" if mac[0] != "A" else "B") + mac[1:]
                )

        return {"request": [hook]}


@pytest.mark.shield_only
@pytest.mark.skipif(IS_UVICORN, reason="the native gate verifies the client: shield only")
def test_session_mode_with_a_shield_server(fresh_server):
    """One establishment (an X25519 key, the sealed session key opened with cryptography's
    HPKE), then proofs: the app sees mode "session"; a body goes with its Content-Digest; a
    tampered proof is refused by the server (its 401 is the caller's); a session the server no
    longer knows and one past its expiry are established again."""
    srv = _gate(fresh_server)
    tamper = Tamper()
    paths = Paths()
    hooks = {"request": paths.hooks()["request"] + tamper.hooks()["request"]}
    with attested(srv, provider=_own(), client_attestation="session", event_hooks=hooks) as c:
        ids = set()
        for i in range(3):
            r = c.get("/whoami", params={"i": i})
            assert r.status_code == 200, r.text
            a = r.json()
            assert (a["mode"], a["tee_type"], a["verified"]) == ("session", "simulated", True)
            ids.add(a["session"])
        assert len(ids) == 1 and None not in ids
        r = c.post("/whoami", content=b"a body with its digest")
        assert r.status_code == 200, r.text
        assert r.json()["body"] == "a body with its digest"
        assert r.request.headers["content-digest"].startswith("sha-256=:")
        # one establishment: nonce + attest once, then only the app's requests
        assert paths.sent[:3] == [
            "/.well-known/shield/attestation",
            "/.well-known/shield/nonce",
            "/.well-known/shield/attest",
        ]
        assert paths.sent[3:] == ["/whoami"] * 4
        # a tampered proof: the server refuses it (the client resends once with a new proof,
        # tampered again), the app never sees it
        tamper.on = True
        r = c.get("/whoami")
        assert r.status_code == 401 and r.json()["reason"] == "proof_invalid"
        tamper.on = False
        assert c.get("/whoami").json()["session"] in ids
        # the server does not know the session (restarted, or another deployment): 401
        # session_unknown, and the client establishes a new one and resends
        (origin,) = c._own.sessions
        c._own.sessions[origin].id = "bogus-session"
        r = c.get("/whoami")
        assert r.status_code == 200, r.text
        new = r.json()["session"]
        assert new not in ids and new != "bogus-session"
        # expiry: the client renews before the server's expires_in ends
        c._own.sessions[origin].renew_at = 0
        del paths.sent[:]
        r = c.get("/whoami")
        assert r.status_code == 200 and r.json()["session"] not in ids | {new}
        assert paths.sent == [
            "/.well-known/shield/nonce",
            "/.well-known/shield/attest",
            "/whoami",
        ]


@pytest.mark.shield_only
@pytest.mark.skipif(IS_UVICORN, reason="the native gate verifies the client: shield only")
def test_session_mode_async_and_rsa_key(fresh_server):
    """The async client, concurrent requests of one session (one establishment; t strictly
    increasing), and an RSA client key (RSA-OAEP-256)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from shield_asgi.client import MutualAttestationClient

    srv = _gate(fresh_server)
    sent = []

    async def record(request):
        sent.append(request.url.path)

    async def go():
        async with attested(
            srv,
            MutualAttestationClient,
            provider=_own(),
            client_attestation="session",
            event_hooks={"request": [record]},
        ) as c:
            rs = await asyncio.gather(*(c.get("/whoami") for _ in range(4)))
            assert [r.status_code for r in rs] == [200] * 4, [r.text for r in rs]
            assert {r.json()["mode"] for r in rs} == {"session"}
            assert len({r.json()["session"] for r in rs}) == 1
            assert sent.count("/.well-known/shield/attest") == 1
            r = await c.post("/whoami", content=b"async body")
            assert r.json()["body"] == "async body"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        async with attested(
            srv,
            MutualAttestationClient,
            provider=_own(),
            client_attestation="session",
            client_key=key,
        ) as c:
            r = await c.get("/whoami")
            assert r.status_code == 200 and r.json()["mode"] == "session", r.text

    asyncio.run(go())


@pytest.mark.shield_only
@pytest.mark.skipif(IS_UVICORN, reason="the native gate verifies the client: shield only")
def test_session_mode_refused_establishment(fresh_server):
    """Evidence the server does not accept (a debug enclave under a policy that refuses it)
    raises ClientAttestationError with the server's reason; nothing else is sent."""
    import hashlib

    from shield_asgi.client import ClientAttestationError
    from shield_asgi.server_attestation import SimulatedEvidenceProvider

    srv = _gate(fresh_server)
    bad = SimulatedEvidenceProvider(
        data_dir=str(DATA_DIR), pcrs={0: hashlib.sha384(b"x").digest()}, debug=True
    )
    paths = Paths()
    with attested(srv, provider=bad, client_attestation="session", event_hooks=paths.hooks()) as c:
        with pytest.raises(ClientAttestationError) as e:
            c.get("/whoami")
        assert e.value.reason == "debug_not_allowed", e.value
        assert "/whoami" not in paths.sent


def test_client_attestation_arguments():
    from cryptography.hazmat.primitives.asymmetric import ec

    from shield_asgi.client import AttestedClient

    kw = dict(trust_simulated=True, simulated_root=b"x", verify=ca_ctx())
    with pytest.raises(ValueError, match="client_attestation must be one of"):
        AttestedClient("https://127.0.0.1:1", provider=_own(), client_attestation="cookie", **kw)
    with pytest.raises(ValueError, match="needs provider"):
        AttestedClient("https://127.0.0.1:1", client_attestation="session", **kw)
    with pytest.raises(TypeError, match="client_key"):
        AttestedClient(
            "https://127.0.0.1:1",
            provider=_own(),
            client_attestation="session",
            client_key=ec.generate_private_key(ec.SECP384R1()),
            **kw,
        )
    with pytest.raises(ValueError, match="client_cert"):
        AttestedClient("https://127.0.0.1:1", provider=_own(), client_cert=PKI["client.pem"], **kw)


@pytest.mark.shield_only
@pytest.mark.skipif(IS_UVICORN, reason="the native gate verifies the client: shield only")
def test_two_servers_attest_each_other_over_mutual_tls(fresh_server):
    """Mutual TLS (§1.4 mode 3): the client's certificate (signed by the CA the server trusts)
    is k; it POSTs evidence bound to that certificate's key on the connection, then plain
    requests on that connection are attested (the app sees mode "mtls").  A new connection
    (the server closed the old one) is attested again before it is used."""
    from shield_asgi.client import AsyncAttestedClient

    srv = _gate(fresh_server, "--ssl-ca-certs", str(PKI["ca.pem"]), "--ssl-cert-reqs", "optional")
    paths = Paths()
    cert = (str(PKI["client.pem"]), str(PKI["client.key"]))
    with attested(
        srv,
        provider=_own(),
        client_attestation="mtls",
        client_cert=cert,
        event_hooks=paths.hooks(),
    ) as c:
        for _ in range(3):
            r = c.get("/whoami")
            assert r.status_code == 200, r.text
            a = r.json()
            assert (a["mode"], a["tee_type"], a["session"]) == ("mtls", "simulated", None)
        assert (
            paths.sent
            == [
                "/.well-known/shield/attestation",
                "/.well-known/shield/nonce",
                "/.well-known/shield/attest",
            ]
            + ["/whoami"] * 3
        )
        first = r.extensions["network_stream"]
        assert "x-attestation-session" not in r.request.headers
        # the connection goes away (as when the server closes an idle one): the next request
        # goes over a new connection, attested before it is used
        c._transport._pool.close()
        del paths.sent[:]
        r = c.post("/whoami", content=b"on a new connection")
        assert r.status_code == 200 and r.json()["mode"] == "mtls", r.text
        assert r.json()["body"] == "on a new connection"
        assert r.extensions["network_stream"] is not first
        assert paths.sent == [
            "/.well-known/shield/nonce",
            "/.well-known/shield/attest",
            "/whoami",
        ]

    async def go():
        async with attested(
            srv,
            AsyncAttestedClient,
            provider=_own(),
            client_attestation="mtls",
            client_cert=cert,
        ) as c:
            rs = await asyncio.gather(*(c.get("/whoami") for _ in range(3)))
            assert {r.json()["mode"] for r in rs} == {"mtls"}, [r.text for r in rs]

    asyncio.run(go())


@pytest.mark.shield_only
@pytest.mark.skipif(IS_UVICORN, reason="the native gate verifies the client: shield only")
def test_mutual_tls_with_a_certificate_the_server_does_not_trust(fresh_server):
    """Without client_cert the client makes a P-256 key and a self-signed certificate: a
    server that does not trust it refuses the handshake (nothing is sent)."""
    from shield_asgi.server_attestation import spki_of_certificate

    srv = _gate(fresh_server, "--ssl-ca-certs", str(PKI["ca.pem"]), "--ssl-cert-reqs", "optional")
    with attested(srv, provider=_own(), client_attestation="mtls") as c:
        assert c._own.spki != spki_of_certificate(PKI["client.pem"].read_bytes())
        with pytest.raises(httpx.TransportError, match="unknown ca"):
            c.get("/whoami")


def test_own_evidence_encoding():
    """§1.4/§1.5: a JWT (gcp, maa) goes as its text, binary evidence as base64url — in the
    header and in the establishment body alike."""
    from shield_asgi.client import _evidence_text

    assert _evidence_text("gcp", b"eyJh.eyJi.c2ln") == "eyJh.eyJi.c2ln"
    assert _evidence_text("azure_maa", b"eyJh.eyJi.c2ln") == "eyJh.eyJi.c2ln"
    assert _evidence_text("simulated", b"\xd2\x84\xff") == "0oT_"
    assert _evidence_text("nitro", "already text") == "already text"
