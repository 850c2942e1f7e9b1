#!/usr/bin/env python3
"""Shield benchmark harness: shield vs uvicorn vs granian (and nginx for the native ceiling).

Run it through ``bench/run`` (see bench/README.md). It is a measurement tool, not a test:
only ``--smoke`` runs in CI, to check that the harness still works.

For each case (``bench/apps/*.py`` with a ``BENCH`` dict, plus the built-in native ceiling) and
each server, the harness starts the server pinned with taskset, checks that it answers the
case's request correctly (status + body, twice on one keep-alive connection), runs a wrk
warm-up and a measured wrk run, and stops the server. Repetitions go round-robin over the
servers (shield, uvicorn, granian, shield, uvicorn, ...) so that drift in machine load is spread
evenly instead of landing on one server. It reports the median req/s, p50 and p99 of the
repetitions, the min-max spread and the ratios against shield; then the RSS of each server with
N idle keep-alive connections.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import base64
import datetime
import http.client
import json
import math
import os
import platform
import re
import resource
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
APPS = BENCH_DIR / "apps"
OUT = BENCH_DIR / "out"
RESULTS = BENCH_DIR / "RESULTS.md"
VENV_BIN = ROOT / ".venv" / "bin"
PY = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
HOST = "127.0.0.1"
ALL_SERVERS = ["shield", "uvicorn", "granian", "nginx"]
NATIVE_CASE = "native_hello"
HELLO = b"Hello, world!"
LOG_LEVEL = "warning"
GRANIAN_BACKPRESSURE = 16384  # set from --memory-connections in main()
KEEPALIVE_S = 600  # idle keep-alive timeout given to every server (the memory test keeps
#                    connections idle for a while; no server may close them meanwhile)


class Failure(Exception):
    """A server failed to start, answered wrongly, or wrk could not drive it."""


class NotInstalled(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    name: str
    module: str | None  # None for the native ceiling (no Python app)
    attr: str = "app"
    method: str = "GET"
    path: str = "/"
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    expect_status: int = 200
    expect: dict = field(default_factory=dict)  # expect_* keys from BENCH
    smoke: bool = False
    memory: bool = False
    servers: list | None = None  # restrict to these servers (None = all Python servers)
    requires: list = field(default_factory=list)
    server_args: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    description: str = ""
    verify_only: bool = False  # smoke mode: start and check the answer, no wrk
    smoke_servers: list | None = None  # "smoke": [servers]: only these are driven in smoke mode
    order: int = 100  # cases run and print in (order, name) order; the native ceiling is last
    lua: str | None = None  # wrk script path, generated when the request is not a plain GET
    apps: dict = field(default_factory=dict)  # per-server ASGI attribute (overrides `attr`)
    setup: str | None = None  # module function run once before the case: setup(work_dir)
    work: Path | None = None  # the case's work directory ({work} in server_args and env)
    client: str | None = None  # module class preparing the requests (bench_client.py)
    rate_hint: dict = field(default_factory=dict)  # server (or "*") -> expected req/s
    baseline: str | None = None  # case whose req/s (same server) this case is divided by
    connections: int | None = None  # wrk connections for this case (default --connections)
    expect_plain_status: int | None = None  # status of the request without the client's part

    @property
    def native(self) -> bool:
        return self.module is None

    def target(self, server: str) -> str:
        return f"{self.module}:{self.apps.get(server, self.attr)}"

    def rate_for(self, server: str) -> float:
        return float(self.rate_hint.get(server, self.rate_hint.get("*", 20000)))

    def request_line(self) -> str:
        extra = f", {len(self.body)}-byte body" if self.body else ""
        return f"{self.method} {self.path}{extra}"


CASE_KEYS = {
    "name",
    "app",
    "method",
    "path",
    "headers",
    "body",
    "body_size",
    "body_file",
    "expect_status",
    "expect_body",
    "expect_body_contains",
    "expect_json",
    "expect_json_subset",
    "expect_echo",
    "expect_headers",
    "smoke",
    "memory",
    "servers",
    "requires",
    "server_args",
    "env",
    "description",
    "request_factory",
    "order",
    "setup",
    "client",
    "rate_hint",
    "baseline",
    "connections",
    "expect_plain_status",
    "like",
}


def read_bench_dicts(path: Path) -> list[dict]:
    """The module's top-level ``BENCH = {...}`` (or a list of dicts), read without importing it."""
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "BENCH" for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError as e:
                raise SystemExit(f"{path}: BENCH must be a literal dict (or list of dicts): {e}")
            return inherit(value if isinstance(value, list) else [value], path)
    return []


def inherit(cases: list[dict], path: Path) -> list[dict]:
    """``"like": "<name>"``: the entry starts as a copy of an earlier entry of the same BENCH
    list (its own keys win; a dict it gives where the earlier entry has a dict too, such as
    "expect_json", is merged one level deep), so variants of one case state only what differs."""
    by_name: dict[str, dict] = {}
    out = []
    for d in cases:
        if isinstance(d, dict) and "like" in d:
            base = by_name.get(d["like"])
            if base is None:
                raise SystemExit(
                    f'{path}: {d.get("name")}: "like": {d["like"]!r} is not an '
                    "earlier case of this BENCH list"
                )
            own = {k: v for k, v in d.items() if k != "like"}
            d = {
                **base,
                **{
                    k: {**base[k], **v}
                    if isinstance(v, dict) and isinstance(base.get(k), dict)
                    else v
                    for k, v in own.items()
                },
            }
        if isinstance(d, dict) and isinstance(d.get("name"), str):
            by_name[d["name"]] = d
        out.append(d)
    return out


