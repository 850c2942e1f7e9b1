"""TLS benchmark: shield vs uvicorn over HTTPS with the same certificate, same run, ratios.

    .venv/bin/python bench/tls.py                      # both passes, 10 s runs, 3 repetitions
    .venv/bin/python bench/tls.py --smoke              # harness check: 1 s runs, 1 repetition
    .venv/bin/python bench/tls.py --cases fastapi_json --duration 5 --repeat 1
    .venv/bin/python bench/tls.py --cases raw_hello --attested --one-pass   # + --tls-attested

Measured per case (bench/apps/<case>.py, or `native` = shield --native-hello, shield only):
  keep-alive   wrk over https, 64 keep-alive connections (TLS handshakes happen once)
  handshakes   wrk over https with `Connection: close`: every request is a new TCP connection
               and a full TLS handshake (no resumption: wrk does not cache sessions), so
               requests/s = new handshakes/s
With --attested, a third server in the same run: `shield MOD:app --tee simulated --tls-attested`
(the key made at start-up, a self-signed P-256 certificate carrying the simulated evidence:
issue 16), reported as its ratio to plain shield (the handshake row is the attested handshake
rate vs plain TLS).
Servers: `shield MOD:app --ssl-certfile … --ssl-keyfile …` and `uvicorn --loop uvloop --http
httptools --ssl-certfile … --ssl-keyfile …`, one worker each, access log off; a P-256 ECDSA
certificate generated for the run (the same files for both).  Pinning as bench/bench.py:
server on core 0 (pass 1) or cores 0,1 (pass 2, "both cores"), wrk on core 1.  The report (a
Markdown table with shield/uvicorn ratios) is printed, and appended to bench/RESULTS.md
unless --no-append or --smoke.  Plain-HTTP numbers come from bench/run (same machine, same
session: run both).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPS = HERE / "apps"
PY = str(ROOT / ".venv" / "bin" / "python")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_cert(d: Path) -> tuple[Path, Path]:
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def cmd_for(server: str, case: str, port: int, cert: Path, key: Path, shield_bin: str) -> list[str]:
    tls = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    common = [
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--timeout-keep-alive",
        "600",
    ]
    if server == "shield-attested":  # its own key and certificate: no files (issue 16)
        attested = ["--tee", "simulated", "--tls-attested"]
        return [shield_bin, f"{case}:app", "--app-dir", str(APPS), *common, *attested]
    if server == "shield":
        if case == "native":
            return [shield_bin, "--native-hello", *common, *tls]
        return [shield_bin, f"{case}:app", "--app-dir", str(APPS), *common, *tls]
    return [
        PY,
        "-m",
        "uvicorn",
        f"{case}:app",
        "--app-dir",
        str(APPS),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        *common,
        *tls,
    ]


def path_for(case: str) -> str:
    if case == "native":
        return "/"
    text = (APPS / f"{case}.py").read_text()
    m = re.search(r'"path":\s*"([^"]+)"', text)
    return m.group(1) if m else "/"


def wait_ready(proc: subprocess.Popen, port: int, path: str, deadline_s: float = 60) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with (
                socket.create_connection((HOST, port), timeout=1) as raw,
                ctx.wrap_socket(raw, server_hostname="localhost") as s,
            ):
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                if data.startswith(b"HTTP/1.1 200"):
                    return
                raise SystemExit(f"bad answer: {data[:200]!r}")
        except (OSError, ssl.SSLError):
            time.sleep(0.1)
    raise SystemExit("server did not become ready")


def run_wrk(url: str, seconds: int, conns: int, close: bool, core: str | None) -> float:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(url)
    if core is not None:
        cmd = ["taskset", "-c", core, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise SystemExit(f"cannot parse wrk output:\n{out}")
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx responses:\n{out}")
    return float(m.group(1))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cases", default="native,raw_hello,fastapi_json")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--handshake-connections", type=int, default=16)
    ap.add_argument("--shield", default=str(ROOT / ".venv" / "bin" / "shield"))
    ap.add_argument("--one-pass", action="store_true", help="only the server-on-core-0 pass")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument(
        "--attested",
        action="store_true",
        help="also shield --tee simulated --tls-attested (a P-256 certificate carrying "
        "evidence), reported as a ratio to plain shield",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.repeat, args.no_append = 1, 1, 1, True
    cpus = sorted(os.sched_getaffinity(0))
    passes = (
        [("0", "1", "server on core 0, wrk on core 1")]
        if len(cpus) >= 2
        else [(None, None, "unpinned")]
    )
    if len(cpus) >= 2 and not args.one_pass:
        passes.append(("0,1", "1", "server on cores 0,1, wrk on core 1"))

    tmp = Path(tempfile.mkdtemp(prefix="shield-tls-bench-"))
    cert, key = make_cert(tmp)
    report = [
        f"## TLS — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"P-256 ECDSA certificate, wrk -t1 -c{args.connections} (keep-alive) / "
        f"-c{args.handshake_connections} with `Connection: close` (a full handshake per "
        f"request), {args.duration} s × {args.repeat}, medians.",
        "",
    ]
    for core, wrk_core, label in passes:
        report += [
            f"### {label}",
            "",
            "| case | mode | shield req/s | uvicorn req/s | shield/uvicorn |"
            + (" attested req/s | attested/shield |" if args.attested else ""),
            "|---|---|--:|--:|--:|" + ("--:|--:|" if args.attested else ""),
        ]
        for case in args.cases.split(","):
            res: dict = {}
            servers = ["shield"] if case == "native" else ["shield", "uvicorn"]
            if args.attested and case != "native":  # --tee refuses --native-hello
                servers.append("shield-attested")
            for _ in range(args.repeat):
                for server in servers:
                    port = free_port()
                    cmd = cmd_for(server, case, port, cert, key, args.shield)
                    if core is not None:
                        cmd = ["taskset", "-c", core, *cmd]
                    logf = open(tmp / f"{case}-{server}.log", "ab")
                    # a shield outside the venv (a build dir) finds the venv's packages this way
                    env = dict(os.environ, VIRTUAL_ENV=str(ROOT / ".venv"))
                    env["XDG_DATA_HOME"] = str(tmp / "xdg")  # the simulated TEE's dev root
                    proc = subprocess.Popen(
                        cmd,
                        stdout=logf,
                        stderr=subprocess.STDOUT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                    try:
                        path = path_for(case)
                        wait_ready(proc, port, path)
                        url = f"https://{HOST}:{port}{path}"
                        run_wrk(url, args.warmup, args.connections, False, wrk_core)
                        for mode, close, conns in (
                            ("keep-alive", False, args.connections),
                            ("handshakes", True, args.handshake_connections),
                        ):
                            rps = run_wrk(url, args.duration, conns, close, wrk_core)
                            res.setdefault((mode, server), []).append(rps)
                            print(f"{label} {case} {mode} {server}: {rps:.0f} req/s", flush=True)
                    finally:
                        try:
                            os.killpg(proc.pid, signal.SIGTERM)
                        except ProcessLookupError:
                            pass
                        try:
                            proc.wait(timeout=15)
                        except subprocess.TimeoutExpired:
                            os.killpg(proc.pid, signal.SIGKILL)
                            proc.wait()
                        logf.close()
            for mode in ("keep-alive", "handshakes"):
                s = statistics.median(res[(mode, "shield")])
                u = statistics.median(res[(mode, "uvicorn")]) if (mode, "uvicorn") in res else None
                ratio = f"{s / u:.2f}×" if u else "—"
                row = f"| {case} | {mode} | {s:,.0f} | {f'{u:,.0f}' if u else '—'} | {ratio} |"
                if args.attested:
                    a = res.get((mode, "shield-attested"))
                    a = statistics.median(a) if a else None
                    row += f" {a:,.0f} | {a / s:.2f}× |" if a else " — | — |"
                report.append(row)
        report.append("")
    text = "\n".join(report)
    print(text)
    if not args.no_append:
        with open(HERE / "RESULTS.md", "a") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
