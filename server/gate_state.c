/*
 * server/gate_state.c — where the attestation gate keeps what must be agreed on by everyone
 * who serves the deployment (protocol.md §1.1, §1.3, §1.4): consumed nonces and evidence
 * (replay), session records (key, last accepted proof time, expiry) and each session's
 * verified result.
 *
 * Two stores behind one set of calls (gate.h, "State store"):
 *   - the shared-memory table (shmtable.c): every worker of one server.  Calls never block on
 *     I/O, so the gate makes them on the I/O thread;
 *   - Redis (--state-url redis://… or unix://…): every replica.  hiredis's synchronous API with
 *     connect and command timeouts, one connection per calling thread (hiredis contexts are not
 *     thread-safe); calls block for a round trip, so the gate makes them only on its pool
 *     threads, never on the libuv I/O thread.
 * Atomicity is the store's: consuming is SET NX (Redis) or put-if-absent (table); advancing a
 * session's proof time is a compare and set — one Lua script in Redis, an update under the
 * lock in the table — so two workers racing with the same t cannot both win (a proof is usable
 * once), and an accepted proof stores nothing of its own (the table cannot fill with them).
 *
 * Why expired sessions are kept a while: a client whose session just ran out should hear
 * session_expired (re-attest) rather than session_unknown (a wrong id), so records outlive their
 * expiry by SESSION_GRACE and carry the expiry themselves.
 *
 * Redis layout (prefix "shield:gate:"): once:<hex key> = "1" with EX; sess:<sid> is a hash
 * {key: 32 raw bytes, last_t, tee, exp, result: JSON} with EXPIREAT exp + grace.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attest.h"
#include "gate.h"
#include "server_internal.h"
#include "shmtable.h"

#define SESSION_GRACE 600          /* seconds an expired session is still recognised */
#define REDIS_TIMEOUT_MS 1000      /* connect and per-command */
#define REDIS_RETRY_MS 500         /* after a failed connect, fail fast for this long */
#define RESULT_CHUNK (SH_SHM_VALUE_MAX - 8)
#define RESULT_MAX (32 * 1024)

/* What the table holds per session (fixed size, one value). */
typedef struct shm_sess {
  uint8_t key[32];
  int64_t last_t;
  int64_t expires;
  uint8_t tee;
  uint8_t pad[7];
} shm_sess;

static struct {
  int remote;
  char host[256];   /* TCP host, or the UNIX socket path when unix */
  int port, unix_sock, db;
  char password[256];
} S;

static __thread redisContext *tl_rc;
static __thread int64_t tl_failed_ms;

/* ---------------------------------------------------------------- URL */

static int parse_db(const char *s, int *db) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *s == '\0' || *end || v < 0 || v > 1000000) return -1;
  *db = (int)v;
  return 0;
}

/* redis://[[user]:password@]host[:port][/db] or unix:///path[?db=N] */
static int parse_url(const char *url, sh_error *err) {
  memset(&S, 0, sizeof S);
  S.port = 6379;
  if (strncmp(url, "unix://", 7) == 0) {
    const char *p = url + 7, *q = strchr(p, '?');
    size_t n = q ? (size_t)(q - p) : strlen(p);
    if (n == 0 || p[0] != '/' || n >= sizeof S.host) goto bad;
    memcpy(S.host, p, n);
    S.unix_sock = 1;
    if (q && (strncmp(q, "?db=", 4) != 0 || parse_db(q + 4, &S.db) < 0)) goto bad;
    S.remote = 1;
    return 0;
  }
  if (strncmp(url, "redis://", 8) != 0) goto bad;
  const char *p = url + 8, *at = strrchr(p, '@');
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (!colon || (size_t)(at - colon - 1) >= sizeof S.password) goto bad;
    memcpy(S.password, colon + 1, (size_t)(at - colon - 1));
    p = at + 1;
  }
  const char *slash = strchr(p, '/');
  size_t hl = slash ? (size_t)(slash - p) : strlen(p);
  const char *colon = memchr(p, ':', hl);
  size_t hostlen = colon ? (size_t)(colon - p) : hl;
  if (hostlen == 0 || hostlen >= sizeof S.host) goto bad;
  memcpy(S.host, p, hostlen);
  if (colon) {
    char port[8];
    size_t pl = hl - hostlen - 1;
    int v;
    if (pl == 0 || pl >= sizeof port) goto bad;
    memcpy(port, colon + 1, pl);
    port[pl] = '\0';
    if (parse_db(port, &v) < 0 || v < 1 || v > 65535) goto bad;
    S.port = v;
  }
  if (slash && slash[1] && parse_db(slash + 1, &S.db) < 0) goto bad;
  S.remote = 1;
  return 0;
