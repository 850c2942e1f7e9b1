/*
 * pyshim/request.c — one HTTP request's ASGI life in C: receive(), send(), the end of its Task,
 * and the hand-off's events for it.  Python thread, GIL held.
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
 * app (through the bound receive/send methods), by the `Run` its Task drives (see below) and
 * by queued events (through sh_pyreq, see handoff.h).  It takes part in GC because futures and
 * tasks can point back at it.
 */
#include "request.h"

#include <structmember.h>

#include <stdlib.h>
#include <string.h>

#include "pystr.h"

/* The Python object of one request: its ASGI receive/send state. */
struct sh_asgi_request {
  PyObject_HEAD sh_asgi_env *env; /* the bridge's, outlives every request */
  sh_pyreq *pr;                   /* NULL once the request is gone */
  PyObject *chunks;               /* list of body bytes not yet received by the app, or NULL */
  PyObject *waiter;               /* Future a waiting receive() sleeps on, or NULL */
  PyObject *write_waiter;         /* Future a send() over the high-water mark sleeps on, or NULL */
  PyObject *task; /* the Task running the app (borrowed: held by env->tasks), or NULL */
  unsigned body_done : 1, final_given : 1, disconnected : 1, started : 1, complete : 1,
      read_asked : 1;
};

static void on_disconnect(sh_asgi_request *self);

/* ---------------------------------------------------------------- Ready awaitable */

typedef struct {
  PyObject_HEAD PyObject *value; /* owned; the result of the await */
} sh_asgi_ready;

static PySendResult ready_am_send(PyObject *self, PyObject *arg, PyObject **result) {
  (void)arg;
  sh_asgi_ready *r = (sh_asgi_ready *)self;
  *result = Py_NewRef(r->value);
  return PYGEN_RETURN;
}

/* For code that drives the awaitable through the iterator protocol instead of am_send. */
static PyObject *ready_iternext(PyObject *self) {
  sh_asgi_ready *r = (sh_asgi_ready *)self;
  PyObject *v = r->value;
  if (v == Py_None) return NULL; /* StopIteration(None) */
  PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, v);
  if (exc != NULL) {
    PyErr_SetObject(PyExc_StopIteration, exc);
    Py_DECREF(exc);
  }
  return NULL;
}

static PyObject *ready_await(PyObject *self) {
  return Py_NewRef(self);
}

static void ready_dealloc(PyObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  Py_XDECREF(((sh_asgi_ready *)self)->value);
  tp->tp_free(self);
  Py_DECREF(tp);
}

static PyObject *ready_send(PyObject *self, PyObject *arg) {
  (void)arg;
  return ready_iternext(self);
}

static PyMethodDef ready_methods[] = {{"send", ready_send, METH_O, "finish at once with the value"},
                                      {NULL, NULL, 0, NULL}};

static PyType_Slot ready_slots[] = {{Py_tp_dealloc, ready_dealloc},
                                    {Py_am_await, ready_await},
                                    {Py_am_send, (void *)ready_am_send},
                                    {Py_tp_iter, ready_await},
                                    {Py_tp_iternext, ready_iternext},
                                    {Py_tp_methods, ready_methods},
                                    {0, NULL}};

static PyType_Spec ready_spec = {"_shield_server.Ready", sizeof(sh_asgi_ready), 0,
                                 Py_TPFLAGS_DEFAULT, ready_slots};

/* A completed awaitable holding `value` (stolen). */
static PyObject *ready(sh_asgi_env *env, PyObject *value) {
  if (value == NULL) return NULL;
  sh_asgi_ready *r = PyObject_New(sh_asgi_ready, env->ready_type);
  if (r == NULL) {
    Py_DECREF(value);
    return NULL;
  }
  r->value = value;
  return (PyObject *)r;
}

/* ---------------------------------------------------------------- helpers */

static int req_alive(sh_asgi_request *self) {
  return self->pr != NULL && !self->pr->released;
}

