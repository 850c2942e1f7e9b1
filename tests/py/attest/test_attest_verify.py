"""`shield verify` (CLI, as a subprocess) and shield_asgi._native.verify on the real attestation
vectors (read in place from $SHIELD_VECTORS or <repo>/../shared/vectors) and on generated
evidence.  The ≥1000-mutations-per-vector sweep lives in tests/c/attest/test_attest.c (speed)."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
import os
import subprocess
import time

import pytest

from support.verify_cli import VECTORS, find_verify_cmd

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)

needs_vectors = pytest.mark.skipif(
    not (VECTORS / "MANIFEST.md").exists(),
    reason=f"attestation vectors not found at {VECTORS} (set SHIELD_VECTORS)",
)


CMD = find_verify_cmd("--type")
needs_cli = pytest.mark.skipif(
    CMD is None, reason="neither `shield verify` nor attest-verify is built"
)


def cli(*args, **kw):
    return subprocess.run(
        CMD + [str(a) for a in args], capture_output=True, text=True, timeout=60, **kw
    )


def cli_json(*args):
    p = cli(*args, "--json")
    assert p.returncode in (0, 1), p.stderr
    out = json.loads(p.stdout)
    assert set(out) == {
        "verified",
        "reason",
        "tee_type",
        "measurements",
        "claims",
        "debug",
        "tcb_status",
        "advisories",
    }
    assert (p.returncode == 0) == out["verified"]
    return out


NITRO = [
    ("valid-attestation-doc-bytes", "2022-10-13T08:58:02Z", False),
    ("debug-mode-attestation-doc-bytes", "2022-10-12T13:50:06Z", True),
    ("valid-attestation-doc-base64", "2023-09-18T15:03:30Z", True),
    ("attestdoc-sample_prod_doc.bin", "2021-03-17T22:02:00Z", False),
    ("attester-sample_attestation_doc_full.bin", "2024-01-24T18:14:25Z", True),
]
SNP = [
    ("attestation.bin", ["vcek.testcer"], "debug_not_allowed", "debug_not_allowed"),
    ("test-report.bin", ["test-vcek.der"], None, None),
    ("test-vlek-report.bin", ["test-vlek.der", "../roots/amd-milan-asvk-ark.pem"], None, "expired"),
    ("azure-genoa-snp-report.bin", ["vcek-genoa.pem"], None, None),
    ("oak-genoa-report.bin", ["oak-genoa-vcek.der"], None, None),
]


@needs_vectors
@needs_cli
@pytest.mark.parametrize("name,at,debug", NITRO)
def test_cli_nitro_vectors(name, at, debug):
    f = VECTORS / "nitro" / name
    out = cli_json("--type", "nitro", f, "--at", at)
    assert out["reason"] == ("debug_not_allowed" if debug else None)
    assert out["debug"] is debug and out["tee_type"] == "nitro"
    assert len(out["measurements"]["PCR0"]) == 96
    assert cli_json("--type", "nitro", f, "--at", at, "--allow-debug")["verified"]
    assert cli_json("--type", "nitro", f, "--at", NOW.isoformat())["reason"] == "expired"


@needs_vectors
@needs_cli
@pytest.mark.parametrize("report,certs,want,want_now", SNP)
def test_cli_snp_vectors(report, certs, want, want_now):
    args = ["--type", "sev-snp", VECTORS / "sev-snp" / report]
    for c in certs:
        args += ["--cert", VECTORS / "sev-snp" / c]
    assert (
        cli_json(
            *args, "--at", "2026-01-01T00:00:00Z" if "oak" in report else "2025-06-01T00:00:00Z"
        )["reason"]
        == want
    )
    assert cli_json(*args, "--at", "2026-11-24T12:00:00Z")["reason"] == want_now


def _hcl(tmp_path):
    ev = json.loads((VECTORS / "sev-snp" / "evidence-genoa.json").read_text())
    p = tmp_path / "hcl.bin"
    p.write_bytes(bytes(ev["report"]))
    return p


@needs_vectors
@needs_cli
def test_cli_azure_hcl(tmp_path):
    hcl, vcek = _hcl(tmp_path), VECTORS / "sev-snp" / "vcek-genoa.pem"
    out = cli_json("--type", "azure-snp", hcl, "--cert", vcek, "--at", "2026-11-24T12:00:00Z")
    assert out["verified"] and out["tee_type"] == "azure-snp"
    assert "user-data" in out["claims"]["runtime"]
    out = cli_json("--type", "azure-snp", hcl, "--cert", vcek, "--nonce", "00" * 32)
    assert out["reason"] == "binding_mismatch"


@needs_vectors
@needs_cli
def test_cli_text_inputs_nonce_and_binding(tmp_path):
    raw = (VECTORS / "nitro" / "attester-sample_attestation_doc_full.bin").read_bytes()
    at = "2024-01-24T18:14:25Z"
    for name, text in (
        ("b64", base64.b64encode(raw)),
        ("hex", raw.hex().encode()),
        ("b64url", base64.urlsafe_b64encode(raw).rstrip(b"=")),
    ):
        (tmp_path / name).write_bytes(text)
        assert cli_json("--type", "nitro", tmp_path / name, "--at", at, "--allow-debug")["verified"]
    f = VECTORS / "nitro" / "attester-sample_attestation_doc_full.bin"
    base = ["--type", "nitro", f, "--at", at, "--allow-debug"]
    assert cli_json(*base, "--nonce", "4e6f6e63650a")["verified"]
    assert cli_json(*base, "--nonce", "4e6f6e63650b")["reason"] == "binding_mismatch"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pk = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "k.pem").write_bytes(pk)
    out = cli_json(*base, "--nonce", "4e6f6e63650a", "--public-key", tmp_path / "k.pem")
    assert out["reason"] == "binding_mismatch"


@needs_vectors
@needs_cli
def test_cli_policy_file(tmp_path):
    f = VECTORS / "nitro" / "valid-attestation-doc-bytes"
    at = "2022-10-13T08:58:02Z"
    pol = tmp_path / "p.json"
    pol.write_text(json.dumps({"version": 1, "nitro": {"pcrs": {"8": ["00" * 48]}}}))
    assert (
        cli_json("--type", "nitro", f, "--at", at, "--policy", pol)["reason"]
        == "measurement_mismatch"
    )
    pol.write_text(
        json.dumps(
            {
                "nitro": {
                    "pcrs": {
                        "0": "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599"
                        "936332687e6f66fc890ac8cf150142d8b"
                    }
                }
            }
        )
    )
    assert cli_json("--type", "nitro", f, "--at", at, "--policy", pol)["verified"]
    pol.write_text('{"allow_debgu": true}')
    assert cli("--type", "nitro", f, "--at", at, "--policy", pol).returncode == 2


@needs_cli
def test_cli_exit_codes(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x84\x00" * 10)
    assert cli("--type", "nitro", junk, "--at", "2024-01-01T00:00:00Z").returncode == 1
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    p = cli("--type", "nitro", empty, "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["reason"] == "missing"
    big = tmp_path / "big"
    big.write_bytes(os.urandom(100_000))
    for t in ("nitro", "sev-snp", "azure-snp"):
        assert cli("--type", t, big).returncode == 1
    assert cli("--type", "nitro", tmp_path / "nope").returncode == 2
    assert cli("--type", "tpm", junk).returncode == 2
    assert cli("--type", "nitro", junk, "--bogus").returncode == 2
    assert cli("--type", "nitro", junk, "--at", "yesterday").returncode == 2
    assert cli("--type", "nitro").returncode == 2
    assert cli("--type", "sev-snp", junk, "--cert", junk).returncode == 2
    assert cli("--type", "nitro", junk, "--nonce", "zz").returncode == 2


@needs_cli
def test_cli_generated_root_untrusted(tmp_path):
    pytest.importorskip("cbor2")
    from support.attest_gen import nitro_document

    for tagged in (False, True):
        doc, _ = nitro_document(NOW, tagged=tagged)
        (tmp_path / "doc").write_bytes(doc)
        out = cli_json("--type", "nitro", tmp_path / "doc", "--at", NOW.isoformat())
        assert out["reason"] == "root_untrusted"
    doc, _ = nitro_document(NOW, alg=-7)
    (tmp_path / "doc").write_bytes(doc)
    assert (
        cli_json("--type", "nitro", tmp_path / "doc", "--at", NOW.isoformat())["reason"]
        == "malformed"
    )


def _native():
    """shield_asgi._native, or None when the shield_asgi package is not installed in this
    interpreter.  An
    installed one that does not import (a broken build) fails the tests: not a skip."""
    if importlib.util.find_spec("shield_asgi") is None:
        return None
    from shield_asgi import _native

    return _native


needs_native = pytest.mark.skipif(
    _native() is None, reason="the shield_asgi package is not installed in this interpreter"
)


@needs_vectors
@needs_native
def test_native_verify_fields():
    from shield_asgi.attestation import AttestationResult

    n = _native()
    doc = (VECTORS / "nitro" / "valid-attestation-doc-bytes").read_bytes()
    at = dt.datetime(2022, 10, 13, 8, 58, 2, tzinfo=dt.timezone.utc).timestamp()
    r = n.verify(doc, "nitro", at=at)
    assert isinstance(r, AttestationResult) and r.verified and r.reason is None and r.error is None
    assert r.tee_type == "nitro" and r.timestamp == at and r.raw_evidence == doc
    assert len(r.evidence_sha256) == 64 and len(r.policy_sha256) == 64
    assert r.nonce and len(r.nonce) == 256 and r.measurements["PCR0"].startswith("f4d48b81a460c991")
    d = r.to_dict()
    assert set(d) >= {
        "verified",
        "tee_type",
        "measurements",
        "claims",
        "timestamp",
        "error",
        "reason",
        "message",
        "debug",
        "tcb_status",
        "advisories",
        "public_key",
        "user_data",
        "nonce",
        "evidence_sha256",
        "raw_evidence",
        "mode",
        "session",
        "policy_sha256",
    }
    json.dumps(d)
    r = n.verify(doc, "nitro", at=time.time())
    assert not r.verified and r.reason == "expired" and r.error == "attestation_failed"
    r = n.verify(base64.b64encode(doc).decode(), "aws_nitro", at=at)  # text + alias
    assert r.verified
    with pytest.raises(TypeError):
        n.verify(doc, "nitro")
    with pytest.raises(ValueError):
        n.verify(doc, "nitro", at=at, policy='{"nope": 1}')
    rep = (VECTORS / "sev-snp" / "test-report.bin").read_bytes()
    vcek = (VECTORS / "sev-snp" / "test-vcek.der").read_bytes()
    r = n.verify(rep, "sev-snp", at=NOW.timestamp(), certs=[vcek])
    assert r.verified and r.measurements["measurement"].startswith("a1f3930413247bb3")
    nonce = b"\x01" * 32
    r = n.verify(rep, "sev-snp", at=NOW.timestamp(), certs=[vcek], nonce=nonce)
    assert r.reason == "binding_mismatch"
    assert len(n.binding_digest(nonce, b"k")) == 64