bad:
  SH_ERR(err, SH_EINVAL, "--state-url: '%s' is not redis://[:password@]host[:port][/db] or "
         "unix:///path/to/redis.sock[?db=N]", url);
  return SH_EINVAL;
}

/* ---------------------------------------------------------------- Redis connection */

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void drop_connection(void) {
  if (tl_rc) redisFree(tl_rc);
  tl_rc = NULL;
}

/* A command's reply, or NULL (connection dropped: the next call reconnects).  Error replies
 * are returned (the caller sees REDIS_REPLY_ERROR). */
static redisReply *command_argv(int argc, const char **argv, const size_t *lens) {
  redisReply *r = redisCommandArgv(tl_rc, argc, argv, lens);
  if (!r) drop_connection();
  return r;
}

static int setup_connection(char *msg, size_t msglen) {
  if (S.password[0]) {
    const char *a[2] = {"AUTH", S.password};
    size_t l[2] = {4, strlen(S.password)};
    redisReply *r = command_argv(2, a, l);
    int ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok) snprintf(msg, msglen, "AUTH refused: %s", r ? r->str : "no reply");
    freeReplyObject(r);
    if (!ok) return -1;
  }
  if (S.db) {
    char db[16];
    snprintf(db, sizeof db, "%d", S.db);
    const char *a[2] = {"SELECT", db};
    size_t l[2] = {6, strlen(db)};
    redisReply *r = command_argv(2, a, l);
    int ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok) snprintf(msg, msglen, "SELECT %d refused: %s", S.db, r ? r->str : "no reply");
    freeReplyObject(r);
    if (!ok) return -1;
  }
  return 0;
}

/* This thread's connection, connecting when needed.  0, or -1 with msg. */
static int connection(char *msg, size_t msglen) {
  if (tl_rc) return 0;
  if (tl_failed_ms && mono_ms() - tl_failed_ms < REDIS_RETRY_MS) {
    snprintf(msg, msglen, "the state store (Redis) is unreachable");
    return -1;
  }
  struct timeval tv = {REDIS_TIMEOUT_MS / 1000, (REDIS_TIMEOUT_MS % 1000) * 1000};
  tl_rc = S.unix_sock ? redisConnectUnixWithTimeout(S.host, tv)
                      : redisConnectWithTimeout(S.host, S.port, tv);
  if (!tl_rc || tl_rc->err) {
    snprintf(msg, msglen, "cannot connect to Redis at %s%s%d: %s", S.host,
             S.unix_sock ? "" : ":", S.unix_sock ? 0 : S.port,
             tl_rc ? tl_rc->errstr : "out of memory");
    drop_connection();
    tl_failed_ms = mono_ms();
    return -1;
  }
  redisSetTimeout(tl_rc, tv);
  if (setup_connection(msg, msglen) < 0) {
    drop_connection();
    tl_failed_ms = mono_ms();
    return -1;
  }
  tl_failed_ms = 0;
  return 0;
}