def run_request_factory(module: str, func: str) -> dict:
    """Call ``module.func()`` in the venv interpreter; it returns request/expectation overrides."""
    code = (
        "import base64, importlib, json, sys\n"
        f"sys.path.insert(0, {str(APPS)!r})\n"
        f"d = dict(getattr(importlib.import_module({module!r}), {func!r})())\n"
        "b = d.get('body')\n"
        "if isinstance(b, str): b = b.encode()\n"
        "if b is not None: d['body'] = base64.b64encode(b).decode()\n"
        "print(json.dumps(d))\n"
    )
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=APPS, timeout=60)
    if r.returncode != 0:
        raise Failure(f"{module}.{func}() failed:\n{r.stderr[-2000:]}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    if "body" in d:
        d["body"] = base64.b64decode(d["body"])
    return d


def make_case(path: Path, d: dict) -> Case:
    unknown = set(d) - CASE_KEYS
    if unknown:
        raise SystemExit(
            f"{path}: unknown BENCH keys {sorted(unknown)} (known: {sorted(CASE_KEYS)})"
        )
    module = path.stem
    if d.get("request_factory"):
        d = {**d, **run_request_factory(module, d["request_factory"])}
    if d.get("memory") and (
        d.get("method", "GET").upper() != "GET"
        or any(k in d for k in ("body", "body_size", "body_file"))
    ):
        raise SystemExit(f'{path}: a "memory" case must be a plain GET')
    if "body" in d:
        body = d["body"] if isinstance(d["body"], bytes) else str(d["body"]).encode()
    elif "body_file" in d:
        body = (APPS / d["body_file"]).read_bytes()
    elif "body_size" in d:
        n = int(d["body_size"])
        body = (b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * (n // 62 + 1))[
            :n
        ]
    else:
        body = b""
    name = d.get("name", module)
    work = OUT / "work" / name

    def expand(v) -> str:  # "{work}" -> the case's work directory
        return str(v).replace("{work}", str(work))

    app = d.get("app", "app")
    rate = d.get("rate_hint", {})
    return Case(
        name=name,
        module=module,
        attr=app if isinstance(app, str) else "app",
        apps=dict(app) if isinstance(app, dict) else {},
        method=d.get("method", "GET").upper(),
        path=d.get("path", "/"),
        headers={str(k).lower(): str(v) for k, v in d.get("headers", {}).items()},
        body=body,
        expect_status=int(d.get("expect_status", 200)),
        expect={k: v for k, v in d.items() if k.startswith("expect_") and k != "expect_status"},
        smoke=bool(d.get("smoke", False)),
        smoke_servers=list(d["smoke"]) if isinstance(d.get("smoke"), list) else None,
        memory=bool(d.get("memory", False)),
        servers=d.get("servers"),
        requires=list(d.get("requires", [])),
        server_args={s: [expand(a) for a in args] for s, args in d.get("server_args", {}).items()},
        env={str(k): expand(v) for k, v in d.get("env", {}).items()},
        description=d.get("description", ""),
        order=int(d.get("order", 100)),
        setup=d.get("setup"),
        work=work,
        client=d.get("client"),
        rate_hint=dict(rate) if isinstance(rate, dict) else {"*": float(rate)},
        baseline=d.get("baseline"),
        connections=int(d["connections"]) if d.get("connections") else None,
        expect_plain_status=int(d["expect_plain_status"]) if d.get("expect_plain_status") else None,
    )


def native_case() -> Case:
    return Case(
        name=NATIVE_CASE,
        module=None,
        expect={"expect_body": HELLO.decode()},
        smoke=True,
        memory=True,
        servers=["shield", "nginx"],
        order=1000,
        description="native ceiling: shield --native-hello (C handler, no Python) "
        "vs nginx `return 200`",
    )


def discover_cases() -> list[Case]:
    cases = []
    for path in sorted(APPS.glob("*.py")):
        if path.name.startswith("_"):
            continue
        for d in read_bench_dicts(path):
            cases.append(make_case(path, d))
    cases.append(native_case())
    cases.sort(key=lambda c: (c.order, c.name))
    names = [c.name for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SystemExit(f"duplicate case names: {sorted(dup)}")
    return cases


def case_servers(case: Case, selected: list[str]) -> list[str]:
    allowed = case.servers or (
        ["shield", "nginx"] if case.native else ["shield", "uvicorn", "granian"]
    )
    if not case.native:
        allowed = [s for s in allowed if s != "nginx"]  # nginx only serves the native ceiling
    return [s for s in selected if s in allowed]


def missing_requirements(case: Case) -> list[str]:
    if not case.requires:
        return []
    code = (
        "import importlib.util, sys; "
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    )
    r = subprocess.run([PY, "-c", code, *case.requires], capture_output=True, text=True, cwd=APPS)
    return r.stdout.split()


def lua_string(data: bytes) -> str:
    out = []
    for b in data:
        out.append(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}")
    return '"' + "".join(out) + '"'


# wrk script of the cases with a "client": replays the requests bench_client.py prepared, in
# order (thread k reads FILE.k), and reports how many it used.  When they run out it starts
# over (the server then refuses the replays: non-2xx) and notes when that first happened, so
# the harness can tell "ran out" from "answered wrongly" and size the next batch.
REPLAY_LUA = r"""-- generated by bench/bench.py:
-- replays prepared raw requests (cases with a "client")
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads, counter = {}, 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1] .. "." .. tid, "rb"))
  local data = f:read("*a")
  f:close()
  reqs, n, i, wrapped, t_first, t_wrap = {}, 0, 0, 0, -1, -1
  local pos, len = 1, #data
  while pos <= len do
    local nl = string.find(data, "\n", pos, true)
    local size = tonumber(string.sub(data, pos, nl - 1))
    n = n + 1
    reqs[n] = string.sub(data, nl + 1, nl + size)
    pos = nl + 1 + size
  end
  assert(n > 0, "no prepared requests in " .. args[1] .. "." .. tid)
end

function request()
  i = i + 1
  if i == 1 then t_first = now() end
  if i > n then
    i = 1
    wrapped = wrapped + 1
    if wrapped == 1 then t_wrap = now() - t_first end
  end
  return reqs[i]
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("bench-client: thread %d prepared %d wrapped %d after %.3f s\n",
      t:get("tid"), t:get("n"), t:get("wrapped"), t:get("t_wrap")))
  end
end
"""


def write_lua(case: Case) -> None:
    """wrk script for anything but a plain GET (method, headers, body from a file)."""
    if case.client:
        (OUT / "lua").mkdir(parents=True, exist_ok=True)
        lua = OUT / "lua" / "replay.lua"
        lua.write_text(REPLAY_LUA)
        case.lua = str(lua)
        return
    if case.method == "GET" and not case.headers and not case.body:
        return
    (OUT / "lua").mkdir(parents=True, exist_ok=True)
    lines = [
        f"-- generated by bench/bench.py for case {case.name}",
        f"wrk.method = {lua_string(case.method.encode())}",
    ]
    for k, v in case.headers.items():
        lines.append(f"wrk.headers[{lua_string(k.encode())}] = {lua_string(v.encode())}")
    if case.body:
        bodyfile = OUT / "lua" / f"{case.name}.body"
        bodyfile.write_bytes(case.body)
        lines += [
            f'local f = assert(io.open({lua_string(str(bodyfile).encode())}, "rb"))',
            'wrk.body = f:read("*a")',  # wrk.format() adds Content-Length
            "f:close()",
        ]
    lua = OUT / "lua" / f"{case.name}.lua"
    lua.write_text("\n".join(lines) + "\n")
    case.lua = str(lua)


def run_setup(case: Case) -> None:
    """The case's setup(work_dir) in the venv, with the case's environment (once per run)."""
    case.work.mkdir(parents=True, exist_ok=True)
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(APPS)!r})\n"
        f"getattr(importlib.import_module({case.module!r}), {case.setup!r})({str(case.work)!r})\n"
    )
    r = subprocess.run(
        [PY, "-c", code],
        capture_output=True,
        text=True,
        cwd=APPS,
        timeout=120,
        env=case_env(case),
        check=False,
    )
    if r.returncode != 0:
        raise Failure(f"{case.module}.{case.setup}() failed:\n{r.stderr[-2000:]}")


