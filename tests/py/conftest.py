"""Shared fixtures for Shield's integration tests: start the real server binary on a free
loopback port with an app from tests/py/apps/, talk to it over real sockets, stop it.

Environment
  SHIELD_BIN           the binary under test (default <repo>/.venv/bin/shield; the same
                       executable is installed as shield-asgi, which the Shield library's own
                       `shield` script cannot shadow: either name works).  Missing
                       binary => the tests that need a server FAIL (never skip).
  SHIELD_TEST_SERVER   "shield" (default) or "uvicorn": run the same suite against
                       `python -m uvicorn --loop uvloop --http httptools` to validate the tests
                       themselves.  `shield_only` tests are skipped in that mode.
  SHIELD_PYTHON        interpreter for uvicorn and helpers (default <repo>/.venv/bin/python,
                       else the interpreter running pytest).
  SHIELD_KEEP_LOGS=1   keep every server's stderr file (default: removed after a clean stop).
  SHIELD_SANITIZED=1   SHIELD_BIN is an ASan+UBSan build: timeouts are scaled up and every
                       server's stderr is scanned for sanitizer reports (after each test that
                       used it, and at stop); a report fails the test.

Fixtures
  server(app, *args, env=None)        module-scoped factory: one process per distinct
                                      (app, args, env) per test module, reused by its tests.
  fresh_server(app, *args, env=None)  function-scoped factory: a new process, stopped at the
                                      end of the test (for lifespan/shutdown/exit tests).
  Both return a ServerProcess (.url, .port, .host, .stderr_text(), .stop()).

On a failing test the tail of the stderr of every server it used is attached to the report.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
APPS_DIR = TESTS_DIR / "apps"
REPO = TESTS_DIR.parent.parent

SERVER_KIND = os.environ.get("SHIELD_TEST_SERVER", "shield").strip().lower() or "shield"
if SERVER_KIND not in ("shield", "uvicorn"):
    raise pytest.UsageError(
        f"SHIELD_TEST_SERVER must be 'shield' or 'uvicorn', not {SERVER_KIND!r}"
    )
IS_UVICORN = SERVER_KIND == "uvicorn"
SANITIZED = os.environ.get("SHIELD_SANITIZED", "") not in ("", "0")
TIMEOUT_SCALE = 4.0 if SANITIZED else 1.0

SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "runtime error:",  # UBSan
    "ERROR: LeakSanitizer",
    "WARNING: ThreadSanitizer",
)


def scaled(seconds: float) -> float:
    """A timeout, stretched when the server is a (slow) sanitizer build."""
    return seconds * TIMEOUT_SCALE


def shield_bin() -> Path:
    return Path(os.environ.get("SHIELD_BIN") or REPO / ".venv" / "bin" / "shield")


def python_bin() -> str:
    env = os.environ.get("SHIELD_PYTHON")
    if env:
        return env
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def uvicorn_available() -> bool:
    r = subprocess.run(
        [python_bin(), "-c", "import uvicorn, httptools, uvloop"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return r.returncode == 0


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------------------------

# shield flags with no uvicorn equivalent: asking for them in uvicorn mode is a test bug
# (such tests must be marked shield_only).
_UVICORN_UNSUPPORTED = {"--timeout-header", "--max-header-size", "--max-body-size"}
# shield flags that take a value (for walking an argument list)
_VALUE_FLAGS = {
    "--app-dir",
    "--host",
    "--port",
    "--uds",
    "--fd",
    "--lifespan",
    "--loop",
    "--log-level",
    "--env-file",
    "--root-path",
    "--max-header-size",
    "--max-body-size",
    "--timeout-header",
    "--timeout-keep-alive",
    "--http",
}


def build_command(
    kind: str, app: str, port: int, args: tuple[str, ...], uds: str | None = None
) -> list[str]:
    """The argv that serves `app` (MODULE:ATTR; under tests/py/apps unless args hold
    --app-dir) on 127.0.0.1:port."""
    args = tuple(str(a) for a in args)
    if kind == "shield":
        binary = shield_bin()
        if not binary.exists():
            pytest.fail(
                f"shield binary not found at {binary}: build it (scripts/bootstrap) or set "
                f"SHIELD_BIN, or run the suite against uvicorn with SHIELD_TEST_SERVER=uvicorn",
                pytrace=False,
            )
        app_dir = [] if "--app-dir" in args else ["--app-dir", str(APPS_DIR)]
        return [
            str(binary),
            app,
            *app_dir,
            *(["--uds", uds] if uds else ["--host", "127.0.0.1", "--port", str(port)]),
            "--no-access-log",
            *args,
        ]

    # uvicorn (the reference); extra `--http h11`/`--loop asyncio` in args override defaults.
    http, loop, app_dir, rest = "httptools", "uvloop", str(APPS_DIR), []
    i = 0
    while i < len(args):
        a = args[i]
        name = a.split("=", 1)[0]
        if name in _UVICORN_UNSUPPORTED:
            pytest.fail(
                f"{name} has no uvicorn equivalent: mark the test shield_only", pytrace=False
            )
        if name in _VALUE_FLAGS and "=" not in a:
            val = args[i + 1]
            i += 2
        else:
            val = a.split("=", 1)[1] if "=" in a else None
            i += 1
        if name == "--http":
            http = val
        elif name == "--app-dir":
            app_dir = val
        elif name == "--loop":
            loop = val
        elif name == "--timeout-keep-alive":
            # uvicorn takes whole seconds only
            rest += [name, str(max(1, round(float(val))))]
        elif val is None:
            rest.append(name)
        else:
            rest += [name, val]
    return [
        python_bin(),
        "-m",
        "uvicorn",
        app,
        *(["--uds", uds] if uds else ["--host", "127.0.0.1", "--port", str(port)]),
        "--app-dir",
        app_dir,
        "--no-access-log",
        "--loop",
        loop,
        "--http",
        http,
        *rest,
    ]


# --------------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------------


class ServerProcess:
    """One server process serving one app on 127.0.0.1, stderr collected to a file."""

    def __init__(
        self,
        app: str,
        *args: str,
        env: dict | None = None,
        kind: str | None = None,
        port: int | None = None,
        uds: str | None = None,
    ):
        self.app = app
        self.args = tuple(str(a) for a in args)
        self.kind = kind or SERVER_KIND
        self.host = "127.0.0.1"
        self.uds = str(uds) if uds else None  # listen on this UNIX socket instead of TCP
        self.port = 0 if uds else (port or free_port())
        self.url = f"http://{self.host}:{self.port}"
        self.extra_env = dict(env or {})
        self.cmd = build_command(self.kind, app, self.port, self.args, self.uds)
        fd, path = tempfile.mkstemp(
            prefix=f"{self.kind}-{app.replace(':', '-')}-", suffix=".stderr"
        )
        os.close(fd)
        self.stderr_path = Path(path)
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.killed = False  # needed SIGKILL
        self._scan_offset = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, wait: bool = True) -> ServerProcess:
        env = os.environ.copy()
        env.update(self.extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        for attempt in range(3):
            with open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    self.cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(REPO),
                    start_new_session=True,
                )
            if not wait:
                return self
            # free_port() races with other processes: retry on a fresh port if it was taken
            if not self.uds and self._lost_port_race() and attempt < 2:
                self._new_port()
                continue
            self.wait_ready()
            return self
        return self

    def _lost_port_race(self) -> bool:
        deadline = time.monotonic() + scaled(3.0)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "in use" in self.stderr_text().lower()
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return False
            except OSError:
                time.sleep(0.05)
        return False

    def _new_port(self) -> None:
        old = str(self.port)
        self.port = free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.cmd = [str(self.port) if a == old else a for a in self.cmd]

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or scaled(15.0))
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                pytest.fail(
                    f"server exited early with status {rc}\n{self.describe()}", pytrace=False
                )
            try:
                self.connect(timeout=0.5).close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    f"server did not accept connections within the deadline\n{self.describe()}",
                    pytrace=False,
                )
            time.sleep(0.05)

    def connect(self, timeout: float) -> socket.socket:
        """A connected socket to the server (TCP, or AF_UNIX with uds=...)."""
        if self.uds:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                s.connect(self.uds)
            except OSError:
                s.close()
                raise
            return s
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL (of the whole process group) after `timeout` seconds."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout or scaled(10.0))
            except subprocess.TimeoutExpired:
                self.killed = True
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        return self.returncode

    # -- diagnostics -------------------------------------------------------------------------
    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self, tail: int = 6000) -> str:
        text = self.stderr_text()
        if len(text) > tail:
            text = "...\n" + text[-tail:]
        return f"command: {shlex.join(self.cmd)}\nstderr ({self.stderr_path}):\n{text}"

    def cleanup(self, keep: bool = False) -> None:
        """Remove the stderr file once stopped (kept on problems or SHIELD_KEEP_LOGS=1;
        failing tests already carry its tail in their report)."""
        if keep or os.environ.get("SHIELD_KEEP_LOGS"):
            return
        try:
            self.stderr_path.unlink()
        except FileNotFoundError:
            pass

    def sanitizer_reports(self, since_last: bool = False) -> list[str]:
        text = self.stderr_text()
        start = self._scan_offset if since_last else 0
        found = [p for p in SANITIZER_PATTERNS if p in text[start:]]
        if since_last:
            self._scan_offset = len(text)
        return found

    def __repr__(self) -> str:
        return f"<ServerProcess {self.kind} {self.app} {self.args} on {self.url}>"


def _check_stopped(srv: ServerProcess, expect_clean_exit: bool = True) -> list[str]:
    """Problems found when a server was stopped: sanitizer reports, crash on shutdown."""
    problems = []
    if SANITIZED:
        found = srv.sanitizer_reports()
        if found:
            problems.append(f"sanitizer report(s) {found} in server stderr")
    rc = srv.returncode
    if srv.killed:
        problems.append("server ignored SIGTERM for too long and was SIGKILLed")
    elif (
        expect_clean_exit
        and rc is not None
        and rc < 0
        and -rc not in (signal.SIGTERM, signal.SIGINT)
    ):
        # dying *from* SIGTERM is fine (uvicorn re-raises it after a graceful shutdown);
        # SIGSEGV/SIGABRT/... while shutting down is a crash
        problems.append(f"server died from signal {-rc} while stopping")
    return problems


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

_current_test_servers: list[ServerProcess] | None = None
_module_servers: list[ServerProcess] = []  # alive module-scoped servers (the current module's)


def _note_use(srv: ServerProcess) -> None:
    if _current_test_servers is not None and srv not in _current_test_servers:
        _current_test_servers.append(srv)


@pytest.fixture(autouse=True)
def _track_servers(request):
    """Remember which servers the test used: their stderr goes into its failure report,
    and (sanitized builds) a sanitizer report appearing during the test fails it; a module
    server that died during the test fails it too (instead of confusing the next tests)."""
    global _current_test_servers
    # module servers started before this test count as used by it: a crash or a sanitizer
    # report that shows up during the test is this test's
    used: list[ServerProcess] = [s for s in _module_servers if s.alive()]
    _current_test_servers = used
    request.node._shield_servers = used
    yield
    _current_test_servers = None
    problems = []
    for srv in used:
        if SANITIZED:
            found = srv.sanitizer_reports(since_last=True)
            if found:
                problems.append(f"{srv!r}: sanitizer report(s) {found}\n{srv.describe()}")
        if getattr(srv, "_module_scoped", False) and srv.proc is not None and not srv.alive():
            problems.append(
                f"{srv!r} died during this test (status {srv.proc.returncode})\n{srv.describe()}"
            )
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for srv in getattr(item, "_shield_servers", []):
            report.sections.append((f"server stderr: {srv!r}", srv.describe()))
    return report


@pytest.fixture(scope="module")
def server():
    """Module-scoped factory: server(app, *args, env=None, kind=None) -> ServerProcess, one
    process per distinct arguments per module.  kind="uvicorn" forces the reference server."""
    cache: dict = {}

    def get(
        app: str, *args: str, env: dict | None = None, kind: str | None = None
    ) -> ServerProcess:
        key = (kind, app, tuple(str(a) for a in args), tuple(sorted((env or {}).items())))
        srv = cache.get(key)
        if srv is None or not srv.alive():
            if srv is not None:
                srv.stop()
            srv = ServerProcess(app, *args, env=env, kind=kind)
            srv._module_scoped = True
            cache[key] = srv
            _module_servers.append(srv)
            srv.start()
        _note_use(srv)
        return srv

    yield get
    problems = []
    for srv in cache.values():
        if srv in _module_servers:
            _module_servers.remove(srv)
        srv.stop()
        found = [f"{srv!r}: {p}\n{srv.describe()}" for p in _check_stopped(srv)]
        problems += found
        srv.cleanup(keep=bool(found))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def fresh_server():
    """Function-scoped factory: fresh_server(app, *args, env=None, wait=True, kind=None,
    uds=None)."""
    started: list[ServerProcess] = []

    def make(
        app: str,
        *args: str,
        env: dict | None = None,
        wait: bool = True,
        kind: str | None = None,
        uds: str | None = None,
    ) -> ServerProcess:
        srv = ServerProcess(app, *args, env=env, kind=kind, uds=uds)
        started.append(srv)
        _note_use(srv)
        return srv.start(wait=wait)

    yield make
    problems = []
    for srv in started:
        already = srv.returncode is not None and not srv.alive()
        srv.stop()
        # a test may have made the server exit on purpose (e.g. failed startup)
        found = [
            f"{srv!r}: {p}\n{srv.describe()}"
            for p in _check_stopped(srv, expect_clean_exit=not already)
        ]
        problems += found
        srv.cleanup(keep=bool(found))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


# --------------------------------------------------------------------------------------------
# Markers
# --------------------------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "shield_only: behaviour uvicorn does not have (or has differently); skipped when "
        "SHIELD_TEST_SERVER=uvicorn",
    )
    config.addinivalue_line(
        "markers",
        "no_sanitizer: too slow or meaningless under ASan+UBSan; scripts/test deselects it "
        "for the sanitized run",
    )


def pytest_collection_modifyitems(config, items):
    if not IS_UVICORN:
        return
    skip = pytest.mark.skip(reason="shield_only: not applicable to uvicorn")
    for item in items:
        if item.get_closest_marker("shield_only"):
            item.add_marker(skip)


def pytest_report_header(config):
    target = f"uvicorn via {python_bin()}" if IS_UVICORN else f"shield at {shield_bin()}"
    return [f"server under test: {target}" + (" (sanitized)" if SANITIZED else "")]


# --------------------------------------------------------------------------------------------
# Raw-socket helpers (importable from tests as `from conftest import ...`)
# --------------------------------------------------------------------------------------------


class RawResponse:
    def __init__(
        self, status: int, reason: str, version: str, headers: list, body: bytes, raw_head: bytes
    ):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers  # [(lower-cased name str, value str)] in order
        self.body = body
        self.raw_head = raw_head

    def header(self, name: str, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def __repr__(self):
        return f"<RawResponse {self.status} {self.headers} body={self.body[:80]!r}>"


class IncompleteResponse(Exception):
    def __init__(self, msg: str, partial: bytes = b""):
        super().__init__(msg)
        self.partial = partial


class RawConn:
    """A blocking TCP connection with a buffer and a deadline on every operation."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, sock=None):
        self.timeout = scaled(timeout)
        if sock is None:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        self.sock = sock
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    @classmethod
    def to(cls, srv: ServerProcess, timeout: float = 10.0) -> RawConn:
        return cls(srv.host, srv.port, timeout, sock=srv.connect(scaled(timeout)))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self, timeout: float | None = None) -> bool:
        """Read more into the buffer; False on EOF (or connection reset)."""
        if self.eof:
            return False
        self.sock.settimeout(scaled(timeout) if timeout is not None else self.timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, sep: bytes, limit: int = 1 << 20) -> bytes:
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise IncompleteResponse("no separator within limit", self.buf)
            if not self._fill():
                raise IncompleteResponse(f"EOF before {sep!r}", self.buf)
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise IncompleteResponse(f"EOF after {len(self.buf)} of {n} bytes", self.buf)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self, timeout: float | None = None) -> bytes:
        """Everything until the peer closes; raises socket.timeout if it never does."""
        while self._fill(timeout):
            pass
        out, self.buf = self.buf, b""
        return out

    def wait_closed(self, timeout: float) -> bool:
        """True if the peer closes within `timeout` s (data read meanwhile is kept)."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                self.eof = True
                return True
            self.buf += data

    def read_head(self) -> tuple[int, str, str, list, bytes]:
        head = self.read_until(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError(f"bad status line {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            assert b":" in line, f"bad header line {line!r} in {head!r}"
            k, v = line.split(b":", 1)
            headers.append((k.decode("latin-1").lower(), v.strip().decode("latin-1")))
        return (
            int(m.group(2)),
            (m.group(3) or b"").decode("latin-1"),
            m.group(1).decode(),
            headers,
            head,
        )

    def read_response(self, method: str = "GET", skip_interim: bool = True) -> RawResponse:
        """Read one response; chunked / content-length / close-delimited framing."""
        while True:
            status, reason, version, headers, head = self.read_head()
            if not (skip_interim and 100 <= status < 200):
                break
        resp = RawResponse(status, reason, version, headers, b"", head)
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")
        if method == "HEAD" or status in (204, 304):
            return resp
        if "chunked" in te:
            body = b""
            while True:
                line = self.read_until(b"\r\n")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers until empty line
                    while self.read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                body += self.read_exact(size)
                assert self.read_exact(2) == b"\r\n", "chunk not followed by CRLF"
            resp.body = body
        elif cl is not None:
            resp.body = self.read_exact(int(cl))
        else:
            resp.body = self.read_to_eof()
        return resp


def http_request(
    method: str,
    target: str,
    headers: dict | list | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    host: str = "127.0.0.1",
) -> bytes:
    """Serialize a request; adds Host, and Content-Length when a body is given."""
    hs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in hs}
    if "host" not in names:
        hs.insert(0, ("Host", host))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        hs.append(("Content-Length", str(len(body))))
    out = f"{method} {target} {version}\r\n".encode()
    for k, v in hs:
        out += f"{k}: {v}\r\n".encode("latin-1")
    return out + b"\r\n" + body


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value (returned) or fail after `timeout`."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(interval)


class RedisServer:
    """A real redis-server (Debian) on a free loopback port, no persistence; stop() ends it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="shield-redis-")
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_url():
    """A real redis-server for this module (tests using it skip when it is not installed)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/bootstrap installs it)")
    r = RedisServer()
    yield r.url
    r.stop()
