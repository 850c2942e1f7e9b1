"""Intel TDX / SGX DCAP: `shield verify --type tdx|sgx --collateral ...` (CLI, subprocess) and
shield_asgi._native.verify(..., collateral=...) on the shared vectors, read in place from
$SHIELD_VECTORS or <repo>/../shared/vectors.  The mutation sweeps and the generated test-PKI
negatives live in tests/c/attest/test_dcap.c (speed, and they need the test-only extra roots)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import subprocess

import pytest

from support.verify_cli import VECTORS, find_verify_cmd

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)

needs_vectors = pytest.mark.skipif(
    not (VECTORS / "tdx" / "tdx_quote").exists(),
    reason=f"DCAP vectors not found at {VECTORS} (set SHIELD_VECTORS)",
)


CMD = find_verify_cmd("--collateral")
needs_cli = pytest.mark.skipif(CMD is None, reason="no `shield verify` with --collateral is built")


def cli(*args):
    p = subprocess.run(
        CMD + [str(a) for a in args] + ["--json"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode in (0, 1), p.stderr
    out = json.loads(p.stdout)
    assert (p.returncode == 0) == out["verified"]
    return out


SGX_OPT_IN = {
    "version": 1,
    "sgx": {
        "tcb_statuses": ["UpToDate", "SWHardeningNeeded", "ConfigurationAndSWHardeningNeeded"],
        "allowed_advisories": ["INTEL-SA-00289", "INTEL-SA-00615"],
    },
}

CASES = [
    # quote, collateral, time, type, policy, verified, reason, tcb_status
    (
        "tdx/tdx_quote",
        "tdx/tdx_quote_collateral.json",
        "2025-06-20T00:00:00Z",
        "tdx",
        None,
        True,
        None,
        "UpToDate",
    ),
    (
        "tdx/tdx_quote",
        "tdx/tdx_quote_collateral.json",
        None,
        "tdx",
        None,
        False,
        "collateral_stale",
        None,
    ),
    ("tdx/tdx_quote", None, "2025-06-20T00:00:00Z", "tdx", None, False, "collateral_missing", None),
    (
        "sgx/sgx_quote",
        "sgx/sgx_quote_collateral.json",
        "2025-06-20T00:00:00Z",
        "sgx",
        SGX_OPT_IN,
        True,
        None,
        "ConfigurationAndSWHardeningNeeded",
    ),
    (
        "sgx/sgx_quote",
        "sgx/sgx_quote_collateral.json",
        "2025-06-20T00:00:00Z",
        "intel_sgx",
        None,
        False,
        "tcb_out_of_date",
        "ConfigurationAndSWHardeningNeeded",
    ),
    (
        "sgx/sgx_quote",
        "sgx/sgx_quote_collateral.json",
        None,
        "sgx",
        SGX_OPT_IN,
        False,
        "collateral_stale",
        None,
    ),
    (
        "tdx/tdx_quote_outdated",
        "tdx/tdx_quote_outdated_collateral.json",
        "2026-03-01T00:00:00Z",
        "tdx",
        None,
        False,
        "tcb_unsupported",
        None,
    ),
    (
        "tdx/tdx_quote_outdated",
        "tdx/tdx_quote_outdated_collateral.json",
        None,
        "tdx",
        None,
        False,
        "collateral_stale",
        None,
    ),
    (
        "tdx/tdx_quote_4.dat",
        None,
        "2025-01-01T00:00:00Z",
        "tdx",
        None,
        False,
        "debug_not_allowed",
        None,
    ),
    ("tdx/tdx_quote_4.dat", None, None, "tdx", None, False, "debug_not_allowed", None),
]


@needs_vectors
@needs_cli
@pytest.mark.parametrize("quote,col,at,typ,pol,verified,reason,status", CASES)
def test_cli_dcap_vectors(tmp_path, quote, col, at, typ, pol, verified, reason, status):
    args = ["--type", typ, VECTORS / quote, "--at", at or NOW.strftime("%Y-%m-%dT%H:%M:%SZ")]
    if col:
        args += ["--collateral", VECTORS / col]
    if pol:
        (tmp_path / "p.json").write_text(json.dumps(pol))
        args += ["--policy", tmp_path / "p.json"]
    out = cli(*args)
    assert out["verified"] is verified and out["reason"] == reason
    assert out["tee_type"] == ("sgx" if "sgx" in typ else "tdx")
    if status:
        assert out["tcb_status"] == status
    if status == "ConfigurationAndSWHardeningNeeded":
        assert out["advisories"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
        assert out["measurements"]["MRENCLAVE"].startswith("33d8736db756ed49")
        assert out["measurements"]["MRSIGNER"].startswith("815f42f11cf64430")
    if verified and typ == "tdx":
        assert out["measurements"]["MRTD"].startswith("91eb2b44d141d4ec") and not out["debug"]
        assert set(out["measurements"]) == {
            "MRTD",
            "RTMR0",
            "RTMR1",
            "RTMR2",
            "RTMR3",
            "MRCONFIGID",
            "MROWNER",
        }


def _pcs_dir(tmp_path, col):
    """The JSON collateral form written out as raw Intel PCS v4 responses."""
    j = json.loads((VECTORS / col).read_text())
    d = tmp_path / "pcs"
    d.mkdir()
    (d / "tcbinfo.json").write_text(
        '{"tcbInfo": %s, "signature": "%s"}' % (j["tcb_info"], j["tcb_info_signature"])
    )
    (d / "qeidentity.json").write_text(
        '{"enclaveIdentity":%s,"signature":"%s"}' % (j["qe_identity"], j["qe_identity_signature"])
    )
    (d / "tcbinfo-issuer-chain.pem").write_text(j["tcb_info_issuer_chain"])
    (d / "qeidentity-issuer-chain.pem").write_text(j["qe_identity_issuer_chain"])
    (d / "rootcrl.der").write_bytes(bytes.fromhex(j["root_ca_crl"]))
    (d / "pckcrl.der").write_bytes(bytes.fromhex(j["pck_crl"]))
    return d


@needs_vectors
@needs_cli
def test_cli_pcs_directory(tmp_path):
    d = _pcs_dir(tmp_path, "tdx/tdx_quote_collateral.json")
    out = cli(
        "--type",
        "tdx",
        VECTORS / "tdx/tdx_quote",
        "--collateral",
        d,
        "--at",
        "2025-06-20T00:00:00Z",
    )
    assert out["verified"] and out["tcb_status"] == "UpToDate"
    (d / "pckcrl.der").unlink()
    p = subprocess.run(
        CMD + ["--type", "tdx", str(VECTORS / "tdx/tdx_quote"), "--collateral", str(d)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and "pckcrl.der" in p.stderr


def _native():
    """shield_asgi._native, or None when the shield_asgi package is not installed in this
    interpreter.  An
    installed one that does not import, or lacks collateral=, fails the test: not a skip."""
    if importlib.util.find_spec("shield_asgi") is None:
        return None
    from shield_asgi import _native

    return _native


needs_native = pytest.mark.skipif(
    _native() is None, reason="the shield_asgi package is not installed in this interpreter"
)


@needs_vectors
@needs_native
def test_native_dcap(tmp_path):
    n = _native()
    q = (VECTORS / "tdx/tdx_quote").read_bytes()
    col = (VECTORS / "tdx/tdx_quote_collateral.json").read_bytes()
    at = dt.datetime(2025, 6, 20, tzinfo=dt.timezone.utc).timestamp()
    r = n.verify(q, "tdx", at=at, collateral=col)
    assert r.verified and r.tcb_status == "UpToDate" and r.advisories == [] and r.tee_type == "tdx"
    r = n.verify(
        q, "tdx", at=at, collateral=str(_pcs_dir(tmp_path, "tdx/tdx_quote_collateral.json"))
    )
    assert r.verified
    r = n.verify(q, "tdx", at=NOW.timestamp(), collateral=col)
    assert r.reason == "collateral_stale" and r.error == "attestation_unavailable"
    r = n.verify(q, "tdx", at=at)
    assert r.reason == "collateral_missing"
    s = (VECTORS / "sgx/sgx_quote").read_bytes()
    r = n.verify(
        s,
        "sgx",
        at=at,
        collateral=(VECTORS / "sgx/sgx_quote_collateral.json").read_bytes(),
        policy=json.dumps(SGX_OPT_IN),
    )
    assert r.verified and r.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert list(r.advisories) == ["INTEL-SA-00289", "INTEL-SA-00615"]
    with pytest.raises(ValueError):
        n.verify(q, "tdx", at=at, collateral=str(tmp_path / "absent"))
