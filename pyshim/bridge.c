/*
 * pyshim/bridge.c — the hand-off between the I/O thread and the Python thread.
 *
 * Why a queue plus an eventfd: the I/O thread must never take the GIL (a slow app would stall
 * every socket), so its callbacks only append small events to a mutex-protected array.  At the
 * end of each libuv loop iteration (on_flush) it writes the eventfd once if anything was
 * queued since the Python side last looked; the asyncio loop watches that fd (add_reader) and
 * takes the whole batch at once.  One wake-up and one lock round-trip per batch, not per event.
 *
 * Why sh_pyreq: events for a request can sit in the queue while the Python side decides it is
 * done with the request.  The sh_request itself may be freed as soon as the server applies the
 * handler's release, so queued events point at a sh_pyreq instead; it is freed on the Python
 * thread when the RELEASED event (on_release: guaranteed last for that request) is processed.
 */
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bridge.h"
#ifdef SHIELD_HAVE_GATE
#include "gate.h"
#include "native_attest.h"
#endif

enum { EV_REQUEST, EV_BODY, EV_DISCONNECT, EV_WRITABLE, EV_RELEASED, EV_STOPPED };

typedef struct ev {
  int kind;
  int last;
  sh_pyreq *pr;
  char *data;
  size_t len;
} ev;

typedef struct evq {
  pthread_mutex_t mu;
  ev *items;
  size_t n, cap;
  int woken; /* the eventfd was written and the consumer has not swapped since */
} evq;

static struct {
  evq q;
  int efd;
  sh_server *srv;
  const sh_config *cfg;
  pthread_t io_thread;
  int io_started;
  int io_result;
  sh_pyreq live; /* sentinel of the live list */
  PyObject *state; /* lifespan state dict or NULL (owned) */
  PyObject *asgi_template; /* {"version": "3.0", "spec_version": "2.3"}: shared by all scopes */
  PyObject *scope_template; /* every scope key, constant values set (build_scope_template) */
  PyObject *client_host;    /* str of the last client host (build_client) */
  char client_host_c[64];
  PyObject *server_addr;   /* (host, port) tuple or None */
  PyObject *root_path;     /* str */
  PyObject *root_path_b;   /* bytes */
  PyObject *on_stopped;    /* bridge.py callable: the I/O thread has ended */
} B;

/* Interned scope keys and constant values (NGINX Unit style): built once at start-up. */
static struct {
  PyObject *type, *asgi, *http_version, *server, *client, *scheme, *method, *root_path, *path,
      *raw_path, *query_string, *headers, *state, *extensions;
  PyObject *http, *https, *v10, *v11;
  PyObject *methods[9];
} K;

static const char *const method_names[9] = {"GET", "POST", "PUT", "DELETE", "HEAD",
                                            "OPTIONS", "PATCH", "CONNECT", "TRACE"};

/* ---------------------------------------------------------------- I/O thread side */

static void evq_push(sh_pyreq *pr, int kind, char *data, size_t len, int last) {
  evq *q = &B.q;
  pthread_mutex_lock(&q->mu);
  if (q->n == q->cap) {
    size_t cap = q->cap ? q->cap * 2 : 256;
    ev *items = realloc(q->items, cap * sizeof(ev));
    if (items == NULL) {
      /* Out of memory on the I/O thread: dropping a body chunk or a request would leave a
       * task waiting forever, so fail the request instead (the server answers 500/closes). */
      pthread_mutex_unlock(&q->mu);
      free(data);
      if (pr != NULL && kind == EV_REQUEST) {
        sh_request_fail(pr->req);
        pr->released = 1;
        sh_request_release(pr->req); /* on_release queues pr's own end */
      }
      return;
    }
    q->items = items;
    q->cap = cap;
  }
  q->items[q->n++] = (ev){.kind = kind, .last = last, .pr = pr, .data = data, .len = len};
  pthread_mutex_unlock(&q->mu);
}

