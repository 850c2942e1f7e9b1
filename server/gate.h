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
/* Shared by the --attest-* parsers: a boolean flag must not carry "=value"; a valued one takes
 * "--name=value" (*value already set) or the next argument (consumed), never empty.  0, or
 * SH_EINVAL with err set. */
int sh_gate_flag_bool(const char *name, const char *value, sh_error *err);
int sh_gate_flag_value(const char *name, const char **value, int argc, char **argv, int *i,
                       sh_error *err);
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

/* ---- State store (gate_state.c): consumed nonces/evidence and sessions, in the shared-memory
 * table (workers of one server; calls never block, any thread) or in Redis with --state-url
 * (every replica; calls block for a round trip: pool threads only, each with its own
 * connection).  Calls taking `t` ignore it when Redis is configured.  Failures return -1 with
 * an actionable msg (the gate answers 503 overloaded). */
struct sh_shm_table;
enum { SH_GATE_SESSION_UNKNOWN = -2, SH_GATE_SESSION_EXPIRED = -3 };
typedef struct sh_gate_session {
  uint8_t key[32];  /* the session key (cleansed by the caller after use) */
  int64_t last_t;   /* last accepted proof time, unix ms (-1: none yet) */
  int64_t expires;  /* unix seconds */
  uint8_t tee;      /* sh_attest_tee */
} sh_gate_session;

/* Main thread, before the pool starts: url NULL (the table) or --state-url's value, which is
 * parsed and PINGed so a bad URL or an unreachable Redis stops start-up with a message. */
int sh_gate_state_init(const char *url, sh_error *err);
int sh_gate_state_remote(void);     /* 1 when the state is in Redis */
/* The table key of a nonce, evidence or session name: SHA-256 of data (all zeros, which
 * refuses the request, should the digest fail). */
void sh_gate_table_key(const void *data, size_t len, uint8_t key[32]);
void sh_gate_state_thread_done(void); /* a pool thread exits: close its connection */
/* 1 consumed now, 0 already consumed (replay), -1 store failure. */
int sh_gate_state_consume(struct sh_shm_table *t, const uint8_t key[32], int64_t expires,
                          int64_t now, char *msg, size_t msglen);
/* 1 consumed, 0 not, -1 store failure. */
int sh_gate_state_consumed(struct sh_shm_table *t, const uint8_t key[32], int64_t now, char *msg,
                           size_t msglen);
/* Store a new session (last_t -1) and its result JSON.  0 or -1. */
int sh_gate_state_session_put(struct sh_shm_table *t, const char *sid, const sh_gate_session *s,
                              const char *result_json, int64_t now, char *msg, size_t msglen);
/* 0 with *s (and *result_json, malloc'd, when asked) filled; SH_GATE_SESSION_UNKNOWN,
 * SH_GATE_SESSION_EXPIRED (kept a grace period after expiry), or -1 store failure. */
int sh_gate_state_session_get(struct sh_shm_table *t, const char *sid, sh_gate_session *s,
                              char **result_json, int64_t now, char *msg, size_t msglen);
/* Accept proof time t_ms: 1 when it is after the last accepted one (now recorded), 0 when not,
 * SH_GATE_SESSION_EXPIRED when the session ended meanwhile, -1 store failure. */
int sh_gate_state_session_advance(struct sh_shm_table *t, const char *sid, int64_t t_ms,
                                  int64_t now, char *msg, size_t msglen);

/* ---- What verification needs at run time (issue #5) ----
 * gate_verify_flags.c (server library, called through sh_gate_parse_flag/sh_gate_check_flags):
 * the --attest-maa-*, --attest-gcp-*, --attest-collateral, --attest-fetch/-offline,
 * --attest-cache-dir, --kds-url, --pcs-url, --jwks-url, --fetch-ca, --attest-client-vcek flags
 * and the start-up refusals (a type that could never verify names the flag to add). */
int sh_gate_verify_parse_flag(sh_config *cfg, const char *name, const char *value, int argc,
                              char **argv, int *i, sh_error *err);
int sh_gate_verify_check_flags(sh_config *cfg, sh_error *err);
/* gate_verify.c (gate library): the JWKS files and DCAP collateral read once, the fetcher.
 * New and free on the main thread (sh_gate_wrap, sh_gate_shutdown after the pool joined);
 * sh_gate_verify on pool threads only (it may block on the network): sets o's per-type keys,
 * issuer, audience and collateral for `tee` (an sh_attest_tee), then verifies, fetching what is
 * missing with o->at as the fetch clock.  Returns like sh_attest_verify. */
typedef struct sh_gate_verifier sh_gate_verifier;
struct sh_attest_options;
struct sh_attest_result;
sh_gate_verifier *sh_gate_verifier_new(const sh_config *cfg, sh_error *err);
void sh_gate_verifier_free(sh_gate_verifier *v);
int sh_gate_verify(const sh_gate_verifier *v, const uint8_t *ev, size_t len, int tee,
                   struct sh_attest_options *o, struct sh_attest_result **out);

#endif
