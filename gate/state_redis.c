/*
 * gate/state_redis.c — the state store in Redis (state.h; --state-url redis://… or
 * unix://…): every replica of a deployment sees the same consumed nonces and sessions.
 *
 * hiredis's synchronous API with connect and command timeouts, one connection per calling
 * thread (hiredis contexts are not thread-safe); calls block for a round trip, so the gate
 * makes them only on its pool threads, never on the I/O thread.  Atomicity: consuming is
 * SET NX; advancing a session's proof time is one Lua script (compare and set), so two
 * workers or replicas racing with the same t cannot both win.
 *
 * Layout (prefix "shield:gate:"): once:<hex key> = "1" with EX; sess:<sid> is a hash
 * {key: 32 raw bytes, last_t, tee, exp, result: JSON} with EXPIREAT exp + grace.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gate_internal.h"
#include "state.h"

#define REDIS_TIMEOUT_MS 1000 /* connect and per-command */
#define REDIS_RETRY_MS 500    /* after a failed connect, fail fast for this long */

typedef struct redis_store {
  gate_store base;
  char host[256]; /* TCP host, or the UNIX socket path when unix_sock */
  int port, unix_sock, db;
  char password[256];
} redis_store;

/* This thread's connection, and the store it belongs to: a thread that served another store
 * before (not the gate's pool threads, which serve one) reconnects. */
static __thread struct {
  const redis_store *owner;
  redisContext *rc;
  int64_t failed_ms;
} tl;

/* ---- URL */

static int parse_db(const char *s, int *db) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *s == '\0' || *end || v < 0 || v > 1000000) return -1;
  *db = (int)v;
  return 0;
}

/* redis://[[user]:password@]host[:port][/db] or unix:///path[?db=N] */
static int parse_url(redis_store *S, const char *url, sh_error *err) {
  S->port = 6379;
  if (strncmp(url, "unix://", 7) == 0) {
    const char *p = url + 7, *q = strchr(p, '?');
    size_t n = q ? (size_t)(q - p) : strlen(p);
    if (n == 0 || p[0] != '/' || n >= sizeof S->host) goto bad;
    memcpy(S->host, p, n);
    S->unix_sock = 1;
    if (q && (strncmp(q, "?db=", 4) != 0 || parse_db(q + 4, &S->db) < 0)) goto bad;
    return 0;
  }
  if (strncmp(url, "redis://", 8) != 0) goto bad;
  const char *p = url + 8, *at = strrchr(p, '@');
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (!colon || (size_t)(at - colon - 1) >= sizeof S->password) goto bad;
    memcpy(S->password, colon + 1, (size_t)(at - colon - 1));
    p = at + 1;
  }
  const char *slash = strchr(p, '/');
  size_t hl = slash ? (size_t)(slash - p) : strlen(p);
  const char *colon = memchr(p, ':', hl);
  size_t hostlen = colon ? (size_t)(colon - p) : hl;
  if (hostlen == 0 || hostlen >= sizeof S->host) goto bad;
  memcpy(S->host, p, hostlen);
  if (colon) {
    char port[8];
    size_t pl = hl - hostlen - 1;
    int v;
    if (pl == 0 || pl >= sizeof port) goto bad;
    memcpy(port, colon + 1, pl);
    port[pl] = '\0';
    if (parse_db(port, &v) < 0 || v < 1 || v > 65535) goto bad;
    S->port = v;
  }
  if (slash && slash[1] && parse_db(slash + 1, &S->db) < 0) goto bad;
  return 0;
bad:
  sh_error_set(err, SH_EINVAL,
               "--state-url: '%s' is not redis://[:password@]host[:port][/db] or "
               "unix:///path/to/redis.sock[?db=N]",
               url);
  return SH_EINVAL;
}

/* ---- the connection */

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void drop_connection(void) {
  if (tl.rc) redisFree(tl.rc);
  tl.rc = NULL;
}

/* A command's reply, or NULL (connection dropped: the next call reconnects).  Error replies
 * are returned (the caller sees REDIS_REPLY_ERROR). */
static redisReply *command_argv(int argc, const char **argv, const size_t *lens) {
  redisReply *r = redisCommandArgv(tl.rc, argc, argv, lens);
  if (!r) drop_connection();
  return r;
}

static int setup_connection(const redis_store *S, char *msg, size_t msglen) {
  if (S->password[0]) {
    const char *a[2] = {"AUTH", S->password};
    size_t l[2] = {4, strlen(S->password)};
    redisReply *r = command_argv(2, a, l);
    int ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok) snprintf(msg, msglen, "AUTH refused: %s", r ? r->str : "no reply");
    freeReplyObject(r);
    if (!ok) return -1;
  }
  if (S->db) {
    char db[16];
    snprintf(db, sizeof db, "%d", S->db);
    const char *a[2] = {"SELECT", db};
    size_t l[2] = {6, strlen(db)};
    redisReply *r = command_argv(2, a, l);
    int ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok) snprintf(msg, msglen, "SELECT %d refused: %s", S->db, r ? r->str : "no reply");
    freeReplyObject(r);
    if (!ok) return -1;
  }
  return 0;
}

