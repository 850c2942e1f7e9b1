/*
 * pyshim/scope.h — private to pyshim: building the ASGI HTTP scope of a request (scope.c) with
 * its extensions: TLS (tls_scope.c) and the natively verified attestation (attest_scope.c).
 * Keys and constant values come from the interned-string table (pystr.h).
 *
 * Python thread only, GIL held.  The builder is owned by the bridge's context (module.c); what
 * it holds is cleared by sh_pyshim__scope_clear before the interpreter finalizes.
 */
#ifndef SHIELD_PYSHIM_SCOPE_H
#define SHIELD_PYSHIM_SCOPE_H

#include <Python.h>

#include "server.h"

/* tls_scope.c: the server certificate as a str, reused while it does not change. */
typedef struct sh_tls_scope {
  PyObject *cert_str; /* owned */
  char *cert_bytes;   /* copy of what cert_str was made from (PyMem) */
  size_t cert_len;
} sh_tls_scope;

/* attest_scope.c: what is reused across attested requests. */
typedef struct sh_attest_scope {
  PyObject *session_cache;     /* session id (str) -> prototype AttestationResult */
  PyTypeObject *result_type;   /* shield_asgi.attestation.AttestationResult (borrowed) */
  Py_ssize_t slot_offsets[32]; /* where its __slots__ live in an instance */
  int nslots;
  PyObject *marker_proto; /* {"policy_sha256": marker_hex}, copied per request */
  char marker_hex[65];
} sh_attest_scope;

typedef struct sh_scope_builder {
  PyObject *asgi;        /* {"version": "3.0", "spec_version": "2.3"}: shared by all scopes */
  PyObject *tmpl;        /* every scope key, constant values set (see scope.c) */
  PyObject *client_host; /* str of the last client host */
  char client_host_c[64];
  PyObject *server_addr; /* (host, port) tuple or None */
  PyObject *root_path;   /* str */
  PyObject *root_path_b; /* bytes */
  PyObject *state;       /* lifespan state dict copied into each scope, or NULL (owned) */
  sh_tls_scope tls;
  sh_attest_scope attest;
} sh_scope_builder;

/* Build what every scope shares.  port: the bound port (sh_server_port).  0 or -1 (exception). */
int sh_pyshim__scope_init(sh_scope_builder *sb, const sh_config *cfg, int port);
/* The scope of request r (new reference), or NULL with an exception set. */
PyObject *sh_pyshim__scope_build(sh_scope_builder *sb, const sh_request *r);
/* The lifespan state (a dict, or None for none) that each scope gets a copy of.  0 or -1. */
int sh_pyshim__scope_set_state(sh_scope_builder *sb, PyObject *state);
void sh_pyshim__scope_clear(sh_scope_builder *sb);

/* tls_scope.c: {"tls": {...}} for a TLS request (new reference, or NULL with an exception). */
PyObject *sh_pyshim__scope_tls(sh_tls_scope *ts, const sh_tls_info *info);
void sh_pyshim__scope_tls_clear(sh_tls_scope *ts);

/* attest_scope.c: for a request the attestation gate handed on, scope["state"]["attestation"]
 * (when it carries a result) and scope["extensions"]["shield.attestation"]; nothing for other
 * requests.  The only place in pyshim that reads the gate's per-request result.  0 or -1. */
int sh_pyshim__scope_attestation(sh_attest_scope *as, PyObject *scope, const sh_request *req);
void sh_pyshim__scope_attestation_clear(sh_attest_scope *as);

#endif
