"""attest/fetch.c (through the test-only tests/c/fetch-tool, built from
tests/c/attest/fetch_tool.c) against a local HTTPS server started here on loopback, with a test
CA generated here: OpenID discovery + JWKS, AMD KDS (VCEK, cert chain, CRL), Intel PCS/PCCS
(TCB info, QE identity, PCK CRL with their issuer-chain headers); memory and disk caches,
offline mode, negative caching, the rate limit, the allow-lists, and
hostile responses (slow, huge with and without Content-Length, wrong Content-Type, bad body,
errors, redirects, an untrusted certificate, plain http)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import REPO
from support.fetch_servers import Fixture  # skips this module when cryptography is absent


def _tool():
    if os.environ.get("SHIELD_FETCH_TOOL"):
        return os.environ["SHIELD_FETCH_TOOL"]
    # scripts/test builds build/ci; developers' own build dirs come after it.
    found = sorted(
        (REPO / "build").glob("*/tests/c/fetch-tool"), key=lambda p: (p.parts[-4] != "ci", str(p))
    )
    return str(found[0]) if found else None


TOOL = _tool()
pytestmark = pytest.mark.skipif(TOOL is None, reason="tests/c/fetch-tool is not built")


@pytest.fixture
def fx(tmp_path):
    f = Fixture(tmp_path)
    f.base = f.serve(tmp_path)
    yield f
    f.close()


def run(fx, *args, ops, ca=True, timeout=30):
    cmd = [TOOL] + (["--ca", str(fx.ca_file)] if ca else []) + [str(a) for a in args] + list(ops)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


NOW = int(time.time())
CHIP = "ab" * 64
# ucode 0x73, snp 0, tee 3, bl 4 (u64 little-endian layout, printed big-endian)
TCB = "7300000000000304"


def test_jwks_discovery_memory_cache(fx):
    iss = fx.base
    out = run(
        fx,
        "--issuer",
        iss,
        ops=[f"at:{NOW}", f"jwks:{iss}", f"jwks:{iss}", f"at:{NOW + 3601}", f"jwks:{iss}"],
    )
    assert [o["ok"] for o in out] == [True] * 3, out
    assert [o["from_cache"] for o in out] == [0, 1, 0]
    assert fx.hits["/certs"] == 2 and fx.hits["/.well-known/openid-configuration"] == 2
    # a configured JWKS URL skips discovery
    out = run(
        fx,
        "--issuer",
        f"https://maa.example={iss}/certs",
        ops=[f"at:{NOW}", "jwks:https://maa.example"],
    )
    assert out[0]["ok"] and fx.hits["/.well-known/openid-configuration"] == 2
    # only configured issuers
    n = sum(fx.hits.values())
    out = run(fx, "--issuer", iss, ops=[f"at:{NOW}", "jwks:https://evil.example", f"openid:{iss}/"])
    assert [o.get("reason") for o in out] == ["policy_denied", "policy_denied"]
    assert sum(fx.hits.values()) == n


def test_openid_issuer_mismatch(fx):
    # the discovery document names another issuer (the server answers with its own URL)
    iss = fx.base + "/"  # trailing slash: differs from the document's "issuer"
    out = run(fx, "--issuer", iss, ops=[f"at:{NOW}", f"jwks:{iss}"])
    assert not out[0]["ok"] and "issuer differs" in out[0]["message"]


def test_amd_kds(fx):
    ops = [
        f"at:{NOW}",
        f"vcek:Milan:{CHIP}:{TCB}",
        f"vcek:Turin:{CHIP}:{TCB}",
        "chain:vcek:Milan",
        "crl:vcek:Milan",
        "chain:vlek:Genoa",
        f"vcek:Siena:{CHIP}:{TCB}",
        "chain:xyz:Milan",
    ]
    out = run(fx, "--kds-url", fx.base, ops=ops)
    assert [o["ok"] for o in out[:5]] == [True] * 5, out
    assert [o["reason"] for o in out[5:]] == ["policy_denied", "policy_denied"]
    vq = [p for p in fx.paths if p.startswith("/vcek/v1/Milan/ab")][0]
    assert vq == f"/vcek/v1/Milan/{CHIP}?blSPL=4&teeSPL=3&snpSPL=0&ucodeSPL=115"
    tq = [p for p in fx.paths if p.startswith("/vcek/v1/Turin/")][0]
    assert tq == f"/vcek/v1/Turin/{'ab' * 8}?fmcSPL=4&blSPL=3&teeSPL=0&snpSPL=0&ucodeSPL=115"
    out = run(
        fx,
        "--kds-url",
        fx.base,
        "--product",
        "Genoa",
        ops=[f"at:{NOW}", "chain:vcek:Milan", "crl:vlek:Genoa"],
    )
    assert out[0]["reason"] == "policy_denied" and out[1]["ok"]


def test_intel_pcs(fx):
    out = run(
        fx,
        "--pcs-url",
        fx.base,
        ops=[
            f"at:{NOW}",
            "tcb:sgx:00906ED50000",
            "tcb:tdx:b0c06f000000",
            "qe:sgx",
            "qe:tdx",
            "pckcrl:processor",
            "pckcrl:platform",
            "tcb:sgx:00906ED5",
            "qe:sev",
            "pckcrl:root",
        ],
    )
    assert [o["ok"] for o in out[:6]] == [True] * 6, out
    for o in out[:6]:
        assert (
            o["chain"].startswith("-----BEGIN CERTIFICATE-----") and o["chain"].count("BEGIN") == 2
        )
    assert [o["reason"] for o in out[6:]] == ["policy_denied"] * 3
    assert "/sgx/certification/v4/tcb?fmspc=00906ed50000" in fx.paths
    assert "/sgx/certification/v4/pckcrl?ca=processor&encoding=der" in fx.paths


def test_disk_cache_offline_and_stale(fx, tmp_path):
    cache = tmp_path / "cache"
    args = ["--kds-url", fx.base, "--pcs-url", fx.base, "--cache", cache]
    out = run(fx, *args, ops=[f"at:{NOW}", "chain:vcek:Milan", "tcb:sgx:00906ed50000"])
    assert all(o["ok"] and o["from_cache"] == 0 for o in out), out
    names = sorted(p.name for p in cache.iterdir())
    assert names == [
        "amd-vcek-Milan-chain.pem",
        "intel-sgx-tcb-00906ed50000.json",
        "intel-sgx-tcb-00906ed50000.json.chain.pem",
    ]
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    n = sum(fx.hits.values())
    # a new process: served from disk without a request
    out = run(fx, *args, ops=[f"at:{NOW}", "chain:vcek:Milan", "tcb:sgx:00906ed50000"])
    assert [o["from_cache"] for o in out] == [2, 2] and out[1]["chain"]
    # offline: files only, whatever their age; nothing else
    out = run(
        fx,
        "--cache",
        cache,
        "--offline",
        ops=[f"at:{NOW + 10**6}", "chain:vcek:Milan", "crl:vcek:Milan"],
    )
    assert out[0]["ok"] and out[0]["from_cache"] == 2
    assert out[1]["reason"] == "collateral_missing" and "offline" in out[1]["message"]
    assert sum(fx.hits.values()) == n
    # past the ttl with the network failing: the old disk copy, marked stale
    out = run(
        fx,
        "--kds-url",
        fx.base + "/fail",
        "--cache",
        cache,
        ops=[f"at:{NOW + 7200}", "chain:vcek:Milan"],
    )
    assert out[0]["ok"] and out[0]["stale"] and out[0]["from_cache"] == 2
    # a corrupt file on disk is not used
    (cache / "amd-vcek-Milan-crl.der").write_bytes(b"garbage")
    out = run(fx, "--cache", cache, "--offline", ops=[f"at:{NOW}", "crl:vcek:Milan"])
    assert not out[0]["ok"]


@pytest.mark.parametrize(
    "mode,needle",
    [
        ("slow", "timed out"),
        ("huge", "larger than"),
        ("hugechunked", "larger than"),
        ("wrongtype", "Content-Type"),
        ("badbody", "not the expected format"),
        ("fail", "status 500"),
        ("notfound", "status 404"),
        ("redirect", "status 302"),
    ],
)
def test_hostile_responses(fx, mode, needle):
    t = time.monotonic()
    out = run(
        fx,
        "--kds-url",
        f"{fx.base}/{mode}",
        "--pcs-url",
        f"{fx.base}/{mode}",
        "--issuer",
        f"{fx.base}/{mode}",
        "--timeout-ms",
        "1000",
        "--max-bytes",
        "65536",
        ops=[f"at:{NOW}", "crl:vcek:Milan", "tcb:sgx:00906ed50000", f"openid:{fx.base}/{mode}"],
    )
    assert all(not o["ok"] and o["reason"] == "collateral_missing" for o in out), out
    assert all(needle in o["message"] for o in out), out
    assert time.monotonic() - t < 15


def test_negative_cache_and_rate_limit(fx):
    bad = f"{fx.base}/fail"
    out = run(
        fx,
        "--kds-url",
        bad,
        ops=[f"at:{NOW}", "crl:vcek:Milan", "crl:vcek:Milan", f"at:{NOW + 61}", "crl:vcek:Milan"],
    )
    assert "status 500" in out[0]["message"] and "recent failure" in out[1]["message"]
    assert "status 500" in out[2]["message"] and fx.hits["/fail/vcek/v1/Milan/crl"] == 2
    ops = (
        [f"at:{NOW}"]
        + [f"vcek:Milan:{i:02x}{CHIP[2:]}:{TCB}" for i in range(3)]
        + [f"at:{NOW + 60}", f"vcek:Milan:{CHIP}:{TCB}"]
    )
    out = run(fx, "--kds-url", fx.base, "--per-minute", "2", ops=ops)
    assert [o["ok"] for o in out] == [True, True, False, True]
    assert "rate limit" in out[2]["message"]


def test_tls_and_plain_http(fx, tmp_path):
    # a server whose certificate does not chain to the configured CA
    other = fx.serve(tmp_path, cert="bad")
    out = run(fx, "--kds-url", other, ops=[f"at:{NOW}", "chain:vcek:Milan"])
    assert not out[0]["ok"] and "certificate" in out[0]["message"].lower()
    # no --ca: the system store does not know the test CA either
    out = run(fx, "--kds-url", fx.base, ops=[f"at:{NOW}", "chain:vcek:Milan"], ca=False)
    assert not out[0]["ok"]
    # plain http: only for an explicitly configured override on loopback
    plain = fx.serve(tmp_path, tls=False)
    out = run(
        fx,
        "--kds-url",
        plain,
        "--pcs-url",
        "http://192.0.2.1:1",
        "--issuer",
        plain,
        ops=[f"at:{NOW}", "chain:vcek:Milan", "qe:sgx", f"jwks:{plain}"],
    )
    assert out[0]["ok"], out
    assert not out[1]["ok"] and "non-https" in out[1]["message"]
    assert (
        not out[2]["ok"] and "non-https" in out[2]["message"]
    )  # discovery URL is never an override
    out = run(fx, "--kds-url", "http://user@127.0.0.1:1", ops=[f"at:{NOW}", "chain:vcek:Milan"])
    assert "non-https" in out[0]["message"]