static void wake_python(void) {
  uint64_t one = 1;
  ssize_t r;
  do {
    r = write(B.efd, &one, sizeof one);
  } while (r < 0 && errno == EINTR);
  /* EAGAIN means the counter is saturated: the reader is already due to wake. */
}

static void on_request(sh_handler *h, sh_request *req) {
  (void)h;
  sh_pyreq *pr = calloc(1, sizeof *pr);
  if (pr == NULL) {
    sh_request_fail(req);
    sh_request_release(req);
    return;
  }
  pr->req = req;
  req->handler_data = pr;
  evq_push(pr, EV_REQUEST, NULL, 0, 0);
}

static void on_body(sh_handler *h, sh_request *req, char *chunk, size_t len, int last) {
  (void)h;
  evq_push(req->handler_data, EV_BODY, chunk, len, last);
}

static void on_disconnect(sh_handler *h, sh_request *req) {
  (void)h;
  evq_push(req->handler_data, EV_DISCONNECT, NULL, 0, 0);
}

static void on_writable(sh_handler *h, sh_request *req) {
  (void)h;
  evq_push(req->handler_data, EV_WRITABLE, NULL, 0, 0);
}

static void on_release(sh_handler *h, sh_request *req) {
  (void)h;
  evq_push(req->handler_data, EV_RELEASED, NULL, 0, 0);
}

static void on_flush(sh_handler *h) {
  (void)h;
  int need = 0;
  pthread_mutex_lock(&B.q.mu);
  if (B.q.n > 0 && !B.q.woken) {
    B.q.woken = 1;
    need = 1;
  }
  pthread_mutex_unlock(&B.q.mu);
  if (need) wake_python();
}

static sh_handler handler = {
    .on_request = on_request,
    .on_body = on_body,
    .on_disconnect = on_disconnect,
    .on_writable = on_writable,
    .on_release = on_release,
    .on_flush = on_flush,
};

sh_handler *sh_bridge_handler(void) { return &handler; }

static void *io_thread_main(void *arg) {
  (void)arg;
  B.io_result = sh_server_run(B.srv);
  evq_push(NULL, EV_STOPPED, NULL, 0, 0);
  on_flush(&handler);
  return NULL;
}

/* ---------------------------------------------------------------- response headers */

int sh_asgi_start_response(sh_request *req, int status, PyObject *headers) {
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
  if (rc < 0 && rc != SH_ECLOSED) sh_asgi_raise(rc, "http.response.start");
done:
  if (hdrs != stackbuf) PyMem_Free(hdrs);
  Py_DECREF(seq);
  return rc;
}

/* ---------------------------------------------------------------- scope */

/* RFC 3986 §2.1 percent-decoding of the path; invalid escapes are kept as they are, like
 * urllib.parse.unquote, so the result matches uvicorn's scope["path"]. */
static int hexval(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static PyObject *decode_path(const char *p, size_t len) {
  if (memchr(p, '%', len) == NULL) return PyUnicode_DecodeUTF8(p, (Py_ssize_t)len, "replace");
  char stackbuf[512] = {0};
  char *out = len <= sizeof stackbuf ? stackbuf : PyMem_Malloc(len);
  if (out == NULL) return PyErr_NoMemory();
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    int hi, lo;
    if (p[i] == '%' && i + 2 < len && (hi = hexval((unsigned char)p[i + 1])) >= 0 &&
        (lo = hexval((unsigned char)p[i + 2])) >= 0) {
      out[o++] = (char)(hi * 16 + lo);
      i += 2;
    } else {
      out[o++] = p[i];
    }
  }
  PyObject *s = PyUnicode_DecodeUTF8(out, (Py_ssize_t)o, "replace");
  if (out != stackbuf) PyMem_Free(out);
  return s;
}

static PyObject *method_str(sh_iovec m) {
  for (size_t i = 0; i < 9; i++) {
    size_t n = strlen(method_names[i]);
    if (m.len == n && memcmp(m.base, method_names[i], n) == 0) {
      Py_INCREF(K.methods[i]);
      return K.methods[i];
    }
  }
  return PyUnicode_DecodeLatin1(m.base, (Py_ssize_t)m.len, NULL);
}

