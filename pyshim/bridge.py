"""The Python side of Shield's bridge (compiled into the `shield` binary as `_shield_bridge`).

The I/O thread (C, server/) parses HTTP and queues events (pyshim/handoff.c); the eventfd
wakes this thread once per batch and `_shield_server.dispatch()` (pyshim/module.c) handles
the whole batch in C: each request's scope built from interned keys (scope.c), its app run in
a real asyncio Task with `receive()`/`send()` in C (request.c).  Here: loading the app, the
event loop, the ASGI lifespan protocol with state, and graceful shutdown on SIGINT/SIGTERM,
the parts that are small, once per process, and must interoperate with whatever the app does
with asyncio.
"""

import asyncio
import gc
import importlib
import inspect
import os
import signal
import sys
import traceback

import _shield_server as S

CRITICAL, ERROR, WARNING, INFO, DEBUG, TRACE = 50, 40, 30, 20, 10, 5

GRACEFUL_SHUTDOWN_SECONDS = 30.0


def log(level, message):
    S.log(level, message)


async def receive_slow(req):
    """receive() when no message is ready yet: sleep until the next event for this request
    (body bytes, disconnect, response completion), then look again.  The common case never
    gets here: receive() in C returns a completed awaitable."""
    while True:
        await req.wait()
        message = req.try_receive()
        if message is not None:
            return message


def log_exception(exc):
    log(
        ERROR,
        "Exception in ASGI application\n"
        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )


class ASGI2Middleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        instance = self.app(scope)
        await instance(receive, send)


class Lifespan:
    """The ASGI lifespan protocol (startup/shutdown with state), as uvicorn runs it."""

    def __init__(self, app, mode, state):
        self.app = app
        self.mode = mode
        self.state = state
        self.queue = asyncio.Queue()
        self.startup_event = asyncio.Event()
        self.shutdown_event = asyncio.Event()
        self.startup_failed = False
        self.shutdown_failed = False
        self.error_occurred = False
        self.should_exit = False
        self.task = None

    async def startup(self):
        log(INFO, "Waiting for application startup.")
        self.task = asyncio.get_running_loop().create_task(self.main())
        await self.queue.put({"type": "lifespan.startup"})
        await self.startup_event.wait()
        if self.startup_failed or (self.error_occurred and self.mode == "on"):
            log(ERROR, "Application startup failed. Exiting.")
            return False
        if not self.error_occurred:
            log(INFO, "Application startup complete.")
        return True

    async def shutdown(self):
        if self.error_occurred:
            return
        log(INFO, "Waiting for application shutdown.")
        await self.queue.put({"type": "lifespan.shutdown"})
        await self.shutdown_event.wait()
        if self.shutdown_failed or (self.error_occurred and self.mode == "on"):
            log(ERROR, "Application shutdown failed. Exiting.")
        else:
            log(INFO, "Application shutdown complete.")

    async def main(self):
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as exc:
            self.error_occurred = True
            if self.startup_failed or self.shutdown_failed:
                return
            if self.mode == "auto":
                log(INFO, "ASGI 'lifespan' protocol appears unsupported.")
            else:
                log(
                    ERROR,
                    "Exception in 'lifespan' protocol\n"
                    + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                )
        finally:
            self.startup_event.set()
            self.shutdown_event.set()

    async def send(self, message):
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.startup_event.set()
        elif kind == "lifespan.startup.failed":
            self.startup_failed = True
            self.startup_event.set()
            if message.get("message"):
                log(ERROR, message["message"])
        elif kind == "lifespan.shutdown.complete":
            self.shutdown_event.set()
        elif kind == "lifespan.shutdown.failed":
            self.shutdown_failed = True
            self.shutdown_event.set()
            if message.get("message"):
                log(ERROR, message["message"])
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, for lifespan.")

    async def receive(self):
        return await self.queue.get()


class Server:
    def __init__(self, app, cfg, loop):
        self.app = app
        self.cfg = cfg
        self.loop = loop
        self.stopped = loop.create_future()
        self.stopping = False
        S.setup(app, loop, receive_slow, log_exception, self.on_stopped, cfg["write_high_water"])

    def on_stopped(self):
        if not self.stopped.done():
            self.stopped.set_result(None)

    def request_stop(self, sig=None):
        if self.stopping:
            # A second Ctrl+C: stop now.
            S.stop(0.0)
            return
        self.stopping = True
        if sig is not None:
            log(INFO, "Shutting down")
        S.stop(self.cfg.get("timeout_graceful_shutdown", GRACEFUL_SHUTDOWN_SECONDS))

    def reload_tls(self):
        try:
            S.reload_tls()
        except RuntimeError as e:
            log(ERROR, f"TLS reload failed, keeping the current certificate: {e}")

    def bound_url(self):
        cfg = self.cfg
        if cfg["uds"]:
            return f"unix socket {cfg['uds']}"
        if cfg["fd"] >= 0:
            return f"socket fd {cfg['fd']}"
        if cfg.get("vsock_port", -1) >= 0:
            return f"vsock port {cfg['vsock_port']}"
        host = cfg["host"]
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if S.TLS else "http"
        return f"{scheme}://{host}:{cfg['port']}"

    async def run(self):
        log(INFO, f"Started server process [{os.getpid()}]")
        state = {}
        lifespan = None
        if self.cfg["lifespan"] != "off":
            lifespan = Lifespan(self.app, self.cfg["lifespan"], state)
            if not await lifespan.startup():
                return 3
        S.set_state(state)
        if self.cfg["gc_freeze"]:
            freeze_startup_objects()
        loop = self.loop
        efd = S.eventfd()
        loop.add_reader(efd, S.dispatch)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop, sig)
        if S.TLS:  # SIGHUP: re-read the certificate and key (connections are kept)
            loop.add_signal_handler(signal.SIGHUP, self.reload_tls)
        S.serve()
        log(INFO, f"Shield running on {self.bound_url()} (Press CTRL+C to quit)")
        await self.stopped
        # The I/O thread has closed every connection: tasks still running saw a disconnect.
        tasks = S.tasks
        if tasks:
            await asyncio.wait(set(tasks), timeout=1.0)
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.wait(set(tasks), timeout=1.0)
        loop.remove_reader(efd)
        if lifespan is not None:
            await lifespan.shutdown()
        gc.unfreeze()  # finalization collects (and frees the C resources of) everything again
        rc = S.join()
        S.dispatch()
        log(INFO, f"Finished server process [{os.getpid()}]")
        return 0 if rc >= 0 else 1


