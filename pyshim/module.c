/*
 * pyshim/module.c — the bridge's context and the built-in module `_shield_server` (the
 * functions bridge.py calls: setup, serve, dispatch, stop, join, ...).  Python thread, GIL held,
 * except for the new/handler/attach/free calls of module.h on the main thread.
 */
#include <Python.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "handoff.h"
#include "module.h"
#include "pystr.h"
#include "request.h"
#include "scope.h"

struct sh_bridge {
  sh_handoff handoff; /* I/O thread -> Python thread */
  sh_scope_builder scope;
  sh_asgi_env asgi;
  sh_server *srv;
  const sh_config *cfg;
  PyObject *on_stopped; /* bridge.py callable: the I/O thread has ended */
};

/* Set by attach for mod_init (see module.h); the module keeps the bridge in its state. */
static sh_bridge *attaching;

static sh_bridge *bridge_of(PyObject *m) {
  return *(sh_bridge **)PyModule_GetState(m);
}

/* dispatch(): take the queued batch and handle every event (the eventfd's reader callback). */
static PyObject *mod_dispatch(PyObject *m, PyObject *unused) {
  (void)unused;
  sh_bridge *b = bridge_of(m);
  sh_handoff_event *items;
  size_t n = sh_pyshim__handoff_take(&b->handoff, &items);
  sh_pyshim__request_batch(&b->asgi);
  for (size_t i = 0; i < n; i++) {
    sh_handoff_event *e = &items[i];
    int rc;
    if (e->kind == SH_HANDOFF_STOPPED) {
      PyObject *r = b->on_stopped ? PyObject_CallNoArgs(b->on_stopped) : Py_NewRef(Py_None);
      rc = r ? 0 : -1;
      Py_XDECREF(r);
    } else {
      rc = sh_pyshim__request_event(&b->asgi, &b->scope, e);
    }
    /* An error in one event (memory) must not strand the rest: report it and go on. */
    if (rc < 0) PyErr_WriteUnraisable(NULL);
    free(e->data);
  }
  free(items);
  Py_RETURN_NONE;
}

/* setup(app, loop, receive_slow, log_exception, on_stopped, high_water) */
static PyObject *mod_setup(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
  sh_bridge *b = bridge_of(m);
  if (nargs != 6) {
    PyErr_SetString(PyExc_TypeError,
                    "setup(app, loop, receive_slow, log_exception, on_stopped, high_water)");
    return NULL;
  }
  size_t hw = PyLong_AsSize_t(args[5]);
  if (hw == (size_t)-1 && PyErr_Occurred()) return NULL;
  PyObject *loop = args[1];
  PyObject *asyncio = PyImport_ImportModule("asyncio");
  PyObject *task_type = asyncio ? PyObject_GetAttrString(asyncio, "Task") : NULL;
  Py_XDECREF(asyncio);
  PyObject *cf = task_type ? PyObject_GetAttrString(loop, "create_future") : NULL;
  PyObject *ct = cf ? PyObject_GetAttrString(loop, "create_task") : NULL;
  PyObject *gtf = ct ? PyObject_GetAttrString(loop, "get_task_factory") : NULL;
  PyObject *kwnames = gtf ? Py_BuildValue("(ss)", "loop", "name") : NULL;
  if (kwnames == NULL) {
    Py_XDECREF(task_type);
    Py_XDECREF(cf);
    Py_XDECREF(ct);
    Py_XDECREF(gtf);
    return NULL;
  }
  sh_asgi_env *env = &b->asgi;
  Py_XSETREF(env->app, Py_NewRef(args[0]));
  Py_XSETREF(env->loop, Py_NewRef(loop));
  Py_XSETREF(env->task_type, task_type);
  Py_XSETREF(env->create_future, cf);
  Py_XSETREF(env->create_task, ct);
  Py_XSETREF(env->get_task_factory, gtf);
  Py_XSETREF(env->task_kwnames, kwnames);
  env->task_factory = 1; /* until the first batch has looked */
  Py_XSETREF(env->receive_slow, Py_NewRef(args[2]));
  Py_XSETREF(env->log_exception, Py_NewRef(args[3]));
  Py_XSETREF(b->on_stopped, Py_NewRef(args[4]));
  env->high_water = hw;
  Py_RETURN_NONE;
}

