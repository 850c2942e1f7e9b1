/* pyshim/native_attest.h — adds the attestation functions to `shield._native`. */
#ifndef SHIELD_PYSHIM_NATIVE_ATTEST_H
#define SHIELD_PYSHIM_NATIVE_ATTEST_H
#include <Python.h>

/* Adds verify(...) to module m.  Returns 0, or -1 with a Python exception set. */
int sh_py_attest_add(PyObject *m);
/* Adds the client-attestation primitives (native_client.c).  Returns 0 or -1. */
int sh_py_client_add(PyObject *m);

/* A `const sh_attest_result *` -> a new shield.AttestationResult (GIL held), or NULL with a
 * Python exception set.  Also linked into the `shield` binary (scope of gated requests). */
PyObject *sh_py_attest_result(const void *result);
/* attest_scope.c (the `shield` binary): for a request the attestation gate handed on, set
 * scope["state"]["attestation"] (when it carries a result) and
 * scope["extensions"]["shield.attestation"] = {"policy_sha256": hex}.  Returns 0 or -1. */
int sh_py_attest_scope(PyObject *scope, const void *result, const char *mode,
                       const char *session, const char *policy_sha256);

#endif
