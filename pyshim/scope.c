/*
 * pyshim/scope.c — the ASGI HTTP connection scope (ASGI 3.0, spec_version 2.3) of a request,
 * built from the server's parsed request with interned keys (pystr.h).  Python thread, GIL held.
 */
#include "scope.h"

#include <string.h>

#include "pystr.h"

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

#define SH_PYSTR_NAME(text) text,
static const char *const method_names[SH_PYSTR_METHODS] = {SH_PYSTR_METHOD_LIST(SH_PYSTR_NAME)};
#undef SH_PYSTR_NAME

static PyObject *method_str(sh_iovec m) {
  for (size_t i = 0; i < SH_PYSTR_METHODS; i++) {
    size_t n = strlen(method_names[i]);
    if (m.len == n && memcmp(m.base, method_names[i], n) == 0) return Py_NewRef(SH_STR(methods[i]));
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
static PyObject *build_client(sh_scope_builder *sb, const sh_request *r) {
  if (r->addr_kind != SH_ADDR_INET) Py_RETURN_NONE;
  if (sb->client_host == NULL || strcmp(sb->client_host_c, r->client_host) != 0) {
    PyObject *host = PyUnicode_FromString(r->client_host);
    if (host == NULL) return NULL;
    Py_XSETREF(sb->client_host, host);
    snprintf(sb->client_host_c, sizeof sb->client_host_c, "%s", r->client_host);
  }
  PyObject *port = PyLong_FromLong(r->client_port);
  if (port == NULL) return NULL;
  PyObject *t = PyTuple_New(2);
  if (t == NULL) {
    Py_DECREF(port);
    return NULL;
  }
  PyTuple_SET_ITEM(t, 0, Py_NewRef(sb->client_host));
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
static PyObject *build_template(const sh_scope_builder *sb) {
  PyObject *t = PyDict_New();
  if (t == NULL) return NULL;
  PyObject *const keys[] = {SH_STR(type),     SH_STR(asgi),         SH_STR(http_version),
                            SH_STR(server),   SH_STR(client),       SH_STR(scheme),
                            SH_STR(method),   SH_STR(root_path),    SH_STR(path),
                            SH_STR(raw_path), SH_STR(query_string), SH_STR(headers)};
  PyObject *const values[] = {SH_STR(http), sb->asgi,     SH_STR(v1_1), sb->server_addr,
                              Py_None,      SH_STR(http), Py_None,      sb->root_path,
                              Py_None,      Py_None,      Py_None,      Py_None};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    if (PyDict_SetItem(t, keys[i], values[i]) < 0) {
      Py_DECREF(t);
      return NULL;
    }
  }
  return t;
}

static PyObject *build_server_addr(const sh_config *c, int port) {
  if (c->uds != NULL) return Py_BuildValue("(sO)", c->uds, Py_None);
  if (c->fd >= 0 || c->vsock_port >= 0) Py_RETURN_NONE;
  return Py_BuildValue("(si)", c->host, port);
}

int sh_pyshim__scope_init(sh_scope_builder *sb, const sh_config *cfg, int port) {
  if (sh_pyshim__str_init() < 0) return -1;
  sb->asgi = Py_BuildValue("{s:s,s:s}", "version", "3.0", "spec_version", "2.3");
  sb->server_addr = build_server_addr(cfg, port);
  sb->root_path = PyUnicode_FromString(cfg->root_path ? cfg->root_path : "");
  sb->root_path_b = sb->root_path ? PyUnicode_AsUTF8String(sb->root_path) : NULL;
  if (!sb->asgi || !sb->server_addr || !sb->root_path || !sb->root_path_b) return -1;
  if ((sb->tmpl = build_template(sb)) == NULL) return -1;
  return 0;
}

PyObject *sh_pyshim__scope_build(sh_scope_builder *sb, const sh_request *r) {
  PyObject *s = PyDict_Copy(sb->tmpl);
  if (s == NULL) return NULL;
  PyObject *path = decode_path(r->path.base, r->path.len);
  if (path != NULL && PyUnicode_GET_LENGTH(sb->root_path) > 0) {
    PyObject *full = PyUnicode_Concat(sb->root_path, path);
    Py_DECREF(path);
    path = full;
  }
  int https = r->forwarded_proto ? r->forwarded_proto == 2 : r->tls;
  if ((r->http_major == 1 && r->http_minor == 0 &&
       PyDict_SetItem(s, SH_STR(http_version), SH_STR(v1_0)) < 0) ||
      set_steal(s, SH_STR(client), build_client(sb, r)) < 0 ||
      (https && PyDict_SetItem(s, SH_STR(scheme), SH_STR(https)) < 0) ||
      set_steal(s, SH_STR(method), method_str(r->method)) < 0 ||
      set_steal(s, SH_STR(path), path) < 0 ||
      set_steal(s, SH_STR(raw_path), bytes_prefixed(sb->root_path_b, r->path)) < 0 ||
      set_steal(s, SH_STR(query_string),
                PyBytes_FromStringAndSize(r->query.base, (Py_ssize_t)r->query.len)) < 0 ||
      set_steal(s, SH_STR(headers), build_headers(r)) < 0)
    goto fail;
  if (sb->state != NULL && set_steal(s, SH_STR(state), PyDict_Copy(sb->state)) < 0) goto fail;
  if (r->tls_info != NULL && /* ASGI TLS extension (tls_scope.c) */
      set_steal(s, SH_STR(extensions), sh_pyshim__scope_tls(&sb->tls, r->tls_info)) < 0)
    goto fail;
#ifdef SHIELD_HAVE_GATE
  if (sh_pyshim__scope_attestation(&sb->attest, s, r) < 0) goto fail; /* attest_scope.c */
#endif
  return s;
fail:
  Py_DECREF(s);
  return NULL;
}

int sh_pyshim__scope_set_state(sh_scope_builder *sb, PyObject *state) {
  if (state != Py_None && !PyDict_Check(state)) {
    PyErr_SetString(PyExc_TypeError, "state must be a dict or None");
    return -1;
  }
  Py_XSETREF(sb->state, state == Py_None ? NULL : Py_NewRef(state));
  return 0;
}

void sh_pyshim__scope_clear(sh_scope_builder *sb) {
  Py_CLEAR(sb->state);
  Py_CLEAR(sb->asgi);
  Py_CLEAR(sb->tmpl);
  Py_CLEAR(sb->client_host);
  Py_CLEAR(sb->server_addr);
  Py_CLEAR(sb->root_path);
  Py_CLEAR(sb->root_path_b);
  sh_pyshim__scope_tls_clear(&sb->tls);
#ifdef SHIELD_HAVE_GATE
  sh_pyshim__scope_attestation_clear(&sb->attest);
#endif
}