def case_env(case: Case) -> dict:
    env = dict(os.environ)
    # A shield binary outside .venv (--shield build/.../shield) finds the venv it embeds through
    # VIRTUAL_ENV; without it, it would run without the venv's packages (uvloop, FastAPI).
    env.setdefault("VIRTUAL_ENV", str(VENV_BIN.parent))
    env.update(case.env)
    env["PYTHONPATH"] = str(APPS) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class ClientDriver:
    """bench_client.py for one server start: the case's client class in the venv."""

    def __init__(self, case: Case, server: str, port: int, connections: int, threads: int):
        self.case = case
        self.logfile = OUT / "logs" / f"{case.name}-{server}-client.log"
        cmd = [
            PY,
            str(BENCH_DIR / "bench_client.py"),
            case.module,
            case.client,
            f"http://{HOST}:{port}",
            server,
            str(connections),
            str(threads),
        ]
        with open(self.logfile, "wb") as logf:
            logf.write(("$ " + shlex.join(cmd) + "\n").encode())
            logf.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=logf,
                cwd=APPS,
                env=case_env(case),
                text=True,
            )
        try:
            self._reply(120)  # the client is made (sessions established, ...)
        except BaseException:
            self.close()
            raise

    def _reply(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise Failure(
                f"{self.case.client} ({self.case.module}) did not answer within {timeout:.0f} s "
                f"(log {self.logfile})"
            )
        d = json.loads(line)
        if "error" in d:
            raise Failure(f"{self.case.client}: {d['error']}\n{d.get('traceback', '')[-1500:]}")
        return d

    def _call(self, cmd: dict, timeout: float) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._reply(timeout)

    def requests(self, n: int) -> list[dict]:
        reqs = self._call({"op": "requests", "n": n}, 120)["requests"]
        for r in reqs:
            r["body"] = base64.b64decode(r.get("body") or "")
        return reqs

    def prepare_file(self, n: int, path: Path, threads: int) -> dict:
        return self._call({"op": "file", "n": n, "path": str(path), "threads": threads}, 600)

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # the driver exits at the end of its input
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


# --------------------------------------------------------------------------------------------
# Servers

RUNNING: set = set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def nginx_conf(port: int) -> Path:
    d = OUT / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    conf = d / "nginx.conf"
    conf.write_text(
        f"""# generated by bench/bench.py (native ceiling: nginx `return 200`)
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
daemon off;
master_process on;
error_log stderr warn;
pid {d}/nginx.pid;
worker_rlimit_nofile {nofile};
events {{ worker_connections {max(1024, nofile - 64)}; }}
http {{
  access_log off;
  keepalive_timeout {KEEPALIVE_S}s;
  keepalive_requests 1000000000;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen {HOST}:{port};
    location / {{ default_type text/plain; return 200 "Hello, world!"; }}
  }}
}}
"""
    )
    return conf


def server_command(server: str, case: Case, port: int, shield_bin: str) -> list[str]:
    p = str(port)
    if server == "shield":
        if not os.access(shield_bin, os.X_OK):
            raise NotInstalled(f"{shield_bin} not found")
        common = [
            "--host",
            HOST,
            "--port",
            p,
            "--no-access-log",
            "--log-level",
            LOG_LEVEL,
            "--timeout-keep-alive",
            str(KEEPALIVE_S),
        ]
        if case.native:
            return [shield_bin, "--native-hello", *common]
        return [shield_bin, case.target(server), "--app-dir", str(APPS), *common]
    if server == "uvicorn":
        return [
            PY,
            "-m",
            "uvicorn",
            case.target(server),
            "--app-dir",
            str(APPS),
            "--host",
            HOST,
            "--port",
            p,
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            LOG_LEVEL,
            "--timeout-keep-alive",
            str(KEEPALIVE_S),
        ]
    if server == "granian":
        granian = VENV_BIN / "granian"
        if not granian.exists():
            raise NotInstalled(f"{granian} not found")
        # --http 1: all others speak HTTP/1.1 only. The header-read timeout is also granian's idle
        # keep-alive timeout; 60 s is its maximum. --backpressure caps open *connections* (default
        # backlog/workers = 1024: beyond that granian stops accepting), so it is raised to let the
        # idle-connection test open its connections; it does not matter at wrk's 64 connections.
        # --working-dir puts bench/apps on sys.path.
        return [
            str(granian),
            "--interface",
            "asgi",
            "--loop",
            "uvloop",
            "--workers",
            "1",
            "--http",
            "1",
            "--host",
            HOST,
            "--port",
            p,
            "--log-level",
            LOG_LEVEL,
            "--no-access-log",
            "--http1-header-read-timeout",
            "60000",
            "--backpressure",
            str(GRANIAN_BACKPRESSURE),
            "--working-dir",
            str(APPS),
            case.target(server),
        ]
    if server == "nginx":
        nginx = shutil_which("nginx")
        if not nginx:
            raise NotInstalled("nginx not found")
        return [nginx, "-e", "stderr", "-c", str(nginx_conf(port)), "-p", str(OUT / "nginx")]
    raise SystemExit(f"unknown server {server}")


def shutil_which(name: str) -> str | None:
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]:
        f = os.path.join(d, name)
        if os.access(f, os.X_OK):
            return f
    return None


def label(server: str, case: Case) -> str:
    return "shield (C hello)" if server == "shield" and case.native else server


