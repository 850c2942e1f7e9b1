/*
 * pyshim/asgi.c — one HTTP request's ASGI life in C: receive(), send(), and the end of its Task.
 *
 * Why in C: for a small response the app awaits receive() once and send() twice.  Written as
 * `async def`, each await builds a coroutine and a frame; here receive() and send() return an
 * already-completed awaitable (the `Ready` type, whose am_send hands the value straight back
 * to the awaiting frame: no coroutine, no StopIteration) whenever the answer is known, which
 * for most requests is always.  Only a receive() that must wait for body bytes or a disconnect
 * goes through a small Python coroutine (bridge.py's receive_slow), and a send() over the write
 * high-water mark returns a real asyncio Future.
 *
 * Each request is one `Request` object: it owns its protocol state and is referenced by the
 * Task (through the bound receive/send/done methods) and by queued events (through sh_pyreq,
 * see bridge.c).  It takes part in GC because futures and tasks can point back at it.
 */
#include <Python.h>
#include <structmember.h>

#include <string.h>

#include "bridge.h"

/* Process-wide Python objects of the bridge (set by _shield_server.setup, GIL held). */
sh_asgi_globals G;

/* ---------------------------------------------------------------- Ready awaitable */

typedef struct {
  PyObject_HEAD
  PyObject *value; /* owned; the result of the await */
} ReadyObject;

static PyTypeObject *ready_type;

static PySendResult ready_am_send(PyObject *self, PyObject *arg, PyObject **result) {
  (void)arg;
  ReadyObject *r = (ReadyObject *)self;
  *result = Py_NewRef(r->value);
  return PYGEN_RETURN;
}

/* For code that drives the awaitable through the iterator protocol instead of am_send. */
static PyObject *ready_iternext(PyObject *self) {
  ReadyObject *r = (ReadyObject *)self;
  PyObject *v = r->value;
  if (v == Py_None) return NULL; /* StopIteration(None) */
  PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, v);
  if (exc != NULL) {
    PyErr_SetObject(PyExc_StopIteration, exc);
    Py_DECREF(exc);
  }
  return NULL;
}

static PyObject *ready_await(PyObject *self) { return Py_NewRef(self); }

static void ready_dealloc(PyObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  Py_XDECREF(((ReadyObject *)self)->value);
  tp->tp_free(self);
  Py_DECREF(tp);
}

static PyObject *ready_send(PyObject *self, PyObject *arg) {
  (void)arg;
  return ready_iternext(self);
}

static PyMethodDef ready_methods[] = {
    {"send", ready_send, METH_O, "finish at once with the value"},
    {NULL, NULL, 0, NULL}};

static PyType_Slot ready_slots[] = {{Py_tp_dealloc, ready_dealloc},
                                    {Py_am_await, ready_await},
                                    {Py_am_send, (void *)ready_am_send},
                                    {Py_tp_iter, ready_await},
                                    {Py_tp_iternext, ready_iternext},
                                    {Py_tp_methods, ready_methods},
                                    {0, NULL}};

static PyType_Spec ready_spec = {"_shield_server.Ready", sizeof(ReadyObject), 0,
                                 Py_TPFLAGS_DEFAULT, ready_slots};

/* A completed awaitable holding `value` (stolen). */
static PyObject *ready(PyObject *value) {
  if (value == NULL) return NULL;
  ReadyObject *r = PyObject_New(ReadyObject, ready_type);
  if (r == NULL) {
    Py_DECREF(value);
    return NULL;
  }
  r->value = value;
  return (PyObject *)r;
}

static PyObject *ready_none; /* one shared completed awaitable for send() */

/* ---------------------------------------------------------------- helpers */

static int req_alive(RequestObject *self) { return self->pr != NULL && !self->pr->released; }

static void wake(PyObject **fut) {
  PyObject *f = *fut;
  if (f == NULL) return;
  *fut = NULL;
  PyObject *done = PyObject_CallMethodNoArgs(f, G.s_done);
  if (done == Py_False) {
    PyObject *r = PyObject_CallMethodOneArg(f, G.s_set_result, Py_None);
    Py_XDECREF(r);
  }
  Py_XDECREF(done);
  if (PyErr_Occurred()) PyErr_WriteUnraisable(f);
  Py_DECREF(f);
}

