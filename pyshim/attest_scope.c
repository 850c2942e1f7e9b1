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

/* This request's AttestationResult: from the session's prototype when there is one. */
static PyObject *request_result(const void *result, const char *session) {
  if (!session) return sh_py_attest_result(result);
  if (!session_cache && !(session_cache = PyDict_New())) return NULL;
  PyObject *proto = PyDict_GetItemString(session_cache, session); /* borrowed */
  if (proto) return clone_result(proto);
  proto = sh_py_attest_result(result);
  if (!proto) return NULL;
  if (PyDict_GET_SIZE(session_cache) >= SESSION_CACHE_MAX) PyDict_Clear(session_cache);
  PyObject *r = NULL;
  if (PyDict_SetItemString(session_cache, session, proto) == 0) r = clone_result(proto);
  Py_DECREF(proto);
  return r;
}

int sh_py_attest_scope(PyObject *scope, const void *result, const char *mode,
                       const char *session, const char *policy_sha256)
{
    PyObject *ext = PyDict_GetItemString(scope, "extensions"); /* borrowed */
    if (ext == NULL) {
        ext = PyDict_New();
        if (ext == NULL || PyDict_SetItemString(scope, "extensions", ext) < 0) {
            Py_XDECREF(ext);
            return -1;
        }
        Py_DECREF(ext); /* the scope holds it */
    }
    PyObject *mark = Py_BuildValue("{s:s}", "policy_sha256", policy_sha256);
    if (mark == NULL || PyDict_SetItemString(ext, "shield.attestation", mark) < 0) {
        Py_XDECREF(mark);
        return -1;
    }
    Py_DECREF(mark);
    if (result == NULL)
        return 0;
    PyObject *state = PyDict_GetItemString(scope, "state"); /* borrowed */
    if (state == NULL) {
        state = PyDict_New();
        if (state == NULL || PyDict_SetItemString(scope, "state", state) < 0) {
            Py_XDECREF(state);
            return -1;
        }
        Py_DECREF(state);
    }
    PyObject *r = request_result(result, session);
    if (r == NULL)
        return -1;
    PyObject *m = mode ? PyUnicode_FromString(mode) : Py_NewRef(Py_None);
    PyObject *sid = session ? PyUnicode_FromString(session) : Py_NewRef(Py_None);
    int rc = (m == NULL || sid == NULL || PyObject_SetAttrString(r, "mode", m) < 0 ||
              PyObject_SetAttrString(r, "session", sid) < 0 ||
              PyDict_SetItemString(state, "attestation", r) < 0) ? -1 : 0;
    Py_XDECREF(m);
    Py_XDECREF(sid);
    Py_DECREF(r);
    return rc;
}
