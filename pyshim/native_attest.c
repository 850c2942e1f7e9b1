/*
 * pyshim/native_attest.c — shield_asgi._native.verify: attest/ exposed to Python.
 *
 *   verify(evidence, type, *, at, policy=None, certs=(), nonce=None, public_key=None,
 *          allow_debug=False, jwks=None, issuer=None, audience=None, collateral=None,
 *          trust_simulated=False, simulated_root=None) -> shield_asgi.AttestationResult
 *
 * simulated (docs/protocol.md §1.7): refused (root_untrusted) unless trust_simulated; then the
 * chain must end at simulated_root (DER/PEM bytes) or, when None, the local dev root.
 *
 * tdx/sgx: collateral is the DCAP collateral JSON document (bytes), or a str path to such a
 * file or to a directory of Intel PCS responses (sh_attest_collateral_read).
 *
 * evidence: bytes-like (raw), or str (base64/hex text, decoded like the CLI).  policy: the
 * policy JSON document (str or bytes) or None for "production".  maa/gcp: jwks is the
 * issuer's JWKS document (str or bytes), issuer/audience the expected iss/aud (None: not
 * checked, reported in claims).  The verification runs with
 * the GIL released; everything it needs is copied or pinned (Py_buffer) before.
 */
#include "native_attest.h"

#include <attest.h>
#include <string.h>

/* json_t -> new Python object */
static PyObject *from_json(json_t *j) {
  switch (json_typeof(j)) {
    case JSON_OBJECT: {
      PyObject *d = PyDict_New(); /* new */
      const char *k;
      json_t *v;
      if (!d) return NULL;
      json_object_foreach(j, k, v) {
        PyObject *pv = from_json(v);
        if (!pv || PyDict_SetItemString(d, k, pv) < 0) {
          Py_XDECREF(pv);
          Py_DECREF(d);
          return NULL;
        }
        Py_DECREF(pv);
      }
      return d;
    }
    case JSON_ARRAY: {
      PyObject *l = PyList_New((Py_ssize_t)json_array_size(j));
      if (!l) return NULL;
      for (size_t i = 0; i < json_array_size(j); i++) {
        PyObject *pv = from_json(json_array_get(j, i));
        if (!pv) {
          Py_DECREF(l);
          return NULL;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, pv); /* steals */
      }
      return l;
    }
    case JSON_STRING:
      return PyUnicode_FromStringAndSize(json_string_value(j), (Py_ssize_t)json_string_length(j));
    case JSON_INTEGER:
      return PyLong_FromLongLong(json_integer_value(j));
    case JSON_REAL:
      return PyFloat_FromDouble(json_real_value(j));
    case JSON_TRUE:
      Py_RETURN_TRUE;
    case JSON_FALSE:
      Py_RETURN_FALSE;
    default:
      Py_RETURN_NONE;
  }
}

static PyObject *bytes_or_none(const uint8_t *p, size_t n) {
  if (!p) Py_RETURN_NONE;
  return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
}

static PyObject *hex_or_none(const uint8_t *p, size_t n) {
  if (!p) Py_RETURN_NONE;
  char h[129];
  if (n > 64) n = 64; /* digests only (32 bytes) */
  return PyUnicode_FromStringAndSize(h, (Py_ssize_t)sh_hex_encode(p, n, h));
}

static PyObject *to_python(const sh_attest_result *r) {
  PyObject *mod = PyImport_ImportModule("shield_asgi.attestation"); /* new */
  if (!mod) return NULL;
  PyObject *cls = PyObject_GetAttrString(mod, "AttestationResult"); /* new */
  Py_DECREF(mod);
  if (!cls) return NULL;
  const char *reason = sh_attest_reason_name(r->reason);
  const char *cls_name = sh_attest_reason_class(r->reason);
  PyObject *kw = Py_BuildValue(
      "{s:O, s:s, s:N, s:N, s:d, s:z, s:z, s:z, s:O, s:z, s:N, s:N, s:N, s:N, s:N, s:N, s:N}",
      "verified", r->verified ? Py_True : Py_False, "tee_type", sh_tee_name(r->tee), "measurements",
      from_json(r->measurements), "claims", from_json(r->claims), "timestamp", r->timestamp,
      "error", cls_name, "reason", reason, "message", reason ? r->message : NULL, "debug",
      r->debug ? Py_True : Py_False, "tcb_status", r->tcb_status, "advisories",
      from_json(r->advisories), "public_key", bytes_or_none(r->public_key, r->public_key_len),
      "user_data", bytes_or_none(r->user_data, r->user_data_len), "nonce",
      bytes_or_none(r->nonce, r->nonce_len), "evidence_sha256",
      hex_or_none(r->has_evidence_sha256 ? r->evidence_sha256 : NULL, 32), "raw_evidence",
      bytes_or_none(r->raw_evidence, r->raw_evidence_len), "policy_sha256",
      hex_or_none(r->policy_sha256, 32)); /* N steals; a NULL from a helper fails the build */
  if (!kw) {
    Py_DECREF(cls);
    return NULL;
  }
  PyObject *empty = PyTuple_New(0);
  PyObject *res = empty ? PyObject_Call(cls, empty, kw) : NULL;
  Py_XDECREF(empty);
  Py_DECREF(kw);
  Py_DECREF(cls);
  return res;
}