static PyObject *bytes_prefixed(PyObject *prefix, sh_iovec v) {
  Py_ssize_t plen = prefix ? PyBytes_GET_SIZE(prefix) : 0;
  PyObject *b = PyBytes_FromStringAndSize(NULL, plen + (Py_ssize_t)v.len);
  if (b == NULL) return NULL;
  if (plen) memcpy(PyBytes_AS_STRING(b), PyBytes_AS_STRING(prefix), (size_t)plen);
  memcpy(PyBytes_AS_STRING(b) + plen, v.base, v.len);
  return b;
}

/* Set d[key] = value and drop our reference to value; returns -1 on error (value may be NULL
 * when building it failed). */
static int set_steal(PyObject *d, PyObject *key, PyObject *value) {
  if (value == NULL) return -1;
  int rc = PyDict_SetItem(d, key, value);
  Py_DECREF(value);
  return rc;
}

static PyObject *build_headers(const sh_request *r) {
  PyObject *list = PyList_New((Py_ssize_t)r->num_headers);
  if (list == NULL) return NULL;
  for (size_t i = 0; i < r->num_headers; i++) {
    const sh_header *h = &r->headers[i];
    PyObject *name = PyBytes_FromStringAndSize(h->name.base, (Py_ssize_t)h->name.len);
    PyObject *value = PyBytes_FromStringAndSize(h->value.base, (Py_ssize_t)h->value.len);
    PyObject *pair = (name && value) ? PyTuple_Pack(2, name, value) : NULL;
    Py_XDECREF(name);
    Py_XDECREF(value);
    if (pair == NULL) {
      Py_DECREF(list);
      return NULL;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, pair);
  }
  return list;
}

/* scope["client"]: (host, port).  The host string of the previous request is kept, since
 * consecutive requests mostly come from the same few peers (a load balancer, a sidecar). */
static PyObject *build_client(const sh_request *r) {
  if (r->addr_kind != SH_ADDR_INET) Py_RETURN_NONE;
  if (B.client_host == NULL || strcmp(B.client_host_c, r->client_host) != 0) {
    PyObject *host = PyUnicode_FromString(r->client_host);
    if (host == NULL) return NULL;
    Py_XSETREF(B.client_host, host);
    snprintf(B.client_host_c, sizeof B.client_host_c, "%s", r->client_host);
  }
  PyObject *port = PyLong_FromLong(r->client_port);
  if (port == NULL) return NULL;
  PyObject *t = PyTuple_New(2);
  if (t == NULL) {
    Py_DECREF(port);
    return NULL;
  }
  PyTuple_SET_ITEM(t, 0, Py_NewRef(B.client_host));
  PyTuple_SET_ITEM(t, 1, port);
  return t;
}

/*
 * Why a template: every scope has the same dozen keys.  Filling a new dict key by key costs
 * a dozen insertions and two resizes of its hash table; copying a dict that already holds
 * every key (values that never change set, the others None) is one allocation and a memcpy
 * of the table (CPython's fast path for copying a compact dict), after which each per-request
 * value replaces a None in place.  scope["asgi"] is one shared dict: {"version": "3.0",
 * "spec_version": "2.3"} is read by apps, never written.
 */
static PyObject *build_scope_template(void) {
  PyObject *t = PyDict_New();
  if (t == NULL) return NULL;
  PyObject *const keys[] = {K.type,   K.asgi,      K.http_version, K.server,
                            K.client, K.scheme,    K.method,       K.root_path,
                            K.path,   K.raw_path,  K.query_string, K.headers};
  PyObject *const values[] = {K.http,   B.asgi_template, K.v11,     B.server_addr,
                              Py_None,  K.http,          Py_None,   B.root_path,
                              Py_None,  Py_None,         Py_None,   Py_None};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    if (PyDict_SetItem(t, keys[i], values[i]) < 0) {
      Py_DECREF(t);
      return NULL;
    }
  }
  return t;
}