/* This thread's connection to S, connecting when needed.  0, or -1 with msg. */
static int connection(const redis_store *S, char *msg, size_t msglen) {
  if (tl.owner != S) {
    drop_connection();
    tl.owner = S;
    tl.failed_ms = 0;
  }
  if (tl.rc) return 0;
  if (tl.failed_ms && mono_ms() - tl.failed_ms < REDIS_RETRY_MS) {
    snprintf(msg, msglen, "the state store (Redis) is unreachable");
    return -1;
  }
  struct timeval tv = {REDIS_TIMEOUT_MS / 1000, (REDIS_TIMEOUT_MS % 1000) * 1000};
  tl.rc = S->unix_sock ? redisConnectUnixWithTimeout(S->host, tv)
                       : redisConnectWithTimeout(S->host, S->port, tv);
  if (!tl.rc || tl.rc->err) {
    snprintf(msg, msglen, "cannot connect to Redis at %s%s%d: %s", S->host, S->unix_sock ? "" : ":",
             S->unix_sock ? 0 : S->port, tl.rc ? tl.rc->errstr : "out of memory");
    drop_connection();
    tl.failed_ms = mono_ms();
    return -1;
  }
  redisSetTimeout(tl.rc, tv);
  if (setup_connection(S, msg, msglen) < 0) {
    drop_connection();
    tl.failed_ms = mono_ms();
    return -1;
  }
  tl.failed_ms = 0;
  return 0;
}

