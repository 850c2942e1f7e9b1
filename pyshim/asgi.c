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
 * app (through the bound receive/send methods), by the `Run` its Task drives (see below) and
 * by queued events (through sh_pyreq, see bridge.c).  It takes part in GC because futures and
 * tasks can point back at it.
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
  PyObject_HEAD
  PyObject *inner;      /* the app's coroutine, or its awaitable's iterator (owned) */
  RequestObject *req;   /* owned */
  int finished;         /* the end-of-request work was done */
} RunObject;

static PyTypeObject *run_type;

/* The end of the app's run.  how: 0 returned, 1 raised (exception already logged),
 * 2 cancelled or closed. */
static void run_end(RunObject *run, int how) {
  if (run->finished) return;
  run->finished = 1;
  RequestObject *self = run->req;
  if (!self->complete && !self->disconnected) {
    if (how == 0)
      sh_log(SH_LOG_ERROR, "%s",
             self->started ? "ASGI callable returned without completing response."
                           : "ASGI callable returned without starting response.");
    if (req_alive(self)) sh_request_fail(self->pr->req);
  }
  PyObject *task = self->task; /* borrowed: alive while it is in G.tasks */
  self->task = NULL;
  if (task != NULL && PySet_Discard(G.tasks, task) < 0) PyErr_WriteUnraisable(task);
  sh_asgi_release(self);
}

/* The app raised (exception set): log what must be logged, end the request, and decide whether
 * the Task sees the exception (PYGEN_ERROR, still set) or a plain return (PYGEN_RETURN). */
