/*
 * pyshim/native.c — the extension module `shield_asgi._native`: Shield's native code for Python
 * programs running under any ASGI server (uvicorn, granian, hypercorn) or none.  It is built
 * from the same C libraries as the `shield` binary.
 */
#include <Python.h>

#ifdef SHIELD_HAVE_ATTEST
#include "native_attest.h"
#endif

static PyObject *native_versions(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  return Py_BuildValue("{s:s}", "shield", "0.1.0");
}

static PyMethodDef native_methods[] = {
    {"versions", native_versions, METH_NOARGS, "versions of Shield's native parts"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef native_def = {PyModuleDef_HEAD_INIT,
                                        "shield_asgi._native",
                                        "Shield's native code (attestation, crypto)",
                                        0,
                                        native_methods,
                                        NULL,
                                        NULL,
                                        NULL,
                                        NULL};

PyMODINIT_FUNC PyInit__native(void) {
  PyObject *m = PyModule_Create(&native_def);
  if (m == NULL) return NULL;
#ifdef SHIELD_HAVE_ATTEST
  if (sh_pyshim__native_attest_add(m) < 0) {
    Py_DECREF(m);
    return NULL;
  }
#endif
#ifdef SHIELD_HAVE_CLIENT_ATTEST
  if (sh_pyshim__native_client_add(m) < 0) {
    Py_DECREF(m);
    return NULL;
  }
#endif
#ifdef SHIELD_HAVE_PROVIDER
  if (sh_pyshim__native_provider_add(m) < 0) {
    Py_DECREF(m);
    return NULL;
  }
#endif
  return m;
}
