/*
 * gate/state.h — private to gate/: where the gate keeps what everyone who serves the
 * deployment must agree on (docs/protocol.md §1.1, §1.3, §1.4): consumed nonces and evidence
 * (replay), session records (key, last accepted proof time, expiry) and each session's
 * verified result.
 *
 * One interface, two stores:
 *   - state_shm.c: the server's shared-memory table (every worker of one server; a single
 *     process uses a table of the gate's own).  Calls never block on I/O, so the gate makes
 *     them where it needs them, on the I/O thread included (remote = 0);
 *   - state_redis.c: Redis (--state-url), every replica.  Calls block for a round trip, so
 *     the gate makes them only on its pool threads (remote = 1), each thread with its own
 *     connection.
 * Atomicity is the store's: consuming is a put-if-absent, advancing a session's proof time a
 * compare-and-set, so two workers or replicas racing with the same nonce or proof cannot both
 * win.  Failures return -1 with a message the gate answers as 503 overloaded.
 *
 * Why expired sessions are kept a while: a client whose session just ran out should hear
 * session_expired (attest again) rather than session_unknown (a wrong id), so records outlive
 * their expiry by SH_GATE_SESSION_GRACE and carry the expiry themselves.
 */
#ifndef SHIELD_GATE_STATE_H
#define SHIELD_GATE_STATE_H

#include <openssl/crypto.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attest.h"
#include "server.h"

#define SH_GATE_SESSION_GRACE 600 /* seconds an expired session is still recognised */

enum { SH_GATE_SESSION_UNKNOWN = -2, SH_GATE_SESSION_EXPIRED = -3 };

typedef struct gate_session {
  uint8_t key[32]; /* the session key (cleansed by the caller after use) */
  int64_t last_t;  /* last accepted proof time, unix ms (-1: none yet) */
  int64_t expires; /* unix seconds */
  uint8_t tee;     /* sh_tee */
} gate_session;

typedef struct gate_store gate_store;

typedef struct gate_store_ops {
  /* 1 consumed now, 0 already consumed (a replay), -1 store failure. */
  int (*consume)(gate_store *s, const uint8_t key[32], int64_t expires, int64_t now, char *msg,
                 size_t msglen);
  /* 1 consumed, 0 not, -1 store failure. */
  int (*consumed)(gate_store *s, const uint8_t key[32], int64_t now, char *msg, size_t msglen);
  /* A new session (last_t -1) and its result JSON: 0 or -1. */
  int (*session_put)(gate_store *s, const char *sid, const gate_session *rec,
                     const char *result_json, int64_t now, char *msg, size_t msglen);
  /* 0 with *rec (and *result_json, malloc'd, when asked) filled; SH_GATE_SESSION_UNKNOWN, or
   * -1 store failure.  Expiry is the caller's (sh_gate__session_get). */
  int (*session_get)(gate_store *s, const char *sid, gate_session *rec, char **result_json,
                     int64_t now, char *msg, size_t msglen);
  /* Accept proof time t_ms: 1 when after the last accepted one (now recorded), 0 when not,
   * SH_GATE_SESSION_EXPIRED when the session ended meanwhile, -1 store failure. */
  int (*session_advance)(gate_store *s, const char *sid, int64_t t_ms, int64_t now, char *msg,
                         size_t msglen);
  void (*thread_done)(gate_store *s); /* a pool thread exits (its connection closes) */
  void (*free)(gate_store *s);
} gate_store_ops;

struct gate_store {
  const gate_store_ops *ops;
  int remote; /* calls block on the network: pool threads only */
};

/* The shared-memory store; its table is set once the server is known (on_start).  NULL when
 * out of memory. */
gate_store *sh_gate__store_shm_new(void);
void sh_gate__store_shm_set_table(gate_store *s, sh_shm_table *t);
/* The Redis store: url is parsed and PINGed, so that a bad URL or an unreachable Redis stops
 * start-up with a message.  NULL with err set. */
gate_store *sh_gate__store_redis_new(const char *url, sh_error *err);

/* A session's record through the store, with its expiry applied: 0, SH_GATE_SESSION_UNKNOWN,
 * SH_GATE_SESSION_EXPIRED (a grace period after its end), or -1 store failure.  On failure
 * nothing is returned (*result_json NULL, the key cleansed). */
static inline int sh_gate__session_get(gate_store *s, const char *sid, gate_session *rec,
                                       char **result_json, int64_t now, char *msg, size_t msglen) {
  if (result_json) *result_json = NULL;
  int rc = s->ops->session_get(s, sid, rec, result_json, now, msg, msglen);
  if (rc == 0 && rec->expires <= now) rc = SH_GATE_SESSION_EXPIRED;
  if (rc != 0) {
    if (result_json) {
      free(*result_json);
      *result_json = NULL;
    }
    OPENSSL_cleanse(rec->key, sizeof rec->key);
  }
  return rc;
}

/* The key of a nonce, evidence or session name in a store: SHA-256 of data.  Should the
 * digest fail (out of memory) the key is all zeros: every such request then meets the same
 * slot and is refused as replayed or unknown (its MAC cannot verify under another session's
 * key), never let through. */
static inline void sh_gate__table_key(const void *data, size_t len, uint8_t key[32]) {
  if (sh_attest_sha256(data, len, key) < 0) memset(key, 0, 32);
}

#endif
