"""Test-side client of the client-attestation protocol (docs/protocol.md §1): nonces, simulated
evidence (through `shield attest` or shield_asgi._native), header and session mode.  The proof MAC
and Content-Digest are computed here in pure Python (hmac, hashlib), independently of the C
code the server uses, so a shared mistake cannot hide."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519


def b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def get_nonce(client) -> bytes:
    r = client.get("/.well-known/shield/nonce")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_in"] == 60
    n = b64d(body["nonce"])
    assert len(n) == 32 and n[0] == 1
    return n


def evidence(nonce: bytes, public_key: bytes | None = None, **kw) -> bytes:
    from shield_asgi import _native

    kw.setdefault("at", time.time())
    return _native.simulated_evidence(nonce, public_key, **kw)


def evidence_cli(shield_bin, nonce: bytes, env, public_key_file=None) -> bytes:
    args = [str(shield_bin), "attest", "--tee", "simulated", "--nonce", nonce.hex()]
    if public_key_file:
        args += ["--public-key", str(public_key_file)]
    return subprocess.run(args, env=env, check=True, capture_output=True, timeout=30).stdout


def header_mode(nonce: bytes, ev: bytes, tee="simulated") -> dict:
    return {
        "X-Attestation-Token": base64.b64encode(ev).decode(),
        "X-Attestation-Type": tee,
        "X-Attestation-Nonce": b64e(nonce),
    }


class Session:
    """A session established with an X25519 key (HPKE) and used with proofs."""

    def __init__(self, client, tee: str = "simulated", make_evidence=None, **ev_kw) -> None:
        """make_evidence(nonce, spki) -> bytes (sent base64url) or str (a JWT, sent as is);
        default: simulated evidence."""
        from shield_asgi import _native

        self.sk = x25519.X25519PrivateKey.generate()
        spki = self.sk.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        nonce = get_nonce(client)
        ev = make_evidence(nonce, spki) if make_evidence else evidence(nonce, spki, **ev_kw)
        r = client.post(
            "/.well-known/shield/attest",
            json={
                "type": tee,
                "evidence": ev if isinstance(ev, str) else b64e(ev),
                "nonce": b64e(nonce),
                "public_key": b64e(spki),
            },
        )
        self.response = r
        if r.status_code != 200:
            return
        body = r.json()
        assert body["alg"] == "HPKE-X25519-SHA256-AES256GCM"
        raw_sk = self.sk.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self.key = _native.hpke_open(
            raw_sk, b64d(body["enc"]), b64d(body["sealed_key"]), b"shield-session-v1"
        )
        self.id = body["session"]
        self.t = int(time.time() * 1000)

    def headers(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        *,
        t=None,
        digest_body: bytes | None = None,
    ) -> dict:
        if t is None:
            self.t = max(self.t + 1, int(time.time() * 1000))
            t = self.t
        h = {"X-Attestation-Session": self.id}
        digest = ""
        if body is not None:
            d = hashlib.sha256(body if digest_body is None else digest_body).digest()
            digest = "sha-256=:" + base64.b64encode(d).decode() + ":"
            h["Content-Digest"] = digest
        msg = (
            b"shield-proof-v1\x00"
            + str(t).encode()
            + b"\x00"
            + method.encode()
            + b"\x00"
            + target.encode()
            + b"\x00"
            + digest.encode()
        )
        mac = hmac.new(self.key, msg, hashlib.sha256).digest()
        h["X-Attestation-Proof"] = f"t={t}, mac={b64e(mac)}"
        return h


def error(r) -> tuple[int, str, str]:
    body = r.json()
    assert set(body) == {"error", "reason", "message"}, body
    return r.status_code, body["error"], body["reason"]


__all__ = [
    "b64e",
    "b64d",
    "get_nonce",
    "evidence",
    "evidence_cli",
    "header_mode",
    "Session",
    "error",
    "json",
]