PyObject *sh_pyshim__attest_result(const void *result) {
  return to_python((const sh_attest_result *)result);
}

static int get_buffer(PyObject *o, Py_buffer *b, const char *what) {
  if (PyObject_GetBuffer(o, b, PyBUF_SIMPLE) < 0) {
    PyErr_Format(PyExc_TypeError, "%s must be bytes-like", what);
    return -1;
  }
  return 0;
}

#define MAX_CERTS 16

static PyObject *py_verify(PyObject *self, PyObject *args, PyObject *kwargs) {
  (void)self;
  static char *kwlist[] = {
      "evidence",        "type",           "at",   "policy", "certs",    "nonce",
      "public_key",      "allow_debug",    "jwks", "issuer", "audience", "collateral",
      "trust_simulated", "simulated_root", NULL};
  PyObject *ev_o, *at_o = Py_None, *pol_o = Py_None, *certs_o = NULL, *nonce_o = Py_None,
                  *pk_o = Py_None, *jwks_o = Py_None, *col_o = Py_None;
  const char *type, *issuer = NULL, *audience = NULL;
  int allow_debug = 0, trust_sim = 0;
  PyObject *simroot_o = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Os|$OOOOOpOzzOpO", kwlist, &ev_o, &type, &at_o,
                                   &pol_o, &certs_o, &nonce_o, &pk_o, &allow_debug, &jwks_o,
                                   &issuer, &audience, &col_o, &trust_sim, &simroot_o))
    return NULL;
  sh_tee tee = sh_tee_from_name(type);
  if (at_o == Py_None) {
    PyErr_SetString(PyExc_TypeError, "verify() needs at= (the verification time is explicit)");
    return NULL;
  }
  double at = PyFloat_AsDouble(at_o);
  if (at == -1.0 && PyErr_Occurred()) return NULL;
  if (at <= 0) {
    PyErr_SetString(PyExc_ValueError, "at must be a positive Unix time");
    return NULL;
  }
  PyObject *ret = NULL, *certs_seq = NULL;
  Py_buffer ev = {0}, nonce = {0}, pk = {0}, jwks = {0}, colb = {0}, simroot = {0},
            certb[MAX_CERTS];
  sh_iovec simroot_b;
  int nb = 0, have_ev = 0, have_nonce = 0, have_pk = 0, have_jwks = 0, have_col = 0;
  uint8_t *col_file = NULL;
  size_t col_file_len = 0;
  uint8_t *decoded = NULL;
  size_t dlen = 0;
  sh_attest_policy *pol = NULL;
  sh_attest_result *r = NULL;
  sh_iovec certs[MAX_CERTS];
  memset(certb, 0, sizeof certb);
  if (PyUnicode_Check(ev_o)) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(ev_o, &n);
    if (!s || !(decoded = sh_attest_decode_input((const uint8_t *)s, (size_t)n, &dlen))) {
      if (!PyErr_Occurred()) PyErr_NoMemory();
      goto out;
    }
  } else {
    if (get_buffer(ev_o, &ev, "evidence") < 0) goto out;
    have_ev = 1;
  }
  if (pol_o != Py_None) {
    Py_ssize_t n;
    const char *s;
    if (PyUnicode_Check(pol_o))
      s = PyUnicode_AsUTF8AndSize(pol_o, &n);
    else if (PyBytes_Check(pol_o)) {
      s = PyBytes_AS_STRING(pol_o);
      n = PyBytes_GET_SIZE(pol_o);
    } else {
      PyErr_SetString(PyExc_TypeError, "policy must be the policy JSON (str or bytes)");
      goto out;
    }
    char eb[256];
    if (!s) goto out;
    if (sh_attest_policy_load(s, (size_t)n, &pol, eb, sizeof eb) < 0) {
      PyErr_SetString(PyExc_ValueError, eb);
      goto out;
    }
  }
  if (certs_o && certs_o != Py_None) {
    if (!(certs_seq = PySequence_Fast(certs_o, "certs must be a sequence of bytes"))) goto out;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(certs_seq);
    if (n > MAX_CERTS) {
      PyErr_SetString(PyExc_ValueError, "too many certificates");
      goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
      if (get_buffer(PySequence_Fast_GET_ITEM(certs_seq, i), &certb[i], "certs[i]") < 0) goto out;
      nb++;
      certs[i] = (sh_iovec){certb[i].buf, (size_t)certb[i].len};
    }
  }
  if (nonce_o != Py_None) {
    if (get_buffer(nonce_o, &nonce, "nonce") < 0) goto out;
    have_nonce = 1;
  }
  if (pk_o != Py_None) {
    if (get_buffer(pk_o, &pk, "public_key") < 0) goto out;
    have_pk = 1;
  }
  const char *jwks_s = NULL;
  Py_ssize_t jwks_n = 0;
  if (PyUnicode_Check(jwks_o)) {
    if (!(jwks_s = PyUnicode_AsUTF8AndSize(jwks_o, &jwks_n))) goto out;
  } else if (jwks_o != Py_None) {
    if (get_buffer(jwks_o, &jwks, "jwks") < 0) goto out;
    have_jwks = 1;
    jwks_s = jwks.buf;
    jwks_n = jwks.len;
  }
  sh_attest_options o;
  memset(&o, 0, sizeof o);
  o.at = (int64_t)at;
  o.policy = pol;
  o.certs = certs;
  o.ncerts = (size_t)nb;
  o.allow_debug = allow_debug;
  o.jwks = (const uint8_t *)jwks_s;
  o.jwks_len = (size_t)jwks_n;
  o.issuer = issuer;
  o.audience = audience;
  if (PyUnicode_Check(col_o)) { /* a path: JSON-form file or PCS response directory */
    char eb[256];
    const char *path = PyUnicode_AsUTF8(col_o);
    if (!path) goto out;
    if (sh_attest_collateral_read(path, &col_file, &col_file_len, eb, sizeof eb) < 0) {
      PyErr_SetString(PyExc_ValueError, eb);
      goto out;
    }
    o.collateral = col_file;
    o.collateral_len = col_file_len;
  } else if (col_o != Py_None) {
    if (get_buffer(col_o, &colb, "collateral") < 0) goto out;
    have_col = 1;
    o.collateral = colb.buf;
    o.collateral_len = (size_t)colb.len;
  }
  o.trust_simulated = trust_sim; /* docs/protocol.md §1.7: simulated evidence only when asked */
  if (simroot_o != Py_None) {
    if (get_buffer(simroot_o, &simroot, "simulated_root") < 0) goto out;
    simroot_b = (sh_iovec){simroot.buf, (size_t)simroot.len};
    o.simulated_root = &simroot_b;
  }
  if (have_nonce) {
    o.nonce = nonce.len ? nonce.buf : (const uint8_t *)"";
    o.nonce_len = (size_t)nonce.len;
  }
  if (have_pk) {
    o.public_key = pk.len ? pk.buf : (const uint8_t *)"";
    o.public_key_len = (size_t)pk.len;
  }
  const uint8_t *evp = decoded ? decoded : ev.buf;
  size_t evl = decoded ? dlen : (size_t)ev.len;
  int rc;
  Py_BEGIN_ALLOW_THREADS rc = sh_attest_verify(evp, evl, tee, &o, &r);
  Py_END_ALLOW_THREADS if (rc < 0 || !r) {
    PyErr_NoMemory();
    goto out;
  }
  ret = to_python(r);