def freeze_startup_objects():
    """Why: the app's modules, routes and models (tens of thousands of objects for a FastAPI
    app) live as long as the process, yet every full collection walks them all.  Under load,
    requests in flight keep enough young objects alive that collections cascade into the old
    generation: a full walk every few thousand requests, which took the p99 of a FastAPI
    route in session mode from 7.7 to 14.3 ms (bench/RESULTS.md).  gc.freeze() moves what
    start-up made into the permanent generation, which collections skip (and, in a forked
    worker, no longer touch, so those pages stay shared).  Garbage is collected first so it
    is not kept forever.  What requests allocate is collected as usual; at shutdown run()
    unfreezes, so the interpreter's finalization frees everything as before.  --no-gc-freeze
    turns this off."""
    gc.collect()
    gc.freeze()


def load_env_file(path):
    """KEY=VALUE lines (python-dotenv's format when installed, else the common subset)."""
    try:
        import dotenv  # noqa: PLC0415

        dotenv.load_dotenv(path, override=False)
        return
    except ImportError:
        pass
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[7:].lstrip()
            key, sep, value = line.partition("=")
            if not sep:
                continue
            key, value = key.strip(), value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            os.environ.setdefault(key, value)


def import_app(spec, factory):
    module_name, sep, attrs = spec.partition(":")
    if not sep or not module_name or not attrs:
        raise SystemExit(
            f'shield: error: import string "{spec}" must be in format "<module>:<attribute>".'
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise SystemExit(f'shield: error: could not import module "{module_name}".') from None
    obj = module
    try:
        for attr in attrs.split("."):
            obj = getattr(obj, attr)
    except AttributeError:
        raise SystemExit(
            f'shield: error: attribute "{attrs}" not found in module "{module_name}".'
        ) from None
    if factory:
        try:
            obj = obj()
        except TypeError as exc:
            raise SystemExit(f"shield: error: error loading ASGI app factory: {exc}") from None
    return obj


def _takes(sig, n):
    """Can a callable with signature `sig` be called with n positional arguments?"""
    try:
        sig.bind(*range(n))
    except TypeError:
        return False
    return True


def is_asgi3(app):
    """uvicorn's detection (a class is ASGI 3 when its instances are awaitable, a callable when
    it or its __call__ is a coroutine function), plus what uvicorn misses: a functools.partial
    of an async function (inspect looks through partials), and a plain callable that takes
    exactly (scope, receive, send) and returns a coroutine.  A callable that can also be
    called with the scope alone stays ASGI 2, as under uvicorn."""
    if inspect.isclass(app):
        return hasattr(app, "__await__")
    if inspect.iscoroutinefunction(app):
        return True
    if not inspect.isfunction(app) and inspect.iscoroutinefunction(getattr(app, "__call__", None)):
        return True
    try:
        sig = inspect.signature(app)
    except (TypeError, ValueError):  # no signature to read (some builtins): as uvicorn
        return False
    return _takes(sig, 3) and not _takes(sig, 1)


def asgi_app(app, interface="auto"):
    """The app as an ASGI 3 callable: --interface asgi3 takes it as it is, asgi2 wraps it
    (app(scope) returns an instance awaited with (receive, send)), auto detects which."""
    if interface == "asgi3" or (interface == "auto" and is_asgi3(app)):
        return app
    return ASGI2Middleware(app)


def new_loop(kind):
    if kind in ("auto", "uvloop"):
        try:
            import uvloop  # noqa: PLC0415

            return uvloop.new_event_loop()
        except ImportError:
            if kind == "uvloop":
                raise SystemExit(
                    "shield: error: --loop uvloop but uvloop is not installed"
                ) from None
    return asyncio.new_event_loop()


def main():
    cfg = S.config()
    if cfg["env_file"]:
        try:
            load_env_file(cfg["env_file"])
        except OSError as exc:
            raise SystemExit(
                f"shield: error: --env-file {cfg['env_file']}: {exc.strerror}"
            ) from None
    sys.path.insert(0, os.path.abspath(cfg["app_dir"] or "."))
    app = asgi_app(import_app(cfg["app"], cfg["factory"]), cfg.get("interface", "auto"))
    loop = new_loop(cfg["loop"])
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(Server(app, cfg, loop).run())
    finally:
        S.forget_requests()
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