static PyObject *mod_eventfd(PyObject *m, PyObject *unused) {
  (void)unused;
  return PyLong_FromLong(sh_pyshim__handoff_fd(&bridge_of(m)->handoff));
}

static PyObject *mod_serve(PyObject *m, PyObject *unused) {
  (void)unused;
  sh_bridge *b = bridge_of(m);
  int rc = sh_pyshim__handoff_start(&b->handoff, b->srv);
  if (rc != 0) {
    errno = rc;
    return PyErr_SetFromErrno(PyExc_OSError);
  }
  Py_RETURN_NONE;
}

static PyObject *mod_stop(PyObject *m, PyObject *arg) {
  double grace = PyFloat_AsDouble(arg);
  if (grace == -1.0 && PyErr_Occurred()) return NULL;
  sh_server_stop(bridge_of(m)->srv, grace);
  Py_RETURN_NONE;
}

static PyObject *mod_join(PyObject *m, PyObject *unused) {
  (void)unused;
  sh_bridge *b = bridge_of(m);
  int rc;
  Py_BEGIN_ALLOW_THREADS rc = sh_pyshim__handoff_join(&b->handoff);
  Py_END_ALLOW_THREADS return PyLong_FromLong(rc);
}

static PyObject *mod_set_state(PyObject *m, PyObject *arg) {
  if (sh_pyshim__scope_set_state(&bridge_of(m)->scope, arg) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *mod_log(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
  (void)m;
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "log(level, message)");
    return NULL;
  }
  long level = PyLong_AsLong(args[0]);
  if (level == -1 && PyErr_Occurred()) return NULL;
  const char *msg = PyUnicode_AsUTF8(args[1]);
  if (msg == NULL) return NULL;
  sh_log((sh_log_level)level, "%s", msg);
  Py_RETURN_NONE;
}

static PyObject *str_or_none(const char *s) {
  if (s == NULL) Py_RETURN_NONE;
  return PyUnicode_FromString(s);
}

static PyObject *mod_config(PyObject *m, PyObject *unused) {
  (void)unused;
  sh_bridge *b = bridge_of(m);
  const sh_config *c = b->cfg;
  PyObject *d =
      Py_BuildValue("{s:N,s:i,s:N,s:N,s:i,s:N,s:N,s:N,s:N,s:N,s:N,s:i,s:i,s:N}", "app",
                    str_or_none(c->app), "factory", c->factory, "app_dir", str_or_none(c->app_dir),
                    "host", str_or_none(c->host), "port", sh_server_port(b->srv), "uds",
                    str_or_none(c->uds), "lifespan", str_or_none(c->lifespan), "loop",
                    str_or_none(c->loop), "log_level", str_or_none(c->log_level), "env_file",
                    str_or_none(c->env_file), "root_path", str_or_none(c->root_path), "fd", c->fd,
                    "write_high_water", (int)c->write_high_water, "version", str_or_none("0.1.0"));
  /* production serving: workers, graceful timeout, vsock */
  PyObject *extra =
      d ? Py_BuildValue("{s:d,s:i,s:i,s:i,s:i,s:N}", "timeout_graceful_shutdown",
                        c->timeout_graceful_shutdown, "vsock_port", c->vsock_port, "workers",
                        c->workers, "worker_index", c->worker_index, "gc_freeze", c->gc_freeze,
                        "interface", str_or_none(c->interface ? c->interface : "auto"))
        : NULL;
  if (extra == NULL || PyDict_Update(d, extra) < 0) Py_CLEAR(d);
  Py_XDECREF(extra);
  return d;
}

/* After the I/O thread has ended: requests the server freed must not be touched again. */
static PyObject *mod_forget_requests(PyObject *m, PyObject *unused) {
  (void)unused;
  sh_pyshim__request_forget_all(&bridge_of(m)->asgi);
  Py_RETURN_NONE;
}

/* reload_tls(): re-read the certificate and key files (SIGHUP); RuntimeError on failure. */
static PyObject *mod_reload_tls(PyObject *m, PyObject *unused) {
  (void)unused;
  sh_server *srv = bridge_of(m)->srv;
  sh_error err = {0};
  int rc;
  /* Reading and parsing the files must not hold the GIL. */
  Py_BEGIN_ALLOW_THREADS rc = sh_server_reload_tls(srv, &err);
  Py_END_ALLOW_THREADS if (rc < 0) {
    PyErr_SetString(PyExc_RuntimeError, err.message);
    return NULL;
  }
  Py_RETURN_NONE;
}