out:
  sh_attest_result_free(r);
  sh_attest_policy_free(pol);
  free(decoded);
  if (have_ev) PyBuffer_Release(&ev);
  if (have_nonce) PyBuffer_Release(&nonce);
  if (have_pk) PyBuffer_Release(&pk);
  if (have_jwks) PyBuffer_Release(&jwks);
  if (have_col) PyBuffer_Release(&colb);
  if (simroot.obj) PyBuffer_Release(&simroot);
  free(col_file);
  for (int i = 0; i < nb; i++)
    PyBuffer_Release(&certb[i]);
  Py_XDECREF(certs_seq);
  return ret;
}

static PyObject *py_binding_digest(PyObject *self, PyObject *args) {
  (void)self;
  Py_buffer n, k = {0};
  PyObject *k_o = Py_None;
  if (!PyArg_ParseTuple(args, "y*|O", &n, &k_o)) return NULL;
  if (k_o != Py_None && get_buffer(k_o, &k, "public_key") < 0) {
    PyBuffer_Release(&n);
    return NULL;
  }
  uint8_t D[64];
  int rc =
      sh_attest_binding_digest(n.buf, (size_t)n.len, k.buf, k_o != Py_None ? (size_t)k.len : 0, D);
  PyBuffer_Release(&n);
  if (k_o != Py_None) PyBuffer_Release(&k);
  if (rc < 0) {
    PyErr_SetString(PyExc_ValueError, "nonce or key longer than 65535 bytes");
    return NULL;
  }
  return PyBytes_FromStringAndSize((const char *)D, 64);
}

