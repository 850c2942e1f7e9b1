/*
 * pyshim/pystr.h — private to pyshim: the one table of interned Python strings (NGINX Unit's
 * nxt_python_str table): every scope key, ASGI message key and type, constant scope value,
 * method name and attribute name pyshim uses per request, interned once at start-up so that no
 * request builds a string to name a key, and dict lookups of interned keys compare pointers.
 *
 * Why a process-wide table rather than a field of the bridge's context: these are immutable
 * constants of the interpreter, like Py_None, written once by sh_pyshim__str_init (module
 * import, before any request) and only read afterwards; every layer (scope, TLS, attestation,
 * request objects) reads them, and reaching them through a context pointer would add a load
 * per key on the hot path for nothing.  Python thread, GIL held.
 * (Named pystr, not strings: glibc's <string.h> includes <strings.h>, and this folder is on
 * the compiler's include path.)
 */
#ifndef SHIELD_PYSHIM_PYSTR_H
#define SHIELD_PYSHIM_PYSTR_H

#include <Python.h>

/* X(field, "text") for every interned string. */
#define SH_PYSTR_TABLE(X)                                  \
  /* HTTP scope keys (ASGI 3.0 HTTP connection scope) */   \
  X(type, "type")                                          \
  X(asgi, "asgi")                                          \
  X(http_version, "http_version")                          \
  X(server, "server")                                      \
  X(client, "client")                                      \
  X(scheme, "scheme")                                      \
  X(method, "method")                                      \
  X(root_path, "root_path")                                \
  X(path, "path")                                          \
  X(raw_path, "raw_path")                                  \
  X(query_string, "query_string")                          \
  X(headers, "headers")                                    \
  X(state, "state")                                        \
  X(extensions, "extensions")                              \
  /* constant scope values */                              \
  X(http, "http")                                          \
  X(https, "https")                                        \
  X(v1_0, "1.0")                                           \
  X(v1_1, "1.1")                                           \
  /* ASGI messages: keys and types */                      \
  X(body, "body")                                          \
  X(more_body, "more_body")                                \
  X(status, "status")                                      \
  X(http_request, "http.request")                          \
  X(http_disconnect, "http.disconnect")                    \
  X(http_response_start, "http.response.start")            \
  X(http_response_body, "http.response.body")              \
  /* method names called on futures and coroutines */      \
  X(done, "done")                                          \
  X(set_result, "set_result")                              \
  X(throw_, "throw")                                       \
  X(close, "close")                                        \
  X(join, "join")                                          \
  X(task_name, "shield.request")                           \
  /* ASGI TLS extension 0.2 (tls_scope.c) */               \
  X(tls, "tls")                                            \
  X(server_cert, "server_cert")                            \
  X(client_cert_chain, "client_cert_chain")                \
  X(client_cert_name, "client_cert_name")                  \
  X(client_cert_error, "client_cert_error")                \
  X(tls_version, "tls_version")                            \
  X(cipher_suite, "cipher_suite")                          \
  /* attestation (attest_scope.c, docs/protocol.md §2) */ \
  X(attestation, "attestation")                            \
  X(ext_attestation, "shield.attestation")                 \
  X(policy_sha256, "policy_sha256")                        \
  X(mode, "mode")                                          \
  X(session, "session")

/* The methods scope["method"] takes from the table (others are decoded per request).  A list
 * rather than an extern array: the scope builder's copy is static, so the compiler knows the
 * names' lengths. */
#define SH_PYSTR_METHOD_LIST(X) \
  X("GET")                      \
  X("POST")                     \
  X("PUT")                      \
  X("DELETE")                   \
  X("HEAD")                     \
  X("OPTIONS")                  \
  X("PATCH")                    \
  X("CONNECT")                  \
  X("TRACE")
#define SH_PYSTR_METHODS 9

typedef struct sh_pystr_table {
#define SH_PYSTR_FIELD(field, text) PyObject *field;
  SH_PYSTR_TABLE(SH_PYSTR_FIELD)
#undef SH_PYSTR_FIELD
  PyObject *methods[SH_PYSTR_METHODS]; /* in SH_PYSTR_METHOD_LIST's order */
} sh_pystr_table;

extern sh_pystr_table sh_pyshim__str;

/* The interned str `field` of the table (borrowed). */
#define SH_STR(field) (sh_pyshim__str.field)

/* Intern every string (once; later calls return 0 at once).  0, or -1 with an exception. */
int sh_pyshim__str_init(void);

#endif
