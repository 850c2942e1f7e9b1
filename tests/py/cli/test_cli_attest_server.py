"""`shield attest-server URL` (cli/attest_server.c, shield_asgi.attest_server) against a real
server over TLS on 127.0.0.1: the shield binary serving tests/py/apps/app_server_attest.py
(AttestationRouter: the §4 document, docs/protocol.md).  The command prints what the server
proves and exits 0, or the reason and exits 1 (a measurement the policy or --measurement does
not allow, a certificate the evidence does not bind, a TEE type not allowed, simulated evidence
not trusted, an endpoint that is not there); usage errors exit 2."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import scaled, shield_bin
from support.server_attest import (
    APP,
    DEFAULT_PCR0,
    OTHER_PCR0,
    PKI,
    dev_root,
    env,
    spki_sha256,
    tls_args,
)

pytestmark = pytest.mark.shield_only


@pytest.fixture(scope="module")
def root_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("root") / "dev-root.der"
    p.write_bytes(dev_root())
    return p


@pytest.fixture(scope="module")
def srv(server):
    return server(APP, *tls_args(), env=env(SHIELD_TEST_CERTFILE=PKI["server.pem"]), kind="shield")


def run(*args, timeout=None):
    return subprocess.run(
        [str(shield_bin()), "attest-server", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout or scaled(60),
        env={**os.environ, **env()},
    )


def check(srv, root_file, *args):
    url = f"https://127.0.0.1:{srv.port}"
    return run(url, "--cafile", PKI["ca.pem"], "--trust-simulated", "--simulated-root",
               root_file, *args)  # fmt: skip


def test_prints_what_the_server_proves(srv, root_file):
    r = check(srv, root_file)
    assert r.returncode == 0, r.stderr
    assert "TEE type        simulated (simulated evidence: development only)" in r.stdout
    assert f"PCR0 = {DEFAULT_PCR0}" in r.stdout
    assert f"TLS binding     ok: this connection's key (SPKI SHA-256 {spki_sha256().hex()})" in (
        r.stdout
    )
    assert "policy          passed" in r.stdout
    r = check(srv, root_file, "--json", "--measurement", f"PCR0={DEFAULT_PCR0.upper()}")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["verified"] is True and doc["tee_type"] == "simulated"
    assert doc["measurements"]["PCR0"] == DEFAULT_PCR0
    assert doc["tls_spki_sha256"] == spki_sha256().hex()
    # the router's own path, mounted at the root
    r = check(srv, root_file, "--path", "/attestation", "--tee-types", "simulated,nitro")
    assert r.returncode == 0, r.stderr


def test_a_measurement_it_does_not_have(srv, root_file, tmp_path):
    r = check(srv, root_file, "--measurement", f"PCR0={OTHER_PCR0}")
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert "does not prove it: measurement_mismatch" in r.stderr, r.stderr
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": 1, "nitro": {"pcrs": {"0": [OTHER_PCR0]}}}))
    r = check(srv, root_file, "--policy", policy, "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["verified"], doc["reason"], doc["error"]) == (
        False,
        "measurement_mismatch",
        "attestation_policy",
    )
    policy.write_text(json.dumps({"version": 1, "nitro": {"pcrs": {"0": [DEFAULT_PCR0]}}}))
    assert check(srv, root_file, "--policy", policy).returncode == 0


def test_refusals(srv, root_file, server):
    r = check(srv, root_file, "--tee-types", "sev-snp")
    assert r.returncode == 1 and "policy_denied" in r.stderr, r.stderr
    r = check(srv, root_file, "--path", "/no-such-endpoint")
    assert r.returncode == 1 and "answered 404" in r.stderr, r.stderr
    url = f"https://127.0.0.1:{srv.port}"
    r = run(url, "--cafile", PKI["ca.pem"])  # simulated evidence, not trusted
    assert r.returncode == 1 and "root_untrusted" in r.stderr, r.stderr
    # a server whose certificate is not the one its evidence binds
    other = server(
        APP, *tls_args("server2"), env=env(SHIELD_TEST_CERTFILE=PKI["server.pem"]), kind="shield"
    )
    r = check(other, root_file)
    assert r.returncode == 1 and "binding_mismatch" in r.stderr, r.stderr
    r = run("https://127.0.0.1:9", "--cafile", PKI["ca.pem"])  # nothing listens on port 9
    assert r.returncode == 1 and "unreachable" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "missing the server's URL"),
        (("ftp://x",), "is not an https:// (or http://) URL"),
        (("http://127.0.0.1:1",), "use https:// (or --allow-plain"),
        (("https://x", "--trust-simulated"), "--trust-simulated needs --simulated-root"),
        (("https://x", "--measurement", "PCR0=xyz"), "is not NAME=HEX"),
        (("https://x", "--tee-types", "quantum"), "'quantum' is not a TEE type"),
        (("https://x", "--path", "attestation"), "must start with '/'"),
    ],
)
def test_usage_errors(args, message):
    r = run(*args)
    assert r.returncode == 2 and message in r.stderr, (r.returncode, r.stderr)
    assert "Try 'shield attest-server --help'" in r.stderr