class Server:
    def __init__(
        self,
        server: str,
        case: Case,
        cores: str | None,
        shield_bin: str,
        connections: int = 64,
        threads: int = 1,
    ):
        self.server, self.case = server, case
        self.connections, self.threads = connections, threads
        self.client: ClientDriver | None = None
        self.port = free_port()
        cmd = server_command(server, case, self.port, shield_bin)
        cmd += [str(a) for a in case.server_args.get(server, [])]
        self.cmd = (["taskset", "-c", cores] if cores else []) + cmd
        (OUT / "logs").mkdir(parents=True, exist_ok=True)
        self.logfile = OUT / "logs" / f"{case.name}-{server}.log"
        self.proc: subprocess.Popen | None = None
        self.body_len = 0

    def start(self, deadline_s: float = 60.0) -> None:
        env = case_env(self.case)
        with open(self.logfile, "wb") as logf:
            logf.write(("$ " + shlex.join(self.cmd) + "\n").encode())
            logf.flush()
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=APPS,
                env=env,
                start_new_session=True,
            )
        RUNNING.add(self)
        self.wait_ready(deadline_s)
        if self.case.client:  # the server is up: the client may prepare (e.g. sessions)
            self.client = ClientDriver(
                self.case, self.server, self.port, self.connections, self.threads
            )
            self.body_len = verify(self.port, self.case, self.client)

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    | " + line for line in lines[-n:])

    def wait_ready(self, deadline_s: float) -> None:
        """Wait until the server answers the case's request correctly (twice, one connection)."""
        deadline = time.monotonic() + deadline_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(
                    f"{self.server} exited with status {self.proc.returncode} during start-up "
                    f"(log {self.logfile}):\n{self.log_tail()}"
                )
            try:
                if self.case.client:  # any answer will do; verify() with the client follows
                    plain_request(self.port, self.case)
                else:
                    self.body_len = verify(self.port, self.case)
                return
            except (
                ConnectionRefusedError,
                ConnectionResetError,
                http.client.RemoteDisconnected,
            ) as e:
                last = repr(e)
                time.sleep(0.05)
            except socket.timeout as e:
                last = repr(e)
        raise Failure(
            f"{self.server} did not answer within {deadline_s:.0f} s ({last}); "
            f"log:\n{self.log_tail()}"
        )

    def rss(self) -> int:
        return tree_rss(self.proc.pid)

    def stop(self) -> None:
        if self.client:
            self.client.close()
            self.client = None
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            # the group may still hold children (granian/nginx workers) even if the leader is gone
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        finally:
            RUNNING.discard(self)


def stop_all() -> None:
    for s in list(RUNNING):
        s.stop()


def tree_pids(root: int) -> list[int]:
    """root and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        fields = stat_fields(d) if d.isdigit() else None
        if fields:
            children.setdefault(int(fields[1]), []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system, all threads) used so far by root and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in tree_pids(root):
        fields = stat_fields(pid)
        try:
            total += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14, 15)
        except (TypeError, IndexError, ValueError):
            pass
    return total / tick


def stat_fields(pid) -> list[str] | None:
    """/proc/PID/stat after the command name (field 3 onwards), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def tree_rss(root: int) -> int:
    """Sum of VmRSS (bytes) over root and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def check_response(case: Case, status: int, body: bytes) -> None:
    if status != case.expect_status:
        raise Failure(f"status {status}, expected {case.expect_status}; body {body[:200]!r}")
    e = case.expect
    if "expect_body" in e and body != str(e["expect_body"]).encode():
        raise Failure(f"body {body[:200]!r}, expected {str(e['expect_body'])[:200]!r}")
    if "expect_body_contains" in e and str(e["expect_body_contains"]).encode() not in body:
        raise Failure(f"body {body[:200]!r} lacks {e['expect_body_contains']!r}")
    if e.get("expect_echo") and body != case.body:
        raise Failure(f"echo mismatch: got {len(body)} bytes, sent {len(case.body)}")
    if "expect_json" in e or "expect_json_subset" in e:
        try:
            got = json.loads(body)
        except ValueError:
            raise Failure(f"body is not JSON: {body[:200]!r}")
        if "expect_json" in e and got != e["expect_json"]:
            raise Failure(f"JSON {got!r}, expected {e['expect_json']!r}")
        if "expect_json_subset" in e:
            for k, v in e["expect_json_subset"].items():
                if got.get(k) != v:
                    raise Failure(f"JSON {k}={got.get(k)!r}, expected {v!r}")


def plain_request(port: int, case: Case) -> tuple[int, bytes]:
    """The case's own request (without what a client adds) on a new connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(case.method, case.path, body=case.body or None, headers=case.headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def verify(port: int, case: Case, client: ClientDriver | None = None) -> int:
    """Check the case's request twice on one connection; returns the response body length.
    With a client, the two requests come from it, and the plain request must get
    expect_plain_status (e.g. 401 without evidence)."""
    if case.expect_plain_status is not None:
        status, body = plain_request(port, case)
        if status != case.expect_plain_status:
            raise Failure(
                f"without the client's headers: status {status}, expected "
                f"{case.expect_plain_status}; body {body[:200]!r}"
            )
    reqs = client.requests(2) if client else [None, None]
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        for r in reqs:  # two requests on one connection: keep-alive must work
            if r is None:
                conn.request(case.method, case.path, body=case.body or None, headers=case.headers)
            else:
                conn.request(r["method"], r["path"], body=r["body"] or None, headers=r["headers"])
            resp = conn.getresponse()
            body = resp.read()
            check_response(case, resp.status, body)
            if case.expect.get("expect_headers"):
                for k, v in case.expect["expect_headers"].items():
                    if (resp.getheader(k) or "") != v:
                        raise Failure(f"header {k}: {resp.getheader(k)!r}, expected {v!r}")
            if resp.will_close:
                raise Failure("server closed the keep-alive connection after one request")
        return len(body)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# wrk

UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_latency_ms(s: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", s)
    if not m:
        raise ValueError(s)
    return float(m.group(1)) * UNIT[m.group(2)]


def run_wrk(
    case: Case,
    port: int,
    seconds: int,
    connections: int,
    threads: int,
    wrk_cores: str | None,
    script_args: list[str] | None = None,
    server_pid: int | None = None,
) -> dict:
    url = f"http://{HOST}:{port}{case.path}"
    cmd = (["taskset", "-c", wrk_cores] if wrk_cores else []) + [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    if case.lua:
        cmd += ["-s", case.lua]
    cmd.append(url)
    if script_args:
        cmd += ["--", *script_args]
    cpu0 = tree_cpu(server_pid) if server_pid else None
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    cpu1 = tree_cpu(server_pid) if server_pid else None
    out = r.stdout
    if r.returncode != 0:
        raise Failure(f"wrk failed ({r.returncode}): {r.stderr.strip() or out.strip()}")
    res: dict = {"cmd": shlex.join(cmd)}
    rd = re.search(r"requests in \S+, ([\d.]+)(B|KB|MB|GB|TB) read", out)
    if rd:
        res["bytes_read"] = float(rd.group(1)) * 1024 ** ["B", "KB", "MB", "GB", "TB"].index(
            rd.group(2)
        )
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if not m or not n:
        raise Failure(f"cannot parse wrk output:\n{out}")
    res["rps"], res["requests"] = float(m.group(1)), int(n.group(1))
    for pct in ("50", "99"):
        lm = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        res[f"p{pct}"] = parse_latency_ms(lm.group(1)) if lm else float("nan")
    errs = 0
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if se:
        errs += sum(int(x) for x in se.groups())
    non2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(non2.group(1)) if non2 else 0
    res["errors"] = errs + res["non2xx"]
    if res["requests"] == 0:
        raise Failure("wrk completed no requests")
    # the server's CPU time per request: unlike req/s, hardly moved by other load on the machine
    res["cpu_us"] = (cpu1 - cpu0) / res["requests"] * 1e6 if server_pid else float("nan")
    # the replay script's report (cases with a client): per thread, how many requests were
    # prepared, and after how many seconds they ran out (if they did)
    rep = re.findall(
        r"^bench-client: thread \d+ prepared (\d+) wrapped (\d+) after (\S+) s$", out, re.MULTILINE
    )
    if rep:
        res["prepared"] = sum(int(p) for p, _, _ in rep)
        res["wrapped"] = sum(int(w) for _, w, _ in rep)
        # req/s sustained until the first thread ran out (a lower bound of the true rate)
        res["rate_until_wrap"] = sum(int(p) / max(float(t), 1e-3) for p, w, t in rep if int(w))
    return res


def drive(
    case: Case,
    srv: Server,
    seconds: int,
    connections: int,
    threads: int,
    wrk_cores: str | None,
    rate: float,
    measured: bool,
) -> dict:
    """One wrk run.  For a case with a client, first has it prepare enough requests for
    `seconds` at `rate` req/s (x1.5); if a measured run uses them all up, it is repeated once
    with twice as many (a warm-up that runs out is only a warm-up)."""
    pid = srv.proc.pid if srv.proc else None
    if not case.client:
        return run_wrk(case, srv.port, seconds, connections, threads, wrk_cores, server_pid=pid)
    count = int(rate * seconds * 1.5) + 2 * connections + 16
    for attempt in (1, 2):
        base = OUT / "lua" / f"{case.name}-{srv.server}.reqs"
        info = srv.client.prepare_file(count, base, threads)
        valid = info.get("valid_for")
        if valid and info["seconds"] + seconds + 2 > valid:
            raise Failure(
                f"preparing {count} requests took {info['seconds']:.0f} s: they would not "
                f"last a {seconds} s run (they are valid for {valid} s); use a shorter --duration"
            )
        try:
            r = run_wrk(case, srv.port, seconds, connections, threads, wrk_cores, [str(base)], pid)
        finally:
            for t in range(threads):
                Path(f"{base}.{t + 1}").unlink(missing_ok=True)
        r["prepare_s"] = info["seconds"]
        if "prepared" not in r:
            raise Failure("the replay script did not report (wrk output changed?)")
        if not r["wrapped"] or not measured:
            return r
        if attempt == 1:
            # the rate until the run-out is a lower bound of the server's: size from it
            new = max(2 * count, int(r["rate_until_wrap"] * seconds * 1.5) + 2 * connections + 16)
            log(
                f"    the {count} prepared requests ran out after "
                f"{r['prepared'] / r['rate_until_wrap']:.1f} s; again with {new}"
            )
            count = new
    raise Failure(
        f"the server answered faster than the {count} requests prepared could last "
        f"({r['rate_until_wrap']:,.0f} req/s until they ran out)"
    )


# --------------------------------------------------------------------------------------------
# Idle keep-alive connection memory


async def _open_idle(
    port: int, case: Case, n: int, concurrency: int = 64, deadline_s: float = 120.0
) -> tuple[list, int]:
    """Open n connections, one complete GET on each; stop early after too many failures."""
    req = f"GET {case.path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    want = str(case.expect["expect_body"]).encode() if "expect_body" in case.expect else None
    sem = asyncio.Semaphore(concurrency)
    conns, failures = [], 0
    give_up = max(20, n // 100)

    async def one() -> None:
        nonlocal failures
        async with sem:
            if failures > give_up:
                failures += 1
                return
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
                writer.write(req)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if not head.startswith(b"HTTP/1.1 200") or not m:
                    raise Failure(f"unexpected response head {head[:100]!r}")
                body = await asyncio.wait_for(reader.readexactly(int(m.group(1))), 10)
                if want is not None and body != want:
                    raise Failure(f"unexpected body {body!r}")
                conns.append((reader, writer))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, Failure):
                failures += 1

    try:
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), deadline_s)
    except asyncio.TimeoutError:
        failures = n - len(conns)
        log(f"    gave up opening connections after {deadline_s:.0f} s")
    return conns, failures


async def _idle_memory(srv: Server, n: int, settle_s: float) -> dict:
    rss0 = srv.rss()
    t0 = time.monotonic()
    conns, failures = await _open_idle(srv.port, srv.case, n)
    open_s = time.monotonic() - t0
    await asyncio.sleep(settle_s)
    rss1 = srv.rss()
    await asyncio.sleep(0.05)
    alive = sum(1 for r, _ in conns if not r.at_eof())
    for _, w in conns:
        w.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
    return {
        "rss0": rss0,
        "rss1": rss1,
        "opened": len(conns),
        "failures": failures,
        "alive": alive,
        "open_s": open_s,
        "per_conn": (rss1 - rss0) / alive if alive else float("nan"),
    }


# --------------------------------------------------------------------------------------------
# Formatting


def fmt_rps(x: float) -> str:
    return f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    if x != x:
        return "n/a"
    return f"{x * 1000:.0f} µs" if x < 1 else f"{x:.2f} ms"


def fmt_us(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:,.1f} µs"


def fmt_bytes(x: float) -> str:
    if x != x:
        return "n/a"
    if abs(x) >= 1024 * 1024:
        return f"{x / 1048576:.1f} MiB"
    if abs(x) >= 1024:
        return f"{x / 1024:.1f} KiB"
    return f"{x:.0f} B"


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:.2f}×"


def md_table(header: list[str], rows: list[list[str]], align: str) -> str:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def baseline_ratios(runs: list, base_runs: list) -> tuple:
    """(req/s ratio, CPU/req ratio) of a case's runs to its baseline's: the median of the
    ratios of runs made in the same repetition (they ran back to back: paired_groups), else
    the ratio of the medians.  None when the baseline has no runs."""
    if not base_runs:
        return None, None
    by_rep = {b.get("rep"): b for b in base_runs}
    pairs = [(r, by_rep[r["rep"]]) for r in runs if r.get("rep") in by_rep]
    if pairs:
        return (
            statistics.median(r["rps"] / b["rps"] for r, b in pairs),
            statistics.median(r["cpu_us"] / b["cpu_us"] for r, b in pairs),
        )

    def med(rs, k):
        return statistics.median(x[k] for x in rs)

    return med(runs, "rps") / med(base_runs, "rps"), med(runs, "cpu_us") / med(base_runs, "cpu_us")


