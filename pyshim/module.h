/*
 * pyshim/module.h — private to pyshim: the bridge between the server and the embedded
 * interpreter, and the built-in module `_shield_server` through which bridge.py drives it
 * (module.c).  The bridge owns one context: the hand-off (handoff.h), the scope builder
 * (scope.h) and the requests' environment (request.h).  Dependencies run one way:
 * module -> request -> scope -> (pystr), and every layer -> handoff (no Python).
 *
 * Main thread: new, handler, attach (before Py_Initialize), clear (GIL held, before
 * Py_FinalizeEx), free (after it).  One bridge per process: CPython's built-in module table
 * (PyImport_AppendInittab) takes an init function without an argument, so attach remembers the
 * bridge for the module's init.
 */
#ifndef SHIELD_PYSHIM_MODULE_H
#define SHIELD_PYSHIM_MODULE_H

#include "server.h"

typedef struct sh_bridge sh_bridge;

/* The bridge with its hand-off queue and eventfd.  NULL with err set. */
sh_bridge *sh_pyshim__bridge_new(const sh_config *cfg, sh_error *err);
/* The handler whose callbacks queue events for the Python thread (I/O thread only). */
sh_handler *sh_pyshim__bridge_handler(sh_bridge *b);
/* Before Py_Initialize: remember the server and register `_shield_server`.  0 or SH_E*. */
int sh_pyshim__bridge_attach(sh_bridge *b, sh_server *srv, sh_error *err);
/* After bridge.py has finished (GIL held, before Py_FinalizeEx): drop the Python objects. */
void sh_pyshim__bridge_clear(sh_bridge *b);
/* After Py_FinalizeEx: free the queue and close the eventfd. */
void sh_pyshim__bridge_free(sh_bridge *b);

#endif
