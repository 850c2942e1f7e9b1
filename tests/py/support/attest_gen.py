"""Test-only generator: a throwaway P-384 CA and Nitro-format COSE_Sign1 documents signed by it
(cryptography + cbor2).  The production verifier must refuse them as root_untrusted: the root
is generated here and pinned nowhere."""

from __future__ import annotations

import datetime as dt

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID


def _cert(subject_key, issuer_key, subject, issuer, ca, ku_sign, not_before, not_after):
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca and ku_sign,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return b.sign(issuer_key, hashes.SHA384())


def nitro_document(at: dt.datetime, *, nonce=None, user_data=None, alg=-35, tagged=False):
    """Returns (document bytes, root DER)."""
    nb, na = at - dt.timedelta(days=1), at + dt.timedelta(days=1)
    rk, ik, lk = (ec.generate_private_key(ec.SECP384R1()) for _ in range(3))
    root = _cert(rk, rk, "test-root", "test-root", True, True, nb, na)
    inter = _cert(ik, rk, "test-inter", "test-root", True, True, nb, na)
    leaf = _cert(lk, ik, "test-leaf", "test-inter", False, True, nb, na)
    der = lambda c: c.public_bytes(serialization.Encoding.DER)  # noqa: E731
    payload = cbor2.dumps(
        {
            "module_id": "i-test-enc0",
            "digest": "SHA384",
            "timestamp": int(at.timestamp() * 1000),
            "pcrs": {i: bytes([i + 1]) * 48 for i in range(3)},
            "certificate": der(leaf),
            "cabundle": [der(root), der(inter)],
            "public_key": None,
            "user_data": user_data,
            "nonce": nonce,
        }
    )
    protected = cbor2.dumps({1: alg})
    tbs = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(lk.sign(tbs, ec.ECDSA(hashes.SHA384())))
    sig = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    cose = [protected, {}, payload, sig]
    doc = cbor2.dumps(cbor2.CBORTag(18, cose) if tagged else cose)
    return doc, der(root)
