#!/usr/bin/env python3
"""Instructions per request of a shield binary, counted by callgrind: a load-independent figure.

Why: on a shared 2-CPU machine wrk's req/s moves by 2x between identical runs, so a change of a
few percent on the hot path cannot be seen in it.  The number of instructions the server
executes per request barely depends on load, so before/after pairs of binaries compare well.

How: the server runs under `valgrind --tool=callgrind --trace-children=yes` (the supervisor
and its worker), requests go one at a time over one keep-alive connection; after the warm-up
the counters of the server's processes are zeroed (`callgrind_control -z PID`), the measured
requests run, and `callgrind_control -d PID` dumps them: the sum over the processes divided by
the requests.  Only the server's own processes are touched, so two runs can go at once.

Usage: bench/instructions.py --shield BIN [--case raw_hello|raw_echo|fastapi_json|native_hello]
           [--requests 600] [--warmup 50] [--repeat 2] [--start-timeout 600]
Prints one line per repetition and exits 0; 1 when the server did not come up or a request
failed, or valgrind is not installed (`apt-get install valgrind`: not a bootstrap package).
The binary's venv is found as for bench/run (VIRTUAL_ENV is set to this repo's .venv only when
the binary has no pyvenv.cfg of its own).
"""

from __future__ import annotations

import argparse
import glob
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"
CASES = {  # name -> (app target or None for the native handler, method, path, body)
    "raw_hello": ("raw_hello:app", "GET", "/", None),
    "raw_echo": ("raw_echo:app", "POST", "/echo", b"x" * 10240),
    "fastapi_json": ("fastapi_json:app", "GET", "/items/42", None),
    "native_hello": (None, "GET", "/", None),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, proc: subprocess.Popen, limit: float) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.5)
    return False


def family(pid: int) -> list[int]:
    """pid and its descendants (the supervisor and its workers), from /proc."""
    kids: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            kids.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def control(flag: str, pids: list[int]) -> None:
    """callgrind_control FLAG for these processes only (other callgrind runs are left alone)."""
    for p in pids:
        subprocess.run(["callgrind_control", flag, str(p)], check=True, capture_output=True)


def totals(paths: list[str]) -> int:
    """Sum of the `totals:` (or `summary:`) lines of callgrind dump files."""
    n = 0
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    n += int(line.split()[1])
                    break
    return n


def measure(shield: str, case: str, requests: int, warmup: int, start_s: float) -> float:
    target, method, path, body = CASES[case]
    port = free_port()
    out = tempfile.mkdtemp(prefix="shield-cg-")
    args = (
        [shield, "--native-hello"] if target is None else [shield, target, "--app-dir", str(APPS)]
    )
    args += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    args += ["--log-level", "warning", "--timeout-keep-alive", "600"]
    env = dict(os.environ, PYTHONHASHSEED="0")
    if not (Path(shield).resolve().parent.parent / "pyvenv.cfg").exists():
        env.setdefault("VIRTUAL_ENV", str(ROOT / ".venv"))
    cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes"]
    cmd += [f"--callgrind-out-file={out}/cg.%p", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_up(port, proc, start_s):
            raise RuntimeError(f"{case}: the server did not come up under valgrind")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def one():
            conn.request(method, path, body=body)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{case}: {method} {path} answered {r.status}")

        for _ in range(warmup):
            one()
        pids = family(proc.pid)
        control("-z", pids)
        before = set(glob.glob(f"{out}/cg.*"))
        for _ in range(requests):
            one()
        control("-d", pids)
        conn.close()
        time.sleep(1)
        dumps = sorted(set(glob.glob(f"{out}/cg.*")) - before)
        return totals(dumps) / requests
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shield", required=True)
    ap.add_argument("--case", default="raw_hello", choices=sorted(CASES))
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--start-timeout", type=float, default=600, help="seconds to come up")
    a = ap.parse_args(argv)
    missing = [t for t in ("valgrind", "callgrind_control") if not shutil.which(t)]
    if missing:
        print(
            "instructions: " + " and ".join(missing) + " not found: apt-get install valgrind "
            "(not one of scripts/bootstrap's packages: only this measurement needs it)",
            file=sys.stderr,
        )
        return 1
    try:
        for i in range(a.repeat):
            n = measure(a.shield, a.case, a.requests, a.warmup, a.start_timeout)
            print(f"{a.case} run {i + 1}: {n:,.0f} instructions per request ({a.shield})")
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        print(f"instructions: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
