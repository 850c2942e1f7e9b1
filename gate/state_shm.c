/*
 * gate/state_shm.c — the state store in the server's shared-memory table (state.h): every
 * worker of one server sees the same consumed nonces and sessions.  Calls never block on I/O.
 *
 * Layout (32-byte keys, values of at most SH_SHM_VALUE_MAX bytes):
 *   SHA-256(nonce or evidence digest)                     -> "n", expiring with it
 *   SHA-256("shield-session-v1" 0 sid)                    -> shm_sess (key, last_t, exp, tee)
 *   SHA-256("shield-session-result-v1" 0 sid 0 i), i=0..  -> the result JSON in chunks, the
 *                                                            first starting with its length
 * Consuming is a put-if-absent and advancing a proof time an update under the table's lock
 * (sh_shm_table_update), in place, so accepted proofs cost no entries of their own.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate_internal.h"
#include "state.h"

#define RESULT_CHUNK (SH_SHM_VALUE_MAX - 8)

/* What the table holds per session (fixed size, one value). */
typedef struct shm_sess {
  uint8_t key[32];
  int64_t last_t;
  int64_t expires;
  uint8_t tee;
  uint8_t pad[7];
} shm_sess;

typedef struct shm_store {
  gate_store base;
  sh_shm_table *t;
} shm_store;

static sh_shm_table *table_of(gate_store *s) {
  return ((shm_store *)s)->t;
}

/* The key of a name formatted into m (n from snprintf): a name that did not fit (never from
 * the gate, whose ids are shorter) gets the all-zero key, which no session has. */
static void named_key(const char *m, int n, size_t cap, uint8_t key[SH_SHM_KEY_LEN]) {
  if (n < 0 || (size_t)n >= cap)
    memset(key, 0, SH_SHM_KEY_LEN);
  else
    sh_gate__table_key(m, (size_t)n, key);
}

/* A session request looks its record up, then advances it: the key of the last session id
 * is kept per thread so it is hashed once per request. */
static void sess_key(const char *sid, uint8_t key[SH_SHM_KEY_LEN]) {
  static _Thread_local char last_sid[72];
  static _Thread_local uint8_t last_key[SH_SHM_KEY_LEN];
  if (!last_sid[0] || strcmp(sid, last_sid) != 0) {
    char m[96];
    int n = snprintf(m, sizeof m, "shield-session-v1%c%s", 0, sid);
    named_key(m, n, sizeof m, last_key);
    /* an id too long to keep whole is not kept: a prefix must never match another id */
    if ((size_t)snprintf(last_sid, sizeof last_sid, "%s", sid) >= sizeof last_sid)
      last_sid[0] = '\0';
  }
  memcpy(key, last_key, SH_SHM_KEY_LEN);
}

static void chunk_key(const char *sid, unsigned i, uint8_t key[SH_SHM_KEY_LEN]) {
  char m[96];
  int n = snprintf(m, sizeof m, "shield-session-result-v1%c%s%c%u", 0, sid, 0, i);
  named_key(m, n, sizeof m, key);
}

/* ---- consume (§1.1, §1.3) */

static int shm_consume(gate_store *s, const uint8_t key[32], int64_t expires, int64_t now,
                       char *msg, size_t msglen) {
  int rc = sh_shm_table_put(table_of(s), key, "n", 1, (double)expires, (double)now, 1);
  if (rc == SH_SHM_EXISTS) return 0;
  if (rc < 0) {
    snprintf(msg, msglen, "replay cache full");
    return -1;
  }
  return 1;
}

static int shm_consumed(gate_store *s, const uint8_t key[32], int64_t now, char *msg,
                        size_t msglen) {
  (void)msg;
  (void)msglen;
  char v[8];
  size_t vlen = sizeof v;
  return sh_shm_table_get(table_of(s), key, v, &vlen, NULL, (double)now) == 0;
}

/* ---- sessions (§1.4, 2) */

static int result_put(sh_shm_table *t, const char *sid, const char *json, int64_t until,
                      int64_t now) {
  size_t len = strlen(json), off = 0;
  if (len > SH_GATE_RESULT_MAX) return -1;
  uint8_t buf[SH_SHM_VALUE_MAX], key[SH_SHM_KEY_LEN];
  for (unsigned i = 0; off < len || i == 0; i++) {
    size_t h = 0;
    if (i == 0) { /* chunk 0 starts with the total length */
      uint32_t l = (uint32_t)len;
      memcpy(buf, &l, 4);
      h = 4;
    }
    size_t n = len - off < RESULT_CHUNK - h ? len - off : RESULT_CHUNK - h;
    memcpy(buf + h, json + off, n);
    chunk_key(sid, i, key);
    if (sh_shm_table_put(t, key, buf, h + n, (double)until, (double)now, 0) < 0) return -1;
    off += n;
  }
  return 0;
}

