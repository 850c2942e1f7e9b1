"""The `shield` binary: built into the venv, embeds that venv's interpreter, keeps its libuv and
llhttp private (so uvloop's bundled libuv never interposes), clear CLI errors."""

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from conftest import IS_UVICORN, REPO, python_bin, shield_bin

pytestmark = pytest.mark.shield_only


def run_shield(*args, timeout=30):
    return subprocess.run(
        [str(shield_bin()), *args], capture_output=True, text=True, timeout=timeout, cwd=str(REPO)
    )


def test_binary_is_in_the_venv_and_reports_version():
    if IS_UVICORN:
        pytest.skip("shield-specific")
    assert shield_bin().exists(), f"shield binary missing at {shield_bin()} (run scripts/bootstrap)"
    r = run_shield("--version")
    assert r.returncode == 0, r.stderr
    assert "shield" in (r.stdout + r.stderr).lower()


def test_libuv_and_llhttp_symbols_are_not_exported():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not installed")
    out = subprocess.run(
        [nm, "-D", "--defined-only", str(shield_bin())], capture_output=True, text=True, check=True
    ).stdout
    exported = [line.split()[-1] for line in out.splitlines() if line.split()]
    leaked = [s for s in exported if s.startswith(("uv_", "llhttp_"))]
    assert leaked == [], f"shield exports libuv/llhttp symbols: {leaked[:10]}"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_embedded_interpreter_is_the_venv_and_loop_choice(fresh_server, loop):
    srv = fresh_server("app_embed:app", "--loop", loop)
    info = httpx.get(srv.url + "/", timeout=10).json()
    if os.environ.get("SHIELD_BIN") is None or os.environ.get("VIRTUAL_ENV"):
        assert Path(info["prefix"]).resolve() == (REPO / ".venv").resolve(), info
    assert info["fastapi"] is True, "the venv's site-packages must be importable"
    expected = "uvloop" if loop == "uvloop" else "asyncio"
    assert info["loop_module"].split(".")[0] == expected, info


def test_shield_and_uvloop_libuv_in_one_process(fresh_server):
    """The handler makes its own TCP connection back to the server through uvloop (its bundled
    libuv) while shield's static libuv serves both requests: both copies work side by side."""
    srv = fresh_server("app_embed:app", "--loop", "uvloop")
    for _ in range(5):
        r = httpx.get(srv.url + "/selfcall", timeout=10)
        assert r.status_code == 200
        assert r.json() == {"reply_ok": True}


def test_native_module_imports_in_the_venv():
    r = subprocess.run(
        [
            python_bin(),
            "-c",
            "import shield_asgi, shield_asgi._native as n; "
            "print(shield_asgi.__version__, n.versions()['shield'])",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    a, b = r.stdout.split()
    assert a == b


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--port", "notanumber", "x:app"], "--port"),
        (["--port", "70000", "x:app"], "--port"),
        (["--lifespan", "sometimes", "x:app"], "--lifespan"),
        (["--no-such-flag", "x:app"], "--no-such-flag"),
        ([], "MODULE:ATTR"),
    ],
)
def test_usage_errors_exit_2_with_a_message(args, needle):
    r = run_shield(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert needle.lower() in r.stderr.lower(), r.stderr


def test_unimportable_app_fails_clearly():
    r = run_shield("no_such_module_xyz:app", "--port", "0", timeout=30)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "no_such_module_xyz" in r.stderr


def test_bad_app_string_fails_clearly():
    r = run_shield("just_a_module", "--port", "0", timeout=30)
    assert r.returncode in (1, 2), (r.returncode, r.stderr)
    assert "MODULE" in r.stderr or "<module>:<attribute>" in r.stderr
