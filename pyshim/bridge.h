/* pyshim/bridge.h — private to pyshim: the I/O-thread handler (bridge.c) and the per-request
 * ASGI protocol in C (asgi.c).  Everything here except sh_bridge_handler's callbacks runs on
 * the Python thread with the GIL held. */
#ifndef SHIELD_PYSHIM_BRIDGE_H
#define SHIELD_PYSHIM_BRIDGE_H

#include <Python.h>

#include "server.h"

/* The handler whose callbacks queue events for the Python thread (I/O thread only). */
sh_handler *sh_bridge_handler(void);

/* Before Py_Initialize: remember the server, create the eventfd, register `_shield_server`. */
int sh_bridge_prepare(sh_server *srv, const sh_config *cfg, sh_error *err);

/* After the bridge has finished (GIL held, before Py_FinalizeEx): drop what it holds. */
void sh_bridge_cleanup(void);

typedef struct sh_pyreq sh_pyreq;
typedef struct RequestObject RequestObject;

/* Per-request bookkeeping shared by the two threads' sides (see bridge.c's header comment). */
struct sh_pyreq {
  sh_request *req;       /* valid until `released` is set by the Python side */
  RequestObject *obj;    /* borrowed; cleared by the object's dealloc */
  int released;          /* sh_request_release was called */
  int linked;            /* on the live list */
  sh_pyreq *prev, *next; /* live list, Python thread only */
};

/* The Python object of one request: its ASGI receive/send state. */
struct RequestObject {
  PyObject_HEAD
  sh_pyreq *pr;           /* NULL once the request is gone */
  PyObject *chunks;       /* list of body bytes not yet received by the app, or NULL */
  PyObject *waiter;       /* Future a waiting receive() sleeps on, or NULL */
  PyObject *write_waiter; /* Future a send() over the high-water mark sleeps on, or NULL */
  PyObject *task;         /* the Task running the app (borrowed: held by G.tasks), or NULL */
  unsigned body_done : 1, final_given : 1, disconnected : 1, started : 1, complete : 1,
      read_asked : 1;
};

typedef struct sh_asgi_globals {
  PyObject *k_type, *k_body, *k_more_body, *k_status, *k_headers;
  PyObject *v_http_request, *v_http_disconnect, *v_response_start, *v_response_body;
  PyObject *s_done, *s_set_result, *s_throw, *s_close, *s_join;
  PyObject *cancelled_error; /* asyncio.CancelledError */
  PyObject *empty_bytes, *empty_tuple;
  PyObject *tasks;         /* set of running request Tasks */
  PyTypeObject *request_type;
  /* set by _shield_server.setup(): */
  PyObject *app, *create_future, *create_task, *receive_slow, *log_exception;
  PyObject *loop, *task_type, *get_task_factory, *task_kwnames, *task_name;
  int task_factory; /* the loop has a task factory: use loop.create_task (checked per batch) */
  size_t high_water;
} sh_asgi_globals;

extern sh_asgi_globals G;

int sh_asgi_init(PyObject *module);
RequestObject *sh_asgi_request_new(sh_pyreq *pr);
int sh_asgi_start_task(RequestObject *self, PyObject *scope);
void sh_asgi_on_body(RequestObject *self, PyObject *data, int last);
void sh_asgi_on_disconnect(RequestObject *self);
void sh_asgi_on_writable(RequestObject *self);
void sh_asgi_release(RequestObject *self);
PyObject *sh_asgi_raise(int rc, const char *what);
/* Validate and pass ASGI response headers to sh_request_start (bridge.c); sets a Python
 * exception and returns a negative code on bad input. */
int sh_asgi_start_response(sh_request *req, int status, PyObject *headers);

/* tls_scope.c (Python thread): the ASGI TLS extension, {"tls": {...}} (new reference), and
 * _shield_server.reload_tls() (re-reads the certificate files; raises RuntimeError). */
PyObject *sh_tls_scope_extensions(const sh_tls_info *info);
PyObject *sh_tls_py_reload(sh_server *srv);
void sh_tls_scope_cleanup(void);

#endif