static char *result_get(sh_shm_table *t, const char *sid, int64_t now) {
  uint8_t buf[SH_SHM_VALUE_MAX], key[SH_SHM_KEY_LEN];
  size_t n = sizeof buf;
  chunk_key(sid, 0, key);
  if (sh_shm_table_get(t, key, buf, &n, NULL, (double)now) < 0 || n < 4 || n > sizeof buf)
    return NULL;
  uint32_t len;
  memcpy(&len, buf, 4);
  if (len > SH_GATE_RESULT_MAX) return NULL;
  char *text = malloc(len + 1);
  if (!text) return NULL;
  size_t off = n - 4 < len ? n - 4 : len;
  memcpy(text, buf + 4, off);
  for (unsigned i = 1; off < len; i++) {
    n = sizeof buf;
    chunk_key(sid, i, key);
    if (sh_shm_table_get(t, key, buf, &n, NULL, (double)now) < 0 || n == 0 || n > sizeof buf) {
      free(text);
      return NULL;
    }
    size_t take = len - off < n ? len - off : n;
    memcpy(text + off, buf, take);
    off += take;
  }
  text[len] = '\0';
  return text;
}

static int shm_session_put(gate_store *s, const char *sid, const gate_session *r,
                           const char *result_json, int64_t now, char *msg, size_t msglen) {
  sh_shm_table *t = table_of(s);
  int64_t until = r->expires + SH_GATE_SESSION_GRACE;
  shm_sess rec = {0};
  memcpy(rec.key, r->key, 32);
  rec.last_t = -1;
  rec.expires = r->expires;
  rec.tee = r->tee;
  uint8_t k[SH_SHM_KEY_LEN];
  sess_key(sid, k);
  int rc = sh_shm_table_put(t, k, &rec, sizeof rec, (double)until, (double)now, 1);
  OPENSSL_cleanse(&rec, sizeof rec);
  if (rc < 0 || result_put(t, sid, result_json, until, now) < 0) {
    sh_shm_table_del(t, k);
    snprintf(msg, msglen, "session table full");
    return -1;
  }
  return 0;
}

static int shm_session_get(gate_store *s, const char *sid, gate_session *r, char **result_json,
                           int64_t now, char *msg, size_t msglen) {
  (void)msg;
  (void)msglen;
  sh_shm_table *t = table_of(s);
  shm_sess rec;
  size_t rlen = sizeof rec;
  uint8_t k[SH_SHM_KEY_LEN];
  sess_key(sid, k);
  int rc = SH_GATE_SESSION_UNKNOWN;
  if (sh_shm_table_get(t, k, &rec, &rlen, NULL, (double)now) == 0 && rlen == sizeof rec) {
    memcpy(r->key, rec.key, 32);
    r->last_t = rec.last_t;
    r->expires = rec.expires;
    r->tee = rec.tee;
    rc = 0;
    if (result_json && !(*result_json = result_get(t, sid, now))) rc = SH_GATE_SESSION_UNKNOWN;
  }
  OPENSSL_cleanse(&rec, sizeof rec);
  return rc;
}

typedef struct advance_ctx {
  int64_t t_ms, now;
} advance_ctx;

/* Under the table's lock: last_t := t when t is after it and the session is live. */
static int advance_in_place(void *value, size_t len, void *ctx) {
  const advance_ctx *a = ctx;
  shm_sess rec;
  if (len != sizeof rec) return SH_GATE_SESSION_EXPIRED;
  memcpy(&rec, value, sizeof rec);
  int rc = rec.expires <= a->now ? SH_GATE_SESSION_EXPIRED : a->t_ms > rec.last_t;
  if (rc == 1) {
    rec.last_t = a->t_ms;
    memcpy(value, &rec, sizeof rec);
  }
  OPENSSL_cleanse(&rec, sizeof rec);
  return rc;
}

/* Compare and set under the table's lock (two workers racing with the same t: one wins). */
static int shm_session_advance(gate_store *s, const char *sid, int64_t t_ms, int64_t now, char *msg,
                               size_t msglen) {
  (void)msg;
  (void)msglen;
  uint8_t k[SH_SHM_KEY_LEN];
  sess_key(sid, k);
  advance_ctx a = {t_ms, now};
  int rc = sh_shm_table_update(table_of(s), k, advance_in_place, &a, (double)now);
  return rc == SH_SHM_NOTFOUND ? SH_GATE_SESSION_EXPIRED : rc;
}

static void shm_thread_done(gate_store *s) {
  (void)s;
}

static void shm_free(gate_store *s) {
  free(s); /* the table is the server's or the gate's */
}

static const gate_store_ops shm_ops = {
    .consume = shm_consume,
    .consumed = shm_consumed,
    .session_put = shm_session_put,
    .session_get = shm_session_get,
    .session_advance = shm_session_advance,
    .thread_done = shm_thread_done,
    .free = shm_free,
};

gate_store *sh_gate__store_shm_new(void) {
  shm_store *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->base.ops = &shm_ops;
  s->base.remote = 0;
  return &s->base;
}

void sh_gate__store_shm_set_table(gate_store *s, sh_shm_table *t) {
  ((shm_store *)s)->t = t;
}
