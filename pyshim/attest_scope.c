/*
 * pyshim/attest_scope.c — what the app sees of a natively verified request (protocol.md §2):
 * scope["state"]["attestation"] = shield.AttestationResult (mode set) and the marker
 * scope["extensions"]["shield.attestation"] = {"policy_sha256": hex}.  Python thread, GIL held.
 */
#include "native_attest.h"

#include <structmember.h>

/*
 * Session requests: one Python result per session, cloned per request.
 *
 * Why: building an AttestationResult from the C result (JSON -> dicts, a kwargs call, the
 * Python __init__) for every request of a session cost more than the rest of the session
 * check together (bench: session/none 0.70x -> 0.91x with it cached).  A session's verified
 * result never changes (the gate refuses the request before Python once the session ends), and
 * a session id is 24 random bytes never reused, so the id is a safe key.  Each request still
 * gets its own object (top-level dicts and lists copied) so an app that mutates its request's
 * result cannot affect another request.  The cache is bounded: past SESSION_CACHE_MAX entries
 * it is emptied (sessions then rebuild once).  Python thread, GIL held.
 */
#define SESSION_CACHE_MAX 4096

static PyObject *session_cache; /* session id (str) -> prototype AttestationResult */
static PyTypeObject *result_type; /* shield.attestation.AttestationResult */
static Py_ssize_t slot_offsets[32]; /* where its __slots__ live in an instance */
static int nslots;

/* The slots' offsets, from the type's member descriptors (once). */
static int load_slots(PyTypeObject *tp) {
  if (result_type == tp) return 0;
  PyObject *mod = PyImport_ImportModule("shield.attestation");
  PyObject *f = mod ? PyObject_GetAttrString(mod, "_FIELDS") : NULL;
  Py_XDECREF(mod);
  int n = 0, ok = f && PyTuple_Check(f) && PyTuple_GET_SIZE(f) <= 32;
  for (Py_ssize_t i = 0; ok && i < PyTuple_GET_SIZE(f); i++) {
    PyObject *d = PyObject_GetAttr((PyObject *)tp, PyTuple_GET_ITEM(f, i));
    ok = d && Py_IS_TYPE(d, &PyMemberDescr_Type) &&
         ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
    if (ok) slot_offsets[n++] = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_XDECREF(d);
  }
  Py_XDECREF(f);
  if (!ok) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_TypeError, "shield.attestation.AttestationResult: unexpected slots");
    return -1;
  }
  nslots = n;
  result_type = tp;
  return 0;
}

/* A copy of proto for one request: same type, every slot, dicts and lists copied. */
static PyObject *clone_result(PyObject *proto) {
  PyTypeObject *tp = Py_TYPE(proto);
  if (load_slots(tp) < 0) return NULL;
  PyObject *o = tp->tp_alloc(tp, 0);
  if (!o) return NULL;
  for (int i = 0; i < nslots; i++) {
    PyObject *v = *(PyObject **)((char *)proto + slot_offsets[i]);
    if (!v) continue; /* unset stays unset */
    PyObject *c = PyDict_CheckExact(v)   ? PyDict_Copy(v)
                  : PyList_CheckExact(v) ? PyList_GetSlice(v, 0, PyList_GET_SIZE(v))
                                         : Py_NewRef(v);
    if (!c) {
      Py_DECREF(o);
      return NULL;
    }
    *(PyObject **)((char *)o + slot_offsets[i]) = c;
  }
  return o;
}

/* Interned once (NGINX Unit style): the keys and attribute names every attested request
 * sets, so no per-request string is built to name them. */
static struct {
  PyObject *extensions, *state, *attestation, *marker, *policy_sha256, *mode, *session;
} AK;
static PyObject *marker_proto; /* {"policy_sha256": hex} of marker_hex, copied per request */
static char marker_hex[65];

