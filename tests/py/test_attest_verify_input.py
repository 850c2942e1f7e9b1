"""`shield verify`'s evidence input limits: evidence over 4 MiB is rejected (exit 1) with its
size, whether read from a file or stdin; a file that cannot be read is a usage error (exit 2).
Needs no vectors: the evidence here is never valid, only its size matters."""

from __future__ import annotations

import json
import subprocess

import pytest

from verify_cli import find_verify_cmd

LIMIT = 4 * 1024 * 1024
AT = "2026-11-24T12:00:00Z"
CMD = find_verify_cmd("--type")
pytestmark = pytest.mark.skipif(CMD is None,
                                reason="neither `shield verify` nor attest-verify is built")


def cli(*args, **kw):
    return subprocess.run(CMD + [str(a) for a in args], capture_output=True, timeout=120, **kw)


@pytest.mark.parametrize("typ", ["nitro", "sev-snp", "maa"])
def test_evidence_over_the_limit_is_rejected_with_its_size(tmp_path, typ):
    f = tmp_path / "big.bin"
    f.write_bytes(b"\x00" * (LIMIT + 1))
    p = cli("--type", typ, f, "--at", AT)
    why = f"{f} is {LIMIT + 1} bytes, over the 4 MiB evidence limit"
    assert p.returncode == 1, p.stderr
    assert p.stdout.decode().startswith(f"rejected: malformed ({why})"), (p.stdout, p.stderr)
    p = cli("--type", typ, f, "--at", AT, "--json")
    assert p.returncode == 1, p.stderr
    out = json.loads(p.stdout)
    assert out["verified"] is False and out["reason"] == "malformed" and out["tee_type"] == typ
    assert why in p.stderr.decode()


def test_evidence_over_the_limit_on_stdin(tmp_path):
    p = cli("--type", "nitro", "-", "--at", AT, input=b"A" * (LIMIT + 10))
    assert p.returncode == 1, p.stderr
    assert "- is over the 4 MiB evidence limit" in p.stdout.decode()


def test_evidence_at_the_limit_is_verified(tmp_path):
    """Exactly 4 MiB is read and verified (and refused for what it is, not for its size)."""
    f = tmp_path / "max.bin"
    f.write_bytes(b"\x00" * LIMIT)
    p = cli("--type", "nitro", f, "--at", AT)
    assert p.returncode == 1 and p.stdout.startswith(b"rejected: malformed")
    assert b"evidence limit" not in p.stdout + p.stderr


def test_unreadable_evidence_is_a_usage_error(tmp_path):
    p = cli("--type", "nitro", tmp_path / "absent.bin", "--at", AT)
    assert p.returncode == 2 and p.stdout == b""
    assert f"cannot read {tmp_path / 'absent.bin'}: No such file or directory" in p.stderr.decode()
    p = cli("--type", "nitro", tmp_path, "--at", AT)  # a directory
    assert p.returncode == 2 and b"cannot read" in p.stderr


def test_certificate_over_the_limit_is_a_usage_error(tmp_path):
    (tmp_path / "ev.bin").write_bytes(b"\x00" * 64)
    big = tmp_path / "cert.pem"
    big.write_bytes(b"\x00" * (LIMIT + 1))
    p = cli("--type", "sev-snp", tmp_path / "ev.bin", "--cert", big, "--at", AT)
    assert p.returncode == 2
    assert f"{big} is {LIMIT + 1} bytes, over the 4 MiB limit" in p.stderr.decode()