/* policy_check(policy, tee_type, measurements_json, claims_json, *, debug=False,
 *              tcb_status=None, advisories_json=None) -> None | (reason, message)
 * The policy step of sh_attest_verify on the facts of a result verified elsewhere
 * (sh_attest_policy_check): the Python API re-checks an app's or a route's policy against what
 * the server verified, with the same evaluator, never re-verifying the evidence. */
static PyObject *py_policy_check(PyObject *self, PyObject *args, PyObject *kw) {
  (void)self;
  static char *kwlist[] = {"policy", "tee_type",   "measurements", "claims",
                           "debug",  "tcb_status", "advisories",   NULL};
  const char *ptext, *tee_name, *mtext, *ctext, *tcb = NULL, *atext = NULL;
  int debug = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "ssss|$pzz", kwlist, &ptext, &tee_name, &mtext, &ctext,
                                   &debug, &tcb, &atext))
    return NULL;
  size_t plen = strlen(ptext);
  sh_attest_policy *pol = NULL;
  char eb[256] = "";
  if (sh_attest_policy_load(ptext, plen, &pol, eb, sizeof eb) < 0) {
    PyErr_Format(PyExc_ValueError, "bad policy: %s", eb);
    return NULL;
  }
  sh_attest_result r;
  memset(&r, 0, sizeof r);
  r.verified = 1;
  r.tee = sh_tee_from_name(tee_name);
  r.debug = debug;
  r.tcb_status = tcb; /* borrowed for the call */
  r.measurements = json_loads(mtext, 0, NULL);
  r.claims = json_loads(ctext, 0, NULL);
  r.advisories = atext ? json_loads(atext, 0, NULL) : json_array();
  PyObject *ret = NULL;
  if (!json_is_object(r.measurements) || !json_is_object(r.claims) ||
      !json_is_array(r.advisories)) {
    PyErr_SetString(PyExc_ValueError,
                    "measurements and claims must be JSON objects, "
                    "advisories a JSON array");
  } else {
    char msg[256];
    sh_attest_reason rs = sh_attest_policy_check(pol, &r, msg, sizeof msg);
    ret = rs == SH_ATTEST_OK ? Py_NewRef(Py_None)
                             : Py_BuildValue("(ss)", sh_attest_reason_name(rs), msg);
  }
  json_decref(r.measurements);
  json_decref(r.claims);
  json_decref(r.advisories);
  sh_attest_policy_free(pol);
  return ret;
}

static PyMethodDef attest_methods[] = {
    {"verify", (PyCFunction)(void (*)(void))py_verify, METH_VARARGS | METH_KEYWORDS,
     "verify(evidence, type, *, at, policy=None, certs=(), nonce=None, public_key=None, "
     "allow_debug=False, jwks=None, issuer=None, audience=None, collateral=None, "
     "trust_simulated=False, simulated_root=None) "
     "-> shield_asgi.AttestationResult"},
    {"policy_check", (PyCFunction)(void (*)(void))py_policy_check, METH_VARARGS | METH_KEYWORDS,
     "policy_check(policy, tee_type, measurements_json, claims_json, *, debug=False, "
     "tcb_status=None, advisories_json=None) -> None | (reason, message)"},
    {"binding_digest", py_binding_digest, METH_VARARGS,
     "binding_digest(nonce, public_key=None) -> 64-byte D of docs/protocol.md §1.2"},
    {NULL, NULL, 0, NULL}};

/* REASONS: {reason: (error class, HTTP status)} in the order of docs/protocol.md §3, from attest/'s
 * table, so the Python package builds its errors from the same table as the native gate. */
static PyObject *reasons_table(void) {
  PyObject *d = PyDict_New(); /* new */
  if (!d) return NULL;
  for (int r = SH_ATTEST_OK + 1; r < SH_ATTEST_REASON_COUNT_; r++) {
    PyObject *v = Py_BuildValue("(si)", sh_attest_reason_class((sh_attest_reason)r),
                                sh_attest_reason_status((sh_attest_reason)r));
    if (!v || PyDict_SetItemString(d, sh_attest_reason_name((sh_attest_reason)r), v) < 0) {
      Py_XDECREF(v);
      Py_DECREF(d);
      return NULL;
    }
    Py_DECREF(v);
  }
  return d;
}

int sh_pyshim__native_attest_add(PyObject *m) {
  if (PyModule_AddFunctions(m, attest_methods) < 0) return -1;
  PyObject *reasons = reasons_table();
  if (!reasons) return -1;
  int rc = PyModule_AddObjectRef(m, "REASONS", reasons);
  Py_DECREF(reasons);
  return rc;
}
