/* pyshim/native_attest.h — private to pyshim: attest/ and crypto/ exposed to Python, for the
 * extension module `shield_asgi._native` (native.c) and, for the result converter, the `shield`
 * binary (attest_scope.c).  GIL held. */
#ifndef SHIELD_PYSHIM_NATIVE_ATTEST_H
#define SHIELD_PYSHIM_NATIVE_ATTEST_H
#include <Python.h>

/* Adds verify(...), policy_check(...), binding_digest(...) and the §3 table REASONS to module
 * m.  0, or -1 with a Python exception set. */
int sh_pyshim__native_attest_add(PyObject *m);
/* Adds the client-attestation primitives (native_client.c).  Returns 0 or -1. */
int sh_pyshim__native_client_add(PyObject *m);
/* Adds the type Provider: this machine's TEE as an evidence source (native_provider.c).
 * Returns 0 or -1. */
int sh_pyshim__native_provider_add(PyObject *m);

/* A `const sh_attest_result *` -> a new shield_asgi.AttestationResult, or NULL with a Python
 * exception set. */
PyObject *sh_pyshim__attest_result(const void *result);

#endif