static PySendResult run_raised(RunObject *run, PyObject **result) {
  if (run->finished) return PYGEN_ERROR; /* driven again after its end: not the app's error */
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
  int cancelled = value != NULL && PyObject_TypeCheck(value, (PyTypeObject *)G.cancelled_error);
  if (!cancelled && value != NULL) {
    PyObject *r = PyObject_CallOneArg(G.log_exception, value);
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
static PySendResult run_after(RunObject *run, PySendResult st, PyObject **result) {
  if (st == PYGEN_NEXT) return st;
  if (st == PYGEN_ERROR) return run_raised(run, result);
  Py_SETREF(*result, Py_NewRef(Py_None)); /* an ASGI app's return value means nothing */
  run_end(run, 0);
  return PYGEN_RETURN;
}

static PySendResult run_am_send(PyObject *op, PyObject *arg, PyObject **result) {
  RunObject *run = (RunObject *)op;
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

static PyObject *run_iternext(PyObject *op) { return run_send(op, Py_None); }

static PyObject *run_throw(PyObject *op, PyObject *const *args, Py_ssize_t nargs) {
  RunObject *run = (RunObject *)op;
  PyObject *meth = PyObject_GetAttr(run->inner, G.s_throw);
  if (meth == NULL) return NULL;
  PyObject *result = PyObject_Vectorcall(meth, args, (size_t)nargs, NULL);
  Py_DECREF(meth);
  PySendResult st = PYGEN_NEXT;
  if (result == NULL) {
    st = PYGEN_ERROR;
    if (PyErr_ExceptionMatches(PyExc_StopIteration) &&
        _PyGen_FetchStopIterationValue(&result) == 0)
      st = PYGEN_RETURN;
  }
  st = run_after(run, st, &result);
  return run_result(st, result);
}

static PyObject *run_close(PyObject *op, PyObject *unused) {
  (void)unused;
  RunObject *run = (RunObject *)op;
  PyObject *r = PyObject_CallMethodNoArgs(run->inner, G.s_close);
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb); /* run_end makes calls of its own */
  run_end(run, 2);
  PyErr_Restore(type, value, tb);
  return r;
}

static PyObject *run_await(PyObject *op) { return Py_NewRef(op); }

/* Debuggers, repr(task) and task.print_stack() look for a coroutine's name and frame: show
 * the app's. */
static PyObject *run_forward(PyObject *op, void *name) {
  return PyObject_GetAttrString(((RunObject *)op)->inner, name);
}

static int run_traverse(PyObject *op, visitproc visit, void *arg) {
  RunObject *run = (RunObject *)op;
  Py_VISIT(Py_TYPE(op));
  Py_VISIT(run->inner);
  Py_VISIT(run->req);
  return 0;
}

static int run_clear(PyObject *op) {
  RunObject *run = (RunObject *)op;
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

static PyMethodDef run_methods[] = {
    {"send", run_send, METH_O, "send(value): resume the app"},
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

static PyType_Slot run_slots[] = {{Py_tp_dealloc, run_dealloc},
                                  {Py_tp_traverse, run_traverse},
                                  {Py_tp_clear, run_clear},
                                  {Py_am_await, run_await},
                                  {Py_am_send, (void *)run_am_send},
                                  {Py_tp_iter, run_await},
                                  {Py_tp_iternext, run_iternext},
                                  {Py_tp_methods, run_methods},
                                  {Py_tp_getset, run_getset},
                                  {0, NULL}};

static PyType_Spec run_spec = {"_shield_server.Run", sizeof(RunObject), 0,
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
static PyObject *new_task(PyObject *run) {
  if (G.task_factory) return PyObject_CallOneArg(G.create_task, run);
  PyObject *args[3] = {run, G.loop, G.task_name};
  return PyObject_Vectorcall(G.task_type, args, 1, G.task_kwnames);
}

/* Run the app for a new request: app(scope, receive, send) in a real asyncio Task. */
int sh_asgi_start_task(RequestObject *self, PyObject *scope) {
  PyObject *receive = PyCFunction_NewEx(&req_receive_def, (PyObject *)self, NULL);
  PyObject *send = PyCFunction_NewEx(&req_send_def, (PyObject *)self, NULL);
  PyObject *coro = NULL, *inner = NULL, *task = NULL;
  RunObject *run = NULL;
  int rc = -1;
  if (receive == NULL || send == NULL) goto out;
  PyObject *args[3] = {scope, receive, send};
  coro = PyObject_Vectorcall(G.app, args, 3, NULL);
  if (coro == NULL || (inner = awaitable_iter(coro)) == NULL) goto out;
  run = PyObject_GC_New(RunObject, run_type);
  if (run == NULL) goto out;
  run->inner = inner;
  inner = NULL;
  run->req = (RequestObject *)Py_NewRef(self);
  run->finished = 0;
  PyObject_GC_Track(run);
  task = new_task((PyObject *)run);
  if (task == NULL) {
    run->finished = 1; /* never ran: the caller answers 500 */
    goto out;
  }
  /* The set is what keeps a Task that waits on one of our own futures alive (those are
   * only reachable from the Task itself); the run's end takes it out. */
  if (PySet_Add(G.tasks, task) == 0)
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
  obj->chunks = obj->waiter = obj->write_waiter = obj->task = NULL;
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
  S(s_throw, "throw");
  S(s_close, "close");
  S(s_join, "join");
#undef S
  if ((G.empty_bytes = PyBytes_FromStringAndSize(NULL, 0)) == NULL) return -1;
  if ((G.empty_tuple = PyTuple_New(0)) == NULL) return -1;
  if ((G.tasks = PySet_New(NULL)) == NULL) return -1;
  PyObject *asyncio = PyImport_ImportModule("asyncio");
  if (asyncio == NULL) return -1;
  G.cancelled_error = PyObject_GetAttrString(asyncio, "CancelledError");
  Py_DECREF(asyncio);
  if (G.cancelled_error == NULL) return -1;
  ready_type = (PyTypeObject *)PyType_FromSpec(&ready_spec);
  run_type = (PyTypeObject *)PyType_FromSpec(&run_spec);
  if (run_type == NULL) return -1;
  G.request_type = (PyTypeObject *)PyType_FromSpec(&req_spec);
  if (ready_type == NULL || G.request_type == NULL) return -1;
  if ((ready_none = ready(Py_NewRef(Py_None))) == NULL) return -1;
  if (PyModule_AddObjectRef(module, "Request", (PyObject *)G.request_type) < 0) return -1;
  if (PyModule_AddObjectRef(module, "tasks", G.tasks) < 0) return -1;
  return 0;
}
