"""Test-only JWT generator (cryptography): keys, JWKS documents and compact JWS tokens for the
maa and gcp verifiers, including the malformed and hostile ones (alg none, HS256 keyed with the
public key, algorithm/key confusion).  Nothing here is trusted by a production verifier: the
keys are generated per test run and reach it only through an explicit --jwks."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

GCP_ISSUER = "https://confidentialcomputing.googleapis.com"
MAA_ISSUER = "https://shieldtest.wus.attest.azure.net"


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _int_b64u(n: int, size: int | None = None) -> str:
    size = size or (n.bit_length() + 7) // 8
    return b64u(n.to_bytes(size, "big"))


class Keys:
    """One RSA-2048, one P-256 and one P-384 key (generated once per process)."""

    _inst = None

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.p256 = ec.generate_private_key(ec.SECP256R1())
        self.p384 = ec.generate_private_key(ec.SECP384R1())

    @classmethod
    def get(cls) -> "Keys":
        if cls._inst is None:
            cls._inst = Keys()
        return cls._inst


def jwk(
    key,
    kid: str,
    *,
    alg: str | None = None,
    use: str | None = "sig",
    x5c: bool = False,
    only_x5c: bool = False,
) -> dict:
    pub = key.public_key()
    e: dict = {"kid": kid}
    if not only_x5c:
        if isinstance(pub, rsa.RSAPublicKey):
            nums = pub.public_numbers()
            e.update(kty="RSA", n=_int_b64u(nums.n), e=_int_b64u(nums.e))
        else:
            nums = pub.public_numbers()
            size = 32 if pub.curve.name == "secp256r1" else 48
            e.update(
                kty="EC",
                crv="P-256" if size == 32 else "P-384",
                x=_int_b64u(nums.x, size),
                y=_int_b64u(nums.y, size),
            )
    if alg:
        e["alg"] = alg
    if use:
        e["use"] = use
    if x5c or only_x5c:
        e["x5c"] = [
            base64.b64encode(
                self_signed(key, kid).public_bytes(serialization.Encoding.DER)
            ).decode()
        ]
    return e


def self_signed(key, cn: str, not_before=None, not_after=None):
    nb = not_before or dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    na = not_after or dt.datetime(2040, 1, 1, tzinfo=dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .sign(key, hashes.SHA256())
    )


def jwks(*entries: dict) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


def sign(alg: str, key, data: bytes) -> bytes:
    if alg == "RS256":
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if alg == "PS256":
        return key.sign(
            data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
        )
    if alg in ("ES256", "ES384"):
        h, size = (hashes.SHA256(), 32) if alg == "ES256" else (hashes.SHA384(), 48)
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(h)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "HS256":  # key confusion: the HMAC key is the verifier's *public* key (PEM)
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hmac.new(pem, data, hashlib.sha256).digest()
    if alg == "none":
        return b""
    raise ValueError(alg)


def token(
    payload: dict,
    *,
    key=None,
    alg: str = "RS256",
    kid: str | None = "k1",
    header: dict | None = None,
    sign_alg: str | None = None,
    raw_payload: bytes | None = None,
) -> str:
    """A compact JWS.  `header` entries override/extend the default header (None deletes)."""
    h = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        h["kid"] = kid
    for k, v in (header or {}).items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    hb = b64u(json.dumps(h).encode())
    pb = b64u(raw_payload if raw_payload is not None else json.dumps(payload).encode())
    si = f"{hb}.{pb}".encode()
    sig = sign(sign_alg or alg, key or Keys.get().rsa, si)
    return f"{hb}.{pb}.{b64u(sig)}"


def gcp_claims(at: dt.datetime, **over) -> dict:
    t = int(at.timestamp())
    c = {
        "iss": GCP_ISSUER,
        "aud": "https://shield.test",
        "iat": t - 60,
        "nbf": t - 60,
        "exp": t + 3600,
        "sub": "https://www.googleapis.com/compute/v1/projects/p/zones/z/instances/i",
        "eat_nonce": "a nonce between 10 and 74 characters",
        "secboot": True,
        "hwmodel": "GCP_AMD_SEV",
        "swname": "CONFIDENTIAL_SPACE",
        "swversion": ["250301"],
        "dbgstat": "disabled-since-boot",
        "support_attributes": ["LATEST", "STABLE", "USABLE"],
        "submods": {
            "container": {
                "image_digest": "sha256:" + "ab" * 32,
                "image_reference": "example/app:latest",
            }
        },
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def maa_sgx_claims(at: dt.datetime, **over) -> dict:
    t = int(at.timestamp())
    c = {
        "iss": MAA_ISSUER,
        "iat": t - 60,
        "nbf": t - 60,
        "exp": t + 3600,
        "x-ms-attestation-type": "sgx",
        "x-ms-ver": "1.0",
        "x-ms-sgx-is-debuggable": False,
        "x-ms-sgx-mrenclave": "11" * 32,
        "x-ms-sgx-mrsigner": "22" * 32,
        "x-ms-sgx-product-id": 1,
        "x-ms-sgx-svn": 2,
        "x-ms-sgx-report-data": "00" * 64,
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def maa_cvm_claims(at: dt.datetime, **over) -> dict:
    t = int(at.timestamp())
    tee = {
        "x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": "azure-compliant-cvm",
        "x-ms-sevsnpvm-is-debuggable": False,
        "x-ms-sevsnpvm-launchmeasurement": "33" * 48,
        "x-ms-sevsnpvm-hostdata": "44" * 32,
        "x-ms-sevsnpvm-idkeydigest": "55" * 48,
        "x-ms-sevsnpvm-reportdata": "66" * 64,
        "x-ms-sevsnpvm-guestsvn": 1,
    }
    tee.update(over.pop("tee", {}))
    c = {
        "iss": MAA_ISSUER,
        "iat": t - 60,
        "nbf": t - 60,
        "exp": t + 3600,
        "x-ms-attestation-type": "azurevm",
        "x-ms-isolation-tee": tee,
    }
    c.update(over)
    return c
