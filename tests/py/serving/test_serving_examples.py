"""The README's first command as a user runs it: scripts/run (bootstrap, then shield on
examples/hello.py with client attestation on and the simulated TEE trusted), and
examples/attest_client.py against it: no evidence passes (optional), header mode is verified
and its nonce consumed, a session works for several requests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from conftest import REPO, free_port

pytestmark = pytest.mark.no_sanitizer  # runs the installed .venv/bin/shield, as the README does


def test_scripts_run_and_the_example_client(tmp_path):
    port = free_port()
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path))  # a dev root of its own
    log = open(tmp_path / "server.log", "w+")
    p = subprocess.Popen(
        [str(REPO / "scripts" / "run"), "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300  # bootstrap is quick when already done
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert p.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "scripts/run did not serve in time"
            time.sleep(0.2)
        out = subprocess.run(
            [
                sys.executable,
                str(REPO / "examples" / "attest_client.py"),
                f"http://127.0.0.1:{port}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "no evidence  -> {'attested': False}"
        assert lines[1].startswith(
            "header mode  -> 200 {'attested': True, 'tee_type': 'simulated', 'mode': 'header'"
        )
        assert "nonce_replayed" in lines[2] and lines[2].startswith("same again   -> 401")
        assert all(ln.startswith("session mode -> 200 {'attested': True") for ln in lines[3:5])
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(30)
        log.close()
