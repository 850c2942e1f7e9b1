"""This machine's TEE from Python (issue 16): shield_asgi._native.Provider (attest's C evidence
providers, pyshim/native_provider.c) and server_attestation.NativeEvidenceProvider, so an app
under uvicorn serves AttestationRouter with the same providers as `shield --tee`.

The device paths themselves (NSM, configfs-tsm, sev-guest, the QGS, the vTPM, …) are covered by
attest's C tests; these cover what the binding adds: the router and AttestedClient over TLS on
127.0.0.1 with NativeEvidenceProvider("simulated"), an absent TEE refused with the missing
device named, the argument checks, and evidence from many threads at once (the GIL released
around the device call) including close() while calls run."""

from __future__ import annotations

import secrets
import threading
import time

import httpx
import pytest

from conftest import scaled
from support.attest_client import b64d, b64e
from support.server_attest import (
    DATA_DIR,
    DEFAULT_PCR0,
    PKI,
    ca_ctx,
    dev_root,
    kinds_param,
    spki_sha256,
    start,
    tls_args,
)


def verify_sim(evidence: bytes, nonce: bytes, binding: bytes):
    from shield_asgi import _native

    return _native.verify(
        evidence,
        "simulated",
        at=time.time(),
        nonce=nonce,
        public_key=binding,
        trust_simulated=True,
        simulated_root=dev_root(),
    )


def native_server(fresh_server, kind):
    return start(
        fresh_server,
        kind,
        *tls_args(),
        SHIELD_TEST_CERTFILE=PKI["server.pem"],
        SHIELD_TEST_NATIVE=1,
    )


# -- AttestationRouter with NativeEvidenceProvider, over TLS -----------------------------------


@kinds_param()
def test_native_provider_serves_the_router(fresh_server, kind):
    """Under uvicorn the router calls _native.Provider itself: §4's document with evidence
    bound to our nonce and the certificate's key, and the health report."""
    from shield_asgi.server_attestation import CACHED_NONCE, binding_cbor

    srv = native_server(fresh_server, kind)
    nonce = secrets.token_bytes(32)
    with httpx.Client(
        base_url=f"https://127.0.0.1:{srv.port}", verify=ca_ctx(), timeout=scaled(30)
    ) as c:
        r = c.get("/attestation", params={"nonce": b64e(nonce)})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["tee_type"] == "simulated" and doc["nonce"] == b64e(nonce)
        cbor = b64d(doc["binding"]["cbor"])
        assert cbor == binding_cbor(spki_sha256(), None)
        res = verify_sim(b64d(doc["evidence"]), nonce, cbor)
        assert res.verified, res.message
        assert doc["measurements"] == res.measurements
        assert doc["measurements"]["PCR0"] == DEFAULT_PCR0
        # another nonce does not verify against this evidence
        assert not verify_sim(b64d(doc["evidence"]), secrets.token_bytes(32), cbor).verified

        r = c.get("/attestation/health")
        assert r.status_code == 200, r.text
        tee = r.json()["tee"]
        assert tee["type"] == "simulated" and tee["measurements"]["PCR0"] == DEFAULT_PCR0
        res = verify_sim(b64d(tee["evidence"]), CACHED_NONCE, cbor)
        assert res.verified, res.message


@kinds_param()
def test_attested_client_accepts_native_provider_evidence(fresh_server, kind):
    from shield_asgi.client import AttestedClient

    srv = native_server(fresh_server, kind)
    with AttestedClient(
        f"https://127.0.0.1:{srv.port}",
        verify=ca_ctx(),
        trust_simulated=True,
        simulated_root=dev_root(),
        tee_types=["simulated"],
        policy={"version": 1, "nitro": {"pcrs": {"0": [DEFAULT_PCR0]}}},
        timeout=scaled(30),
    ) as c:
        r = c.get("/data")
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True


