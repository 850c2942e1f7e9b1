/* pyshim/native_attest.h — adds the attestation functions to `shield._native`. */
#ifndef SHIELD_PYSHIM_NATIVE_ATTEST_H
#define SHIELD_PYSHIM_NATIVE_ATTEST_H
#include <Python.h>

/* Adds verify(...) to module m.  Returns 0, or -1 with a Python exception set. */
int sh_py_attest_add(PyObject *m);
/* Adds the client-attestation primitives (native_client.c).  Returns 0 or -1. */
int sh_py_client_add(PyObject *m);

#endif
