"""Azure CVM evidence as Azure produces it, through `shield verify` (subprocess) and
shield_asgi._native.verify: confidential-containers/trustee's real az-snp-vtpm reports (HCL header
version 1) and az-tdx-vtpm report and TD quote (azure-tdx), read in place from a trustee clone
(support/trustee.py: $SHIELD_TRUSTEE_GIT).  The byte-level checks, tampering and mutation sweeps
are in tests/c/attest/test_azure.c; this is the command line and the Python binding on the same
data."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess

import pytest

from support.trustee import as_bytes, cbor_bundle, needs_trustee, read
from support.verify_cli import VECTORS, find_verify_cmd

AT = "2026-11-24T12:00:00Z"  # within every VCEK's and the TD quote's PCK certificate's validity
CMD = find_verify_cmd("--type")  # not "azure-tdx": a build without it must fail here, not skip
needs_cli = pytest.mark.skipif(
    CMD is None, reason="neither `shield verify` nor attest-verify is built"
)
pytestmark = [needs_trustee, needs_cli]


def cli(*args, **kw):
    return subprocess.run(
        CMD + [str(a) for a in args], capture_output=True, text=True, timeout=60, **kw
    )


def cli_json(*args):
    p = cli(*args, "--json")
    assert p.returncode in (0, 1), p.stderr
    out = json.loads(p.stdout)
    assert (p.returncode == 0) == out["verified"]
    return out


SNP = {  # name: (file, HCL member or None for the raw file, VCEK member or file)
    "evidence-v0.json": ("az-snp-vtpm/evidence-v0.json", "report", "vcek"),
    "evidence-v1.json": ("az-snp-vtpm/evidence-v1.json", "hcl_report", "vcek"),
    "evidence-v2.json": ("az-snp-vtpm/evidence-v2.json", "hcl_report", "vcek"),
    "hcl-report.bin": ("az-snp-vtpm/hcl-report.bin", None, "az-snp-vtpm/vcek.pem"),
}


def _snp(tmp_path, name):
    """The HCL report and its VCEK (PEM or DER) as files."""
    f, hkey, vkey = SNP[name]
    if hkey is None:
        hcl, vcek = read(f), read(vkey)
    else:
        ev = json.loads(read(f))
        hcl = as_bytes(ev[hkey])
        v = ev[vkey]
        vcek = v.encode() if v.startswith("-----BEGIN") else as_bytes(v)
    (tmp_path / "hcl.bin").write_bytes(hcl)
    (tmp_path / "vcek").write_bytes(vcek)
    return tmp_path / "hcl.bin", tmp_path / "vcek"


@pytest.mark.parametrize("name", sorted(SNP))
def test_cli_azure_snp_hcl_header_v1(tmp_path, name):
    hcl, vcek = _snp(tmp_path, name)
    raw = hcl.read_bytes()
    assert raw[:4] == b"HCLA" and raw[4] == 1, "not an HCL report with header version 1 (any more)"
    out = cli_json("--type", "azure-snp", hcl, "--cert", vcek, "--at", AT)
    assert out["verified"] and out["tee_type"] == "azure-snp", out["reason"]
    assert set(out["claims"]["runtime"]) >= {"keys", "vm-configuration", "user-data"}
    assert (
        cli_json("--type", "azure-snp", hcl, "--cert", vcek, "--at", AT, "--nonce", "01" * 32)[
            "reason"
        ]
        == "binding_mismatch"
    )


def _tdx(pair="bin"):
    if pair == "bin":
        return read("az-tdx-vtpm/hcl-report.bin"), read("az-tdx-vtpm/td-quote.bin")
    ev = json.loads(read(f"az-tdx-vtpm/evidence-{pair}.json"))
    return as_bytes(ev["hcl_report"]), as_bytes(ev["td_quote"])


def _runtime(hcl):
    n = int.from_bytes(hcl[0x4D0:0x4D4], "little")
    return hcl[0x4D4 : 0x4D4 + n]


@pytest.mark.parametrize("pair", ["bin", "v0", "v1"])
def test_cli_azure_tdx(tmp_path, pair):
    hcl, q = _tdx(pair)
    ev = tmp_path / "ev.cbor"
    ev.write_bytes(cbor_bundle(hcl_report=hcl, td_quote=q))
    out = cli_json("--type", "azure-tdx", ev, "--at", AT)
    # the HCL layout, the runtime binding, the TD report, the quote signature, QE report and
    # PCK chain passed: what is missing is Intel's collateral for this platform (offline)
    assert out["reason"] == "collateral_missing" and out["tee_type"] == "azure-tdx"
    assert out["measurements"]["MRTD"] == q[48 + 136 : 48 + 184].hex()
    rt = _runtime(hcl)
    assert out["claims"]["REPORT_DATA"][:64] == hashlib.sha256(rt).hexdigest()
    assert out["claims"]["runtime"] == json.loads(rt)
    assert out["claims"]["runtime"]["vm-configuration"]["secure-boot"] is True
    p = cli("--type", "azure-tdx", ev, "--at", AT)
    assert p.returncode == 1
    assert p.stdout.startswith("rejected: collateral_missing (no collateral given)"), p.stdout


def test_cli_azure_tdx_refusals(tmp_path):
    hcl, q = _tdx()
    ev = tmp_path / "ev.cbor"
    i = 0x4D4 + 40  # a byte of the runtime JSON
    bad = hcl[:i] + bytes([hcl[i] ^ 1]) + hcl[i + 1 :]
    ev.write_bytes(cbor_bundle(hcl_report=bad, td_quote=q))
    assert cli_json("--type", "azure-tdx", ev, "--at", AT)["reason"] == "signature_invalid"
    ev.write_bytes(cbor_bundle(hcl_report=hcl, td_quote=q))
    out = cli_json("--type", "azure-tdx", ev, "--at", AT, "--nonce", "02" * 32)
    assert out["reason"] == "binding_mismatch"
    (tmp_path / "hcl.bin").write_bytes(hcl)
    p = cli("--type", "azure-snp", tmp_path / "hcl.bin", "--at", AT)
    assert p.returncode == 1 and "TDX (azure-tdx)" in p.stdout
    p = cli("--type", "azure-tdx", tmp_path / "hcl.bin", "--at", AT)
    assert p.returncode == 1 and "CBOR" in p.stdout


@pytest.mark.skipif(
    not (VECTORS / "tdx" / "tdx_quote_collateral.json").exists(),
    reason=f"DCAP collateral vector not found at {VECTORS} (set SHIELD_VECTORS)",
)
def test_cli_azure_tdx_collateral_path(tmp_path):
    """With collateral (the shared vectors' TDX collateral, of another platform: Intel's for this
    one is not offline) the quote's PCK chain is checked against its CRLs and the TCB info is
    matched to the PCK's FMSPC, which differs."""
    hcl, q = _tdx()
    ev = tmp_path / "ev.cbor"
    ev.write_bytes(cbor_bundle(hcl_report=hcl, td_quote=q))
    p = cli(
        "--type",
        "azure-tdx",
        ev,
        "--at",
        "2025-06-20T00:00:00Z",
        "--collateral",
        VECTORS / "tdx" / "tdx_quote_collateral.json",
    )
    assert p.returncode == 1, p.stderr
    assert p.stdout.startswith("rejected: collateral_missing (TCB info is for another platform"), (
        p.stdout
    )


def _native():
    if importlib.util.find_spec("shield_asgi") is None:
        return None
    from shield_asgi import _native  # a broken build fails here: not a skip

    return _native


@pytest.mark.skipif(
    _native() is None, reason="the shield_asgi package is not installed in this interpreter"
)
def test_native_azure():
    n = _native()
    hcl, q = _tdx()
    at = 1795521600.0  # AT, 2026-11-24T12:00:00Z
    r = n.verify(cbor_bundle(hcl_report=hcl, td_quote=q), "azure-tdx", at=at)
    assert r.tee_type == "azure-tdx" and r.reason == "collateral_missing"
    assert r.error == "attestation_unavailable" and not r.verified
    assert r.claims["runtime"]["vm-configuration"]["tpm-enabled"] is True
    ev = json.loads(read("az-snp-vtpm/evidence-v2.json"))
    r = n.verify(as_bytes(ev["hcl_report"]), "azure-snp", at=at, certs=[as_bytes(ev["vcek"])])
    assert r.verified and r.tee_type == "azure-snp"
    # user-data written in upper-case hex by that HCL, decoded all the same
    assert r.user_data[:4] == bytes.fromhex("982f5c6e") and len(r.user_data) == 64