static PyObject *build_scope(const sh_request *r) {
  PyObject *s = PyDict_Copy(B.scope_template);
  if (s == NULL) return NULL;
  PyObject *path = decode_path(r->path.base, r->path.len);
  if (path != NULL && PyUnicode_GET_LENGTH(B.root_path) > 0) {
    PyObject *full = PyUnicode_Concat(B.root_path, path);
    Py_DECREF(path);
    path = full;
  }
  int https = r->forwarded_proto ? r->forwarded_proto == 2 : r->tls;
  if ((r->http_major == 1 && r->http_minor == 0 && PyDict_SetItem(s, K.http_version, K.v10) < 0) ||
      set_steal(s, K.client, build_client(r)) < 0 ||
      (https && PyDict_SetItem(s, K.scheme, K.https) < 0) ||
      set_steal(s, K.method, method_str(r->method)) < 0 || set_steal(s, K.path, path) < 0 ||
      set_steal(s, K.raw_path, bytes_prefixed(B.root_path_b, r->path)) < 0 ||
      set_steal(s, K.query_string,
                PyBytes_FromStringAndSize(r->query.base, (Py_ssize_t)r->query.len)) < 0 ||
      set_steal(s, K.headers, build_headers(r)) < 0)
    goto fail;
  if (B.state != NULL && set_steal(s, K.state, PyDict_Copy(B.state)) < 0) goto fail;
  if (r->tls_info != NULL && /* ASGI TLS extension (tls_scope.c) */
      set_steal(s, K.extensions, sh_tls_scope_extensions(r->tls_info)) < 0)
    goto fail;
#ifdef SHIELD_HAVE_GATE
  const sh_gate_attestation *a = sh_gate_request_attestation(r); /* verified natively (gate/) */
  if (a != NULL && sh_py_attest_scope(s, a->result, a->mode, a->session, a->policy_sha256) < 0)
    goto fail;
#endif
  return s;
fail:
  Py_DECREF(s);
  return NULL;
}

/* ---------------------------------------------------------------- module functions */

static void live_link(sh_pyreq *pr) {
  pr->linked = 1;
  pr->next = B.live.next;
  pr->prev = &B.live;
  B.live.next->prev = pr;
  B.live.next = pr;
}

static void live_unlink(sh_pyreq *pr) {
  if (!pr->linked) return;
  pr->linked = 0;
  pr->prev->next = pr->next;
  pr->next->prev = pr->prev;
}

static void pyreq_free(sh_pyreq *pr) {
  if (pr->obj != NULL) {
    pr->obj->pr = NULL;
    sh_asgi_release(pr->obj); /* already released: only drops its futures and chunks */
  }
  live_unlink(pr);
  free(pr);
}

/* Handle one queued event (GIL held).  Returns -1 with a Python exception set on failure. */
static int dispatch_one(ev *e) {
  sh_pyreq *pr = e->pr;
  switch (e->kind) {
    case EV_STOPPED: {
      PyObject *r = B.on_stopped ? PyObject_CallNoArgs(B.on_stopped) : Py_NewRef(Py_None);
      Py_XDECREF(r);
      return r ? 0 : -1;
    }
    case EV_RELEASED:
      pyreq_free(pr);
      return 0;
    case EV_REQUEST: {
      live_link(pr);
      RequestObject *obj = sh_asgi_request_new(pr);
      if (obj == NULL) goto fail_request;
      PyObject *scope = build_scope(pr->req);
      int rc = scope ? sh_asgi_start_task(obj, scope) : -1;
      Py_XDECREF(scope);
      Py_DECREF(obj); /* the Task's bound methods keep it alive */
      if (rc == 0) return 0;
      /* The app could not even be started (e.g. calling it raised): log and answer 500. */
      PyErr_WriteUnraisable(G.app);
      if (!pr->released) {
        sh_request_fail(pr->req);
        pr->released = 1;
        sh_request_release(pr->req);
      }
      return 0;
    fail_request:
      sh_request_fail(pr->req);
      pr->released = 1;
      sh_request_release(pr->req);
      return -1;
    }
    default:
      break;
  }
  if (pr->obj == NULL || pr->released) return 0; /* nobody is listening any more */
  if (e->kind == EV_BODY) {
    PyObject *body = PyBytes_FromStringAndSize(e->data, (Py_ssize_t)e->len);
    if (body == NULL) return -1;
    sh_asgi_on_body(pr->obj, body, e->last);
    Py_DECREF(body);
  } else if (e->kind == EV_DISCONNECT) {
    sh_asgi_on_disconnect(pr->obj);
  } else if (e->kind == EV_WRITABLE) {
    sh_asgi_on_writable(pr->obj);
  }
  return 0;
}

