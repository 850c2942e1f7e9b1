/*
 * server/gate.h — private to server/ and pyshim/embed.c: the client-attestation gate
 * (protocol.md §1-§3) that sits in front of a handler.
 *
 * gate_flags.c (in the server library, no attest/ dependency) parses the --attest-* flags;
 * gate.c (its own library, linked with attest/ and crypto/) answers the nonce endpoint,
 * session establishment and attestation errors in C, verifies evidence (header, session and
 * mutual-TLS modes) on a small bounded pthread pool of its own, and hands verified requests to
 * the wrapped handler with sh_request.attest_result set.
 */
#ifndef SHIELD_SERVER_GATE_H
#define SHIELD_SERVER_GATE_H

#include "server.h"

/* Config parsing hook (config.c): returns 1 when `name` is an attestation flag (consumed, *i
 * advanced past a separate value), 0 when it is not, or a negative code with err set. */
int sh_gate_parse_flag(sh_config *cfg, const char *name, const char *value, int argc,
                       char **argv, int *i, sh_error *err);
/* After parsing: --attest-clock needs --dev; the 64 KiB header default when the gate is on.
 * Returns 0 or a negative code with err set. */
int sh_gate_check_flags(sh_config *cfg, sh_error *err);
/* Parse an RFC 3339 UTC time ("2022-10-13T08:58:02Z", fraction and +00:00 accepted).
 * Returns seconds since the epoch, or -1. */
int64_t sh_gate_parse_rfc3339(const char *s);

/* Wrap `inner` (kept; not owned) when cfg->attest_types is set, else return inner itself.
 * Loads the policy, starts the pool.  NULL with err set on a bad policy or types list.
 * Main thread, before sh_server_new. */
sh_handler *sh_gate_wrap(const sh_config *cfg, sh_handler *inner, sh_error *err);
/* After sh_server_run returned and before sh_server_free: stop and join the pool.  A no-op
 * for a handler that is not a gate. */
void sh_gate_shutdown(sh_handler *h);

#endif