static void wake(PyObject **fut) {
  PyObject *f = *fut;
  if (f == NULL) return;
  *fut = NULL;
  PyObject *done = PyObject_CallMethodNoArgs(f, SH_STR(done));
  if (done == Py_False) {
    PyObject *r = PyObject_CallMethodOneArg(f, SH_STR(set_result), Py_None);
    Py_XDECREF(r);
  }
  Py_XDECREF(done);
  if (PyErr_Occurred()) PyErr_WriteUnraisable(f);
  Py_DECREF(f);
}

static PyObject *raise_for(int rc, const char *what) {
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
  if (PyDict_SetItem(d, SH_STR(type), type_value) < 0) goto fail;
  if (body != NULL && (PyDict_SetItem(d, SH_STR(body), body) < 0 ||
                       PyDict_SetItem(d, SH_STR(more_body), more ? Py_True : Py_False) < 0))
    goto fail;
  return d;
fail:
  Py_DECREF(d);
  return NULL;
}

/* ---------------------------------------------------------------- receive */

/* The next message if it is known now (new reference), Py_None if receive() must wait. */
static PyObject *receive_now(sh_asgi_request *self) {
  if (self->chunks != NULL && PyList_GET_SIZE(self->chunks) > 0) {
    PyObject *chunks = self->chunks;
    PyObject *data;
    if (PyList_GET_SIZE(chunks) == 1) {
      data = Py_NewRef(PyList_GET_ITEM(chunks, 0));
    } else {
      data = PyObject_CallMethodOneArg(self->env->empty_bytes, SH_STR(join), chunks);
      if (data == NULL) return NULL;
    }
    Py_CLEAR(self->chunks);
    int last = self->body_done;
    if (last) self->final_given = 1;
    if (!self->disconnected && req_alive(self))
      sh_request_consumed(self->pr->req, (size_t)PyBytes_GET_SIZE(data));
    PyObject *m = message(SH_STR(http_request), data, !last);
    Py_DECREF(data);
    return m;
  }
  if (self->disconnected || self->complete) return message(SH_STR(http_disconnect), NULL, 0);
  if (self->body_done) {
    if (!self->final_given) {
      self->final_given = 1;
      return message(SH_STR(http_request), self->env->empty_bytes, 0);
    }
  } else if (!self->read_asked && req_alive(self)) {
    /* The first receive() asks for the body: this is when `100 Continue` goes out. */
    self->read_asked = 1;
    sh_request_read(self->pr->req);
  }
  Py_RETURN_NONE;
}

static PyObject *req_receive(sh_asgi_request *self, PyObject *unused) {
  (void)unused;
  PyObject *m = receive_now(self);
  if (m == NULL) return NULL;
  if (m != Py_None) return ready(self->env, m);
  Py_DECREF(m);
  return PyObject_CallOneArg(self->env->receive_slow, (PyObject *)self);
}

/* try_receive() -> message or None (used by bridge.py's receive_slow after each wake-up). */
static PyObject *req_try_receive(sh_asgi_request *self, PyObject *unused) {
  (void)unused;
  return receive_now(self);
}

/* wait() -> a Future resolved by the next body chunk, disconnect or response completion. */
static PyObject *req_wait(sh_asgi_request *self, PyObject *unused) {
  (void)unused;
  PyObject *fut = PyObject_CallNoArgs(self->env->create_future);
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

static PyObject *send_body(sh_asgi_request *self, PyObject *msg) {
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
  if (get_bool(msg, SH_STR(more_body), &more) < 0) return NULL;
  PyObject *body = PyDict_GetItemWithError(msg, SH_STR(body)); /* borrowed */
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
    on_disconnect(self);
    return Py_NewRef(self->env->ready_none);
  }
  if (pending < 0) return raise_for((int)pending, "http.response.body");
  if (more && (size_t)pending > self->env->high_water) {
    PyObject *fut = PyObject_CallNoArgs(self->env->create_future);
    if (fut == NULL) return NULL;
    Py_XSETREF(self->write_waiter, Py_NewRef(fut));
    return fut;
  }
  return Py_NewRef(self->env->ready_none);
}

/* Validate the ASGI response headers and pass them to sh_request_start; sets a Python exception
 * and returns a negative code on bad input (SH_ECLOSED: none, the client is gone). */
