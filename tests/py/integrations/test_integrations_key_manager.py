"""Key release (docs/protocol.md §6): TEEKeyManager and KeyReleasePolicy from
shield_asgi.integrations.confidential.base, with real simulated-TEE evidence (the per-run dev
root of support.attest_env) verified natively.  The derivation is recomputed here with hashlib
and hmac, and released keys are unsealed with `cryptography`'s own HPKE and RSA-OAEP, so a
mistake shared with the code under test cannot hide."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import shutil
import subprocess
import textwrap

import pytest
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519

from conftest import IS_UVICORN, REPO
from support.attest_client import b64d
from support.attest_env import DEFAULT_PCR0, ENV, SECRET  # the per-run dev root and secret

# Pure Python against the installed package: the same in either server mode.
pytestmark = pytest.mark.skipif(IS_UVICORN, reason="no server involved: run once, in shield mode")

PASSWORD = "correct horse battery staple"
SERVICE = "api.example.com"


def spki(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def expected_key(password: str, service: str, key_id: str) -> bytes:
    """§6 written out with hashlib/hmac only: PBKDF2 then HKDF (RFC 5869, empty salt)."""
    salt = hashlib.sha256(b"shield/tee-key-manager" + service.encode()).digest()
    master = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 600_000, 32)
    prk = hmac.new(b"\x00" * 32, master, hashlib.sha256).digest()
    info = b"shield/key-release/v1\x00" + key_id.encode()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()  # 32 bytes: one block


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def manager(policy=None, clock=None, provider="simulated", **kw):
    from shield_asgi.integrations.confidential.base import TEEKeyManager

    kw.setdefault("nonce_secret", SECRET)
    kw.setdefault("trust_simulated", True)
    if clock is not None:
        kw["clock"] = clock
    return TEEKeyManager(PASSWORD, SERVICE, provider, policy, **kw)


def evidence(km, public_key: bytes = b"", *, nonce=None, at=None, pcrs=None) -> tuple[bytes, bytes]:
    """(nonce, simulated evidence bound to nonce and public_key) made by the simulated TEE."""
    from shield_asgi import _native

    n = km.new_nonce() if nonce is None else nonce
    ev = _native.simulated_evidence(n, public_key, at=km.clock() if at is None else at, pcrs=pcrs)
    return n, ev


def denied(coro) -> tuple[str, str]:
    from shield_asgi.integrations.confidential.base import AttestationError

    with pytest.raises(AttestationError) as ei:
        asyncio.run(coro)
    return ei.value.reason, ei.value.message


@pytest.fixture(scope="module")
def km():
    """One manager for the module (each construction costs the 600 000 PBKDF2 iterations)."""
    return manager()


def test_derivation_vector_and_two_instances_agree(km):
    n, ev = evidence(km)
    key = asyncio.run(km.get_key(ev, "default", nonce=n))
    assert key == expected_key(PASSWORD, SERVICE, "default")
    n, ev = evidence(km)
    assert asyncio.run(km.get_key(ev, "db", nonce=n)) == expected_key(PASSWORD, SERVICE, "db")
    other = manager(nonce_secret=SECRET)
    n, ev = evidence(other)
    assert asyncio.run(other.get_key(ev, nonce=n)) == key
    # another service, another key
    from shield_asgi.integrations.confidential.base import TEEKeyManager

    third = TEEKeyManager(PASSWORD, "other.example.com", "simulated", trust_simulated=True)
    n, ev = evidence(third)
    assert asyncio.run(third.get_key(ev, nonce=n)) != key


def test_two_replicas_agree(km):
    """A second process (a replica sharing the state secret) verifies evidence bound to a
    nonce this process issued, and derives the same key."""
    n, ev = evidence(km)
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from shield_asgi.integrations.confidential import TEEKeyManager
        n, ev = (bytes.fromhex(x) for x in sys.stdin.read().split())
        km = TEEKeyManager({PASSWORD!r}, {SERVICE!r}, "simulated",
                           nonce_secret={SECRET!r}, trust_simulated=True)
        print(asyncio.run(km.get_key(ev, "default", nonce=n)).hex())
        """
    )
    out = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-c", code],
        input=f"{n.hex()} {ev.hex()}",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **ENV},
    )
    assert out.returncode == 0, out.stderr
    assert bytes.fromhex(out.stdout.strip()) == expected_key(PASSWORD, SERVICE, "default")
    n2, ev2 = evidence(km)
    assert asyncio.run(km.get_key(ev2, nonce=n2)).hex() == out.stdout.strip()