def perf_table(
    case: Case,
    results: dict,
    pass_label: str,
    args,
    connections: int | None = None,
    base_runs: dict | None = None,
) -> str:
    """results: server -> {"runs": [...], "error": str|None}.  With a baseline case, two more
    columns: req/s and CPU/req against the baseline (baseline_ratios)."""
    base = case.baseline
    extra = 4 if base else 2

    def med(server, key):
        runs = results.get(server, {}).get("runs") or []
        return statistics.median(r[key] for r in runs) if runs else None

    ref_rps, ref_p99, ref_cpu = med("shield", "rps"), med("shield", "p99"), med("shield", "cpu_us")
    rows = []
    for server, res in results.items():
        runs = res.get("runs") or []
        if not runs:
            rows.append(
                [label(server, case), res.get("error", "failed"), "", "", "", "", "", ""]
                + [""] * extra
            )
            continue
        rps, p50, p99 = med(server, "rps"), med(server, "p50"), med(server, "p99")
        lo, hi = min(r["rps"] for r in runs), max(r["rps"] for r in runs)
        errors = sum(r["errors"] for r in runs)
        cpu = med(server, "cpu_us")
        rows.append(
            [
                label(server, case),
                fmt_rps(rps),
                f"{fmt_rps(lo)}–{fmt_rps(hi)}",
                fmt_ms(p50),
                fmt_ms(p99),
                fmt_ratio(rps / ref_rps if ref_rps else None),
                fmt_ratio(p99 / ref_p99 if ref_p99 else None),
                str(errors),
                fmt_us(cpu),
                fmt_ratio(cpu / ref_cpu if ref_cpu else None),
            ]
        )
        if base:
            rows[-1] += [
                fmt_ratio(x)
                for x in baseline_ratios(
                    runs, (base_runs or {}).get((base, pass_label, server)) or []
                )
            ]
    conns = (
        f", {connections} connections" if connections and connections != args.connections else ""
    )
    title = f"### {case.name} — {case.request_line()} ({pass_label}{conns})"
    if case.description:
        title += f"\n\n{case.description}"
    return (
        title
        + "\n\n"
        + md_table(
            [
                "server",
                "req/s (median)",
                "req/s min–max",
                "p50",
                "p99",
                "req/s ÷ shield",
                "p99 ÷ shield",
                "errors",
                "CPU/req",
                "CPU/req ÷ shield",
            ]
            + ([f"req/s ÷ {base}", f"CPU/req ÷ {base}"] if base else []),
            rows,
            "lrrrrrrr" + "r" * extra,
        )
    )


def memory_table(mem: dict, cases: dict, n: int) -> str:
    ref = {}
    for (server, case), m in mem.items():
        case = cases[case]
        if server == "shield" and "per_conn" in m:
            ref[case.native] = m["per_conn"]
    rows = []
    for (server, case), m in mem.items():
        case = cases[case]
        if "error" in m:
            rows.append([label(server, case), case.name, m["error"], "", "", "", "", ""])
            continue
        r = ref.get(case.native)
        rows.append(
            [
                label(server, case),
                case.name,
                fmt_bytes(m["rss0"]),
                fmt_bytes(m["rss1"]),
                f"{m['per_conn']:,.0f} B",
                f"{m['alive']}/{n}" + (f" ({m['failures']} failed)" if m["failures"] else ""),
                f"{m['open_s']:.1f} s",
                fmt_ratio(m["per_conn"] / r if r else None),
            ]
        )
    return (
        f"### Idle keep-alive connections: RSS with {n:,} connections "
        "(server on its pinned core)\n\n"
        "Each connection made one complete request, then stayed open and idle. RSS is the sum of "
        "VmRSS over the server's process tree.\n\n"
        + md_table(
            [
                "server",
                "app",
                "RSS before",
                f"RSS with {n:,} conns",
                "bytes/conn",
                "still open",
                "time to open",
                "bytes/conn ÷ shield",
            ],
            rows,
            "llrrrrrr",
        )
    )


# --------------------------------------------------------------------------------------------
# Machine and versions


def cmd_out(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    return {
        "host": platform.node(),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "memory": mem,
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }


def versions(shield_bin: str) -> dict:
    code = (
        "import json, platform, importlib.metadata as m\n"
        "d = {'python': platform.python_version()}\n"
        "for p in ('uvicorn', 'granian', 'uvloop', 'httptools', 'fastapi', 'pydantic'):\n"
        "    try: d[p] = m.version(p)\n"
        "    except Exception: d[p] = 'not installed'\n"
        "print(json.dumps(d))\n"
    )
    try:
        v = json.loads(cmd_out([PY, "-c", code]).splitlines()[-1])
    except (ValueError, IndexError):
        v = {}
    v["shield"] = (
        cmd_out([shield_bin, "--version"]).splitlines()[0]
        if os.access(shield_bin, os.X_OK)
        else "not installed"
    )
    ng = shutil_which("nginx")
    v["nginx"] = cmd_out([ng, "-v"]).replace("nginx version: ", "") if ng else "not installed"
    v["wrk"] = (cmd_out(["wrk", "-v"]).splitlines() or ["?"])[0].split(" Copyright")[0]
    for k in ("shield", "nginx", "wrk"):  # "shield 0.1.0", "nginx/1.22.1" -> the version alone
        v[k] = re.sub(rf"^{k}[ /]", "", v[k])
    return v


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str]):
    ap = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="harness check for CI: 1 s runs, 1 repetition, smoke cases only, 200 idle "
        "connections, no RESULTS.md append; exits non-zero on any failure",
    )
    ap.add_argument("--cases", help="comma-separated case names (default: all; see --list)")
    ap.add_argument(
        "--servers",
        default=",".join(ALL_SERVERS),
        help=f"comma-separated servers (default: {','.join(ALL_SERVERS)})",
    )
    ap.add_argument(
        "--duration", type=int, help="seconds per measured wrk run (default 10; smoke 1)"
    )
    ap.add_argument(
        "--warmup", type=int, help="seconds of wrk warm-up after each start (default 3; smoke 1)"
    )
    ap.add_argument(
        "--repeat", type=int, help="measured runs per server and case (default 3; smoke 1)"
    )
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument(
        "--both-cores",
        action="store_true",
        help="also run every case with the server allowed both cores (taskset -c 0,1)",
    )
    ap.add_argument(
        "--memory-connections",
        type=int,
        help="idle keep-alive connections for the RSS test (default 10000; smoke 200; 0 = skip)",
    )
    ap.add_argument(
        "--no-append", action="store_true", help="do not append the run to bench/RESULTS.md"
    )
    ap.add_argument(
        "--shield",
        default=str(VENV_BIN / "shield"),
        help="shield binary (default .venv/bin/shield)",
    )
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    a = ap.parse_args(argv)
    a.duration = a.duration or (1 if a.smoke else 10)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.smoke else 3)
    a.repeat = a.repeat or (1 if a.smoke else 3)
    if a.memory_connections is None:
        a.memory_connections = 200 if a.smoke else 10000
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    bad = [s for s in a.servers if s not in ALL_SERVERS]
    if bad:
        ap.error(f"unknown servers {bad}; known: {ALL_SERVERS}")
    return a


