/*
 * pyshim/tls_scope.c — the ASGI TLS extension, scope["extensions"]["tls"].  Python thread only
 * (the GIL is held on entry).
 *
 * Spec: ASGI TLS Extension 0.2 (asgiref specs/tls.rst): server_cert (PEM str or None),
 * client_cert_chain (list of PEM str, client's first), client_cert_name (RFC 4514 str or
 * None), client_cert_error (None or str), tls_version (int, 0x0303 / 0x0304), cipher_suite
 * (int, the IANA 16-bit id).  Present only on TLS connections.
 */
#include <Python.h>

#include <string.h>

#include "pystr.h"
#include "scope.h"

/* New reference to the server certificate's PEM as str: the same for every request until a
 * reload, so the last one is reused (one memcmp instead of a new str). */
static PyObject *server_cert_str(sh_tls_scope *ts, sh_iovec pem) {
  if (ts->cert_str && ts->cert_len == pem.len && memcmp(ts->cert_bytes, pem.base, pem.len) == 0)
    return Py_NewRef(ts->cert_str);
  PyObject *s = PyUnicode_DecodeASCII(pem.base, (Py_ssize_t)pem.len, "replace");
  if (s == NULL) return NULL;
  char *copy = PyMem_Malloc(pem.len ? pem.len : 1);
  if (copy != NULL) { /* no cache on OOM: still correct */
    memcpy(copy, pem.base, pem.len);
    Py_XSETREF(ts->cert_str, Py_NewRef(s));
    PyMem_Free(ts->cert_bytes);
    ts->cert_bytes = copy;
    ts->cert_len = pem.len;
  }
  return s;
}

static int set_steal(PyObject *d, PyObject *key, PyObject *value) {
  if (value == NULL) return -1;
  int rc = PyDict_SetItem(d, key, value);
  Py_DECREF(value);
  return rc;
}

static PyObject *str_or_none(const char *s) {
  if (s == NULL) Py_RETURN_NONE;
  return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

PyObject *sh_pyshim__scope_tls(sh_tls_scope *ts, const sh_tls_info *t) {
  PyObject *ext = PyDict_New();
  PyObject *d = PyDict_New();
  PyObject *chain = PyList_New((Py_ssize_t)t->num_client_certs);
  if (ext == NULL || d == NULL || chain == NULL) goto fail;
  for (size_t i = 0; i < t->num_client_certs; i++) {
    PyObject *pem = PyUnicode_DecodeASCII(t->client_chain_pem[i].base,
                                          (Py_ssize_t)t->client_chain_pem[i].len, "replace");
    if (pem == NULL) goto fail;
    PyList_SET_ITEM(chain, (Py_ssize_t)i, pem); /* steals */
  }
  if (set_steal(d, SH_STR(server_cert),
                t->server_cert_pem.len ? server_cert_str(ts, t->server_cert_pem)
                                       : Py_NewRef(Py_None)) < 0 ||
      PyDict_SetItem(d, SH_STR(client_cert_chain), chain) < 0 ||
      set_steal(d, SH_STR(client_cert_name), str_or_none(t->client_subject)) < 0 ||
      set_steal(d, SH_STR(client_cert_error), str_or_none(t->client_verify_error)) < 0 ||
      set_steal(d, SH_STR(tls_version), PyLong_FromLong(t->version)) < 0 ||
      set_steal(d, SH_STR(cipher_suite), PyLong_FromLong(t->cipher_suite)) < 0 ||
      PyDict_SetItem(ext, SH_STR(tls), d) < 0)
    goto fail;
  Py_DECREF(chain);
  Py_DECREF(d);
  return ext;
fail:
  Py_XDECREF(chain);
  Py_XDECREF(d);
  Py_XDECREF(ext);
  return NULL;
}

void sh_pyshim__scope_tls_clear(sh_tls_scope *ts) {
  Py_CLEAR(ts->cert_str);
  PyMem_Free(ts->cert_bytes);
  ts->cert_bytes = NULL;
  ts->cert_len = 0;
}