def test_denials_have_the_right_reason(km):
    from shield_asgi import _native
    from shield_asgi.integrations.confidential.base import KeyReleasePolicy, TEEType

    km.set_policy(KeyReleasePolicy(required_measurements={"PCR0": "00" * 48}))
    try:
        n, ev = evidence(km)
        assert denied(km.get_key(ev, nonce=n))[0] == "measurement_mismatch"
        # allowed as one of a list
        km.set_policy(KeyReleasePolicy(required_measurements={"PCR0": ["00" * 48, DEFAULT_PCR0]}))
        assert len(asyncio.run(km.get_key(ev, nonce=n))) == 32  # same evidence, now granted
        km.set_policy(KeyReleasePolicy(required_tee_types=[TEEType.NITRO]))
        n, ev = evidence(km)
        assert denied(km.get_key(ev, nonce=n))[0] == "policy_denied"
        km.set_policy(KeyReleasePolicy(required_tee_types=["aws_nitro", "simulated"]))
        assert len(asyncio.run(km.get_key(ev, nonce=n))) == 32
        km.set_policy(KeyReleasePolicy(allowed_claims={"module_id": ["i-other"]}))
        n, ev = evidence(km)
        assert denied(km.get_key(ev, nonce=n))[0] == "policy_denied"
    finally:
        km.set_policy(KeyReleasePolicy())

    # too old: a nonce older than the policy's max age, evidence older than it
    clock = Clock()
    old = manager(KeyReleasePolicy(max_age_seconds=30), clock=clock)
    n = _native.nonce_issue(old.secret, clock.now - 40)
    _, ev = evidence(old, nonce=n, at=clock.now - 40)
    assert denied(old.get_key(ev, nonce=n))[0] == "nonce_expired"
    n, ev = evidence(old, at=clock.now - 40)  # fresh nonce, evidence dated 40 s ago
    assert denied(old.get_key(ev, nonce=n))[0] == "expired"
    # the nonce's own 60 s
    n, ev = evidence(km)
    clock.now += 61
    assert denied(old.get_key(ev, nonce=n))[0] == "nonce_expired"

    # replay: the nonce is single use, whatever the evidence
    n, ev = evidence(km)
    asyncio.run(km.get_key(ev, nonce=n))
    assert denied(km.get_key(ev, nonce=n))[0] == "nonce_replayed"
    _, ev2 = evidence(km, nonce=n)
    assert denied(km.get_key(ev2, "other", nonce=n))[0] == "nonce_replayed"

    # not binding k: evidence bound to no key, presented with one (and the reverse)
    sk = x25519.X25519PrivateKey.generate()
    n, ev = evidence(km)
    assert denied(km.release_key(ev, "default", nonce=n, public_key=spki(sk)))[0] == (
        "binding_mismatch"
    )
    n, ev = evidence(km, spki(sk))
    assert denied(km.get_key(ev, nonce=n))[0] == "binding_mismatch"
    other = x25519.X25519PrivateKey.generate()
    assert denied(km.release_key(ev, "default", nonce=n, public_key=spki(other)))[0] == (
        "binding_mismatch"
    )

    # garbage, a nonce we did not issue, no nonce, untrusted simulated evidence
    n = km.new_nonce()
    assert denied(km.get_key(b"\xa0garbage", nonce=n))[0] == "malformed"
    bogus = bytes([1]) + bytes(31)
    _, ev = evidence(km, nonce=bogus)
    assert denied(km.get_key(ev, nonce=bogus))[0] == "nonce_invalid"
    assert denied(km.get_key(ev))[0] == "nonce_invalid"
    strict = manager(provider="nitro", trust_simulated=False)  # a Nitro deployment
    n, ev = evidence(strict)
    assert denied(strict.get_key(ev, nonce=n))[0] == "root_untrusted"


def test_unknown_key_id_is_denied_like_an_unauthorized_one():
    from shield_asgi.integrations.confidential.base import KeyReleasePolicy, TEEType

    km = manager(key_ids=["default", "db"])
    n, ev = evidence(km)
    unknown = denied(km.get_key(ev, "no-such-key", nonce=n))
    km.set_policy(KeyReleasePolicy(required_tee_types=[TEEType.NITRO]))
    n2, ev2 = evidence(km)
    unauthorized = denied(km.get_key(ev2, "db", nonce=n2))
    assert (
        unknown
        == unauthorized
        == (
            "policy_denied",
            "the attestation does not satisfy the key release policy",
        )
    )
    # an unattested caller hears the same thing for a key that exists and one that does not
    km.set_policy(KeyReleasePolicy(required_measurements={"PCR0": "00" * 48}))
    n3, ev3 = evidence(km)
    assert denied(km.get_key(ev3, "db", nonce=n3)) == denied(
        km.get_key(ev3, "no-such-key", nonce=n3)
    )
    # the nonce was not spent by the denials: once allowed, the known key is released
    km.set_policy(KeyReleasePolicy())
    assert asyncio.run(km.get_key(ev, "db", nonce=n)) == expected_key(PASSWORD, SERVICE, "db")