/* Run one command; the reply (never an error reply), or NULL with msg. */
static redisReply *run(const redis_store *S, int argc, const char **argv, const size_t *lens,
                       char *msg, size_t msglen) {
  if (connection(S, msg, msglen) < 0) return NULL;
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

/* ---- consume (§1.1, §1.3) */

#define ONCE_PREFIX "shield:gate:once:"
#define ONCE_KEY_LEN (sizeof ONCE_PREFIX - 1 + 64 + 1)

/* Redis key of a consumed nonce or evidence digest: the prefix and the digest in hex. */
static void once_key(const uint8_t key[32], char out[ONCE_KEY_LEN]) {
  memcpy(out, ONCE_PREFIX, sizeof ONCE_PREFIX - 1);
  sh_hex_encode(key, 32, out + sizeof ONCE_PREFIX - 1);
}

static int redis_consume(gate_store *s, const uint8_t key[32], int64_t expires, int64_t now,
                         char *msg, size_t msglen) {
  char k[ONCE_KEY_LEN], ex[24];
  once_key(key, k);
  snprintf(ex, sizeof ex, "%lld", (long long)(expires > now ? expires - now : 1));
  const char *a[6] = {"SET", k, "1", "NX", "EX", ex};
  size_t l[6] = {3, strlen(k), 1, 2, 2, strlen(ex)};
  redisReply *r = run((redis_store *)s, 6, a, l, msg, msglen);
  if (!r) return -1;
  int won = r->type == REDIS_REPLY_STATUS; /* "OK"; NX lost: nil */
  freeReplyObject(r);
  return won;
}

static int redis_consumed(gate_store *s, const uint8_t key[32], int64_t now, char *msg,
                          size_t msglen) {
  (void)now;
  char k[ONCE_KEY_LEN];
  once_key(key, k);
  const char *a[2] = {"EXISTS", k};
  size_t l[2] = {6, strlen(k)};
  redisReply *r = run((redis_store *)s, 2, a, l, msg, msglen);
  if (!r) return -1;
  int found = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
  freeReplyObject(r);
  return found;
}

/* ---- sessions (§1.4, 2) */

static int redis_session_put(gate_store *s, const char *sid, const gate_session *rec,
                             const char *result_json, int64_t now, char *msg, size_t msglen) {
  (void)now;
  const redis_store *S = (redis_store *)s;
  int64_t until = rec->expires + SH_GATE_SESSION_GRACE;
  char k[64], tee[8], exp[24], at[24];
  snprintf(k, sizeof k, "shield:gate:sess:%s", sid);
  snprintf(tee, sizeof tee, "%u", rec->tee);
  snprintf(exp, sizeof exp, "%lld", (long long)rec->expires);
  snprintf(at, sizeof at, "%lld", (long long)until);
  /* MULTI/EXEC: the hash and its expiry land together (no immortal half-written session) */
  const char *m[1] = {"MULTI"}, *e[1] = {"EXEC"};
  size_t ml[1] = {5}, el[1] = {4};
  const char *h[12] = {"HSET",   k,    "key",    (const char *)rec->key,
                       "last_t", "-1", "tee",    tee,
                       "exp",    exp,  "result", result_json};
  size_t hl[12] = {4, strlen(k),   3, 32,          6, 2,
                   3, strlen(tee), 3, strlen(exp), 6, strlen(result_json)};
  const char *x[3] = {"EXPIREAT", k, at};
  size_t xl[3] = {8, strlen(k), strlen(at)};
  redisReply *r = run(S, 1, m, ml, msg, msglen);
  if (!r) return -1;
  freeReplyObject(r);
  if (!(r = run(S, 12, h, hl, msg, msglen))) return -1;
  freeReplyObject(r);
  if (!(r = run(S, 3, x, xl, msg, msglen))) return -1;
  freeReplyObject(r);
  if (!(r = run(S, 1, e, el, msg, msglen))) return -1;
  int ok = r->type == REDIS_REPLY_ARRAY && r->elements == 2;
  freeReplyObject(r);
  if (!ok) snprintf(msg, msglen, "Redis did not store the session");
  return ok ? 0 : -1;
}

static int redis_session_get(gate_store *s, const char *sid, gate_session *rec, char **result_json,
                             int64_t now, char *msg, size_t msglen) {
  (void)now;
  char k[64];
  snprintf(k, sizeof k, "shield:gate:sess:%s", sid);
  const char *a[7] = {"HMGET", k, "key", "last_t", "tee", "exp", "result"};
  size_t l[7] = {5, strlen(k), 3, 6, 3, 3, 6};
  redisReply *r = run((redis_store *)s, result_json ? 7 : 6, a, l, msg, msglen);
  if (!r) return -1;
  int rc = SH_GATE_SESSION_UNKNOWN;
  if (r->type == REDIS_REPLY_ARRAY && r->elements >= 4 &&
      r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len == 32 &&
      r->element[1]->type == REDIS_REPLY_STRING && r->element[2]->type == REDIS_REPLY_STRING &&
      r->element[3]->type == REDIS_REPLY_STRING) {
    memcpy(rec->key, r->element[0]->str, 32);
    rec->last_t = strtoll(r->element[1]->str, NULL, 10);
    rec->tee = (uint8_t)strtoul(r->element[2]->str, NULL, 10);
    rec->expires = strtoll(r->element[3]->str, NULL, 10);
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

/* last_t := t only if t > last_t and the session is live, atomically.
 * Returns 1 advanced, 0 not after the last one, -2 gone/expired. */
static const char ADVANCE_LUA[] =
    "local v = redis.call('HMGET', KEYS[1], 'last_t', 'exp') "
    "if not v[1] or not v[2] then return -2 end "
    "if tonumber(ARGV[2]) >= tonumber(v[2]) then return -2 end "
    "if tonumber(ARGV[1]) > tonumber(v[1]) then "
    "redis.call('HSET', KEYS[1], 'last_t', ARGV[1]) return 1 end "
    "return 0";

static int redis_session_advance(gate_store *s, const char *sid, int64_t t_ms, int64_t now,
                                 char *msg, size_t msglen) {
  char k[64], ts[24], ns[24];
  snprintf(k, sizeof k, "shield:gate:sess:%s", sid);
  snprintf(ts, sizeof ts, "%lld", (long long)t_ms);
  snprintf(ns, sizeof ns, "%lld", (long long)now);
  const char *a[6] = {"EVAL", ADVANCE_LUA, "1", k, ts, ns};
  size_t l[6] = {4, sizeof ADVANCE_LUA - 1, 1, strlen(k), strlen(ts), strlen(ns)};
  redisReply *r = run((redis_store *)s, 6, a, l, msg, msglen);
  if (!r) return -1;
  long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -2;
  freeReplyObject(r);
  return v == 1 ? 1 : v == 0 ? 0 : SH_GATE_SESSION_EXPIRED;
}

static void redis_thread_done(gate_store *s) {
  if (tl.owner == (redis_store *)s) drop_connection();
}

static void redis_free(gate_store *s) {
  redis_thread_done(s);
  free(s);
}

static const gate_store_ops redis_ops = {
    .consume = redis_consume,
    .consumed = redis_consumed,
    .session_put = redis_session_put,
    .session_get = redis_session_get,
    .session_advance = redis_session_advance,
    .thread_done = redis_thread_done,
    .free = redis_free,
};

gate_store *sh_gate__store_redis_new(const char *url, sh_error *err) {
  redis_store *S = calloc(1, sizeof *S);
  if (!S) {
    sh_error_set(err, SH_ENOMEM, "out of memory");
    return NULL;
  }
  S->base.ops = &redis_ops;
  S->base.remote = 1;
  if (parse_url(S, url, err) < 0) {
    free(S);
    return NULL;
  }
  /* Fail at start-up, not at the first client: a typo in the URL or a down Redis should stop
   * the deploy with a message, not turn into 503s later. */
  char msg[256];
  const char *a[1] = {"PING"};
  size_t l[1] = {4};
  redisReply *r = run(S, 1, a, l, msg, sizeof msg);
  drop_connection(); /* the main thread's connection is not used again */
  tl.owner = NULL;
  if (!r) {
    sh_error_set(err, SH_EINVAL, "--state-url: %.200s", msg);
    free(S);
    return NULL;
  }
  freeReplyObject(r);
  return &S->base;
}