def pick_cores() -> tuple[str | None, str | None, str | None]:
    """(server core, both cores, wrk core) from the CPUs this process may use."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        log("warning: fewer than 2 CPUs available, running without pinning")
        return None, None, None
    return str(cpus[0]), f"{cpus[0]},{cpus[1]}", str(cpus[1])


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, need + 1024)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < need + 256:
        log(f"warning: RLIMIT_NOFILE is {soft}; {need} idle connections may not fit")


def on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def paired_groups(cases: list) -> list[list]:
    """The run order: each case alone, except that a case whose baseline is also in the run
    joins the baseline's group (baseline first), whose cases take turns per repetition."""
    names = {c.name for c in cases}
    groups: dict = {}  # the group's first case (the baseline) -> its cases
    for c in cases:
        groups.setdefault(c.baseline if c.baseline in names else c.name, []).append(c)
    return [sorted(g, key=lambda c: c.name != root) for root, g in groups.items()]


def prepare_case(case, args, failures: list, sections: list) -> bool:
    """Requirements, setup() and the wrk script of a case; False (reported) when it cannot run."""
    missing = missing_requirements(case)
    if missing:
        msg = f"skipped: missing Python modules {missing}"
        log(f"[{case.name}] {msg}")
        sections.append(f"### {case.name}\n\n{msg}")
        if args.smoke:
            failures.append(f"{case.name}: {msg}")
        return False
    if case.setup:
        try:
            run_setup(case)
        except (Failure, OSError, subprocess.TimeoutExpired) as e:
            log(f"[{case.name}] setup FAILED: {e}")
            failures.append(f"{case.name}: setup: {str(e).splitlines()[0]}")
            sections.append(f"### {case.name}\n\nFAILED: setup {case.setup}()")
            return False
    write_lua(case)
    return True


