"""Straightforward Python verifier of a Nitro document (cryptography + cbor2), the baseline
for bench/attest: parse COSE_Sign1, verify the ES384 signature over Sig_structure, verify the
chain leaf <- cabundle[n-1] <- ... <- cabundle[0] (signatures, validity at `at`), compare the
root's SHA-256.  Prints the µs per verification.  Usage: nitro_baseline.py FILE UNIX_TIME [N]"""

import datetime as dt
import hashlib
import sys
import time

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ROOT = bytes.fromhex("641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b")


def verify(doc: bytes, at: dt.datetime) -> bool:
    obj = cbor2.loads(doc)
    if isinstance(obj, cbor2.CBORTag):
        obj = obj.value
    protected, _unprot, payload, sig = obj
    if cbor2.loads(protected) != {1: -35} or len(sig) != 96:
        return False
    p = cbor2.loads(payload)
    leaf = x509.load_der_x509_certificate(p["certificate"])
    chain = [x509.load_der_x509_certificate(c) for c in p["cabundle"]]
    if hashlib.sha256(p["cabundle"][0]).digest() != ROOT:
        return False
    tbs = cbor2.dumps(["Signature1", protected, b"", payload])
    der = encode_dss_signature(int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big"))
    leaf.public_key().verify(der, tbs, ec.ECDSA(hashes.SHA384()))
    certs = [leaf] + chain[::-1]
    for c, issuer in zip(certs, certs[1:]):
        c.verify_directly_issued_by(issuer)
    for c in certs:
        if not (c.not_valid_before_utc <= at <= c.not_valid_after_utc):
            return False
    return True


def main():
    doc = open(sys.argv[1], "rb").read()
    at = dt.datetime.fromtimestamp(int(sys.argv[2]), dt.timezone.utc)
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    assert verify(doc, at)
    t0 = time.perf_counter()
    for _ in range(n):
        verify(doc, at)
    print(f"{(time.perf_counter() - t0) / n * 1e6:.1f}")


if __name__ == "__main__":
    main()
