"""`shield attest --tee TYPE` (cli/attest.c) against the real binary: evidence from this
machine's TEE through attest/'s providers, bound to D(nonce, public key) (docs/protocol.md §1.2).
Only the simulated TEE exists here: its evidence (raw, and --json's one line for the images'
smoke checks) is verified natively with the nonce and key it binds; every other TEE is refused
with exit 1 and the provider's message naming the device or socket that is missing (the
providers themselves are tested against fakes in tests/c/attest/)."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from conftest import shield_bin
from support.attest_client import b64d
from support.attest_env import DATA_HOME  # noqa: F401  (XDG_DATA_HOME: this run's dev root)

pytestmark = pytest.mark.shield_only


def attest(*args, **kw):
    return subprocess.run(
        [str(shield_bin()), "attest", *args], capture_output=True, timeout=60, **kw
    )


def verify(evidence: bytes, nonce: bytes, public_key: bytes | None):
    from shield_asgi import _native

    return _native.verify(
        evidence,
        "simulated",
        at=time.time(),
        nonce=nonce,
        public_key=public_key,
        trust_simulated=True,
        simulated_root=_native.simulated_root(),
        allow_debug=True,
    )


def test_simulated_json_and_raw(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import x25519

    spki = (
        x25519.X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "k.der").write_bytes(spki)
    nonce = bytes(range(32))
    r = attest("--tee", "simulated", "--nonce", nonce.hex(), "--public-key", tmp_path / "k.der",
               "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(b"\n") and r.stdout.count(b"\n") == 1
    doc = json.loads(r.stdout)
    assert set(doc) == {"tee_type", "source", "evidence", "nonce"}
    assert (doc["tee_type"], doc["source"], b64d(doc["nonce"])) == ("simulated", "simulated", nonce)
    res = verify(b64d(doc["evidence"]), nonce, spki)
    assert res.verified, (res.reason, res.message)
    # bound to that key: with another key, or another nonce, the binding differs
    assert verify(b64d(doc["evidence"]), nonce, spki[:-1] + b"\0").reason == "binding_mismatch"
    other = verify(b64d(doc["evidence"]), bytes(32), spki)
    assert other.reason == "binding_mismatch", other.reason
    # raw bytes to --out (as before --json existed)
    r = attest("--tee", "simulated", "--nonce", nonce.hex(), "--out", tmp_path / "ev")
    assert r.returncode == 0 and r.stdout == b"", r.stderr
    assert verify((tmp_path / "ev").read_bytes(), nonce, None).verified


def test_default_nonce_is_fresh():
    docs = [json.loads(attest("--tee", "simulated", "--json").stdout) for _ in range(2)]
    nonces = [b64d(d["nonce"]) for d in docs]
    assert len(nonces[0]) == 32 and nonces[0] != nonces[1]
    assert verify(b64d(docs[0]["evidence"]), nonces[0], None).verified


@pytest.mark.parametrize(
    "tee, missing",
    [
        ("nitro", "/dev/nsm does not exist: not a Nitro enclave"),
        ("sev-snp", "/sys/kernel/config/tsm/report (configfs-tsm) nor {root}/dev/sev-guest"),
        ("tdx", "/sys/kernel/config/tsm/report (configfs-tsm) nor {root}/dev/tdx_guest"),
        ("sgx", "/dev/attestation/attestation_type (No such file or directory)"),
        ("auto", "no TEE found"),
        ("azure-snp", "{root}/dev/tpmrm0: No such file or directory (no TPM"),
        ("azure-tdx", "{root}/dev/tpmrm0: No such file or directory (no TPM"),
    ],
)
def test_absent_tee_names_what_is_missing(tmp_path, tee, missing):
    r = attest("--tee", tee, "--device-root", tmp_path, "--json")
    err = r.stderr.decode()
    assert r.returncode == 1 and r.stdout == b"", (r.returncode, err)
    assert err.startswith(f"shield attest: {tee}: "), err
    assert missing.format(root=tmp_path) in err, err
    assert str(tmp_path) in err, err  # the paths under --device-root


def test_sgx_without_dcap(tmp_path):
    d = tmp_path / "dev" / "attestation"
    d.mkdir(parents=True)
    (d / "attestation_type").write_text("none\n")
    r = attest("--tee", "sgx", "--device-root", tmp_path)
    assert r.returncode == 1 and b'attestation type is "none", not "dcap"' in r.stderr, r.stderr


def test_gcp_socket_and_audience(tmp_path):
    path = tmp_path / "teeserver.sock"
    r = attest("--tee", "gcp", "--gcp-socket", path, "--gcp-audience", "https://svc")
    assert r.returncode == 1 and f"gcp: {path} is not a socket".encode() in r.stderr, r.stderr
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        r = attest("--tee", "gcp", "--gcp-socket", path)
        assert r.returncode == 1 and b"gcp: the token audience is not configured" in r.stderr


def test_simulated_options_only_with_simulated():
    r = attest("--tee", "nitro", "--data-dir", "/tmp")
    assert r.returncode == 2 and b"--data-dir: only --tee simulated takes it" in r.stderr