static int start_response(sh_request *req, int status, PyObject *headers) {
  PyObject *seq = PySequence_Fast(headers, "response headers must be a sequence");
  if (seq == NULL) return SH_EINVAL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  sh_header stackbuf[32];
  sh_header *hdrs = n <= 32 ? stackbuf : PyMem_Malloc((size_t)n * sizeof(sh_header));
  int rc = SH_EINVAL;
  if (hdrs == NULL) {
    PyErr_NoMemory();
    rc = SH_ENOMEM;
    goto done;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *pair = PySequence_Fast_GET_ITEM(seq, i); /* borrowed */
    PyObject *name, *value;
    if (PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2) {
      name = PyTuple_GET_ITEM(pair, 0);
      value = PyTuple_GET_ITEM(pair, 1);
    } else if (PyList_CheckExact(pair) && PyList_GET_SIZE(pair) == 2) {
      name = PyList_GET_ITEM(pair, 0);
      value = PyList_GET_ITEM(pair, 1);
    } else {
      PyErr_SetString(PyExc_TypeError, "each response header must be a (name, value) pair");
      goto done;
    }
    if (!PyBytes_Check(name) || !PyBytes_Check(value)) {
      PyErr_SetString(PyExc_TypeError, "response header names and values must be bytes");
      goto done;
    }
    hdrs[i].name = (sh_iovec){PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name)};
    hdrs[i].value = (sh_iovec){PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value)};
  }
  rc = sh_request_start(req, status, hdrs, (size_t)n);
  if (rc < 0 && rc != SH_ECLOSED) raise_for(rc, "http.response.start");
done:
  if (hdrs != stackbuf) PyMem_Free(hdrs);
  Py_DECREF(seq);
  return rc;
}

static PyObject *send_start(sh_asgi_request *self, PyObject *msg) {
  if (self->started) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Unexpected ASGI message 'http.response.start' sent, after response already "
                    "started.");
    return NULL;
  }
  PyObject *status_obj = PyDict_GetItemWithError(msg, SH_STR(status));
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
  PyObject *headers = PyDict_GetItemWithError(msg, SH_STR(headers));
  if (headers == NULL && PyErr_Occurred()) return NULL;
  self->started = 1;
  sh_asgi_env *env = self->env;
  if (self->disconnected || !req_alive(self)) return Py_NewRef(env->ready_none);
  int rc = start_response(self->pr->req, (int)status, headers ? headers : env->empty_tuple);
  if (rc == SH_ECLOSED) {
    on_disconnect(self);
    return Py_NewRef(env->ready_none);
  }
  if (rc < 0) return PyErr_Occurred() ? NULL : raise_for(rc, "http.response.start");
  return Py_NewRef(env->ready_none);
}

static PyObject *req_send(sh_asgi_request *self, PyObject *msg) {
  if (!PyDict_Check(msg)) {
    PyErr_SetString(PyExc_TypeError, "ASGI messages must be dicts");
    return NULL;
  }
  PyObject *kind = PyDict_GetItemWithError(msg, SH_STR(type));
  if (kind == NULL) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "type");
    return NULL;
  }
  /* Interned strings compare by pointer first; fall back to value equality. */
  PyObject *body = SH_STR(http_response_body), *start = SH_STR(http_response_start);
  if (kind == body || PyUnicode_Compare(kind, body) == 0) return send_body(self, msg);
  if (PyErr_Occurred()) return NULL;
  if (kind == start || PyUnicode_Compare(kind, start) == 0) return send_start(self, msg);
  if (PyErr_Occurred()) return NULL;
  PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message '%S' sent, for an HTTP request.", kind);
  return NULL;
}

/* ---------------------------------------------------------------- events and the end */

static void on_body(sh_asgi_request *self, PyObject *data, int last) {
  if (self->chunks == NULL && (self->chunks = PyList_New(0)) == NULL) {
    PyErr_WriteUnraisable((PyObject *)self);
    return;
  }
  if (PyList_Append(self->chunks, data) < 0) PyErr_WriteUnraisable((PyObject *)self);
  if (last) self->body_done = 1;
  wake(&self->waiter);
}