# -- an absent TEE ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tee, names",
    [
        ("nitro", ["/dev/nsm"]),
        ("sev-snp", ["/sys/kernel/config/tsm/report", "/dev/sev-guest"]),
        ("tdx", ["/sys/kernel/config/tsm/report", "/dev/tdx_guest"]),
        ("sgx", ["/dev/attestation"]),
        ("azure-snp", ["/dev/tpmrm0"]),
        ("auto", ["/dev/nsm", "/dev/sev-guest", "/dev/tdx_guest", "simulated is never chosen"]),
    ],
)
def test_absent_tee_is_refused_naming_the_device(tmp_path, tee, names):
    """root= prefixes every device path: an empty directory is a machine with no TEE."""
    from shield_asgi import _native
    from shield_asgi.server_attestation import NativeEvidenceProvider, ProviderUnavailable

    with pytest.raises(RuntimeError) as e:
        _native.Provider(tee, root=tmp_path)  # os.PathLike accepted
    msg = str(e.value)
    assert msg.startswith(f"{tee}:"), msg
    for name in names:
        assert name in msg, msg
    assert str(tmp_path) in msg  # the path looked at, not only its name
    with pytest.raises(ProviderUnavailable, match=f"^{tee}:"):
        NativeEvidenceProvider(tee, root=str(tmp_path))


def test_gcp_needs_its_audience_and_maa_is_not_a_platform(tmp_path):
    from shield_asgi import _native

    with pytest.raises(RuntimeError, match="teeserver.sock"):
        _native.Provider("gcp", root=tmp_path, gcp_audience="https://svc")
    with pytest.raises(RuntimeError, match="^maa: "):
        _native.Provider("maa", root=tmp_path)


# -- the binding's own checks -------------------------------------------------------------------


def test_provider_argument_checks(tmp_path):
    from shield_asgi import _native

    with pytest.raises(ValueError, match="unknown TEE 'bogus'"):
        _native.Provider("bogus")
    with pytest.raises(ValueError, match="unknown TEE 'unknown'"):
        _native.Provider("unknown")  # not a back door to auto
    with pytest.raises(TypeError):
        _native.Provider(5)
    with pytest.raises(TypeError):
        _native.Provider("simulated", "positional-root")  # settings are keyword-only
    with pytest.raises(TypeError):
        _native.Provider("simulated", no_such_setting=1)
    with pytest.raises(ValueError, match="milliseconds"):
        _native.Provider("tdx", root=tmp_path, tdx_qgs_timeout_ms=-1)
    with pytest.raises(ValueError, match="now"):
        _native.Provider("simulated", simulated_dir=str(DATA_DIR), now=-5)
    with pytest.raises(TypeError):
        _native.Provider("simulated", simulated_dir=str(DATA_DIR), now="soon")

    p = _native.Provider("simulated", simulated_dir=DATA_DIR, now=time.time())
    assert p.tee == "simulated" and p.source == "simulated"
    assert "tee=simulated" in repr(p)
    with pytest.raises(RuntimeError, match="already open"):
        p.__init__("simulated")
    n, k = secrets.token_bytes(32), b"binding"
    D = _native.binding_digest(n, k)
    with pytest.raises(ValueError, match="64 bytes"):
        p.evidence(D[:63], n, k)
    with pytest.raises(ValueError, match="1024"):
        p.evidence(D, bytes(1025), k)
    with pytest.raises(ValueError, match="1024"):
        p.evidence(D, n, bytes(1025))
    with pytest.raises(ValueError, match="at is seconds"):
        p.evidence(D, n, k, at=0)
    # simulated binds n and k in the document itself: D must be theirs (§1.2)
    with pytest.raises(RuntimeError, match="binding digest"):
        p.evidence(bytes(64), n, k)
    with pytest.raises(RuntimeError, match="nonce is required"):
        p.evidence(D)
    ev = p.evidence(D, n, k, at=time.time())
    assert verify_sim(ev, n, k).verified
    # an empty key is a key of length 0, as binding_digest computes it
    D0 = _native.binding_digest(n, b"")
    assert verify_sim(p.evidence(D0, n, b""), n, b"").verified

    p.close()
    p.close()  # idempotent
    assert "closed" in repr(p)
    with pytest.raises(RuntimeError, match="closed"):
        p.evidence(D, n, k)
    with pytest.raises(RuntimeError, match="closed"):
        p.tee
    # Python code run while the arguments are read (here `at`'s __float__) may close the
    # provider: the call then refuses instead of using the freed provider
    r = _native.Provider("simulated", simulated_dir=DATA_DIR)

    class ClosesIt:
        def __float__(self):
            r.close()
            return time.time()

    with pytest.raises(RuntimeError, match="closed"):
        r.evidence(D, n, k, at=ClosesIt())
    with _native.Provider("simulated", simulated_dir=DATA_DIR) as q:
        assert q.tee == "simulated"
    with pytest.raises(RuntimeError, match="closed"):
        q.source


