/*
 * pyshim/state.c — `_shield_state`: the supervisor's shared table and state secret, seen
 * from Python (tests today; nonce/session features build on the C API in server.h).
 *
 *   put(key32: bytes, value: bytes, ttl: float, only_if_absent=False) -> bool
 *       False when only_if_absent and a live entry exists (atomic across workers).
 *   get(key32) -> bytes | None;  delete(key32) -> bool;  count() -> int
 *   secret() -> bytes   the secret every worker shares (--state-secret-file or random)
 *   available() -> bool (False without a supervisor)
 * Keys are 32-byte digests (hash your own keys).  The table is fixed-size: put raises
 * MemoryError when it is full of live entries (fail closed).
 */
#include <Python.h>

#include <time.h>

#include "shmtable.h"
#include "state.h"

static sh_server *g_srv;

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static sh_shm_table *table_or_raise(void) {
  sh_shm_table *t = sh_server_shared_table(g_srv);
  if (t == NULL) PyErr_SetString(PyExc_RuntimeError, "no shared state table (no supervisor)");
  return t;
}

static int key_ok(Py_buffer *k) {
  if (k->len != SH_SHM_KEY_LEN) {
    PyErr_SetString(PyExc_ValueError, "key must be 32 bytes (a digest)");
    return 0;
  }
  return 1;
}

static PyObject *st_put(PyObject *m, PyObject *args, PyObject *kw) {
  (void)m;
  static char *names[] = {"key", "value", "ttl", "only_if_absent", NULL};
  Py_buffer k, v;
  double ttl;
  int absent = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "y*y*d|p", names, &k, &v, &ttl, &absent)) return NULL;
  PyObject *ret = NULL;
  sh_shm_table *t = table_or_raise();
  if (t && key_ok(&k)) {
    if (v.len > SH_SHM_VALUE_MAX) {
      PyErr_Format(PyExc_ValueError, "value longer than %d bytes", SH_SHM_VALUE_MAX);
    } else {
      double now = wall_now();
      int rc;
      Py_BEGIN_ALLOW_THREADS rc =
          sh_shm_table_put(t, k.buf, v.buf, (size_t)v.len, now + ttl, now, absent);
      Py_END_ALLOW_THREADS if (rc == 0) ret = Py_NewRef(Py_True);
      else if (rc == SH_SHM_EXISTS) ret = Py_NewRef(Py_False);
      else if (rc == SH_SHM_FULL) PyErr_SetString(PyExc_MemoryError, "shared table full");
      else PyErr_Format(PyExc_RuntimeError, "shared table error %d", rc);
    }
  }
  PyBuffer_Release(&k);
  PyBuffer_Release(&v);
  return ret;
}

static PyObject *st_get(PyObject *m, PyObject *arg) {
  (void)m;
  Py_buffer k;
  if (PyObject_GetBuffer(arg, &k, PyBUF_SIMPLE) < 0) return NULL;
  PyObject *ret = NULL;
  sh_shm_table *t = table_or_raise();
  if (t && key_ok(&k)) {
    unsigned char buf[SH_SHM_VALUE_MAX];
    size_t len = sizeof buf;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = sh_shm_table_get(t, k.buf, buf, &len, NULL, wall_now());
    Py_END_ALLOW_THREADS ret = rc == 0
                                   ? PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)len)
                                   : Py_NewRef(Py_None);
  }
  PyBuffer_Release(&k);
  return ret;
}

static PyObject *st_delete(PyObject *m, PyObject *arg) {
  (void)m;
  Py_buffer k;
  if (PyObject_GetBuffer(arg, &k, PyBUF_SIMPLE) < 0) return NULL;
  PyObject *ret = NULL;
  sh_shm_table *t = table_or_raise();
  if (t && key_ok(&k)) ret = PyBool_FromLong(sh_shm_table_del(t, k.buf) == 0);
  PyBuffer_Release(&k);
  return ret;
}

static PyObject *st_count(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  sh_shm_table *t = table_or_raise();
  return t ? PyLong_FromSize_t(sh_shm_table_count(t, wall_now())) : NULL;
}

static PyObject *st_secret(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  size_t len = 0;
  const unsigned char *s = sh_server_state_secret(g_srv, &len);
  if (s == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "no state secret (no supervisor)");
    return NULL;
  }
  return PyBytes_FromStringAndSize((const char *)s, (Py_ssize_t)len);
}

static PyObject *st_available(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  return PyBool_FromLong(sh_server_shared_table(g_srv) != NULL);
}

static PyMethodDef st_methods[] = {
    {"put", (PyCFunction)(void (*)(void))st_put, METH_VARARGS | METH_KEYWORDS,
     "put(key32, value, ttl, only_if_absent=False) -> bool"},
    {"get", st_get, METH_O, "get(key32) -> bytes | None"},
    {"delete", st_delete, METH_O, "delete(key32) -> bool"},
    {"count", st_count, METH_NOARGS, "live entries"},
    {"secret", st_secret, METH_NOARGS, "the secret shared by every worker"},
    {"available", st_available, METH_NOARGS, "True when served under the supervisor"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef st_def = {PyModuleDef_HEAD_INIT,
                                    "_shield_state",
                                    "State shared by all Shield workers (built in)",
                                    -1,
                                    st_methods,
                                    NULL,
                                    NULL,
                                    NULL,
                                    NULL};

static PyObject *st_init(void) {
  return PyModule_Create(&st_def);
}

int sh_state_module_prepare(sh_server *srv, sh_error *err) {
  g_srv = srv;
  if (PyImport_AppendInittab("_shield_state", st_init) < 0) {
    err->code = SH_ENOMEM;
    snprintf(err->message, sizeof err->message, "cannot register module _shield_state");
    return SH_ENOMEM;
  }
  return 0;
}