PyObject *sh_asgi_raise(int rc, const char *what) {
  switch (rc) {
    case SH_ECLOSED:
      PyErr_Format(PyExc_ConnectionError, "%s: client disconnected", what);
      break;
    case SH_EHEADER:
      PyErr_Format(PyExc_ValueError, "%s: invalid header name or value (CR, LF, NUL or non-token)",
                   what);
      break;
    case SH_ETOOLONG:
      PyErr_Format(PyExc_RuntimeError, "%s: response body longer than its Content-Length", what);
      break;
    case SH_ESTATE:
      PyErr_Format(PyExc_RuntimeError, "%s: not valid in the response's current state", what);
      break;
    case SH_ENOMEM:
      PyErr_NoMemory();
      break;
    default:
      PyErr_Format(PyExc_RuntimeError, "%s failed (code %d)", what, rc);
  }
  return NULL;
}

static PyObject *message(PyObject *type_value, PyObject *body, int more) {
  PyObject *d = PyDict_New();
  if (d == NULL) return NULL;
  if (PyDict_SetItem(d, G.k_type, type_value) < 0) goto fail;
  if (body != NULL && (PyDict_SetItem(d, G.k_body, body) < 0 ||
                       PyDict_SetItem(d, G.k_more_body, more ? Py_True : Py_False) < 0))
    goto fail;
  return d;
fail:
  Py_DECREF(d);
  return NULL;
}

/* ---------------------------------------------------------------- receive */

/* The next message if it is known now (new reference), Py_None if receive() must wait. */
static PyObject *receive_now(RequestObject *self) {
  if (self->chunks != NULL && PyList_GET_SIZE(self->chunks) > 0) {
    PyObject *chunks = self->chunks;
    PyObject *data;
    if (PyList_GET_SIZE(chunks) == 1) {
      data = Py_NewRef(PyList_GET_ITEM(chunks, 0));
    } else {
      data = PyObject_CallMethodOneArg(G.empty_bytes, G.s_join, chunks);
      if (data == NULL) return NULL;
    }
    Py_CLEAR(self->chunks);
    int last = self->body_done;
    if (last) self->final_given = 1;
    if (!self->disconnected && req_alive(self))
      sh_request_consumed(self->pr->req, (size_t)PyBytes_GET_SIZE(data));
    PyObject *m = message(G.v_http_request, data, !last);
    Py_DECREF(data);
    return m;
  }
  if (self->disconnected || self->complete) return message(G.v_http_disconnect, NULL, 0);
  if (self->body_done) {
    if (!self->final_given) {
      self->final_given = 1;
      return message(G.v_http_request, G.empty_bytes, 0);
    }
  } else if (!self->read_asked && req_alive(self)) {
    /* The first receive() asks for the body: this is when `100 Continue` goes out. */
    self->read_asked = 1;
    sh_request_read(self->pr->req);
  }
  Py_RETURN_NONE;
}

static PyObject *req_receive(RequestObject *self, PyObject *unused) {
  (void)unused;
  PyObject *m = receive_now(self);
  if (m == NULL) return NULL;
  if (m != Py_None) return ready(m);
  Py_DECREF(m);
  return PyObject_CallOneArg(G.receive_slow, (PyObject *)self);
}

/* try_receive() -> message or None (used by bridge.py's receive_slow after each wake-up). */
static PyObject *req_try_receive(RequestObject *self, PyObject *unused) {
  (void)unused;
  return receive_now(self);
}

/* wait() -> a Future resolved by the next body chunk, disconnect or response completion. */
static PyObject *req_wait(RequestObject *self, PyObject *unused) {
  (void)unused;
  PyObject *fut = PyObject_CallNoArgs(G.create_future);
  if (fut == NULL) return NULL;
  Py_XSETREF(self->waiter, Py_NewRef(fut));
  return fut;
}

/* ---------------------------------------------------------------- send */