def test_release_key_sealed_to_x25519_and_rsa(km):
    want = expected_key(PASSWORD, SERVICE, "db")
    info = b"shield/key-release/v1\x00db"

    sk = x25519.X25519PrivateKey.generate()
    n, ev = evidence(km, spki(sk))
    out = asyncio.run(km.release_key(ev, "db", nonce=n, public_key=spki(sk)))
    assert set(out) == {"alg", "enc", "ciphertext", "key_id"}
    assert out["alg"] == "HPKE-X25519-SHA256-AES256GCM" and out["key_id"] == "db"
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    assert suite.decrypt(b64d(out["enc"]) + b64d(out["ciphertext"]), sk, info=info) == want
    with pytest.raises(Exception):  # another key id's info does not open it
        suite.decrypt(b64d(out["enc"]) + b64d(out["ciphertext"]), sk, info=info + b"x")

    # P-256: the native sealer takes X25519 and RSA keys only, and says so before the nonce
    # is spent (the same nonce and evidence then get the key in this TEE)
    ek = ec.generate_private_key(ec.SECP256R1())
    n, ev = evidence(km, spki(ek))
    reason, message = denied(km.release_key(ev, "db", nonce=n, public_key=spki(ek)))
    assert reason == "malformed" and "X25519" in message
    assert asyncio.run(km.get_key(ev, "db", nonce=n, public_key=spki(ek))) == want

    rk = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n, ev = evidence(km, spki(rk))
    out = asyncio.run(km.release_key(ev, "db", nonce=n, public_key=spki(rk)))
    assert set(out) == {"alg", "ciphertext", "key_id"} and out["alg"] == "RSA-OAEP-256"
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    assert rk.decrypt(b64d(out["ciphertext"]), oaep) == want

    # no key, or not a key: refused before anything is verified or spent
    n, ev = evidence(km, spki(sk))
    assert denied(km.release_key(ev, "db", nonce=n))[0] == "malformed"
    assert denied(km.release_key(ev, "db", nonce=n, public_key=b"\x30\x00"))[0] == "malformed"
    assert asyncio.run(km.release_key(ev, "db", nonce=n, public_key=spki(sk)))["key_id"] == "db"


def test_audit_records_every_grant_and_denial(caplog):
    from shield_asgi.integrations.confidential.base import KeyReleasePolicy

    records = []
    km = manager(audit=records.append)
    caplog.set_level(logging.INFO, logger="shield_asgi.keys")
    n, ev = evidence(km)
    key = asyncio.run(km.get_key(ev, "default", nonce=n))
    denied(km.get_key(ev, "default", nonce=n))
    km.set_policy(KeyReleasePolicy(required_measurements={"PCR0": "00" * 48}))
    n2, ev2 = evidence(km)
    denied(km.get_key(ev2, "db", nonce=n2))

    assert [(r["operation"], r["outcome"], r["reason"], r["key_id"]) for r in records] == [
        ("get_key", "grant", None, "default"),
        ("get_key", "deny", "nonce_replayed", "default"),
        ("get_key", "deny", "measurement_mismatch", "db"),
    ]
    assert records[0]["tee_type"] == "simulated" and len(records[0]["evidence_sha256"]) == 64
    assert records[2]["message"] == "PCR0 is not an expected value"  # the detail: audit only
    logged = [r for r in caplog.records if r.name == "shield_asgi.keys"]
    assert [r.shield_audit for r in logged] == records
    assert [r.levelno for r in logged] == [logging.INFO, logging.WARNING, logging.WARNING]
    text = caplog.text + json.dumps(records)
    for secret in (key, ev, ev2, n, n2):
        for form in (
            secret.hex(),
            base64.b64encode(secret).decode(),
            base64.urlsafe_b64encode(secret).decode().rstrip("="),
        ):
            assert form[:24] not in text
    assert PASSWORD not in text

    # a grant that cannot be audited is not a grant: the sink's error reaches the caller
    def broken(rec):
        raise OSError("audit store down")

    km.audit = broken
    km.set_policy(KeyReleasePolicy())
    n, ev = evidence(km)
    with pytest.raises(OSError):
        asyncio.run(km.get_key(ev, nonce=n))


