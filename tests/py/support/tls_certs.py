"""Certificates for the TLS tests, generated on the fly (nothing is committed).

make_pki(directory) writes, all PEM:
  ca.pem / ca.key                 a test CA
  server.pem / server.key         server cert for localhost + 127.0.0.1, signed by the CA
  server2.pem / server2.key       a second server cert (certificate-reload test)
  server_enc.key                  server.key encrypted with the password "s3cret"
  other.key                       a key that matches no certificate
  client.pem / client.key         client cert "CN=alice,O=Shield Tests", signed by the CA
  client_chain.pem                client.pem followed by an intermediate it chains through
  client_chain.key                its key
  rogue_ca.pem / rogue.pem / rogue.key   a client cert from a CA the server does not trust
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PASSWORD = "s3cret"


def _name(cn: str, org: str = "Shield Tests") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject, key, issuer, issuer_key, *, ca=False, server=False, client=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if issuer_key is not key:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        b = b.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key, password: str | None = None) -> bytes:
    enc = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def make_pki(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, bytes] = {}
    ca_key = _key()
    ca = _cert(_name("Shield Test CA"), ca_key, _name("Shield Test CA"), ca_key, ca=True)
    out["ca.pem"], out["ca.key"] = _pem(ca), _key_pem(ca_key)

    for stem, cn in (("server", "localhost"), ("server2", "localhost")):
        k = _key()
        c = _cert(_name(cn, f"Shield Tests {stem}"), k, ca.subject, ca_key, server=True)
        out[f"{stem}.pem"], out[f"{stem}.key"] = _pem(c), _key_pem(k)
        if stem == "server":
            out["server_enc.key"] = _key_pem(k, PASSWORD)
    out["other.key"] = _key_pem(_key())

    ck = _key()
    cc = _cert(_name("alice"), ck, ca.subject, ca_key, client=True)
    out["client.pem"], out["client.key"] = _pem(cc), _key_pem(ck)

    ik = _key()
    inter = _cert(_name("Shield Test Intermediate"), ik, ca.subject, ca_key, ca=True)
    lk = _key()
    leaf = _cert(_name("bob"), lk, inter.subject, ik, client=True)
    out["client_chain.pem"], out["client_chain.key"] = _pem(leaf) + _pem(inter), _key_pem(lk)

    rk = _key()
    rca = _cert(_name("Rogue CA", "Rogue"), rk, _name("Rogue CA", "Rogue"), rk, ca=True)
    rlk = _key()
    rleaf = _cert(_name("mallory", "Rogue"), rlk, rca.subject, rk, client=True)
    out["rogue_ca.pem"], out["rogue.pem"], out["rogue.key"] = _pem(rca), _pem(rleaf), _key_pem(rlk)

    paths = {}
    for name, data in out.items():
        p = d / name
        p.write_bytes(data)
        paths[name] = p
    return paths