static int get_bool(PyObject *d, PyObject *key, int *out) {
  PyObject *v = PyDict_GetItemWithError(d, key); /* borrowed */
  if (v == NULL) {
    *out = 0;
    return PyErr_Occurred() ? -1 : 0;
  }
  int t = PyObject_IsTrue(v);
  if (t < 0) return -1;
  *out = t;
  return 0;
}

static PyObject *send_body(RequestObject *self, PyObject *msg) {
  if (!self->started) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Unexpected ASGI message 'http.response.body' sent, before "
                    "'http.response.start'.");
    return NULL;
  }
  if (self->complete) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Unexpected ASGI message 'http.response.body' sent, after response already "
                    "completed.");
    return NULL;
  }
  int more;
  if (get_bool(msg, G.k_more_body, &more) < 0) return NULL;
  PyObject *body = PyDict_GetItemWithError(msg, G.k_body); /* borrowed */
  if (body == NULL && PyErr_Occurred()) return NULL;
  Py_buffer view = {0};
  const char *data = "";
  size_t len = 0;
  if (body != NULL && PyBytes_CheckExact(body)) {
    data = PyBytes_AS_STRING(body);
    len = (size_t)PyBytes_GET_SIZE(body);
  } else if (body != NULL) {
    if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) return NULL;
    data = view.buf;
    len = (size_t)view.len;
  }
  if (!more) {
    self->complete = 1;
    wake(&self->waiter);
  }
  int64_t pending = 0;
  if (!self->disconnected && req_alive(self))
    pending = sh_request_write(self->pr->req, data, len, more);
  if (view.obj != NULL) PyBuffer_Release(&view);
  if (pending == SH_ECLOSED) {
    sh_asgi_on_disconnect(self);
    return Py_NewRef(ready_none);
  }
  if (pending < 0) return sh_asgi_raise((int)pending, "http.response.body");
  if (more && (size_t)pending > G.high_water) {
    PyObject *fut = PyObject_CallNoArgs(G.create_future);
    if (fut == NULL) return NULL;
    Py_XSETREF(self->write_waiter, Py_NewRef(fut));
    return fut;
  }
  return Py_NewRef(ready_none);
}

static PyObject *send_start(RequestObject *self, PyObject *msg) {
  if (self->started) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Unexpected ASGI message 'http.response.start' sent, after response already "
                    "started.");
    return NULL;
  }
  PyObject *status_obj = PyDict_GetItemWithError(msg, G.k_status);
  if (status_obj == NULL) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "status");
    return NULL;
  }
  long status = PyLong_AsLong(status_obj);
  if (status == -1 && PyErr_Occurred()) return NULL;
  if (status < 100 || status > 999) {
    PyErr_Format(PyExc_ValueError, "invalid HTTP status code %ld", status);
    return NULL;
  }
  PyObject *headers = PyDict_GetItemWithError(msg, G.k_headers);
  if (headers == NULL && PyErr_Occurred()) return NULL;
  self->started = 1;
  if (self->disconnected || !req_alive(self)) return Py_NewRef(ready_none);
  int rc = sh_asgi_start_response(self->pr->req, (int)status, headers ? headers : G.empty_tuple);
  if (rc == SH_ECLOSED) {
    sh_asgi_on_disconnect(self);
    return Py_NewRef(ready_none);
  }
  if (rc < 0) return PyErr_Occurred() ? NULL : sh_asgi_raise(rc, "http.response.start");
  return Py_NewRef(ready_none);
}

static PyObject *req_send(RequestObject *self, PyObject *msg) {
  if (!PyDict_Check(msg)) {
    PyErr_SetString(PyExc_TypeError, "ASGI messages must be dicts");
    return NULL;
  }
  PyObject *kind = PyDict_GetItemWithError(msg, G.k_type);
  if (kind == NULL) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "type");
    return NULL;
  }
  /* Interned strings compare by pointer first; fall back to value equality. */
  if (kind == G.v_response_body || PyUnicode_Compare(kind, G.v_response_body) == 0)
    return send_body(self, msg);
  if (PyErr_Occurred()) return NULL;
  if (kind == G.v_response_start || PyUnicode_Compare(kind, G.v_response_start) == 0)
    return send_start(self, msg);
  if (PyErr_Occurred()) return NULL;
  PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message '%S' sent, for an HTTP request.",
               kind);
  return NULL;
}

