"""Attest to a Shield server with the simulated TEE, the way a client in a real TEE would.

    scripts/run &                                  # the server, simulated TEE trusted
    .venv/bin/python examples/attest_client.py [http://127.0.0.1:8000]

Header mode (docs/protocol.md §1.4, 1): get a nonce, produce evidence bound to it (here by the
simulated TEE; in an enclave by the NSM, in an SEV-SNP guest by the firmware), send it with the
request.  Session mode (§1.4, 2): attest once with an X25519 key, open the sealed session key,
then sign each request with a proof.  Evidence from the simulated TEE is signed by a dev root
under the user's data directory (`shield dev-root` prints it); servers accept it only with
--trust-simulated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys
import time

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from shield_asgi import _native


def b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def nonce(c: httpx.Client) -> bytes:
    r = c.get("/.well-known/shield/nonce")
    r.raise_for_status()
    return b64d(r.json()["nonce"])


def header_mode(c: httpx.Client) -> None:
    n = nonce(c)
    ev = _native.simulated_evidence(n, None, at=time.time())
    r = c.get(
        "/whoami",
        headers={
            "X-Attestation-Type": "simulated",
            "X-Attestation-Nonce": b64e(n),
            "X-Attestation-Token": base64.b64encode(ev).decode(),
        },
    )
    print("header mode  ->", r.status_code, r.json())
    again = c.get("/whoami", headers=r.request.headers)
    print("same again   ->", again.status_code, again.json())  # the nonce was consumed


def session_mode(c: httpx.Client) -> None:
    sk = x25519.X25519PrivateKey.generate()
    spki = sk.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    n = nonce(c)
    ev = _native.simulated_evidence(n, spki, at=time.time())
    r = c.post(
        "/.well-known/shield/attest",
        json={
            "type": "simulated",
            "evidence": b64e(ev),
            "nonce": b64e(n),
            "public_key": b64e(spki),
        },
    )
    r.raise_for_status()
    body = r.json()
    raw = sk.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    key = _native.hpke_open(raw, b64d(body["enc"]), b64d(body["sealed_key"]), b"shield-session-v1")
    for _ in range(2):
        t = str(int(time.time() * 1000))
        msg = b"\0".join([b"shield-proof-v1", t.encode(), b"GET", b"/whoami", b""])
        mac = hmac.new(key, msg, hashlib.sha256).digest()
        r = c.get(
            "/whoami",
            headers={
                "X-Attestation-Session": body["session"],
                "X-Attestation-Proof": f"t={t}, mac={b64e(mac)}",
            },
        )
        print("session mode ->", r.status_code, r.json())
        time.sleep(0.002)


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    with httpx.Client(base_url=url, timeout=30) as c:
        print("no evidence  ->", c.get("/whoami").json())
        header_mode(c)
        session_mode(c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
