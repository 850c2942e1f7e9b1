"""shield-asgi beside the Shield library (PyPI shield-crypto, import name `shield`) in one fresh
virtual environment, installed the way users do it: our wheel first, then shield-crypto.

Both used to install `shield/__init__.py` and `shield/integrations/__init__.py`, so whichever
came second silently broke the other.  Now: `import shield` is theirs, `import shield_asgi`
ours, and both work in one process, in one app served by our binary.  shield-crypto's wheel
still installs a console script named `shield` over ours (README.md), so the server is run as
`shield-asgi`; reinstalling shield-asgi last gives `shield` back to us.

The wheel is built from this checkout (build/pip, as scripts/bootstrap), or is
$SHIELD_TEST_WHEEL when set; shield-crypto (and the cryptography it imports), FastAPI and
pydantic come from the package index at the versions pinned in requirements.txt.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import REPO, free_port, python_bin, scaled

# Installs and runs its own binary from a wheel: nothing here exercises SHIELD_BIN.
pytestmark = [pytest.mark.shield_only, pytest.mark.no_sanitizer]

PASSWORD, SERVICE = "coexist-password", "coexist.example"


def _pin(name: str) -> str:
    """`name==version` as requirements.txt pins it (one source of versions)."""
    text = (REPO / "requirements.txt").read_text()
    m = re.search(rf"^{re.escape(name)}==(\S+)", text, re.M)
    assert m, f"{name} is not pinned in requirements.txt"
    return f"{name}=={m.group(1)}"


def _run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert p.returncode == 0, (
        f"{cmd} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    )
    return p


def _clean_env() -> dict:
    """The environment without anything that would point an interpreter at .venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if os.environ.get("SHIELD_TEST_WHEEL"):  # a wheel built elsewhere (a release, an old one)
        return Path(os.environ["SHIELD_TEST_WHEEL"])
    out = tmp_path_factory.mktemp("wheel")
    env = _clean_env()
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}"  # meson and ninja
    # scripts/bootstrap's lock: one build in build/pip at a time
    lock_path = Path(os.environ.get("TMPDIR") or "/tmp") / f"shield-install-{os.getuid()}.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _run(
            [
                python_bin(),
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "-Cbuild-dir=build/pip",
                "-w",
                str(out),
                str(REPO),
            ],
            timeout=scaled(1200),
            cwd=REPO,
            env=env,
        )
    (whl,) = out.glob("shield_asgi-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh venv of the interpreter our binary embeds: ours, then shield-crypto."""
    d = tmp_path_factory.mktemp("venv") / "v"
    _run([python_bin(), "-m", "venv", "--without-pip", str(d)], timeout=120)
    _install(d, str(wheel), _pin("fastapi"), _pin("pydantic"))
    # shield-crypto 2.3.0's core imports cryptography without declaring it (only its extras do)
    _install(d, _pin("shield-crypto"), _pin("cryptography"))  # its `shield` replaces ours here
    return d


def _install(venv: Path, *reqs: str, force: bool = False) -> None:
    cmd = [
        python_bin(),
        "-m",
        "pip",
        "--python",
        str(venv / "bin" / "python"),
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    if force:
        cmd += ["--force-reinstall", "--no-deps"]
    _run(cmd + list(reqs), timeout=600, env=_clean_env())


def _py(venv: Path, code: str, cwd: Path) -> dict:
    p = _run([str(venv / "bin" / "python"), "-c", code], timeout=120, env=_clean_env(), cwd=cwd)
    return json.loads(p.stdout.strip().splitlines()[-1])


def _is_our_binary(path: Path) -> bool:
    return path.read_bytes()[:4] == b"\x7fELF"


IMPORTS = r"""
import importlib.metadata as md, json, os, sys, time
import shield, shield_asgi
from shield.core import Shield, quick_decrypt, quick_encrypt
from shield.integrations.fastapi import ShieldMiddleware
from shield_asgi import _native
from shield_asgi.integrations import AttestationError, AttestationMiddleware

key = os.urandom(32)
nonce = os.urandom(32)
now = time.time()
ev = _native.simulated_evidence(nonce, at=now, data_dir="dev")
r = _native.verify(ev, "simulated", at=now, nonce=nonce, trust_simulated=True,
                   simulated_root=_native.simulated_root("dev"))
print(json.dumps({
    "prefix": sys.prefix,
    "shield_file": shield.__file__,
    "shield_dist": md.version("shield-crypto"),
    "shield_roundtrip": quick_decrypt(key, quick_encrypt(key, b"data")) == b"data",
    "shield_middleware": [c.__module__ + "." + c.__name__ for c in ShieldMiddleware.__mro__],
    "ours_file": shield_asgi.__file__,
    "ours_dist": md.version("shield-asgi"),
    "ours_version": shield_asgi.__version__,
    "native_file": _native.__file__,
    "verified": r.verified,
    "tee_type": r.tee_type,
    "result_type": type(r).__module__ + "." + type(r).__qualname__,
    "missing_status": AttestationError("missing").status_code,
}))
"""


def test_shield_and_shield_asgi_import_side_by_side(venv, tmp_path):
    out = _py(venv, IMPORTS, tmp_path)
    site = str(venv / "lib")
    assert out["prefix"] == str(venv)
    # theirs: the Shield library, working
    assert out["shield_file"].startswith(site) and out["shield_file"].endswith("shield/__init__.py")
    assert out["shield_dist"] == _pin("shield-crypto").split("==")[1]
    assert out["shield_roundtrip"] is True
    assert "starlette.middleware.base.BaseHTTPMiddleware" in out["shield_middleware"]
    # ours: the package, its native module, a real verification
    assert out["ours_file"].startswith(site) and out["ours_file"].endswith(
        "shield_asgi/__init__.py"
    )
    assert out["ours_version"] == out["ours_dist"]
    assert out["native_file"].startswith(site)
    assert out["verified"] is True and out["tee_type"] == "simulated"
    assert out["result_type"] == "shield_asgi.attestation.AttestationResult"
    assert out["missing_status"] == 401


APP = """
import shield, shield_asgi
from fastapi import FastAPI
from shield.integrations.fastapi import ShieldMiddleware
from shield_asgi.integrations import AttestationMiddleware

app = FastAPI()
app.add_middleware(ShieldMiddleware, password=%r, service=%r)
app.add_middleware(AttestationMiddleware, require_client_attestation=False)

@app.get("/which")
async def which():
    return {"shield": shield.__file__, "shield_asgi": shield_asgi.__file__}
""" % (PASSWORD, SERVICE)

DECRYPT = r"""
import base64, json, sys
from shield import Shield
body = json.loads(sys.stdin.read())
print(Shield(%r, %r).decrypt(base64.b64decode(body["data"])).decode())
""" % (PASSWORD, SERVICE)


def _serve(binary: Path, app_dir: Path):
    port = free_port()
    log = open(app_dir / "server.log", "w+")
    proc = subprocess.Popen(
        [
            str(binary),
            "coexist_app:app",
            "--app-dir",
            str(app_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_clean_env(),
        cwd=app_dir,
        start_new_session=True,
    )
    deadline = time.monotonic() + scaled(60)
    while True:
        assert proc.poll() is None, (app_dir / "server.log").read_text()
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            return proc, log, f"http://127.0.0.1:{port}"
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "the server did not answer in time"
            time.sleep(0.2)


def _stop(proc, log) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(scaled(30))
    finally:
        log.close()


def test_shield_asgi_serves_an_app_using_both_libraries(venv, tmp_path):
    (tmp_path / "coexist_app.py").write_text(APP)
    binary = venv / "bin" / "shield-asgi"
    assert _is_our_binary(binary)
    proc, log, url = _serve(binary, tmp_path)
    try:
        r = httpx.get(url + "/.well-known/shield/nonce", timeout=30)  # ours, outermost
        assert r.status_code == 200 and r.json()["expires_in"] == 60
        r = httpx.get(url + "/which", timeout=30)  # through theirs: an encrypted body
        assert r.status_code == 200
        body = r.json()
        assert body["encrypted"] is True and body["service"] == SERVICE
        plain = _run(
            [str(venv / "bin" / "python"), "-c", DECRYPT],
            timeout=120,
            input=r.text,
            env=_clean_env(),
        )
        which = json.loads(plain.stdout)
        assert which["shield"].startswith(str(venv)) and "/shield/" in which["shield"]
        assert (
            which["shield_asgi"].startswith(str(venv)) and "/shield_asgi/" in which["shield_asgi"]
        )
    finally:
        _stop(proc, log)


def test_shield_command_shadowed_then_given_back(venv, wheel, tmp_path):
    shield_cmd, alias = venv / "bin" / "shield", venv / "bin" / "shield-asgi"
    # shield-crypto came second: `shield` is its Python console script (README's warning)
    assert not _is_our_binary(shield_cmd)
    assert "shield.cli" in shield_cmd.read_text()
    # reinstalling ours last gives the command back, and theirs still imports
    _install(venv, str(wheel), force=True)
    assert _is_our_binary(shield_cmd) and shield_cmd.read_bytes() == alias.read_bytes()
    out = _py(
        venv,
        "import json, shield, shield_asgi; print(json.dumps("
        "[shield.__file__, shield_asgi.__file__]))",
        tmp_path,
    )
    assert out[0].endswith("shield/__init__.py") and out[1].endswith("shield_asgi/__init__.py")
    help_out = subprocess.run(
        [str(shield_cmd), "--help"], capture_output=True, text=True, timeout=60, env=_clean_env()
    )
    assert "MODULE:ATTR" in help_out.stdout + help_out.stderr