/* ---------------------------------------------------------------- events and the end */

void sh_asgi_on_body(RequestObject *self, PyObject *data, int last) {
  if (self->chunks == NULL && (self->chunks = PyList_New(0)) == NULL) {
    PyErr_WriteUnraisable((PyObject *)self);
    return;
  }
  if (PyList_Append(self->chunks, data) < 0) PyErr_WriteUnraisable((PyObject *)self);
  if (last) self->body_done = 1;
  wake(&self->waiter);
}

void sh_asgi_on_disconnect(RequestObject *self) {
  self->disconnected = 1;
  wake(&self->waiter);
  wake(&self->write_waiter);
}

void sh_asgi_on_writable(RequestObject *self) { wake(&self->write_waiter); }

/* done(task): the Task that ran the app has finished (Task done callback). */
static PyObject *req_done(RequestObject *self, PyObject *task) {
  PyObject *cancelled = PyObject_CallMethodNoArgs(task, G.s_cancelled);
  if (cancelled == NULL) return NULL;
  PyObject *exc = NULL;
  if (cancelled == Py_False) {
    exc = PyObject_CallMethodNoArgs(task, G.s_exception);
    if (exc == NULL) {
      Py_DECREF(cancelled);
      return NULL;
    }
  }
  if (exc != NULL && exc != Py_None) {
    PyObject *r = PyObject_CallOneArg(G.log_exception, exc);
    if (r == NULL) PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(r);
  }
  if (!self->complete && !self->disconnected) {
    if ((exc == NULL || exc == Py_None) && cancelled == Py_False)
      sh_log(SH_LOG_ERROR, "%s", self->started ? "ASGI callable returned without completing response."
                                                : "ASGI callable returned without starting response.");
    if (req_alive(self)) sh_request_fail(self->pr->req);
  }
  Py_XDECREF(exc);
  Py_DECREF(cancelled);
  if (PySet_Discard(G.tasks, task) < 0) PyErr_Clear();
  sh_asgi_release(self);
  Py_RETURN_NONE;
}

void sh_asgi_release(RequestObject *self) {
  Py_CLEAR(self->chunks);
  Py_CLEAR(self->waiter);
  Py_CLEAR(self->write_waiter);
  sh_pyreq *pr = self->pr;
  if (pr != NULL && !pr->released) {
    pr->released = 1;
    sh_request_release(pr->req);
  }
}

/* Run the app for a new request: app(scope, receive, send) as a real asyncio Task. */
int sh_asgi_start_task(RequestObject *self, PyObject *scope) {
  PyObject *receive = PyObject_GetAttr((PyObject *)self, G.s_receive);
  PyObject *send = PyObject_GetAttr((PyObject *)self, G.s_send);
  PyObject *done = PyObject_GetAttr((PyObject *)self, G.s_done_cb);
  PyObject *coro = NULL, *task = NULL, *r = NULL;
  int rc = -1;
  if (receive == NULL || send == NULL || done == NULL) goto out;
  PyObject *args[3] = {scope, receive, send};
  coro = PyObject_Vectorcall(G.app, args, 3, NULL);
  if (coro == NULL) goto out;
  task = PyObject_CallOneArg(G.create_task, coro);
  if (task == NULL) goto out;
  if (PySet_Add(G.tasks, task) < 0) goto out;
  r = PyObject_CallMethodOneArg(task, G.s_add_done_callback, done);
  if (r == NULL) goto out;
  rc = 0;
out:
  Py_XDECREF(r);
  Py_XDECREF(task);
  Py_XDECREF(coro);
  Py_XDECREF(done);
  Py_XDECREF(send);
  Py_XDECREF(receive);
  return rc;
}

/* ---------------------------------------------------------------- the Request type */