static void on_disconnect(sh_asgi_request *self) {
  self->disconnected = 1;
  wake(&self->waiter);
  wake(&self->write_waiter);
}

static void on_writable(sh_asgi_request *self) {
  wake(&self->write_waiter);
}

/* Give the request back to the server (once) and drop what waits on it. */
static void release(sh_asgi_request *self) {
  Py_CLEAR(self->chunks);
  Py_CLEAR(self->waiter);
  Py_CLEAR(self->write_waiter);
  sh_pyreq *pr = self->pr;
  if (pr != NULL && !pr->released) {
    pr->released = 1;
    sh_request_release(pr->req);
  }
}

/* ---------------------------------------------------------------- the app's run (Task's coro) */

/*
 * Why a wrapper around the app's coroutine: the end of a request (log the app's exception,
 * answer 500 or abort a response the app left unfinished, give the request back to the server)
 * used to be a Task done callback.  That costs a bound method, add_done_callback, a second
 * loop Handle to run the callback, and calls to task.cancelled() and task.exception(): about
 * a tenth of the Python thread's time for a small response.  Here the Task drives a `Run`
 * object instead of the app's coroutine itself; Run forwards send/throw/close to the app and
 * does the end-of-request work inline in the same step in which the app finishes.
 *
 * What the Task sees: a coroutine-like object (am_send, send, throw, close, __await__), so
 * contextvars, cancellation and current_task() are exactly those of a Task running the app.
 * An Exception from the app is logged and swallowed (the Task's result is None, as if the
 * exception had been retrieved by the old done callback); CancelledError and other
 * BaseExceptions (KeyboardInterrupt, SystemExit) propagate, so the Task is cancelled or the
 * loop stops as before.  task.get_coro() returns the Run, not the app's coroutine.
 */
typedef struct {
  PyObject_HEAD PyObject *inner; /* the app's coroutine, or its awaitable's iterator (owned) */
  sh_asgi_request *req;          /* owned */
  int finished;                  /* the end-of-request work was done */
} sh_asgi_run;

/* The end of the app's run.  how: 0 returned, 1 raised (exception already logged),
 * 2 cancelled or closed. */
static void run_end(sh_asgi_run *run, int how) {
  if (run->finished) return;
  run->finished = 1;
  sh_asgi_request *self = run->req;
  if (!self->complete && !self->disconnected) {
    if (how == 0)
      sh_log(SH_LOG_ERROR, "%s",
             self->started ? "ASGI callable returned without completing response."
                           : "ASGI callable returned without starting response.");
    if (req_alive(self)) sh_request_fail(self->pr->req);
  }
  PyObject *task = self->task; /* borrowed: alive while it is in env->tasks */
  self->task = NULL;
  if (task != NULL && PySet_Discard(self->env->tasks, task) < 0) PyErr_WriteUnraisable(task);
  release(self);
}

/* The app raised (exception set): log what must be logged, end the request, and decide whether
 * the Task sees the exception (PYGEN_ERROR, still set) or a plain return (PYGEN_RETURN). */
static PySendResult run_raised(sh_asgi_run *run, PyObject **result) {
  if (run->finished) return PYGEN_ERROR; /* driven again after its end: not the app's error */
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
  sh_asgi_env *env = run->req->env;
  int cancelled = value != NULL && PyObject_TypeCheck(value, (PyTypeObject *)env->cancelled_error);
  if (!cancelled && value != NULL) {
    PyObject *r = PyObject_CallOneArg(env->log_exception, value);
    if (r == NULL) PyErr_WriteUnraisable((PyObject *)run->req);
    Py_XDECREF(r);
  }
  run_end(run, cancelled ? 2 : 1);
  if (cancelled || value == NULL || !PyObject_TypeCheck(value, (PyTypeObject *)PyExc_Exception)) {
    PyErr_Restore(type, value, tb);
    return PYGEN_ERROR;
  }
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
  *result = Py_NewRef(Py_None);
  return PYGEN_RETURN;
}

