/*
 * pyshim/attest_scope.c — what the app sees of a natively verified request (protocol.md §2):
 * scope["state"]["attestation"] = shield.AttestationResult (mode set) and the marker
 * scope["extensions"]["shield.attestation"] = {"policy_sha256": hex}.  Python thread, GIL held.
 */
#include "native_attest.h"

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
    PyObject *r = sh_py_attest_result(result);
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
