/*
 * pyshim/request.h — private to pyshim: one HTTP request's ASGI life on the Python thread
 * (request.c): the `Request` object (receive/send), the `Ready` completed awaitable, the `Run`
 * its Task drives, and the handling of the hand-off's events for requests.
 *
 * Python thread only, GIL held.  The environment is owned by the bridge's context (module.c);
 * each Request object keeps a pointer to it, so nothing here is a process-wide variable.
 */
#ifndef SHIELD_PYSHIM_REQUEST_H
#define SHIELD_PYSHIM_REQUEST_H

#include <Python.h>

#include "handoff.h"
#include "scope.h"

typedef struct sh_asgi_env {
  /* made by sh_pyshim__request_init (module import) */
  PyTypeObject *request_type, *run_type, *ready_type;
  PyObject *ready_none;      /* one shared completed awaitable for send() */
  PyObject *tasks;           /* set of running request Tasks (also _shield_server.tasks) */
  PyObject *cancelled_error; /* asyncio.CancelledError */
  PyObject *empty_bytes, *empty_tuple;
  /* set by _shield_server.setup() (module.c), cleared by sh_pyshim__request_clear */
  PyObject *app, *loop, *create_future, *create_task, *task_type, *get_task_factory;
  PyObject *task_kwnames; /* ("loop", "name") */
  PyObject *receive_slow; /* bridge.py: receive() that has to wait */
  PyObject *log_exception;
  int task_factory;  /* the loop has a task factory: use loop.create_task (checked per batch) */
  size_t high_water; /* send() waits while more than this is buffered */
  /* requests whose RELEASED event has not been handled yet (a sentinel) */
  sh_pyreq live;
} sh_asgi_env;

/* Make the types and constants, add `Request` and `tasks` to module.  0 or -1 (exception). */
int sh_pyshim__request_init(sh_asgi_env *env, PyObject *module);
/* Once per batch, before its events: does the loop have a task factory now? */
void sh_pyshim__request_batch(sh_asgi_env *env);
/* Handle one event of a request (any kind but SH_HANDOFF_STOPPED): a new request gets its scope
 * (sb) and its Task.  0, or -1 with a Python exception set (the caller reports it and goes on;
 * the request is never stranded).  The event's data stays the caller's to free. */
int sh_pyshim__request_event(sh_asgi_env *env, sh_scope_builder *sb, const sh_handoff_event *e);
/* After the I/O thread has ended: forget every request (the server freed them). */
void sh_pyshim__request_forget_all(sh_asgi_env *env);
/* Drop what setup() gave (before the interpreter finalizes). */
void sh_pyshim__request_clear(sh_asgi_env *env);

#endif
