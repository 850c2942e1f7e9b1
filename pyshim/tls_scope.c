/*
 * pyshim/tls_scope.c — the ASGI TLS extension (scope["extensions"]["tls"]) and
 * `_shield_server.reload_tls()`.  Python thread only (the GIL is held on entry).
 *
 * Spec: ASGI TLS Extension 0.2 (asgiref specs/tls.rst): server_cert (PEM str or None),
 * client_cert_chain (list of PEM str, client's first), client_cert_name (RFC 4514 str or
 * None), client_cert_error (None or str), tls_version (int, 0x0303 / 0x0304), cipher_suite
 * (int, the IANA 16-bit id).  Present only on TLS connections.
 */
#include <Python.h>

#include <string.h>

#include "bridge.h"

static struct {
  PyObject *tls, *server_cert, *client_cert_chain, *client_cert_name, *client_cert_error,
      *tls_version, *cipher_suite;
  /* The server certificate as a str, reused while the certificate does not change (it is
   * the same for every request until a reload): one memcmp instead of a new str. */
  PyObject *cert_str; /* owned */
  char *cert_bytes;   /* copy of what cert_str was made from */
  size_t cert_len;
} X;

static int intern_keys(void) {
  if (X.tls) return 0;
#define I(field, s) \
  if ((X.field = PyUnicode_InternFromString(s)) == NULL) return -1
  I(server_cert, "server_cert");
  I(client_cert_chain, "client_cert_chain");
  I(client_cert_name, "client_cert_name");
  I(client_cert_error, "client_cert_error");
  I(tls_version, "tls_version");
  I(cipher_suite, "cipher_suite");
  I(tls, "tls"); /* last: marks the table complete */
#undef I
  return 0;
}

/* New reference to the server certificate's PEM as str. */
static PyObject *server_cert_str(sh_iovec pem) {
  if (X.cert_str && X.cert_len == pem.len && memcmp(X.cert_bytes, pem.base, pem.len) == 0) {
    Py_INCREF(X.cert_str);
    return X.cert_str;
  }
  PyObject *s = PyUnicode_DecodeASCII(pem.base, (Py_ssize_t)pem.len, "replace");
  if (s == NULL) return NULL;
  char *copy = PyMem_Malloc(pem.len ? pem.len : 1);
  if (copy != NULL) { /* no cache on OOM: still correct */
    memcpy(copy, pem.base, pem.len);
    Py_XSETREF(X.cert_str, Py_NewRef(s));
    PyMem_Free(X.cert_bytes);
    X.cert_bytes = copy;
    X.cert_len = pem.len;
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

PyObject *sh_tls_scope_extensions(const sh_tls_info *t) {
  if (intern_keys() < 0) return NULL;
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
  if (set_steal(d, X.server_cert,
                t->server_cert_pem.len ? server_cert_str(t->server_cert_pem)
                                       : Py_NewRef(Py_None)) < 0 ||
      PyDict_SetItem(d, X.client_cert_chain, chain) < 0 ||
      set_steal(d, X.client_cert_name, str_or_none(t->client_subject)) < 0 ||
      set_steal(d, X.client_cert_error, str_or_none(t->client_verify_error)) < 0 ||
      set_steal(d, X.tls_version, PyLong_FromLong(t->version)) < 0 ||
      set_steal(d, X.cipher_suite, PyLong_FromLong(t->cipher_suite)) < 0 ||
      PyDict_SetItem(ext, X.tls, d) < 0)
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

PyObject *sh_tls_py_reload(sh_server *srv) {
  sh_error err = {0};
  int rc;
  /* Reading and parsing the files must not hold the GIL. */
  Py_BEGIN_ALLOW_THREADS
  rc = sh_server_reload_tls(srv, &err);
  Py_END_ALLOW_THREADS
  if (rc < 0) {
    PyErr_SetString(PyExc_RuntimeError, err.message);
    return NULL;
  }
  Py_RETURN_NONE;
}

void sh_tls_scope_cleanup(void) {
  Py_CLEAR(X.cert_str);
  PyMem_Free(X.cert_bytes);
  X.cert_bytes = NULL;
  X.cert_len = 0;
}