/* Does the loop have a task factory (loop.set_task_factory, e.g. from the app's lifespan)?
 * Then Tasks must come from loop.create_task; otherwise asyncio.Task is built directly
 * (sh_asgi_start_task).  Asked once per batch: it costs a call, a Task's creation is cheaper
 * by far without uvloop's create_task wrapper. */
static void check_task_factory(void) {
  if (G.get_task_factory == NULL) return;
  PyObject *f = PyObject_CallNoArgs(G.get_task_factory);
  if (f == NULL) PyErr_WriteUnraisable(G.get_task_factory);
  G.task_factory = f != Py_None;
  Py_XDECREF(f);
}

/* dispatch(): take the queued batch and handle every event (the eventfd's reader callback). */
static PyObject *mod_dispatch(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  uint64_t counter;
  while (read(B.efd, &counter, sizeof counter) < 0 && errno == EINTR) {
  }
  pthread_mutex_lock(&B.q.mu);
  ev *items = B.q.items;
  size_t n = B.q.n;
  B.q.items = NULL;
  B.q.n = B.q.cap = 0;
  B.q.woken = 0;
  pthread_mutex_unlock(&B.q.mu);
  check_task_factory();
  for (size_t i = 0; i < n; i++) {
    /* An error in one event (memory) must not strand the rest: report it and go on. */
    if (dispatch_one(&items[i]) < 0) PyErr_WriteUnraisable(NULL);
    free(items[i].data);
  }
  free(items);
  Py_RETURN_NONE;
}

/* setup(app, loop, receive_slow, log_exception, on_stopped, high_water) */
static PyObject *mod_setup(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
  (void)m;
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
  PyObject *name = kwnames ? PyUnicode_InternFromString("shield.request") : NULL;
  if (name == NULL) {
    Py_XDECREF(task_type);
    Py_XDECREF(cf);
    Py_XDECREF(ct);
    Py_XDECREF(gtf);
    Py_XDECREF(kwnames);
    return NULL;
  }
  Py_XSETREF(G.app, Py_NewRef(args[0]));
  Py_XSETREF(G.loop, Py_NewRef(loop));
  Py_XSETREF(G.task_type, task_type);
  Py_XSETREF(G.create_future, cf);
  Py_XSETREF(G.create_task, ct);
  Py_XSETREF(G.get_task_factory, gtf);
  Py_XSETREF(G.task_kwnames, kwnames);
  Py_XSETREF(G.task_name, name);
  G.task_factory = 1; /* until the first batch has looked */
  Py_XSETREF(G.receive_slow, Py_NewRef(args[2]));
  Py_XSETREF(G.log_exception, Py_NewRef(args[3]));
  Py_XSETREF(B.on_stopped, Py_NewRef(args[4]));
  G.high_water = hw;
  Py_RETURN_NONE;
}

static PyObject *mod_eventfd(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  return PyLong_FromLong(B.efd);
}

