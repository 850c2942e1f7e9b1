/*
 * pyshim/pyshim.h — the embedded CPython side of Shield (the only folder that includes Python.h).
 *
 * What this module owns
 *   - Starting the interpreter inside the `shield` binary so that it runs with the virtual
 *     environment it was installed into (sys.prefix = the venv, its site-packages).
 *   - The ASGI bridge: a sh_handler (server/server.h) whose callbacks run on the I/O thread and
 *     only queue events, plus the built-in module `_shield_server` through which the Python
 *     thread takes those events in batches, builds scopes (interned keys) and answers with
 *     sh_request_* calls.  The ASGI protocol itself (receive/send, lifespan, tasks) is in
 *     bridge.py, compiled into the binary so binary and bridge can never disagree.
 *   - The extension module `shield._native` (attestation verification for any ASGI server)
 *     and the Python package `shield`.
 *
 * What it never does
 *   Parse HTTP, touch sockets, or do crypto in Python on the hot path.
 *
 * Threads
 *   sh_pyshim_handler()'s callbacks run on the I/O thread and never take the GIL.
 *   Everything else here runs on the Python (main) thread with the GIL held.
 *
 * Ownership
 *   Each request gets a `sh_pyreq` (malloc'd on the I/O thread in on_request) that is freed on
 *   the Python thread when it processes the request's RELEASED event, which is always the last
 *   event for that request (server.h's on_release guarantees nothing follows it).
 */
#ifndef SHIELD_PYSHIM_H
#define SHIELD_PYSHIM_H

#include "server.h"

struct sh_gate_config;

/* Start CPython for the `shield` binary (program name chosen so that getpath finds the
 * venv's pyvenv.cfg), then run the app, behind the attestation gate when gate->types is set
 * (gate may be NULL).  Returns the process exit code. */
int sh_pyshim_main(sh_config *cfg, const struct sh_gate_config *gate, int argc, char **argv);

#endif /* SHIELD_PYSHIM_H */
