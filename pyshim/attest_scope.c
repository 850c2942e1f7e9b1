/*
 * pyshim/attest_scope.c — what the app sees of a natively verified request (docs/protocol.md §2):
 * scope["state"]["attestation"] = shield_asgi.AttestationResult (mode set) and the marker
 * scope["extensions"]["shield.attestation"] = {"policy_sha256": hex}.  Python thread, GIL held.
 *
 * sh_pyshim__scope_attestation is the only code in pyshim that reads what the attestation gate
 * attached to a request: a change in how the gate hands its result on is a change here only.
 */
#include <Python.h>
#include <structmember.h>

#include <string.h>

#include "gate.h"
#include "native_attest.h"
#include "pystr.h"
#include "scope.h"

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
 * it is emptied (sessions then rebuild once).
 */
#define SESSION_CACHE_MAX 4096

/* The slots' offsets, from the type's member descriptors (once). */
static int load_slots(sh_attest_scope *as, PyTypeObject *tp) {
  if (as->result_type == tp) return 0;
  PyObject *mod = PyImport_ImportModule("shield_asgi.attestation");
  PyObject *f = mod ? PyObject_GetAttrString(mod, "_FIELDS") : NULL;
  Py_XDECREF(mod);
  int n = 0, ok = f && PyTuple_Check(f) && PyTuple_GET_SIZE(f) <= 32;
  for (Py_ssize_t i = 0; ok && i < PyTuple_GET_SIZE(f); i++) {
    PyObject *d = PyObject_GetAttr((PyObject *)tp, PyTuple_GET_ITEM(f, i));
    ok = d && Py_IS_TYPE(d, &PyMemberDescr_Type) &&
         ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
    if (ok) as->slot_offsets[n++] = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_XDECREF(d);
  }
  Py_XDECREF(f);
  if (!ok) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_TypeError,
                      "shield_asgi.attestation.AttestationResult: unexpected slots");
    return -1;
  }
  as->nslots = n;
  as->result_type = tp;
  return 0;
}

/* A copy of proto for one request: same type, every slot, dicts and lists copied. */
static PyObject *clone_result(sh_attest_scope *as, PyObject *proto) {
  PyTypeObject *tp = Py_TYPE(proto);
  if (load_slots(as, tp) < 0) return NULL;
  PyObject *o = tp->tp_alloc(tp, 0);
  if (!o) return NULL;
  for (int i = 0; i < as->nslots; i++) {
    PyObject *v = *(PyObject **)((char *)proto + as->slot_offsets[i]);
    if (!v) continue; /* unset stays unset */
    PyObject *c = PyDict_CheckExact(v)   ? PyDict_Copy(v)
                  : PyList_CheckExact(v) ? PyList_GetSlice(v, 0, PyList_GET_SIZE(v))
                                         : Py_NewRef(v);
    if (!c) {
      Py_DECREF(o);
      return NULL;
    }
    *(PyObject **)((char *)o + as->slot_offsets[i]) = c;
  }
  return o;
}

/* scope["extensions"]["shield.attestation"] for this request: a copy of the policy's marker. */
static PyObject *new_marker(sh_attest_scope *as, const char *policy_sha256) {
  if (!as->marker_proto || strcmp(as->marker_hex, policy_sha256) != 0) {
    PyObject *hex = PyUnicode_FromString(policy_sha256);
    PyObject *d = hex ? PyDict_New() : NULL;
    if (!d || PyDict_SetItem(d, SH_STR(policy_sha256), hex) < 0) {
      Py_XDECREF(hex);
      Py_XDECREF(d);
      return NULL;
    }
    Py_DECREF(hex);
    Py_XSETREF(as->marker_proto, d);
    snprintf(as->marker_hex, sizeof as->marker_hex, "%s", policy_sha256);
  }
  return PyDict_Copy(as->marker_proto);
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
  PyObject *r = sh_pyshim__attest_result(result);
  PyObject *m = r ? PyUnicode_InternFromString(mode) : NULL;
  int rc = m && PyObject_SetAttr(r, SH_STR(mode), m) == 0 &&
           PyObject_SetAttr(r, SH_STR(session), session ? session : Py_None) == 0;
  Py_XDECREF(m);
  if (!rc) Py_CLEAR(r);
  return r;
}

/* This request's AttestationResult: for a session, a copy of the session's prototype. */
static PyObject *request_result(sh_attest_scope *as, const void *result, const char *mode,
                                const char *session) {
  if (!session) return new_result(result, mode, NULL);
  if (!as->session_cache && !(as->session_cache = PyDict_New())) return NULL;
  PyObject *sid = PyUnicode_FromString(session);
  PyObject *proto = sid ? PyDict_GetItemWithError(as->session_cache, sid) : NULL; /* borrowed */
  if (proto) {
    Py_DECREF(sid);
    return clone_result(as, proto);
  }
  PyObject *r = NULL;
  if (sid && !PyErr_Occurred() && (proto = new_result(result, mode, sid))) {
    if (PyDict_GET_SIZE(as->session_cache) >= SESSION_CACHE_MAX) PyDict_Clear(as->session_cache);
    if (PyDict_SetItem(as->session_cache, sid, proto) == 0) r = clone_result(as, proto);
    Py_DECREF(proto);
  }
  Py_XDECREF(sid);
  return r;
}

/* What the gate attached to the request (gate.h): the policy marker is set on every request it
 * handed on, the result (a `const sh_attest_result *`) when evidence was verified. */
int sh_pyshim__scope_attestation(sh_attest_scope *as, PyObject *scope, const sh_request *req) {
  const sh_gate_attestation *a = sh_gate_request_attestation(req);
  if (a == NULL) return 0; /* no gate in front */
  const char *policy_sha256 = a->policy_sha256;
  const void *result = a->result;
  const char *mode = a->mode;
  const char *session = a->session;

  PyObject *ext = scope_dict(scope, SH_STR(extensions));
  PyObject *mark = ext ? new_marker(as, policy_sha256) : NULL;
  int rc = mark ? PyDict_SetItem(ext, SH_STR(ext_attestation), mark) : -1;
  Py_XDECREF(mark);
  if (rc < 0 || result == NULL) return rc;
  PyObject *state = scope_dict(scope, SH_STR(state));
  PyObject *r = state ? request_result(as, result, mode, session) : NULL;
  rc = r ? PyDict_SetItem(state, SH_STR(attestation), r) : -1;
  Py_XDECREF(r);
  return rc;
}

void sh_pyshim__scope_attestation_clear(sh_attest_scope *as) {
  Py_CLEAR(as->session_cache);
  Py_CLEAR(as->marker_proto);
  as->marker_hex[0] = '\0';
  as->result_type = NULL; /* borrowed */
  as->nslots = 0;
}
