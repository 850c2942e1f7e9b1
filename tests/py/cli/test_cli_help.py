"""The `shield` command line as a user meets it (cli/): `--help` of every command on stdout with
exit 0, every subcommand and every flag listed, unknown commands and flags refused on stderr with
exit 2, `--version`.  Against the real binary (and its second name, shield-asgi)."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import REPO, shield_bin

pytestmark = pytest.mark.shield_only

COMMANDS = ("verify", "attest", "attest-server", "dev-root")
FLAG = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")


def run(*args, binary=None):
    return subprocess.run(
        [str(binary or shield_bin()), *args], capture_output=True, text=True, timeout=30
    )


def table_flags() -> set[str]:
    """Every flag (and alias) of the serve command's option table, read from its source: the
    table --help is printed from and parsed with."""
    src = (REPO / "cli" / "serve_opts.c").read_text()
    rows = re.findall(r'\{"(--[a-z0-9-]+)"', src)
    aliases = re.findall(r'\.alias = "(--[a-z0-9-]+)"', src)
    assert len(rows) > 80, "the table was not found in cli/serve_opts.c"
    return set(rows) | set(aliases)


@pytest.mark.parametrize("name", ["shield", "shield-asgi"])
def test_help_lists_every_command_and_flag(name):
    binary = shield_bin().with_name(name) if name != "shield" else None
    if binary is not None and not binary.exists():
        pytest.skip(f"{binary} is not installed next to {shield_bin()} (a build directory)")
    r = run("--help", binary=binary)
    assert r.returncode == 0 and r.stderr == "", (r.returncode, r.stderr)
    assert r.stdout.startswith("Usage: shield [OPTIONS] MODULE:ATTR"), r.stdout[:200]
    for cmd in COMMANDS:
        assert re.search(rf"^  {re.escape(cmd)} ", r.stdout, re.M), f"{cmd} not in --help"
    listed = set(FLAG.findall(r.stdout))
    missing = table_flags() - listed
    assert not missing, f"flags of the table missing from --help: {sorted(missing)}"
    assert run("-h").stdout == r.stdout


def test_every_listed_flag_is_parsed():
    """Each flag --help lists is one the parser knows: given (with a dummy value when it takes
    one) before a bad --port, the run fails on the value or on --port, never as unknown."""
    help_text = run("--help").stdout
    # "  --port N   ..." (a metavar right after the flag) vs "  --factory      ..."
    takes_value = set(re.findall(r"^  (--[a-z0-9-]+)(?:, --[a-z0-9-]+)? \S", help_text, re.M))
    for flag in sorted(table_flags()):
        if flag in ("--help", "--version"):
            continue
        args = [flag, "x"] if flag in takes_value else [flag]
        r = run(*args, "--port", "bad", "m:a")
        assert r.returncode == 2, (flag, r.returncode, r.stderr)
        assert "unknown option" not in r.stderr, (flag, r.stderr)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_subcommand_help_on_stdout_exit_0(cmd):
    for flag in ("--help", "-h"):
        r = run(cmd, flag)
        assert r.returncode == 0, (cmd, r.returncode, r.stderr)
        assert r.stdout.startswith(f"Usage: shield {cmd}"), r.stdout[:200]
        assert r.stderr == ""
        assert "--help" in r.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_subcommand_unknown_flag_exit_2(cmd):
    r = run(cmd, "--no-such-flag")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert f"shield {cmd}: unknown option '--no-such-flag'" in r.stderr, r.stderr
    assert f"Try 'shield {cmd} --help'" in r.stderr, r.stderr


def test_unknown_command_exit_2():
    r = run("frobnicate")
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout)
    assert "'frobnicate' is neither a command" in r.stderr, r.stderr
    for cmd in COMMANDS:
        assert cmd in r.stderr
    assert "MODULE:ATTR" in r.stderr and "Try 'shield --help'" in r.stderr


def test_unknown_flag_exit_2():
    r = run("--no-such-flag", "main:app")
    assert r.returncode == 2 and r.stdout == ""
    assert "unknown option '--no-such-flag'" in r.stderr and "Try 'shield --help'" in r.stderr


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stderr == ""
    assert re.fullmatch(r"shield \d+\.\d+\.\d+\S*\n", r.stdout), r.stdout