/* One step of the app has ended with status st: pass yields through, finish otherwise. */
static PySendResult run_after(sh_asgi_run *run, PySendResult st, PyObject **result) {
  if (st == PYGEN_NEXT) return st;
  if (st == PYGEN_ERROR) return run_raised(run, result);
  Py_SETREF(*result, Py_NewRef(Py_None)); /* an ASGI app's return value means nothing */
  run_end(run, 0);
  return PYGEN_RETURN;
}

static PySendResult run_am_send(PyObject *op, PyObject *arg, PyObject **result) {
  sh_asgi_run *run = (sh_asgi_run *)op;
  return run_after(run, PyIter_Send(run->inner, arg, result), result);
}

/* The method-call protocol of the same (send/throw from Python code): a return becomes
 * StopIteration, as for a native coroutine. */
static PyObject *run_result(PySendResult st, PyObject *result) {
  if (st == PYGEN_NEXT) return result;
  if (st == PYGEN_RETURN) {
    Py_DECREF(result); /* always None */
    PyErr_SetNone(PyExc_StopIteration);
  }
  return NULL;
}

static PyObject *run_send(PyObject *op, PyObject *arg) {
  PyObject *result = NULL;
  return run_result(run_am_send(op, arg, &result), result);
}

static PyObject *run_iternext(PyObject *op) {
  return run_send(op, Py_None);
}

static PyObject *run_throw(PyObject *op, PyObject *const *args, Py_ssize_t nargs) {
  sh_asgi_run *run = (sh_asgi_run *)op;
  PyObject *meth = PyObject_GetAttr(run->inner, SH_STR(throw_));
  if (meth == NULL) return NULL;
  PyObject *result = PyObject_Vectorcall(meth, args, (size_t)nargs, NULL);
  Py_DECREF(meth);
  PySendResult st = PYGEN_NEXT;
  if (result == NULL) {
    st = PYGEN_ERROR;
    if (PyErr_ExceptionMatches(PyExc_StopIteration) && _PyGen_FetchStopIterationValue(&result) == 0)
      st = PYGEN_RETURN;
  }
  st = run_after(run, st, &result);
  return run_result(st, result);
}

static PyObject *run_close(PyObject *op, PyObject *unused) {
  (void)unused;
  sh_asgi_run *run = (sh_asgi_run *)op;
  PyObject *r = PyObject_CallMethodNoArgs(run->inner, SH_STR(close));
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb); /* run_end makes calls of its own */
  run_end(run, 2);
  PyErr_Restore(type, value, tb);
  return r;
}

static PyObject *run_await(PyObject *op) {
  return Py_NewRef(op);
}

/* Debuggers, repr(task) and task.print_stack() look for a coroutine's name and frame: show
 * the app's. */
static PyObject *run_forward(PyObject *op, void *name) {
  return PyObject_GetAttrString(((sh_asgi_run *)op)->inner, name);
}

static int run_traverse(PyObject *op, visitproc visit, void *arg) {
  sh_asgi_run *run = (sh_asgi_run *)op;
  Py_VISIT(Py_TYPE(op));
  Py_VISIT(run->inner);
  Py_VISIT(run->req);
  return 0;
}

static int run_clear(PyObject *op) {
  sh_asgi_run *run = (sh_asgi_run *)op;
  Py_CLEAR(run->inner);
  Py_CLEAR(run->req);
  return 0;
}

static void run_dealloc(PyObject *op) {
  PyObject_GC_UnTrack(op);
  run_clear(op); /* the Request's own dealloc releases a request that never finished */
  PyTypeObject *tp = Py_TYPE(op);
  tp->tp_free(op);
  Py_DECREF(tp);
}

static PyMethodDef run_methods[] = {{"send", run_send, METH_O, "send(value): resume the app"},
                                    {"throw", (PyCFunction)(void (*)(void))run_throw, METH_FASTCALL,
                                     "throw(exc): raise in the app"},
                                    {"close", run_close, METH_NOARGS, "close the app's coroutine"},
                                    {NULL, NULL, 0, NULL}};

