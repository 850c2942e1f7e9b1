"""`shield verify`'s inputs: evidence over 4 MiB is rejected (exit 1) with its size, whether read
from a file or stdin; a file that cannot be read is a usage error (exit 2); --at takes RFC 3339
or Unix seconds and refuses times that do not exist; --kds-url/--pcs-url/--jwks-url follow the
fetcher's URL rule.  Needs no vectors: the evidence here is never valid."""

from __future__ import annotations

import json
import subprocess

import pytest

from support.verify_cli import find_verify_cmd

LIMIT = 4 * 1024 * 1024
AT = "2026-11-24T12:00:00Z"
CMD = find_verify_cmd("--type")
pytestmark = pytest.mark.skipif(
    CMD is None, reason="neither `shield verify` nor attest-verify is built"
)


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


@pytest.mark.parametrize(
    "at",
    [
        "1800000000",
        "2026-11-24T12:00:00Z",
        "2026-11-24t12:00:00z",
        "2026-11-24 12:00:00Z",
        "2026-11-24T12:00:00.123456Z",
        "2026-11-24T14:00:00+02:00",
        "2026-11-24T06:30:00-05:30",
    ],
)
def test_at_accepts_rfc3339_and_unix_seconds(tmp_path, at):
    """--at (common.h's sh_rfc3339_parse): every form it documents gets to verification."""
    (tmp_path / "ev.bin").write_bytes(b"\x84\x00" * 10)
    p = cli("--type", "nitro", tmp_path / "ev.bin", "--at", at)
    assert p.returncode == 1 and p.stdout.startswith(b"rejected: malformed"), (p.stdout, p.stderr)


@pytest.mark.parametrize(
    "at",
    [
        "2016-12-31T23:59:60Z",  # a leap second: Unix time has none (was rolled into the next)
        "2023-02-29T00:00:00Z",  # no such day (was moved to March 1)
        "2026-04-31T00:00:00Z",  # April has 30 days
        "2026-11-24T12:00:00+ab:cd",  # an offset that is not a number (was read as +00:00)
        "2026-11-24T12:00:00+24:00",  # offset hour out of range
        "2026-1-24T12:00:00Z",  # one-digit month
        "2026-11-24T12:00:00.Z",  # a fraction without digits
        "2026-11-24T12:00:00",  # no offset
        "0",
        "-5",
        " 1800000000",  # Unix seconds must be digits, after 1970
    ],
)
def test_at_refuses_times_that_do_not_exist(tmp_path, at):
    (tmp_path / "ev.bin").write_bytes(b"\x84\x00" * 10)
    p = cli("--type", "nitro", tmp_path / "ev.bin", "--at", at)
    assert p.returncode == 2 and b"--at: not an RFC 3339 time" in p.stderr, (p.stdout, p.stderr)


@pytest.mark.parametrize(
    "url,ok",
    [
        ("http://127.0.0.1:1", True),  # loopback: a proxy on this host
        ("http://localhost:1/kds", True),
        ("http://[::1]:1", True),
        ("https://kds.example", True),
        ("http://192.0.2.1:1", False),  # plain http elsewhere
        ("http://localhost.evil.example/", False),  # "localhost" must be the whole host
        ("http://127.evil.example/", False),  # as must a 127.0.0.0/8 address
        ("http://localhost@evil.example/", False),  # userinfo can disguise the host
        ("https://kds.example:99999", False),  # port out of range
        ("https://kds example", False),  # a space
    ],
)
def test_fetch_urls_are_https_or_loopback_http(tmp_path, url, ok):
    """--kds-url/--pcs-url/--jwks-url follow attest.h's sh_attest_url_ok, the rule the fetcher
    applies: a bad one is a usage error before anything is read or fetched."""
    (tmp_path / "ev.bin").write_bytes(b"\x00" * 64)  # malformed: nothing is fetched for it
    for flag in ("--kds-url", "--pcs-url", "--jwks-url"):
        p = cli(
            "--type",
            "sev-snp",
            tmp_path / "ev.bin",
            "--at",
            AT,
            "--fetch",
            "--cache-dir",
            tmp_path / "cache",
            flag,
            url,
        )
        if ok:
            assert p.returncode == 1 and p.stdout.startswith(b"rejected: malformed"), (
                p.stdout,
                p.stderr,
            )
        else:
            assert p.returncode == 2, (flag, url, p.stdout, p.stderr)
            assert f"{flag}: not an https:// (or loopback http://) URL".encode() in p.stderr