class Runner:
    """One measured run of one case on one server: start, check, warm up, measure, stop."""

    def __init__(self, args, wrk_core, rate_est: dict, failures: list) -> None:
        self.args, self.wrk_core, self.rate_est, self.failures = args, wrk_core, rate_est, failures

    def one(self, case, s: str, cores, rep: int, res: dict) -> None:
        args, wrk_core = self.args, self.wrk_core
        if res.get("error"):
            return
        conns = case.connections or args.connections
        tag = f"[{case.name} {label(s, case)} cores={cores} run {rep + 1}/{args.repeat}]"
        srv = None
        # smoke: only these servers are driven by wrk; the others only answer
        verify_only = case.verify_only or (
            args.smoke and case.smoke_servers is not None and s not in case.smoke_servers
        )
        try:
            # a client made for a start without load prepares for 1 connection
            srv = Server(s, case, cores, args.shield, 1 if verify_only else conns, args.threads)
            t0 = time.monotonic()
            srv.start()
            log(f"{tag} up on :{srv.port} in {time.monotonic() - t0:.1f} s, answers correctly")
            if verify_only:
                res["error"] = "answers correctly (not measured in smoke mode)"
                return
            key = (case.name, s, cores)
            rate = self.rate_est.get(key, case.rate_for(s))
            if args.warmup:
                w = drive(case, srv, args.warmup, conns, args.threads, wrk_core, rate, False)
                if case.client:  # size the measured run's batch from the warm-up
                    # (or from this server's last measured run, if faster: a load
                    # spike during the warm-up must not starve the measured run)
                    w_rate = 1.2 * w["rate_until_wrap"] if w["wrapped"] else w["rps"]
                    rate = max(w_rate, self.rate_est.get(key, 0))
            r = drive(case, srv, args.duration, conns, args.threads, wrk_core, rate, True)
            r["rep"] = rep
            self.rate_est[key] = r["rps"]
            if srv.proc.poll() is not None:
                raise Failure(f"{s} died during the run:\n{srv.log_tail()}")
            if r["non2xx"]:
                raise Failure(f"{r['non2xx']} non-2xx responses under load")
            if "bytes_read" in r and r["bytes_read"] / r["requests"] < 0.98 * srv.body_len:
                raise Failure(
                    f"wrk read {r['bytes_read'] / r['requests']:.0f} bytes per response, "
                    f"less than the {srv.body_len}-byte body checked before the run"
                )
            verify(srv.port, case, srv.client)  # still correct after the load
            res["runs"].append(r)
            log(
                f"{tag} {fmt_rps(r['rps'])} req/s, p50 {fmt_ms(r['p50'])}, "
                f"p99 {fmt_ms(r['p99'])}, errors {r['errors']}, "
                f"server CPU {fmt_us(r['cpu_us'])}/req"
                + (
                    f" ({r['prepared']} requests prepared in {r['prepare_s']:.1f} s)"
                    if case.client
                    else ""
                )
            )
        except NotInstalled as e:
            res["error"] = "not installed"
            log(f"{tag} not installed: {e}")
            if args.smoke:
                self.failures.append(f"{case.name}/{s}: not installed ({e})")
        except (Failure, OSError, subprocess.TimeoutExpired) as e:
            first = (str(e).splitlines() or [type(e).__name__])[0]
            res["error"] = "FAILED: " + (first[:80] + "…" if len(first) > 80 else first).replace(
                "|", "/"
            )
            log(f"{tag} FAILED: {e}")
            self.failures.append(f"{case.name}/{s}: {first}")
        finally:
            if srv:
                srv.stop()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    started_at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    args.load_start = " ".join(open("/proc/loadavg").read().split()[:3])
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    OUT.mkdir(parents=True, exist_ok=True)

    cases = discover_cases()
    if args.list:
        for c in cases:
            if c.smoke_servers:
                smoke = "  [smoke: " + ",".join(c.smoke_servers) + "]"
            else:
                smoke = "  [smoke]" if c.smoke else ""
            print(
                f"{c.name:24} {c.request_line():28} "
                f"servers={','.join(case_servers(c, ALL_SERVERS))}"
                f"{smoke}"
                f"{'  [memory]' if c.memory else ''}"
                f"{f'  [client {c.client}]' if c.client else ''}"
                f"{f'  [-c{c.connections}]' if c.connections else ''}"
                f"{f'  [÷ {c.baseline}]' if c.baseline else ''}"
            )
        return 0
    if args.cases:
        wanted = [n.strip() for n in args.cases.split(",") if n.strip()]
        unknown = set(wanted) - {c.name for c in cases}
        if unknown:
            raise SystemExit(f"unknown cases {sorted(unknown)}; known: {[c.name for c in cases]}")
        cases = [c for c in cases if c.name in wanted]
    if args.smoke:
        # smoke: cases flagged "smoke" are driven by wrk; every other case is still started and
        # checked for a correct answer on each server, so no app can rot unnoticed
        for c in cases:
            c.verify_only = not c.smoke
    for tool in ("wrk", "taskset"):
        if not shutil_which(tool):
            raise SystemExit(f"bench/run: {tool} not found (apt-get install wrk util-linux)")

    raise_nofile(args.memory_connections)
    global GRANIAN_BACKPRESSURE
    GRANIAN_BACKPRESSURE = max(GRANIAN_BACKPRESSURE, args.memory_connections + 1024)
    server_core, both_cores, wrk_core = pick_cores()
    if wrk_core is not None:
        os.sched_setaffinity(
            0, {int(wrk_core)}
        )  # the harness's own client work stays off the server core

    passes = [
        (
            server_core,
            f"server on core {server_core}, wrk on core {wrk_core}" if server_core else "unpinned",
        )
    ]
    if args.both_cores and both_cores:
        passes.append((both_cores, f"server on cores {both_cores}, wrk on core {wrk_core}"))

    failures: list[str] = []
    sections: list[str] = []
    mem: dict = {}
    rate_est: dict = {}  # (case, server, cores) -> req/s: sizes the batches of client cases
    base_runs: dict = {}  # (case, pass, server) -> its runs, for the "÷ baseline" columns
    # servers that are not installed: reported once per case, a failure only in smoke mode
    run = Runner(args, wrk_core, rate_est, failures)
    try:
        for group in paired_groups(cases):
            ready = []
            for case in group:
                servers = case_servers(case, args.servers)
                if servers and prepare_case(case, args, failures, sections):
                    ready.append((case, servers))
            for cores, pass_label in passes:
                # a case and its baseline take turns, repetition by repetition, so that drift
                # in the machine's speed lands on both sides of their ratio alike
                results = {c.name: {s: {"runs": []} for s in servers} for c, servers in ready}
                for rep in range(args.repeat):
                    for case, servers in ready:
                        for s in servers:
                            run.one(case, s, cores, rep, results[case.name][s])
                for case, servers in ready:
                    for srv_name, res in results[case.name].items():
                        base_runs[(case.name, pass_label, srv_name)] = res["runs"]
                    conns = case.connections or args.connections
                    table = perf_table(case, results[case.name], pass_label, args, conns, base_runs)
                    print("\n" + table + "\n", flush=True)
                    sections.append(table)

        if args.memory_connections > 0:
            for case in [c for c in cases if c.memory]:
                if missing_requirements(case):
                    continue
                for s in case_servers(case, args.servers):
                    tag = f"[memory {case.name} {label(s, case)}]"
                    srv = None
                    try:
                        srv = Server(s, case, server_core, args.shield)
                        srv.start()
                        time.sleep(0.3)
                        m = asyncio.run(
                            _idle_memory(srv, args.memory_connections, 0.5 if args.smoke else 2.0)
                        )
                        if srv.proc.poll() is not None:
                            raise Failure(f"{s} died during the memory test:\n{srv.log_tail()}")
                        mem[(s, case.name)] = m
                        log(
                            f"{tag} {m['alive']}/{args.memory_connections} open, "
                            f"{fmt_bytes(m['rss0'])} -> {fmt_bytes(m['rss1'])}, "
                            f"{m['per_conn']:,.0f} B/conn"
                        )
                        if m["alive"] < args.memory_connections:
                            failures.append(
                                f"memory/{s}: only {m['alive']}/{args.memory_connections} "
                                "connections stayed open"
                            )
                    except NotInstalled as e:
                        mem[(s, case.name)] = {"error": "not installed"}
                        if args.smoke:
                            failures.append(f"memory/{s}: not installed ({e})")
                    except (Failure, OSError, subprocess.TimeoutExpired) as e:
                        mem[(s, case.name)] = {"error": "FAILED"}
                        log(f"{tag} FAILED: {e}")
                        failures.append(f"memory/{s}: {str(e).splitlines()[0]}")
                    finally:
                        if srv:
                            srv.stop()
            if mem:
                table = memory_table(mem, {c.name: c for c in cases}, args.memory_connections)
                print("\n" + table + "\n", flush=True)
                sections.append(table)
    except KeyboardInterrupt:
        log("interrupted; stopping servers")
        stop_all()
        return 130
    finally:
        stop_all()

    elapsed = time.monotonic() - t_start
    if failures:
        print("\nFailures:\n" + "\n".join(f"- {f}" for f in failures) + "\n", flush=True)
    print(f"bench/run finished in {elapsed:.0f} s" + (" (smoke)" if args.smoke else ""), flush=True)

    if not args.smoke and not args.no_append:
        append_results(args, argv, started_at, elapsed, sections, failures)
    return 1 if failures else 0


def append_results(args, argv, started_at, elapsed, sections, failures) -> None:
    mi, v = machine_info(), versions(args.shield)
    parts = [
        f"## {started_at.strftime('%Y-%m-%d %H:%M UTC')} — {mi['host']}",
        "",
        f"- command: `bench/run {shlex.join(argv)}`".replace("`bench/run `", "`bench/run`"),
        f"- machine: {mi['nproc']} CPUs, {mi['cpu']}, {mi['memory']} RAM, Linux {mi['kernel']}; "
        f"load average (1/5/15 min) at the start {args.load_start}, "
        f"at the end {' '.join(mi['loadavg'])}",
        "- versions: "
        + ", ".join(
            f"{k} {v[k]}"
            for k in (
                "shield",
                "uvicorn",
                "granian",
                "nginx",
                "wrk",
                "python",
                "uvloop",
                "httptools",
                "fastapi",
                "pydantic",
            )
            if k in v
        ),
        f"- method: wrk -t{args.threads} -c{args.connections}, keep-alive, "
        f"{args.warmup} s warm-up then "
        f"{args.duration} s measured, {args.repeat} repetitions round-robin over the servers "
        f'(fresh server process each; a case and its baseline take turns, and "÷ baseline" is the '
        "median of back-to-back pairs), median shown; access logs off, "
        f"log level {LOG_LEVEL}, 1 worker",
        f"- duration of the whole run: {elapsed:.0f} s",
        "",
        *[s + "\n" for s in sections],
    ]
    if failures:
        parts += ["Failures:", "", *[f"- {f}" for f in failures], ""]
    if not RESULTS.exists():
        RESULTS.write_text("# Shield benchmark results\n\n(see bench/README.md)\n\n")
    with open(RESULTS, "a") as f:
        f.write("\n" + "\n".join(parts).rstrip() + "\n")
    print(f"appended to {RESULTS}", flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        stop_all()
