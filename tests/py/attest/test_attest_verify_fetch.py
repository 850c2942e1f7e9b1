"""`shield verify --fetch / --offline` (cli/verify.c over attest/fetch.c) against a loopback
HTTPS server with a test CA (support/fetch_servers.py, as in test_attest_fetch.py) that serves
the shared vectors' own VCEKs, AMD cert chains, Intel PCS collateral and MAA JWKS at the AMD
KDS, Intel PCS/PCCS and JWKS paths.  Each case must give the MANIFEST result it gives with local
files (at the vectors' valid-at times, --at); then --offline with the filled cache gives it
again with the server stopped; a failing server and no --fetch give collateral_missing."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import pytest

from support.fetch_servers import (  # test CA, vector routes (skips sans cryptography)
    SGX_OPT_IN,
    VectorServer,
    vector_der,
)
from support.verify_cli import VECTORS, find_verify_cmd

needs_vectors = pytest.mark.skipif(
    not (VECTORS / "MANIFEST.md").exists(),
    reason=f"attestation vectors not found at {VECTORS} (set SHIELD_VECTORS)",
)


CMD = find_verify_cmd("--fetch")
pytestmark = [
    needs_vectors,
    pytest.mark.skipif(CMD is None, reason="no `shield verify` with --fetch is built"),
]


@pytest.fixture
def srv(tmp_path):
    s = VectorServer(tmp_path)
    s.base = s.serve(tmp_path)
    yield s
    s.close()


def run(*args, env_cache=None):
    env = dict(os.environ)
    if env_cache is not None:
        env["XDG_CACHE_HOME"] = str(env_cache)
    p = subprocess.run(
        CMD + [str(a) for a in args] + ["--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert p.returncode in (0, 1), p.stderr
    out = json.loads(p.stdout)
    assert (p.returncode == 0) == out["verified"]
    return out, p


def reason(out):
    return None if out["verified"] else out["reason"]


# report, local VCEK, product, --at, MANIFEST reason
SNP = [
    ("test-report.bin", "test-vcek.der", "Milan", "2025-06-01T00:00:00Z", None),
    ("attestation.bin", "vcek.testcer", "Milan", "2025-06-01T00:00:00Z", "debug_not_allowed"),
    ("azure-genoa-snp-report.bin", "vcek-genoa.pem", "Genoa", "2025-06-01T00:00:00Z", None),
    ("oak-genoa-report.bin", "oak-genoa-vcek.der", "Genoa", "2026-01-01T00:00:00Z", None),
]


@pytest.mark.parametrize("report,vcek,product,at,want", SNP)
def test_snp_fetch_then_offline(srv, tmp_path, report, vcek, product, at, want):
    rep = VECTORS / "sev-snp" / report
    chip = rep.read_bytes()[0x1A0:0x1E0].hex()
    srv.vceks[(product, chip)] = vector_der(VECTORS / "sev-snp" / vcek)
    srv.chains[product] = (VECTORS / "roots" / f"amd-{product.lower()}-ask-ark.pem").read_bytes()
    local, _ = run("--type", "sev-snp", rep, "--cert", VECTORS / "sev-snp" / vcek, "--at", at)
    assert reason(local) == want
    cache = tmp_path / "cache"
    base = ["--type", "sev-snp", rep, "--at", at]
    out, _ = run(
        *base, "--fetch", "--kds-url", srv.base, "--fetch-ca", srv.ca_file, "--cache-dir", cache
    )
    assert out == local
    vq = [p for p in srv.paths if p.startswith(f"/vcek/v1/{product}/{chip}?")]
    assert len(vq) == 1 and "blSPL=" in vq[0] and "ucodeSPL=" in vq[0], srv.paths
    assert f"/vcek/v1/{product}/cert_chain" in srv.paths
    if product == "Genoa":  # v3+ reports: the product comes from CPUID, nothing else is tried
        assert not [p for p in srv.paths if p.startswith(("/vcek/v1/Milan", "/vcek/v1/Turin"))]
    files = sorted(p.name for p in cache.iterdir())
    assert f"amd-vcek-{product}-chain.pem" in files and any(
        f.startswith(f"amd-vcek-{product}-{chip}") for f in files
    )
    n = len(srv.paths)
    srv.close()
    out, _ = run(*base, "--offline", "--cache-dir", cache)
    assert out == local and len(srv.paths) == n
    # unchanged without --fetch; an empty cache offline; a failing server
    assert reason(run(*base)[0]) == "collateral_missing"
    out, p = run(*base, "--offline", "--cache-dir", tmp_path / "empty")
    assert reason(out) == "collateral_missing"


def test_snp_failures(srv, tmp_path):
    rep = VECTORS / "sev-snp" / "test-report.bin"
    base = [
        "--type",
        "sev-snp",
        rep,
        "--at",
        "2025-06-01T00:00:00Z",
        "--fetch",
        "--fetch-ca",
        srv.ca_file,
        "--cache-dir",
        tmp_path / "c",
    ]
    out, p = run(*base, "--kds-url", srv.base + "/fail")
    assert reason(out) == "collateral_missing"
    p = subprocess.run(
        CMD + [str(a) for a in base] + ["--kds-url", srv.base + "/fail"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 1 and "status 500" in p.stdout and "fetch failed" in p.stdout
    # the server knows no VCEK for this chip: Milan, Genoa and Turin are tried (a v2 report)
    srv.paths.clear()
    out, _ = run(*base, "--kds-url", srv.base)
    assert reason(out) == "collateral_missing"
    assert [p.split("/")[3] for p in srv.paths if p.startswith("/vcek/v1/")] == [
        "Milan",
        "Genoa",
        "Turin",
    ]
    # a TLS server the fetch CA does not know
    out, _ = run(
        "--type",
        "sev-snp",
        rep,
        "--at",
        "2025-06-01T00:00:00Z",
        "--fetch",
        "--kds-url",
        srv.base,
        "--cache-dir",
        tmp_path / "d",
    )
    assert reason(out) == "collateral_missing"
    # a VLEK report: not fetchable by chip, a clear message
    vl = VECTORS / "sev-snp" / "test-vlek-report.bin"
    p = subprocess.run(
        CMD
        + [
            "--type",
            "sev-snp",
            str(vl),
            "--at",
            "2025-06-01T00:00:00Z",
            "--fetch",
            "--kds-url",
            srv.base,
            "--cache-dir",
            str(tmp_path / "e"),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 1 and "VLEK" in p.stdout


DCAP = [
    (
        "tdx",
        "tdx/tdx_quote",
        "tdx/tdx_quote_collateral.json",
        "2025-06-20T00:00:00Z",
        None,
        None,
        "UpToDate",
    ),
    (
        "sgx",
        "sgx/sgx_quote",
        "sgx/sgx_quote_collateral.json",
        "2025-06-20T00:00:00Z",
        SGX_OPT_IN,
        None,
        "ConfigurationAndSWHardeningNeeded",
    ),
    (
        "sgx",
        "sgx/sgx_quote",
        "sgx/sgx_quote_collateral.json",
        "2025-06-20T00:00:00Z",
        None,
        "tcb_out_of_date",
        "ConfigurationAndSWHardeningNeeded",
    ),
    (
        "tdx",
        "tdx/tdx_quote_outdated",
        "tdx/tdx_quote_outdated_collateral.json",
        "2026-03-01T00:00:00Z",
        None,
        "tcb_unsupported",
        None,
    ),
]


@pytest.mark.parametrize("tee,quote,col,at,pol,want,status", DCAP)
def test_dcap_fetch_then_offline(srv, tmp_path, tee, quote, col, at, pol, want, status):
    srv.pcs[tee] = json.loads((VECTORS / col).read_text())
    base = ["--type", tee, VECTORS / quote, "--at", at]
    if pol:
        (tmp_path / "p.json").write_text(json.dumps(pol))
        base += ["--policy", tmp_path / "p.json"]
    local, _ = run(*base, "--collateral", VECTORS / col)
    assert reason(local) == want and local["tcb_status"] == status
    cache = tmp_path / "cache"
    out, _ = run(
        *base, "--fetch", "--pcs-url", srv.base, "--fetch-ca", srv.ca_file, "--cache-dir", cache
    )
    assert out == local
    fm = json.loads(srv.pcs[tee]["tcb_info"])["fmspc"].lower()
    assert f"/{tee}/certification/v4/tcb?fmspc={fm}" in srv.paths
    assert f"/{tee}/certification/v4/qe/identity" in srv.paths
    assert "/sgx/certification/v4/rootcacrl" in srv.paths
    assert any(p.startswith("/sgx/certification/v4/pckcrl?ca=") for p in srv.paths)
    assert f"intel-{tee}-tcb-{fm}.json.chain.pem" in {p.name for p in cache.iterdir()}
    n = len(srv.paths)
    srv.close()
    out, _ = run(*base, "--offline", "--cache-dir", cache)
    assert out == local and len(srv.paths) == n
    assert reason(run(*base)[0]) == "collateral_missing"


def test_dcap_failing_server(srv, tmp_path):
    out, p = run(
        "--type",
        "tdx",
        VECTORS / "tdx/tdx_quote",
        "--at",
        "2025-06-20T00:00:00Z",
        "--fetch",
        "--pcs-url",
        srv.base + "/fail",
        "--fetch-ca",
        srv.ca_file,
        "--cache-dir",
        tmp_path / "c",
    )
    assert reason(out) == "collateral_missing"
    # the debug TD quote fails before collateral matters: nothing is fetched
    srv.paths.clear()
    out, _ = run(
        "--type",
        "tdx",
        VECTORS / "tdx/tdx_quote_4.dat",
        "--at",
        "2025-01-01T00:00:00Z",
        "--fetch",
        "--pcs-url",
        srv.base,
        "--fetch-ca",
        srv.ca_file,
        "--cache-dir",
        tmp_path / "c",
    )
    assert reason(out) == "debug_not_allowed" and not srv.paths


MAA_AT = "2022-05-31T23:00:00Z"
MAA_ISS = "https://sharedwus.wus.attest.azure.net"


def test_maa_jwks_fetch_then_offline(srv, tmp_path):
    srv.jwks = (VECTORS / "maa" / "sharedwus-certs-2022-05-31.json").read_bytes()
    tok = VECTORS / "maa" / "simpleattest-sgx.jwt"
    for extra in ([], ["--allow-debug", "--issuer", MAA_ISS]):
        base = ["--type", "maa", tok, "--at", MAA_AT, *extra]
        local, _ = run(*base, "--jwks", VECTORS / "maa" / "sharedwus-certs-2022-05-31.json")
        assert reason(local) == (None if extra else "debug_not_allowed")
        cache = tmp_path / f"cache{len(extra)}"
        out, _ = run(
            *base,
            "--fetch",
            "--jwks-url",
            srv.base + "/certs",
            "--fetch-ca",
            srv.ca_file,
            "--cache-dir",
            cache,
        )
        assert out == local and "/certs" in srv.paths
        assert len(list(cache.glob("jwks-*.json"))) == 1
        n = len(srv.paths)
        out, _ = run(*base, "--offline", "--jwks-url", srv.base + "/certs", "--cache-dir", cache)
        assert out == local and len(srv.paths) == n
        assert reason(run(*base)[0]) == "collateral_missing"
    # no --jwks-url and no --issuer: nothing configured to fetch from
    out, _ = run("--type", "maa", tok, "--at", MAA_AT, "--fetch", "--cache-dir", tmp_path / "x")
    assert reason(out) == "collateral_missing" and not [
        p for p in srv.paths if p.startswith("/.well-known")
    ]
    out, _ = run(
        "--type",
        "maa",
        tok,
        "--at",
        MAA_AT,
        "--fetch",
        "--jwks-url",
        srv.base + "/fail/certs",
        "--fetch-ca",
        srv.ca_file,
        "--cache-dir",
        tmp_path / "y",
    )
    assert reason(out) == "collateral_missing"


def test_maa_jwks_rotation(srv, tmp_path):
    """Key rotation (attest/verify_fetch.c retry_rotated, shared with the server): the cached
    JWKS lacks the token's kid -> the issuer's JWKS is refetched once, past the cache; a kid
    still unknown is root_untrusted, as with a --jwks file that lacks it."""
    full = (VECTORS / "maa" / "sharedwus-certs-2022-05-31.json").read_bytes()
    old = json.loads(full)
    old["keys"] = old["keys"][1:]  # the first key is the token's
    (tmp_path / "old.json").write_text(json.dumps(old))
    tok = VECTORS / "maa" / "simpleattest-sgx.jwt"
    base = ["--type", "maa", tok, "--at", MAA_AT, "--allow-debug", "--issuer", MAA_ISS]

    def message(*args):  # the human output carries the message (--json does not)
        p = subprocess.run(
            CMD + [str(a) for a in args], capture_output=True, text=True, timeout=60, check=False
        )
        assert p.returncode == 1, (p.stdout, p.stderr)
        return p.stdout

    assert reason(run(*base, "--jwks", tmp_path / "old.json")[0]) == "root_untrusted"
    assert "not in the configured JWKS" in message(*base, "--jwks", tmp_path / "old.json")
    fetch = [
        *base,
        "--fetch",
        "--jwks-url",
        srv.base + "/certs",
        "--fetch-ca",
        srv.ca_file,
        "--cache-dir",
        tmp_path / "cache",
    ]
    srv.jwks = json.dumps(old).encode()
    out, _ = run(*fetch)
    assert reason(out) == "root_untrusted"
    assert srv.paths.count("/certs") == 1  # just fetched: no refetch
    msg = message(*fetch)  # a new process: the (fresh) disk copy, then one refetch
    assert "not in the configured JWKS" in msg and "refetched just now" in msg, msg
    assert srv.paths.count("/certs") == 2
    # the issuer publishes the key: the cached (fresh, on disk) JWKS lacks it, one refetch
    srv.jwks = full
    out, _ = run(*fetch)
    assert out["verified"] and srv.paths.count("/certs") == 3
    out, _ = run(*fetch)  # the new JWKS is the cached one now
    assert out["verified"] and srv.paths.count("/certs") == 3


def test_default_cache_dir_and_usage(srv, tmp_path):
    rep = VECTORS / "sev-snp" / "test-report.bin"
    srv.vceks[("Milan", rep.read_bytes()[0x1A0:0x1E0].hex())] = (
        VECTORS / "sev-snp" / "test-vcek.der"
    ).read_bytes()
    base = ["--type", "sev-snp", rep, "--at", "2025-06-01T00:00:00Z"]
    out, _ = run(
        *base,
        "--fetch",
        "--kds-url",
        srv.base,
        "--fetch-ca",
        srv.ca_file,
        env_cache=tmp_path / "xdg",
    )
    assert out["verified"]
    d = tmp_path / "xdg" / "shield" / "collateral"
    assert d.is_dir() and oct(d.stat().st_mode & 0o777) == "0o700" and any(d.iterdir())
    assert run(*base, "--offline", env_cache=tmp_path / "xdg")[0]["verified"]
    bad = [
        ["--fetch", "--offline"],
        ["--kds-url", srv.base],
        ["--fetch", "--kds-url", "ftp://x"],
        ["--fetch", "--pcs-url", "kdsintf.amd.com"],
        ["--fetch", "--jwks-url", "https://a b"],
        ["--fetch", "--fetch-ca", tmp_path / "absent.pem"],
        ["--fetch", "--cache-dir", tmp_path / "no" / "such" / "dir"],
        ["--fetch", "--kds-url"],
    ]
    for b in bad:
        p = subprocess.run(CMD + [str(a) for a in base + b], capture_output=True, text=True)
        assert p.returncode == 2, (b, p.stdout, p.stderr)


def test_manifest_times_still_matter(srv, tmp_path):
    """Fetched collateral is verified like a local file: at today's time the 2025 TDX collateral
    is stale (MANIFEST), whatever the fetch."""
    srv.pcs["tdx"] = json.loads((VECTORS / "tdx/tdx_quote_collateral.json").read_text())
    now = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out, _ = run(
        "--type",
        "tdx",
        VECTORS / "tdx/tdx_quote",
        "--at",
        now,
        "--fetch",
        "--pcs-url",
        srv.base,
        "--fetch-ca",
        srv.ca_file,
        "--cache-dir",
        tmp_path / "c",
    )
    assert reason(out) == "collateral_stale"