/*
 * One CPU: SCHED_BATCH for the Python thread and the I/O thread (created right after this, so
 * it inherits the policy).  Why: on a single CPU the two threads take turns.  With the default
 * policy a thread woken by the other (the eventfd when requests are queued, uv_async_send when
 * a response is) preempts it in the middle of its batch, so batches are cut short: about 0.07
 * context switches per small request.  A SCHED_BATCH thread that wakes up waits until the
 * running one blocks or uses up its time slice (sched(7)), so each side finishes its batch:
 * 0.05 switches per request and a few per cent less CPU per request (bench/RESULTS.md).  The
 * price, on one CPU only: while the app computes without awaiting, queued responses and new
 * connections wait for the end of the Python thread's time slice (milliseconds) instead of
 * preempting it at once; each thread's share of the CPU is unchanged.  With more CPUs the
 * threads run side by side and a wake-up goes to an idle CPU, so nothing is changed there.
 */
static void batch_policy_on_one_cpu(void) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) != 1) return;
  struct sched_param sp = {0};
  int rc = pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
  if (rc != 0) sh_log(SH_LOG_DEBUG, "SCHED_BATCH not set: %s", strerror(rc));
}

static PyObject *mod_serve(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  if (B.io_started) Py_RETURN_NONE;
  batch_policy_on_one_cpu();
  /* The I/O thread must not receive process signals: Python's main thread handles them. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int rc = pthread_create(&B.io_thread, NULL, io_thread_main, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    errno = rc;
    return PyErr_SetFromErrno(PyExc_OSError);
  }
  B.io_started = 1;
  Py_RETURN_NONE;
}

static PyObject *mod_stop(PyObject *m, PyObject *arg) {
  (void)m;
  double grace = PyFloat_AsDouble(arg);
  if (grace == -1.0 && PyErr_Occurred()) return NULL;
  sh_server_stop(B.srv, grace);
  Py_RETURN_NONE;
}

static PyObject *mod_join(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  if (B.io_started) {
    Py_BEGIN_ALLOW_THREADS pthread_join(B.io_thread, NULL);
    Py_END_ALLOW_THREADS B.io_started = 0;
  }
  return PyLong_FromLong(B.io_result);
}

static PyObject *mod_set_state(PyObject *m, PyObject *arg) {
  (void)m;
  if (arg != Py_None && !PyDict_Check(arg)) {
    PyErr_SetString(PyExc_TypeError, "state must be a dict or None");
    return NULL;
  }
  Py_XSETREF(B.state, arg == Py_None ? NULL : Py_NewRef(arg));
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
  (void)m;
  (void)unused;
  const sh_config *c = B.cfg;
  PyObject *d = Py_BuildValue(
      "{s:N,s:i,s:N,s:N,s:i,s:N,s:N,s:N,s:N,s:N,s:N,s:i,s:i,s:N}", "app", str_or_none(c->app),
      "factory", c->factory, "app_dir", str_or_none(c->app_dir), "host", str_or_none(c->host),
      "port", sh_server_port(B.srv), "uds", str_or_none(c->uds), "lifespan",
      str_or_none(c->lifespan), "loop", str_or_none(c->loop), "log_level",
      str_or_none(c->log_level), "env_file", str_or_none(c->env_file), "root_path",
      str_or_none(c->root_path), "fd", c->fd, "write_high_water", (int)c->write_high_water,
      "version", str_or_none("0.1.0"));
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
  (void)m;
  (void)unused;
  while (B.live.next != &B.live) {
    sh_pyreq *pr = B.live.next;
    pr->released = 1;
    pyreq_free(pr);
  }
  Py_RETURN_NONE;
}

static PyObject *mod_reload_tls(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  return sh_tls_py_reload(B.srv);
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

static struct PyModuleDef mod_def = {PyModuleDef_HEAD_INIT, "_shield_server",
                                     "Shield's I/O thread bridge (built into the binary)", -1,
                                     mod_methods, NULL, NULL, NULL, NULL};

static int intern_all(void) {
#define I(field, s) \
  if ((K.field = PyUnicode_InternFromString(s)) == NULL) return -1
  I(type, "type");
  I(asgi, "asgi");
  I(http_version, "http_version");
  I(server, "server");
  I(client, "client");
  I(scheme, "scheme");
  I(method, "method");
  I(root_path, "root_path");
  I(path, "path");
  I(raw_path, "raw_path");
  I(query_string, "query_string");
  I(headers, "headers");
  I(state, "state");
  I(extensions, "extensions");
  I(http, "http");
  I(https, "https");
  I(v10, "1.0");
  I(v11, "1.1");
#undef I
  for (size_t i = 0; i < 9; i++)
    if ((K.methods[i] = PyUnicode_InternFromString(method_names[i])) == NULL) return -1;
  return 0;
}

static PyObject *build_server_addr(const sh_config *c) {
  if (c->uds != NULL) return Py_BuildValue("(sO)", c->uds, Py_None);
  if (c->fd >= 0 || c->vsock_port >= 0) Py_RETURN_NONE;
  return Py_BuildValue("(si)", c->host, sh_server_port(B.srv));
}

static PyObject *mod_init(void) {
  PyObject *m = PyModule_Create(&mod_def);
  if (m == NULL) return NULL;
  if (intern_all() < 0) goto fail;
  if (PyModule_AddIntConstant(m, "TLS", B.cfg->ssl_certfile != NULL) < 0) goto fail;
  if (sh_asgi_init(m) < 0) goto fail;
  B.asgi_template = Py_BuildValue("{s:s,s:s}", "version", "3.0", "spec_version", "2.3");
  B.server_addr = build_server_addr(B.cfg);
  B.root_path = PyUnicode_FromString(B.cfg->root_path ? B.cfg->root_path : "");
  B.root_path_b = PyUnicode_AsUTF8String(B.root_path ? B.root_path : Py_None);
  if (!B.asgi_template || !B.server_addr || !B.root_path || !B.root_path_b) goto fail;
  if ((B.scope_template = build_scope_template()) == NULL) goto fail;
  return m;
fail:
  Py_DECREF(m);
  return NULL;
}

int sh_bridge_prepare(sh_server *srv, const sh_config *cfg, sh_error *err) {
  B.srv = srv;
  B.cfg = cfg;
  B.live.next = B.live.prev = &B.live;
  pthread_mutex_init(&B.q.mu, NULL);
  B.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (B.efd < 0) {
    err->code = SH_ESYS;
    snprintf(err->message, sizeof err->message, "eventfd: %s", strerror(errno));
    return SH_ESYS;
  }
  if (PyImport_AppendInittab("_shield_server", mod_init) < 0) {
    err->code = SH_ENOMEM;
    snprintf(err->message, sizeof err->message, "cannot register module _shield_server");
    return SH_ENOMEM;
  }
  return 0;
}

void sh_bridge_cleanup(void) {
  /* Called with the GIL held, before Py_FinalizeEx. */
  Py_CLEAR(B.state);
  sh_tls_scope_cleanup();
  Py_CLEAR(B.asgi_template);
  Py_CLEAR(B.scope_template);
  Py_CLEAR(B.client_host);
  Py_CLEAR(B.server_addr);
  Py_CLEAR(B.root_path);
  Py_CLEAR(B.root_path_b);
  Py_CLEAR(B.on_stopped);
  Py_CLEAR(G.app);
  Py_CLEAR(G.create_future);
  Py_CLEAR(G.create_task);
  Py_CLEAR(G.loop);
  Py_CLEAR(G.task_type);
  Py_CLEAR(G.get_task_factory);
  Py_CLEAR(G.task_kwnames);
  Py_CLEAR(G.task_name);
  Py_CLEAR(G.receive_slow);
  Py_CLEAR(G.log_exception);
  pthread_mutex_lock(&B.q.mu);
  for (size_t i = 0; i < B.q.n; i++) free(B.q.items[i].data);
  free(B.q.items);
  B.q.items = NULL;
  B.q.n = B.q.cap = 0;
  pthread_mutex_unlock(&B.q.mu);
  if (B.efd >= 0) close(B.efd);
  B.efd = -1;
}