def test_cache_is_bounded_and_expires_with_the_evidence():
    from shield_asgi.integrations.confidential.base import KeyReleasePolicy

    clock = Clock()
    km = manager(
        KeyReleasePolicy(required_measurements={"PCR0": "00" * 48}, max_age_seconds=20),
        clock=clock,
        cache_size=2,
    )
    calls = [evidence(km) for _ in range(3)]
    for n, ev in calls:
        denied(km.get_key(ev, nonce=n))
    info = km.cache_info()
    assert info["size"] == 2 and info["max_size"] == 2 and info["misses"] == 3
    # never later than the nonce's issue time + the policy's max age (20 s < 60 s)
    assert all(exp <= clock.now + 20 for exp in info["expires"])
    # presented again (nonce unspent: denied by the policy): not verified again
    n, ev = calls[2]
    denied(km.get_key(ev, nonce=n))
    assert km.cache_info()["hits"] == 1
    km.set_policy(KeyReleasePolicy(max_age_seconds=20))
    assert asyncio.run(km.get_key(ev, nonce=n)) == expected_key(PASSWORD, SERVICE, "default")
    assert km.cache_info()["hits"] == 2
    # past the evidence's freshness: refused, and nothing cached survives
    n, ev = calls[1]
    clock.now += 21
    assert denied(km.get_key(ev, nonce=n))[0] == "nonce_expired"
    assert km.cache_info()["size"] == 0


def test_encrypt_for_tee_round_trip_and_tampering(km):
    n, ev = evidence(km)
    env = asyncio.run(km.encrypt_for_tee(b"top secret", ev, nonce=n))
    doc = json.loads(env)
    assert doc["v"] == 1 and doc["alg"] == "AES-256-GCM" and doc["key_id"] == "encryption"
    assert doc["tee_type"] == "simulated" and doc["measurements"]["PCR0"] == DEFAULT_PCR0
    assert b"top secret" not in env
    n, ev = evidence(km)
    assert asyncio.run(km.decrypt_in_tee(env, ev, nonce=n)) == b"top secret"

    # the ciphertext, or the authenticated header, changed: refused
    for field, value in (
        ("ciphertext", doc["ciphertext"][:-2] + ("AA" if doc["ciphertext"][-2:] != "AA" else "BB")),
        ("key_id", "default"),
    ):
        bad = json.dumps({**doc, field: value}).encode()
        n, ev = evidence(km)
        with pytest.raises(ValueError):
            asyncio.run(km.decrypt_in_tee(bad, ev, nonce=n))
    # a TEE with other measurements may not open it
    n, ev = evidence(km, pcrs={0: b"\x11" * 48})
    assert denied(km.decrypt_in_tee(env, ev, nonce=n))[0] == "measurement_mismatch"
    with pytest.raises(ValueError):
        n, ev = evidence(km)
        asyncio.run(km.decrypt_in_tee(b"{}", ev, nonce=n))


def test_names_and_the_library_spellings():
    import shield_asgi.integrations.confidential as conf
    from shield_asgi.integrations.confidential import base

    assert conf.TEEKeyManager is base.TEEKeyManager
    assert conf.KeyReleasePolicy is base.KeyReleasePolicy
    assert conf.TEEType is base.TEEType
    assert base.AttestationError is conf.AttestationError
    assert base.AttestationResult is conf.AttestationResult
    assert base.AttestationProvider is conf.AttestationProvider
    T = base.TEEType
    assert T.NITRO.value == "nitro" and T.SEV_SNP.value == "sev-snp"
    assert T("aws_nitro") is T.NITRO and T("gcp_sev_snp") is T.SEV_SNP
    assert T("azure_maa") is T.MAA and T("intel_sgx") is T.SGX
    with pytest.raises(ValueError):
        T("no-such-tee")
    with pytest.raises(ValueError):
        base.KeyReleasePolicy(required_tee_types=["no-such-tee"])
    # the Shield library's parse-only providers are never trusted for key release
    from shield.integrations.confidential.aws_nitro import NitroAttestationProvider as LibNitro

    with pytest.raises(TypeError):
        base.TEEKeyManager(PASSWORD, SERVICE, LibNitro())


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_replicas_share_consumed_nonces_through_redis(redis_url):
    """Two replicas (state secret file and Redis shared): a nonce spent on one is refused by
    the other, and each releases the same key for evidence bound to its own fresh nonce."""
    a = manager(state_url=redis_url)
    b = manager(state_url=redis_url)

    async def run():
        n, ev = evidence(a)
        key = await a.get_key(ev, nonce=n)
        with pytest.raises(AttestationError) as ei:
            await b.get_key(ev, nonce=n)
        assert ei.value.reason == "nonce_replayed"
        n, ev = evidence(a)  # issued by a, spent on b
        assert await b.get_key(ev, nonce=n) == key == expected_key(PASSWORD, SERVICE, "default")
        with pytest.raises(AttestationError) as ei:
            await a.get_key(ev, nonce=n)
        assert ei.value.reason == "nonce_replayed"

    from shield_asgi.integrations.confidential.base import AttestationError

    asyncio.run(run())