static int intern_keys(void) {
  if (AK.session) return 0;
#define I(field, s) \
  if ((AK.field = PyUnicode_InternFromString(s)) == NULL) return -1
  I(extensions, "extensions");
  I(state, "state");
  I(attestation, "attestation");
  I(marker, "shield.attestation");
  I(policy_sha256, "policy_sha256");
  I(mode, "mode");
  I(session, "session");
#undef I
  return 0;
}

/* scope["extensions"]["shield.attestation"] for this request: a copy of the policy's marker. */
static PyObject *new_marker(const char *policy_sha256) {
  if (!marker_proto || strcmp(marker_hex, policy_sha256) != 0) {
    PyObject *hex = PyUnicode_FromString(policy_sha256);
    PyObject *d = hex ? PyDict_New() : NULL;
    if (!d || PyDict_SetItem(d, AK.policy_sha256, hex) < 0) {
      Py_XDECREF(hex);
      Py_XDECREF(d);
      return NULL;
    }
    Py_DECREF(hex);
    Py_XSETREF(marker_proto, d);
    snprintf(marker_hex, sizeof marker_hex, "%s", policy_sha256);
  }
  return PyDict_Copy(marker_proto);
}

/* scope[key] as a dict, made when missing.  Borrowed, or NULL with an exception. */
static PyObject *scope_dict(PyObject *scope, PyObject *key) {
  PyObject *d = PyDict_GetItemWithError(scope, key);
  if (d || PyErr_Occurred()) return d;
  if (!(d = PyDict_New())) return NULL;
  int rc = PyDict_SetItem(scope, key, d);
  Py_DECREF(d); /* the scope holds it */
  return rc < 0 ? NULL : d;
}

/* A new result with its mode and session attributes set (session NULL: None). */
static PyObject *new_result(const void *result, const char *mode, PyObject *session) {
  PyObject *r = sh_py_attest_result(result);
  PyObject *m = r ? PyUnicode_InternFromString(mode) : NULL;
  int rc = m && PyObject_SetAttr(r, AK.mode, m) == 0 &&
           PyObject_SetAttr(r, AK.session, session ? session : Py_None) == 0;
  Py_XDECREF(m);
  if (!rc) Py_CLEAR(r);
  return r;
}

/* This request's AttestationResult: for a session, a copy of the session's prototype. */
static PyObject *request_result(const void *result, const char *mode, const char *session) {
  if (!session) return new_result(result, mode, NULL);
  if (!session_cache && !(session_cache = PyDict_New())) return NULL;
  PyObject *sid = PyUnicode_FromString(session);
  PyObject *proto = sid ? PyDict_GetItemWithError(session_cache, sid) : NULL; /* borrowed */
  if (proto) {
    Py_DECREF(sid);
    return clone_result(proto);
  }
  PyObject *r = NULL;
  if (sid && !PyErr_Occurred() && (proto = new_result(result, mode, sid))) {
    if (PyDict_GET_SIZE(session_cache) >= SESSION_CACHE_MAX) PyDict_Clear(session_cache);
    if (PyDict_SetItem(session_cache, sid, proto) == 0) r = clone_result(proto);
    Py_DECREF(proto);
  }
  Py_XDECREF(sid);
  return r;
}

int sh_py_attest_scope(PyObject *scope, const void *result, const char *mode,
                       const char *session, const char *policy_sha256) {
  if (intern_keys() < 0) return -1;
  PyObject *ext = scope_dict(scope, AK.extensions);
  PyObject *mark = ext ? new_marker(policy_sha256) : NULL;
  int rc = mark ? PyDict_SetItem(ext, AK.marker, mark) : -1;
  Py_XDECREF(mark);
  if (rc < 0 || result == NULL) return rc;
  PyObject *state = scope_dict(scope, AK.state);
  PyObject *r = state ? request_result(result, mode, session) : NULL;
  rc = r ? PyDict_SetItem(state, AK.attestation, r) : -1;
  Py_XDECREF(r);
  return rc;
}
