/*
 * pyshim/include/pyshim.h — the embedded CPython side of Shield (the only folder that includes
 * Python.h).  The module's one public header: what the `shield` binary (cli/serve.c) needs.
 *
 * What this module owns
 *   - Starting the interpreter inside the `shield` binary so that it runs with the virtual
 *     environment it was installed into (sys.prefix = the venv, its site-packages): embed.c.
 *   - The ASGI bridge, in layers that depend one way (module -> request -> scope):
 *       handoff.c   the I/O thread's side: a sh_handler whose callbacks only queue events,
 *                   and the eventfd that wakes the Python thread once per batch (no Python.h);
 *       scope.c     the ASGI scope from interned keys (pystr.c), with the TLS (tls_scope.c)
 *                   and attestation (attest_scope.c) extensions;
 *       request.c   one request's ASGI receive()/send() and the end of its Task;
 *       module.c    the bridge's context and the built-in module `_shield_server` that
 *                   bridge.py (the lifespan, the loop; compiled into the binary, so binary and
 *                   bridge can never disagree) drives.
 *   - The extension module `shield_asgi._native` (native*.c: attestation verification and the
 *     client-attestation primitives for any ASGI server) and the Python package `shield_asgi`.
 *
 * What it never does
 *   Parse HTTP, touch sockets, or do crypto in Python on the hot path.
 *
 * Threads
 *   The bridge handler's callbacks (handoff.c) run on the I/O thread and never take the GIL.
 *   Everything else here runs on the Python (main) thread with the GIL held.
 *
 * Ownership
 *   Each request gets a `sh_pyreq` (handoff.h: malloc'd on the I/O thread in on_request) that
 *   is freed on the Python thread when it processes the request's RELEASED event, which is
 *   always the last event for that request (server.h's on_release guarantees nothing follows).
 */
#ifndef SHIELD_PYSHIM_H
#define SHIELD_PYSHIM_H

#include "server.h"

struct sh_gate_config;

/* Serve cfg->app: start CPython for the `shield` binary (program name chosen so that getpath
 * finds the venv's pyvenv.cfg), run the app until it stops, behind the attestation gate when
 * gate->types is set (gate may be NULL).  Main thread of a worker process, before any
 * interpreter exists.  Returns the process exit code. */
int sh_pyshim_main(sh_config *cfg, const struct sh_gate_config *gate, int argc, char **argv);

/* Run Python code of the venv's packages for a command that needs no server (`shield
 * attest-server`): start the interpreter as sh_pyshim_main does (the same venv), call
 * module.function(arg) and finish it.  The function returns the exit status (an int; None is
 * 0) or raises SystemExit; any other exception is printed with its traceback (exit 1).  Main
 * thread, no interpreter running.  Returns the exit status. */
int sh_pyshim_call(const char *module, const char *function, const char *arg, int argc,
                   char **argv);

#endif /* SHIELD_PYSHIM_H */