static PyObject *req_get_id(RequestObject *self, void *closure) {
  (void)closure;
  if (!req_alive(self)) Py_RETURN_NONE;
  return PyLong_FromUnsignedLongLong(self->pr->req->id);
}

static int req_traverse(RequestObject *self, visitproc visit, void *arg) {
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->chunks);
  Py_VISIT(self->waiter);
  Py_VISIT(self->write_waiter);
  return 0;
}

static int req_clear(RequestObject *self) {
  Py_CLEAR(self->chunks);
  Py_CLEAR(self->waiter);
  Py_CLEAR(self->write_waiter);
  return 0;
}

static void req_dealloc(RequestObject *self) {
  PyObject_GC_UnTrack(self);
  /* Dropped without done() (the Task never ran): still give the server its reference back. */
  sh_asgi_release(self);
  if (self->pr != NULL) self->pr->obj = NULL;
  req_clear(self);
  PyTypeObject *tp = Py_TYPE(self);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

static PyMethodDef req_methods[] = {
    {"receive", (PyCFunction)req_receive, METH_NOARGS, "ASGI receive()"},
    {"send", (PyCFunction)req_send, METH_O, "ASGI send(message)"},
    {"done", (PyCFunction)req_done, METH_O, "Task done callback"},
    {"try_receive", (PyCFunction)req_try_receive, METH_NOARGS, "next message or None"},
    {"wait", (PyCFunction)req_wait, METH_NOARGS, "future for the next event"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef req_getset[] = {{"id", (getter)req_get_id, NULL, "request id", NULL},
                                   {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot req_slots[] = {{Py_tp_dealloc, req_dealloc},
                                  {Py_tp_traverse, req_traverse},
                                  {Py_tp_clear, req_clear},
                                  {Py_tp_methods, req_methods},
                                  {Py_tp_getset, req_getset},
                                  {0, NULL}};

static PyType_Spec req_spec = {"_shield_server.Request", sizeof(RequestObject), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, req_slots};

RequestObject *sh_asgi_request_new(sh_pyreq *pr) {
  RequestObject *obj = PyObject_GC_New(RequestObject, G.request_type);
  if (obj == NULL) return NULL;
  obj->pr = pr;
  obj->chunks = obj->waiter = obj->write_waiter = NULL;
  obj->body_done = !pr->req->has_body;
  obj->final_given = obj->disconnected = obj->started = obj->complete = obj->read_asked = 0;
  pr->obj = obj;
  PyObject_GC_Track(obj);
  return obj;
}

int sh_asgi_init(PyObject *module) {
#define S(field, s) \
  if ((G.field = PyUnicode_InternFromString(s)) == NULL) return -1
  S(k_type, "type");
  S(k_body, "body");
  S(k_more_body, "more_body");
  S(k_status, "status");
  S(k_headers, "headers");
  S(v_http_request, "http.request");
  S(v_http_disconnect, "http.disconnect");
  S(v_response_start, "http.response.start");
  S(v_response_body, "http.response.body");
  S(s_done, "done");
  S(s_set_result, "set_result");
  S(s_cancelled, "cancelled");
  S(s_exception, "exception");
  S(s_add_done_callback, "add_done_callback");
  S(s_receive, "receive");
  S(s_send, "send");
  S(s_done_cb, "done");
  S(s_join, "join");
#undef S
  if ((G.empty_bytes = PyBytes_FromStringAndSize(NULL, 0)) == NULL) return -1;
  if ((G.empty_tuple = PyTuple_New(0)) == NULL) return -1;
  if ((G.tasks = PySet_New(NULL)) == NULL) return -1;
  ready_type = (PyTypeObject *)PyType_FromSpec(&ready_spec);
  G.request_type = (PyTypeObject *)PyType_FromSpec(&req_spec);
  if (ready_type == NULL || G.request_type == NULL) return -1;
  if ((ready_none = ready(Py_NewRef(Py_None))) == NULL) return -1;
  if (PyModule_AddObjectRef(module, "Request", (PyObject *)G.request_type) < 0) return -1;
  if (PyModule_AddObjectRef(module, "tasks", G.tasks) < 0) return -1;
  return 0;
}