def test_native_evidence_provider_interface():
    from shield_asgi.server_attestation import (
        NativeEvidenceProvider,
        ProviderUnavailable,
        ServerAttestation,
        attestation_document,
        binding_cbor,
    )

    with pytest.raises(TypeError, match="TEE type"):
        NativeEvidenceProvider(None)
    prov = NativeEvidenceProvider("simulated", simulated_dir=DATA_DIR)
    assert prov.tee_type == "simulated" and prov.source == "simulated"
    assert prov.verify_kwargs()["trust_simulated"] is True
    assert prov.verify_kwargs()["simulated_root"] == dev_root()
    ServerAttestation(prov).close()  # it is an EvidenceProvider
    nonce = secrets.token_bytes(32)
    doc = attestation_document(prov, nonce, tls_spki=b"spki", now=time.time())
    assert doc["tee_type"] == "simulated"
    assert doc["measurements"]["PCR0"] == DEFAULT_PCR0
    cbor = binding_cbor(__import__("hashlib").sha256(b"spki").digest(), None)
    assert verify_sim(b64d(doc["evidence"]), nonce, cbor).verified
    prov.close()
    with pytest.raises(ProviderUnavailable, match="closed"):
        prov.generate(nonce, cbor, at=time.time())


# -- threads ------------------------------------------------------------------------------------


def test_evidence_from_many_threads_at_once():
    """8 threads generate at once on one provider (attest allows it; the GIL is released
    around each call): every piece of evidence verifies with its own nonce."""
    from shield_asgi import _native

    p = _native.Provider("simulated", simulated_dir=DATA_DIR)
    results, errors = [], []
    start_all = threading.Barrier(8)

    def work():
        try:
            start_all.wait(timeout=scaled(30))
            for _ in range(5):
                n, k = secrets.token_bytes(32), secrets.token_bytes(16)
                results.append((p.evidence(_native.binding_digest(n, k), n, k), n, k))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(120))
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(results) == 40
    for ev, n, k in results:
        r = verify_sim(ev, n, k)
        assert r.verified, r.message
    p.close()


def test_close_while_threads_generate():
    """close() during calls: no call runs on a freed provider (the last one frees it); every
    call either returns evidence that verifies or raises 'closed'."""
    from shield_asgi import _native

    p = _native.Provider("simulated", simulated_dir=DATA_DIR)
    outcomes, errors = [], []
    go = threading.Event()

    def work():
        try:
            go.wait(timeout=scaled(30))
            for _ in range(20):
                n, k = secrets.token_bytes(32), b"k"
                try:
                    outcomes.append(("ok", p.evidence(_native.binding_digest(n, k), n, k), n))
                except RuntimeError as e:
                    outcomes.append(("err", str(e), n))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    go.set()
    while not outcomes and any(t.is_alive() for t in threads):
        time.sleep(0.001)  # a poll for the first result, not a timing assumption
    p.close()
    for t in threads:
        t.join(scaled(120))
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(outcomes) == 160
    assert any(o[0] == "ok" for o in outcomes)
    for kind, v, n in outcomes:
        if kind == "ok":
            assert verify_sim(v, n, b"k").verified
        else:
            assert v == "Provider is closed"
    with pytest.raises(RuntimeError, match="closed"):
        p.evidence(bytes(64), bytes(32))