static PyMethodDef mod_methods[] = {
    {"reload_tls", mod_reload_tls, METH_NOARGS, "re-read the TLS certificate/key files (SIGHUP)"},
    {"dispatch", mod_dispatch, METH_NOARGS, "handle the queued events (one batch)"},
    {"setup", (PyCFunction)(void (*)(void))mod_setup, METH_FASTCALL,
     "setup(app, loop, receive_slow, log_exception, on_stopped, high_water)"},
    {"eventfd", mod_eventfd, METH_NOARGS, "fd that becomes readable when events are queued"},
    {"serve", mod_serve, METH_NOARGS, "start the I/O thread (accepting connections)"},
    {"stop", mod_stop, METH_O, "stop(grace_seconds): graceful stop of the I/O thread"},
    {"join", mod_join, METH_NOARGS, "wait for the I/O thread to end"},
    {"set_state", mod_set_state, METH_O, "lifespan state copied into each scope"},
    {"log", (PyCFunction)(void (*)(void))mod_log, METH_FASTCALL, "log(level, message)"},
    {"config", mod_config, METH_NOARGS, "the server configuration"},
    {"forget_requests", mod_forget_requests, METH_NOARGS, "drop all request objects"},
    {NULL, NULL, 0, NULL}};

/* The module's state is a pointer to its bridge (not the bridge itself: the server's handler,
 * made before the interpreter exists, already points into it). */
static struct PyModuleDef mod_def = {PyModuleDef_HEAD_INIT,
                                     "_shield_server",
                                     "Shield's I/O thread bridge (built into the binary)",
                                     sizeof(sh_bridge *),
                                     mod_methods,
                                     NULL,
                                     NULL,
                                     NULL,
                                     NULL};

static PyObject *mod_init(void) {
  sh_bridge *b = attaching;
  if (b == NULL) {
    PyErr_SetString(PyExc_ImportError, "_shield_server: no bridge attached");
    return NULL;
  }
  PyObject *m = PyModule_Create(&mod_def);
  if (m == NULL) return NULL;
  *(sh_bridge **)PyModule_GetState(m) = b;
  if (sh_pyshim__str_init() < 0) goto fail;
  int tls = b->cfg->ssl_certfile != NULL || b->cfg->ssl_issue != NULL; /* files or memory */
  if (PyModule_AddIntConstant(m, "TLS", tls) < 0) goto fail;
  if (sh_pyshim__request_init(&b->asgi, m) < 0) goto fail;
  if (sh_pyshim__scope_init(&b->scope, b->cfg, sh_server_port(b->srv)) < 0) goto fail;
  return m;
fail:
  Py_DECREF(m);
  return NULL;
}

sh_bridge *sh_pyshim__bridge_new(const sh_config *cfg, sh_error *err) {
  sh_bridge *b = calloc(1, sizeof *b);
  if (b == NULL) {
    err->code = SH_ENOMEM;
    snprintf(err->message, sizeof err->message, "out of memory (bridge)");
    return NULL;
  }
  b->cfg = cfg;
  if (sh_pyshim__handoff_init(&b->handoff, err) < 0) {
    free(b);
    return NULL;
  }
  return b;
}

sh_handler *sh_pyshim__bridge_handler(sh_bridge *b) {
  return sh_pyshim__handoff_handler(&b->handoff);
}

int sh_pyshim__bridge_attach(sh_bridge *b, sh_server *srv, sh_error *err) {
  b->srv = srv;
  attaching = b;
  if (PyImport_AppendInittab("_shield_server", mod_init) < 0) {
    err->code = SH_ENOMEM;
    snprintf(err->message, sizeof err->message, "cannot register module _shield_server");
    return SH_ENOMEM;
  }
  return 0;
}

void sh_pyshim__bridge_clear(sh_bridge *b) {
  sh_pyshim__scope_clear(&b->scope);
  sh_pyshim__request_clear(&b->asgi);
  Py_CLEAR(b->on_stopped);
}

void sh_pyshim__bridge_free(sh_bridge *b) {
  if (b == NULL) return;
  sh_pyshim__handoff_destroy(&b->handoff);
  if (attaching == b) attaching = NULL;
  free(b);
}