static PyGetSetDef run_getset[] = {
    {"cr_frame", run_forward, NULL, "the app's frame", "cr_frame"},
    {"cr_await", run_forward, NULL, "what the app awaits", "cr_await"},
    {"cr_code", run_forward, NULL, "the app's code", "cr_code"},
    {"cr_running", run_forward, NULL, "the app is running", "cr_running"},
    {"__name__", run_forward, NULL, "the app coroutine's name", "__name__"},
    {"__qualname__", run_forward, NULL, "the app coroutine's qualified name", "__qualname__"},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot run_slots[] = {{Py_tp_dealloc, run_dealloc},      {Py_tp_traverse, run_traverse},
                                  {Py_tp_clear, run_clear},          {Py_am_await, run_await},
                                  {Py_am_send, (void *)run_am_send}, {Py_tp_iter, run_await},
                                  {Py_tp_iternext, run_iternext},    {Py_tp_methods, run_methods},
                                  {Py_tp_getset, run_getset},        {0, NULL}};

static PyType_Spec run_spec = {"_shield_server.Run", sizeof(sh_asgi_run), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, run_slots};

/* The iterator the Task drives: the coroutine itself, or an awaitable's __await__(). */
static PyObject *awaitable_iter(PyObject *aw) {
  if (PyCoro_CheckExact(aw)) return Py_NewRef(aw);
  PyAsyncMethods *am = Py_TYPE(aw)->tp_as_async;
  if (am == NULL || am->am_await == NULL) {
    PyErr_Format(PyExc_TypeError, "ASGI app returned %.100s, not an awaitable",
                 Py_TYPE(aw)->tp_name);
    return NULL;
  }
  return am->am_await(aw);
}

static PyMethodDef req_receive_def = {"receive", (PyCFunction)req_receive, METH_NOARGS,
                                      "ASGI receive()"};
static PyMethodDef req_send_def = {"send", (PyCFunction)req_send, METH_O, "ASGI send(message)"};

/*
 * asyncio.Task(run, loop=loop, name="shield.request"): what loop.create_task does without a
 * task factory, minus uvloop's wrapper; and the fixed name spares Task.__init__ formatting a
 * "Task-<n>" string for each request (together about a tenth of the Python thread's time for
 * a small response).  With a task factory set, loop.create_task honours it.
 */
static PyObject *new_task(sh_asgi_env *env, PyObject *run) {
  if (env->task_factory) return PyObject_CallOneArg(env->create_task, run);
  PyObject *args[3] = {run, env->loop, SH_STR(task_name)};
  return PyObject_Vectorcall(env->task_type, args, 1, env->task_kwnames);
}

/* Run the app for a new request: app(scope, receive, send) in a real asyncio Task. */
static int start_task(sh_asgi_request *self, PyObject *scope) {
  sh_asgi_env *env = self->env;
  PyObject *receive = PyCFunction_NewEx(&req_receive_def, (PyObject *)self, NULL);
  PyObject *send = PyCFunction_NewEx(&req_send_def, (PyObject *)self, NULL);
  PyObject *coro = NULL, *inner = NULL, *task = NULL;
  sh_asgi_run *run = NULL;
  int rc = -1;
  if (receive == NULL || send == NULL) goto out;
  PyObject *args[3] = {scope, receive, send};
  coro = PyObject_Vectorcall(env->app, args, 3, NULL);
  if (coro == NULL || (inner = awaitable_iter(coro)) == NULL) goto out;
  run = PyObject_GC_New(sh_asgi_run, env->run_type);
  if (run == NULL) goto out;
  run->inner = inner;
  inner = NULL;
  run->req = (sh_asgi_request *)Py_NewRef(self);
  run->finished = 0;
  PyObject_GC_Track(run);
  task = new_task(env, (PyObject *)run);
  if (task == NULL) {
    run->finished = 1; /* never ran: the caller answers 500 */
    goto out;
  }
  /* The set is what keeps a Task that waits on one of our own futures alive (those are
   * only reachable from the Task itself); the run's end takes it out. */
  if (PySet_Add(env->tasks, task) == 0)
    self->task = task; /* borrowed, see run_end */
  else
    PyErr_WriteUnraisable(task); /* it runs all the same, untracked at shutdown */
  rc = 0;
out:
  Py_XDECREF(task);
  Py_XDECREF((PyObject *)run);
  Py_XDECREF(inner);
  Py_XDECREF(coro);
  Py_XDECREF(send);
  Py_XDECREF(receive);
  return rc;
}

/* ---------------------------------------------------------------- the Request type */

static PyObject *req_get_id(sh_asgi_request *self, void *closure) {
  (void)closure;
  if (!req_alive(self)) Py_RETURN_NONE;
  return PyLong_FromUnsignedLongLong(self->pr->req->id);
}

static int req_traverse(sh_asgi_request *self, visitproc visit, void *arg) {
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(self->chunks);
  Py_VISIT(self->waiter);
  Py_VISIT(self->write_waiter);
  return 0;
}

static int req_clear(sh_asgi_request *self) {
  Py_CLEAR(self->chunks);
  Py_CLEAR(self->waiter);
  Py_CLEAR(self->write_waiter);
  return 0;
}

static void req_dealloc(sh_asgi_request *self) {
  PyObject_GC_UnTrack(self);
  /* Dropped without done() (the Task never ran): still give the server its reference back. */
  release(self);
  if (self->pr != NULL) self->pr->obj = NULL;
  req_clear(self);
  PyTypeObject *tp = Py_TYPE(self);
  tp->tp_free((PyObject *)self);
  Py_DECREF(tp);
}

static PyMethodDef req_methods[] = {
    {"receive", (PyCFunction)req_receive, METH_NOARGS, "ASGI receive()"},
    {"send", (PyCFunction)req_send, METH_O, "ASGI send(message)"},
    {"try_receive", (PyCFunction)req_try_receive, METH_NOARGS, "next message or None"},
    {"wait", (PyCFunction)req_wait, METH_NOARGS, "future for the next event"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef req_getset[] = {{"id", (getter)req_get_id, NULL, "request id", NULL},
                                   {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot req_slots[] = {{Py_tp_dealloc, req_dealloc}, {Py_tp_traverse, req_traverse},
                                  {Py_tp_clear, req_clear},     {Py_tp_methods, req_methods},
                                  {Py_tp_getset, req_getset},   {0, NULL}};

static PyType_Spec req_spec = {"_shield_server.Request", sizeof(sh_asgi_request), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, req_slots};

static sh_asgi_request *request_new(sh_asgi_env *env, sh_pyreq *pr) {
  sh_asgi_request *obj = PyObject_GC_New(sh_asgi_request, env->request_type);
  if (obj == NULL) return NULL;
  obj->env = env;
  obj->pr = pr;
  obj->chunks = obj->waiter = obj->write_waiter = obj->task = NULL;
  obj->body_done = !pr->req->has_body;
  obj->final_given = obj->disconnected = obj->started = obj->complete = obj->read_asked = 0;
  pr->obj = obj;
  PyObject_GC_Track(obj);
  return obj;
}

/* ---------------------------------------------------------------- the hand-off's events */

static void live_link(sh_asgi_env *env, sh_pyreq *pr) {
  pr->linked = 1;
  pr->next = env->live.next;
  pr->prev = &env->live;
  env->live.next->prev = pr;
  env->live.next = pr;
}

static void live_unlink(sh_pyreq *pr) {
  if (!pr->linked) return;
  pr->linked = 0;
  pr->prev->next = pr->next;
  pr->next->prev = pr->prev;
}

/* The end of pr (its RELEASED event, or the I/O thread's end): nothing refers to it after. */
static void pyreq_free(sh_pyreq *pr) {
  if (pr->obj != NULL) {
    pr->obj->pr = NULL;
    release(pr->obj); /* already released: only drops its futures and chunks */
  }
  live_unlink(pr);
  free(pr);
}

/* The app could not be started for pr: answer 500 and give the request back. */
static void fail_request(sh_pyreq *pr) {
  if (pr->released) return;
  sh_request_fail(pr->req);
  pr->released = 1;
  sh_request_release(pr->req);
}

void sh_pyshim__request_batch(sh_asgi_env *env) {
  /* Does the loop have a task factory (loop.set_task_factory, e.g. from the app's lifespan)?
   * Then Tasks must come from loop.create_task; otherwise asyncio.Task is built directly
   * (new_task).  Asked once per batch: it costs a call, a Task's creation is cheaper by far
   * without uvloop's create_task wrapper. */
  if (env->get_task_factory == NULL) return;
  PyObject *f = PyObject_CallNoArgs(env->get_task_factory);
  if (f == NULL) PyErr_WriteUnraisable(env->get_task_factory);
  env->task_factory = f != Py_None;
  Py_XDECREF(f);
}

int sh_pyshim__request_event(sh_asgi_env *env, sh_scope_builder *sb, const sh_handoff_event *e) {
  sh_pyreq *pr = e->pr;
  switch (e->kind) {
    case SH_HANDOFF_RELEASED:
      pyreq_free(pr);
      return 0;
    case SH_HANDOFF_REQUEST: {
      live_link(env, pr);
      sh_asgi_request *obj = request_new(env, pr);
      if (obj == NULL) {
        fail_request(pr);
        return -1;
      }
      PyObject *scope = sh_pyshim__scope_build(sb, pr->req);
      int rc = scope ? start_task(obj, scope) : -1;
      Py_XDECREF(scope);
      Py_DECREF(obj); /* the Task's bound methods keep it alive */
      if (rc == 0) return 0;
      /* The app could not even be started (e.g. calling it raised): log and answer 500. */
      PyErr_WriteUnraisable(env->app);
      fail_request(pr);
      return 0;
    }
    default:
      break;
  }
  if (pr == NULL || pr->obj == NULL || pr->released) return 0; /* nobody is listening any more */
  if (e->kind == SH_HANDOFF_BODY) {
    PyObject *body = PyBytes_FromStringAndSize(e->data, (Py_ssize_t)e->len);
    if (body == NULL) return -1;
    on_body(pr->obj, body, e->last);
    Py_DECREF(body);
  } else if (e->kind == SH_HANDOFF_DISCONNECT) {
    on_disconnect(pr->obj);
  } else if (e->kind == SH_HANDOFF_WRITABLE) {
    on_writable(pr->obj);
  }
  return 0;
}

void sh_pyshim__request_forget_all(sh_asgi_env *env) {
  while (env->live.next != &env->live) {
    sh_pyreq *pr = env->live.next;
    pr->released = 1;
    pyreq_free(pr);
  }
}

int sh_pyshim__request_init(sh_asgi_env *env, PyObject *module) {
  env->live.next = env->live.prev = &env->live;
  if (sh_pyshim__str_init() < 0) return -1;
  if ((env->empty_bytes = PyBytes_FromStringAndSize(NULL, 0)) == NULL) return -1;
  if ((env->empty_tuple = PyTuple_New(0)) == NULL) return -1;
  if ((env->tasks = PySet_New(NULL)) == NULL) return -1;
  PyObject *asyncio = PyImport_ImportModule("asyncio");
  if (asyncio == NULL) return -1;
  env->cancelled_error = PyObject_GetAttrString(asyncio, "CancelledError");
  Py_DECREF(asyncio);
  if (env->cancelled_error == NULL) return -1;
  env->ready_type = (PyTypeObject *)PyType_FromSpec(&ready_spec);
  env->run_type = (PyTypeObject *)PyType_FromSpec(&run_spec);
  env->request_type = (PyTypeObject *)PyType_FromSpec(&req_spec);
  if (env->ready_type == NULL || env->run_type == NULL || env->request_type == NULL) return -1;
  if ((env->ready_none = ready(env, Py_NewRef(Py_None))) == NULL) return -1;
  if (PyModule_AddObjectRef(module, "Request", (PyObject *)env->request_type) < 0) return -1;
  if (PyModule_AddObjectRef(module, "tasks", env->tasks) < 0) return -1;
  return 0;
}

void sh_pyshim__request_clear(sh_asgi_env *env) {
  Py_CLEAR(env->app);
  Py_CLEAR(env->create_future);
  Py_CLEAR(env->create_task);
  Py_CLEAR(env->loop);
  Py_CLEAR(env->task_type);
  Py_CLEAR(env->get_task_factory);
  Py_CLEAR(env->task_kwnames);
  Py_CLEAR(env->receive_slow);
  Py_CLEAR(env->log_exception);
}