/* Run one command; the reply (never an error reply), or NULL with msg. */
static redisReply *run(int argc, const char **argv, const size_t *lens, char *msg,
                       size_t msglen) {
  if (connection(msg, msglen) < 0) return NULL;
  redisReply *r = command_argv(argc, argv, lens);
  if (!r) {
    snprintf(msg, msglen, "Redis did not answer in time or closed the connection");
    return NULL;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    snprintf(msg, msglen, "Redis error: %.150s", r->str);
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

/* ---------------------------------------------------------------- public: lifetime */

int sh_gate_state_init(const char *url, sh_error *err) {
  memset(&S, 0, sizeof S);
  if (!url) return 0;
  int rc = parse_url(url, err);
  if (rc < 0) return rc;
  /* Fail at start-up, not at the first client: a typo in the URL or a down Redis should stop
   * the deploy with a message, not turn into 503s later. */
  char msg[256];
  const char *a[1] = {"PING"};
  size_t l[1] = {4};
  redisReply *r = run(1, a, l, msg, sizeof msg);
  if (!r) {
    SH_ERR(err, SH_EINVAL, "--state-url: %.200s", msg);
    drop_connection();
    return SH_EINVAL;
  }
  freeReplyObject(r);
  drop_connection(); /* the main thread's connection is not used again */
  return 0;
}

int sh_gate_state_remote(void) { return S.remote; }

void sh_gate_state_thread_done(void) { drop_connection(); }

/* ---------------------------------------------------------------- keys */

static void hex(const uint8_t *b, size_t n, char *out) {
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = d[b[i] >> 4];
    out[2 * i + 1] = d[b[i] & 15];
  }
  out[2 * n] = '\0';
}

#define ONCE_PREFIX "shield:gate:once:"
#define ONCE_KEY_LEN (sizeof ONCE_PREFIX - 1 + 64 + 1)

/* Redis key of a consumed nonce or evidence digest: the prefix and the digest in hex. */
static void once_key(const uint8_t key[32], char out[ONCE_KEY_LEN]) {
  memcpy(out, ONCE_PREFIX, sizeof ONCE_PREFIX - 1);
  hex(key, 32, out + sizeof ONCE_PREFIX - 1);
}

/* A table key is a SHA-256.  Should the digest fail (out of memory), the key is all zeros:
 * every such request then meets the same slot and is refused as replayed or unknown (its MAC
 * cannot verify under another session's key) — never let through. */
void sh_gate_table_key(const void *data, size_t len, uint8_t key[SH_SHM_KEY_LEN]) {
  if (sh_attest_sha256(data, len, key) < 0) memset(key, 0, SH_SHM_KEY_LEN);
}

/* The key of a name formatted into m (n from snprintf): a name that did not fit (never from
 * the gate, whose ids are shorter) gets the all-zero key, which no session has. */
static void named_key(const char *m, int n, size_t cap, uint8_t key[SH_SHM_KEY_LEN]) {
  if (n < 0 || (size_t)n >= cap) memset(key, 0, SH_SHM_KEY_LEN);
  else sh_gate_table_key(m, (size_t)n, key);
}

/* A session request looks its record up, then advances it: the key of the last session id
 * is kept per thread so it is hashed once per request. */
static void shm_sess_key(const char *sid, uint8_t key[SH_SHM_KEY_LEN]) {
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

static void shm_chunk_key(const char *sid, unsigned i, uint8_t key[SH_SHM_KEY_LEN]) {
  char m[96];
  int n = snprintf(m, sizeof m, "shield-session-result-v1%c%s%c%u", 0, sid, 0, i);
  named_key(m, n, sizeof m, key);
}

/* ---------------------------------------------------------------- consume (§1.1, §1.3) */

int sh_gate_state_consume(sh_shm_table *t, const uint8_t key[32], int64_t expires, int64_t now,
                          char *msg, size_t msglen) {
  if (!S.remote) {
    int rc = sh_shm_table_put(t, key, "n", 1, (double)expires, (double)now, 1);
    if (rc == SH_SHM_EXISTS) return 0;
    if (rc < 0) {
      snprintf(msg, msglen, "replay cache full");
      return -1;
    }
    return 1;
  }
  char k[ONCE_KEY_LEN], ex[24];
  once_key(key, k);
  snprintf(ex, sizeof ex, "%lld", (long long)(expires > now ? expires - now : 1));
  const char *a[6] = {"SET", k, "1", "NX", "EX", ex};
  size_t l[6] = {3, strlen(k), 1, 2, 2, strlen(ex)};
  redisReply *r = run(6, a, l, msg, msglen);
  if (!r) return -1;
  int won = r->type == REDIS_REPLY_STATUS; /* "OK"; NX lost: nil */
  freeReplyObject(r);
  return won;
}

int sh_gate_state_consumed(sh_shm_table *t, const uint8_t key[32], int64_t now, char *msg,
                           size_t msglen) {
  if (!S.remote) {
    char v[8];
    size_t vlen = sizeof v;
    return sh_shm_table_get(t, key, v, &vlen, NULL, (double)now) == 0;
  }
  char k[ONCE_KEY_LEN];
  once_key(key, k);
  const char *a[2] = {"EXISTS", k};
  size_t l[2] = {6, strlen(k)};
  redisReply *r = run(2, a, l, msg, msglen);
  if (!r) return -1;
  int found = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
  freeReplyObject(r);
  return found;
}

/* ---------------------------------------------------------------- sessions (§1.4, 2) */

static int shm_result_put(sh_shm_table *t, const char *sid, const char *json, int64_t until,
                          int64_t now) {
  size_t len = strlen(json), off = 0;
  if (len > RESULT_MAX) return -1;
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
    shm_chunk_key(sid, i, key);
    if (sh_shm_table_put(t, key, buf, h + n, (double)until, (double)now, 0) < 0) return -1;
    off += n;
  }
  return 0;
}

static char *shm_result_get(sh_shm_table *t, const char *sid, int64_t now) {
  uint8_t buf[SH_SHM_VALUE_MAX], key[SH_SHM_KEY_LEN];
  size_t n = sizeof buf;
  shm_chunk_key(sid, 0, key);
  if (sh_shm_table_get(t, key, buf, &n, NULL, (double)now) < 0 || n < 4 || n > sizeof buf)
    return NULL;
  uint32_t len;
  memcpy(&len, buf, 4);
  if (len > RESULT_MAX) return NULL;
  char *text = malloc(len + 1);
  if (!text) return NULL;
  size_t off = n - 4 < len ? n - 4 : len;
  memcpy(text, buf + 4, off);
  for (unsigned i = 1; off < len; i++) {
    n = sizeof buf;
    shm_chunk_key(sid, i, key);
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

int sh_gate_state_session_put(sh_shm_table *t, const char *sid, const sh_gate_session *s,
                              const char *result_json, int64_t now, char *msg, size_t msglen) {
  int64_t until = s->expires + SESSION_GRACE;
  if (!S.remote) {
    shm_sess rec = {0};
    memcpy(rec.key, s->key, 32);
    rec.last_t = -1;
    rec.expires = s->expires;
    rec.tee = s->tee;
    uint8_t k[SH_SHM_KEY_LEN];
    shm_sess_key(sid, k);
    int rc = sh_shm_table_put(t, k, &rec, sizeof rec, (double)until, (double)now, 1);
    OPENSSL_cleanse(&rec, sizeof rec);
    if (rc < 0 || shm_result_put(t, sid, result_json, until, now) < 0) {
      sh_shm_table_del(t, k);
      snprintf(msg, msglen, "session table full");
      return -1;
    }
    return 0;
  }
  char k[64], tee[8], exp[24], at[24];
  snprintf(k, sizeof k, "shield:gate:sess:%s", sid);
  snprintf(tee, sizeof tee, "%u", s->tee);
  snprintf(exp, sizeof exp, "%lld", (long long)s->expires);
  snprintf(at, sizeof at, "%lld", (long long)until);
  /* MULTI/EXEC: the hash and its expiry land together (no immortal half-written session) */
  const char *m[1] = {"MULTI"}, *e[1] = {"EXEC"};
  size_t ml[1] = {5}, el[1] = {4};
  const char *h[12] = {"HSET", k, "key", (const char *)s->key, "last_t", "-1", "tee", tee,
                       "exp", exp, "result", result_json};
  size_t hl[12] = {4, strlen(k), 3, 32, 6, 2, 3, strlen(tee), 3, strlen(exp), 6,
                   strlen(result_json)};
  const char *x[3] = {"EXPIREAT", k, at};
  size_t xl[3] = {8, strlen(k), strlen(at)};
  redisReply *r = run(1, m, ml, msg, msglen);
  if (!r) return -1;
  freeReplyObject(r);
  if (!(r = run(12, h, hl, msg, msglen))) return -1;
  freeReplyObject(r);
  if (!(r = run(3, x, xl, msg, msglen))) return -1;
  freeReplyObject(r);
  if (!(r = run(1, e, el, msg, msglen))) return -1;
  int ok = r->type == REDIS_REPLY_ARRAY && r->elements == 2;
  freeReplyObject(r);
  if (!ok) snprintf(msg, msglen, "Redis did not store the session");
  return ok ? 0 : -1;
}

static int redis_session_get(const char *sid, sh_gate_session *s, char **result_json,
                             char *msg, size_t msglen) {
  char k[64];
  snprintf(k, sizeof k, "shield:gate:sess:%s", sid);
  const char *a[7] = {"HMGET", k, "key", "last_t", "tee", "exp", "result"};
  size_t l[7] = {5, strlen(k), 3, 6, 3, 3, 6};
  redisReply *r = run(result_json ? 7 : 6, a, l, msg, msglen);
  if (!r) return -1;
  int rc = SH_GATE_SESSION_UNKNOWN;
  if (r->type == REDIS_REPLY_ARRAY && r->elements >= 4 &&
      r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len == 32 &&
      r->element[1]->type == REDIS_REPLY_STRING && r->element[2]->type == REDIS_REPLY_STRING &&
      r->element[3]->type == REDIS_REPLY_STRING) {
    memcpy(s->key, r->element[0]->str, 32);
    s->last_t = strtoll(r->element[1]->str, NULL, 10);
    s->tee = (uint8_t)strtoul(r->element[2]->str, NULL, 10);
    s->expires = strtoll(r->element[3]->str, NULL, 10);
    rc = 0;
    if (result_json) {
      redisReply *j = r->elements >= 5 ? r->element[4] : NULL;
      *result_json = j && j->type == REDIS_REPLY_STRING ? strndup(j->str, j->len) : NULL;
      if (!*result_json) rc = SH_GATE_SESSION_UNKNOWN;
    }
  }
  freeReplyObject(r);
  return rc;
}

int sh_gate_state_session_get(sh_shm_table *t, const char *sid, sh_gate_session *s,
                              char **result_json, int64_t now, char *msg, size_t msglen) {
  if (result_json) *result_json = NULL;
  int rc;
  if (S.remote) {
    rc = redis_session_get(sid, s, result_json, msg, msglen);
  } else {
    shm_sess rec;
    size_t rlen = sizeof rec;
    uint8_t k[SH_SHM_KEY_LEN];
    shm_sess_key(sid, k);
    rc = SH_GATE_SESSION_UNKNOWN;
    if (sh_shm_table_get(t, k, &rec, &rlen, NULL, (double)now) == 0 && rlen == sizeof rec) {
      memcpy(s->key, rec.key, 32);
      s->last_t = rec.last_t;
      s->expires = rec.expires;
      s->tee = rec.tee;
      rc = 0;
      if (result_json && !(*result_json = shm_result_get(t, sid, now)))
        rc = SH_GATE_SESSION_UNKNOWN;
    }
    OPENSSL_cleanse(&rec, sizeof rec);
  }
  if (rc == 0 && s->expires <= now) rc = SH_GATE_SESSION_EXPIRED;
  if (rc != 0 && result_json) {
    free(*result_json);
    *result_json = NULL;
  }
  if (rc != 0) OPENSSL_cleanse(s->key, sizeof s->key);
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

/* Redis: last_t := t only if t > last_t and the session is live, atomically.
 * Returns 1 advanced, 0 not after the last one, -2 gone/expired. */
static const char ADVANCE_LUA[] =
    "local v = redis.call('HMGET', KEYS[1], 'last_t', 'exp') "
    "if not v[1] or not v[2] then return -2 end "
    "if tonumber(ARGV[2]) >= tonumber(v[2]) then return -2 end "
    "if tonumber(ARGV[1]) > tonumber(v[1]) then "
    "redis.call('HSET', KEYS[1], 'last_t', ARGV[1]) return 1 end "
    "return 0";

int sh_gate_state_session_advance(sh_shm_table *t, const char *sid, int64_t t_ms, int64_t now,
                                  char *msg, size_t msglen) {
  if (S.remote) {
    char k[64], ts[24], ns[24];
    snprintf(k, sizeof k, "shield:gate:sess:%s", sid);
    snprintf(ts, sizeof ts, "%lld", (long long)t_ms);
    snprintf(ns, sizeof ns, "%lld", (long long)now);
    const char *a[6] = {"EVAL", ADVANCE_LUA, "1", k, ts, ns};
    size_t l[6] = {4, sizeof ADVANCE_LUA - 1, 1, strlen(k), strlen(ts), strlen(ns)};
    redisReply *r = run(6, a, l, msg, msglen);
    if (!r) return -1;
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -2;
    freeReplyObject(r);
    return v == 1 ? 1 : v == 0 ? 0 : SH_GATE_SESSION_EXPIRED;
  }
  /* The table: compare and set under its lock (two workers racing with the same t: one wins),
   * in place, so accepted proofs cost no entries of their own. */
  uint8_t k[SH_SHM_KEY_LEN];
  shm_sess_key(sid, k);
  advance_ctx a = {t_ms, now};
  int rc = sh_shm_table_update(t, k, advance_in_place, &a, (double)now);
  return rc == SH_SHM_NOTFOUND ? SH_GATE_SESSION_EXPIRED : rc;
}
