/*
 * server/gate.c — client attestation verified by the server before the app runs
 * (protocol.md §1-§3), as a handler wrapped around another (pyshim's bridge).
 *
 * On the I/O thread, for each request head:
 *   - GET /.well-known/shield/nonce is answered here (nonce from the state secret every
 *     worker shares);
 *   - header mode (X-Attestation-Token/-Type/-Nonce): the cheap checks run here (size cap,
 *     type, base64, nonce MAC/expiry/not consumed), then the verification is queued on a small
 *     bounded pthread pool of the gate's own (not libuv's), with per-client-address and total
 *     caps (503 overloaded + Retry-After beyond them).  The wrapped handler is not called until
 *     the result is known: a failure is answered here with the §3 JSON, a success consumes the
 *     nonce in the shared table (atomic put-if-absent keyed by SHA-256(nonce), so all workers
 *     agree) and hands the request on with sh_request.attest_result set.  The body is not read
 *     before that (the wrapped handler asks for it), so no body event can overtake on_request;
 *   - session mode: POST /.well-known/shield/attest (the body is read here; evidence bound to
 *     the nonce and k, verified on the pool) -> a 32-byte session key sealed to k (HPKE or
 *     RSA-OAEP-256); later requests with X-Attestation-Session + X-Attestation-Proof are
 *     checked here (proof MAC, ±60 s, t after the last accepted one) and handed on with the
 *     session's result; a Content-Digest is checked as the body streams (on a mismatch the app
 *     sees a disconnect and the client a 401).  Session records and a compact copy of the
 *     result live in the shared table, so any worker serves any session;
 *   - mutual TLS: the same POST without "public_key" on a connection with a verified client
 *     certificate binds k = that certificate's SPKI; every later request on the connection is
 *     handed on with the result (mode "mtls");
 *   - a "timestamp" policy (§1.3) lets nitro/maa/gcp header-mode evidence come without a
 *     nonce: the document time must be within max_age, and the signed content is consumed;
 *   - without evidence: 401 missing under --attest-required (unless the path is excluded),
 *     else handed on without a result (but with the extensions marker).
 * Error bodies and messages mirror shield.integrations.confidential (the same protocol for
 * other ASGI servers).  State — consumed nonces and evidence, sessions — goes through
 * gate_state.c: the shared-memory table (the workers of one server) or Redis with --state-url
 * (several replicas).  With Redis every state call is a round trip, so the pool makes them:
 * after a verification (after_verify), and for session requests (session_check, a separate
 * queue served first); with the table they run where they are needed.
 *
 * Threads: pool threads only work on copies held by the job; completions come
 * back through a uv_async (unref'd, so it never keeps the loop alive) and everything touching a
 * sh_request happens on the I/O thread.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <attest.h>
#include <crypto.h>
#include <jansson.h>

#include "gate.h"
#include "server_internal.h"
#include "shmtable.h"

#define NONCE_PATH "/.well-known/shield/nonce"
#define ATTEST_PATH "/.well-known/shield/attest"
#define MAX_EVIDENCE_HEADER (64 * 1024)
#define POOL_THREADS 4
#define MAX_PENDING 64    /* queued + running verifications, per worker */
#define MAX_PER_CLIENT 16 /* of those, from one client address */
#define MAX_STATE_PENDING 1024 /* session requests waiting on Redis, per worker */

enum { K_HEADER = 0, K_ESTABLISH = 1, K_SESSION = 2 };

typedef struct gate_req {
  sh_request *req;
  int kind;                   /* K_*: header mode, POST /attest, a session request */
  struct gate_req *next;      /* pool queue / done list */
  uint8_t *evidence;
  size_t evidence_len;
  sh_attest_tee tee;
  uint8_t nonce[SH_ATTEST_NONCE_LEN];
  int64_t nonce_issued;
  int64_t at;
  sh_attest_result *result;   /* from the pool */
  double seconds;             /* how long the verification took */
  char client[64];
  unsigned disconnected : 1;
  unsigned timestamp : 1;     /* no nonce: timestamp freshness (§1.3), replay by content */
  unsigned pending : 1;       /* on the pool */
  unsigned answered : 1;      /* the gate answered and released it */
  unsigned inner_disconnected : 1;
  unsigned digest_failed : 1;
  unsigned discard : 1;       /* K_ESTABLISH over the size limit: the rest is dropped */
  unsigned mtls : 1;          /* K_ESTABLISH: k is the TLS client certificate's key */
  char mtls_id[72];           /* its connection key ("m:" + hex) */
  char *body;                 /* K_ESTABLISH: the JSON body so far */
  size_t body_len, body_cap;
  uint8_t *pk;                /* K_ESTABLISH: k, DER SPKI */
  sh_attest_bytes certs[3];   /* K_ESTABLISH: "certs" of the body (each ptr owned) */
  size_t ncerts;
  size_t pk_len;
  EVP_MD_CTX *md;             /* K_SESSION with Content-Digest: the body's running hash */
  uint8_t want_digest[64];
  size_t want_len;
  struct sess *sess;          /* K_SESSION: the session's cached result (a reference) */
  /* State-store work done on the pool (gate_state.c): its outcome for the I/O thread */
  int state;                  /* ST_* */
  char state_msg[160];        /* ST_STORE: why */
  char sid[40];               /* K_ESTABLISH: the new session; K_SESSION: the presented one */
  const char *alg;            /* K_ESTABLISH: the session key sealed to k on the pool */
  uint8_t enc[SH_HPKE_ENC_LEN];
  size_t enc_len;
  uint8_t *ct;
  size_t ct_len;
  int64_t proof_t;            /* K_SESSION (Redis): the proof, checked on the pool */
  uint8_t proof_mac[32];
  char *mac_input;            /*   method, target, Content-Digest (copies) */
  size_t method_len, target_len, digest_len;
  const char *proof_error;    /*   the proof's own fault, answered once the session is known */
  unsigned has_digest : 1;    /*   Content-Digest given (want_digest) */
  int need_result;            /*   this worker has no cached result for the session */
  char *result_json;          /*   ... then the session's result as stored */
  uint8_t sess_tee;
  int64_t sess_expires;
} gate_req;

/* Outcomes of the state-store step (gate_req.state). */
enum { ST_NONE = 0, ST_OK, ST_REPLAYED, ST_STORE, ST_SEAL, ST_UNKNOWN, ST_EXPIRED, ST_STALE,
       ST_BADMAC, ST_PROOF };

typedef struct client_count {
  char host[64];
  int n;
} client_count;

static struct gate {
  sh_handler h;
  sh_handler *inner;
  const sh_config *cfg;
  int on;
  unsigned types;             /* bit per sh_attest_tee */
  sh_attest_policy *policy;
  char policy_hex[65];
  sh_attest_cache *cache;
  int timestamp_ok;           /* the policy says "freshness": "timestamp" */
  int unfresh_ok;             /* "freshness": "none" + "allow_unfresh" (development, §1.3) */
  sh_gate_verifier *verifier; /* keys, issuers, collateral, fetcher (gate_verify.c) */
  long test_delay_ms;         /* --dev only: $SHIELD_ATTEST_VERIFY_DELAY_MS (cap tests) */
  int64_t max_age;
  sh_shm_table *own_table;    /* when no supervisor mapped one */
  uint8_t own_secret[32];
  struct sh_server *srv;      /* learnt at the first request (I/O thread) */
  uv_async_t async;
  int async_init;
  /* pool */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  gate_req *qhead, *qtail;    /* to verify */
  gate_req *sqhead, *sqtail;  /* Redis state checks of session requests (served first) */
  gate_req *done;             /* verified, for the I/O thread */
  pthread_t threads[POOL_THREADS];
  int nthreads;
  int stopping;
  /* I/O thread only */
  int pending;
  int state_pending;          /* session requests waiting on Redis (MAX_STATE_PENDING) */
  client_count clients[MAX_PENDING];
} G;

/* ---------------------------------------------------------------- helpers */

static int64_t gate_now(void) {
  return G.cfg->attest_clock ? G.cfg->attest_clock : (int64_t)time(NULL);
}

static const sh_iovec *header(const sh_request *r, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < r->num_headers; i++)
    if (r->headers[i].name.len == n && memcmp(r->headers[i].name.base, name, n) == 0)
      return &r->headers[i].value;
  return NULL;
}

/* base64 or base64url, padding optional, whitespace ignored (like confidential._b64d, which
 * clients rely on; crypto/b64.c's decoder is stricter: canonical, no whitespace), into out.
 * Returns the decoded length, of which at most cap bytes were written, or -1 (bad input). */
static long b64_decode_into(const char *s, size_t len, uint8_t *out, size_t cap) {
  uint32_t acc = 0;
  int bits = 0, n = 0, pad = 0;
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    else if (c == '=') { pad++; continue; }
    else return -1;
    if (pad) return -1; /* data after padding */
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    n++;
    if (bits >= 8) {
      bits -= 8;
      if (o < cap) out[o] = (uint8_t)(acc >> bits);
      o++;
    }
  }
  if (n == 0 || n % 4 == 1 || pad > 2) return -1;
  return (long)o;
}

/* The same, malloc'd (caller frees); NULL on bad input. */
static uint8_t *b64_decode(const char *s, size_t len, size_t *out_len) {
  size_t cap = len / 4 * 3 + 3;
  uint8_t *out = malloc(cap);
  long n = out ? b64_decode_into(s, len, out, cap) : -1; /* cap is never reached */
  if (n < 0) {
    free(out);
    return NULL;
  }
  *out_len = (size_t)n;
  return out;
}

static void b64url(const uint8_t *in, size_t len, char *out) {
  sh_crypto_b64url_encode(in, len, out); /* crypto/b64.c */
}

static void send_json_allow(sh_request *req, int status, json_t *body, const char *reason,
                            const char *allow);

static void send_json(sh_request *req, int status, json_t *body, const char *reason) {
  send_json_allow(req, status, body, reason, NULL);
}

/* RFC 9110 §15.5.6: a 405 carries Allow with the methods the resource supports. */
static void send_405(sh_request *req, const char *allow) {
  send_json_allow(req, 405, json_pack("{s:s}", "error", "method_not_allowed"), NULL, allow);
}

/* The JSON answer (reason: a §3 code, or NULL for a success, which must not be cached) and an
 * optional Allow header, then drop the request. */
static void send_json_allow(sh_request *req, int status, json_t *body, const char *reason,
                            const char *allow) {
  gate_req *gr = req->gate_data;
  if (gr) gr->answered = 1;
  char *text = body ? json_dumps(body, JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII) : NULL;
  json_decref(body);
  if (!text) {
    sh_request_fail(req);
    sh_request_release(req);
    return;
  }
  sh_header h[4];
  size_t n = 0;
  h[n++] = (sh_header){{"content-type", 12}, {"application/json", 16}};
  if (allow) h[n++] = (sh_header){{"allow", 5}, {allow, strlen(allow)}};
  if (reason == NULL) {
    h[n++] = (sh_header){{"cache-control", 13}, {"no-store", 8}};
  } else {
    if (status == 401)
      h[n++] = (sh_header){{"www-authenticate", 16}, {"Attestation realm=\"shield\"", 26}};
    if (strcmp(reason, "overloaded") == 0) h[n++] = (sh_header){{"retry-after", 11}, {"1", 1}};
  }
  if (sh_request_start(req, status, h, n) == 0) sh_request_write(req, text, strlen(text), 0);
  free(text);
  sh_request_release(req);
}

/* Answer a §3 error and drop the request (the wrapped handler never sees it). */
static void send_error(sh_request *req, const char *reason, const char *message) {
  sh_attest_reason code = SH_ATTEST_MALFORMED;
  for (int i = 1; i < SH_ATTEST_REASON_COUNT_; i++) {
    const char *nm = sh_attest_reason_name((sh_attest_reason)i);
    if (nm && strcmp(nm, reason) == 0) code = (sh_attest_reason)i;
  }
  const char *cls = sh_attest_reason_class(code);
  int status = 401;
  if (strcmp(cls, "attestation_policy") == 0) status = 403;
  else if (strcmp(cls, "attestation_unavailable") == 0) status = 503;
  json_t *body = json_pack("{s:s, s:s, s:s}", "error", cls, "reason", reason, "message",
                           (message && *message) ? message : reason);
  sh_log(SH_LOG_INFO, "attestation refused (request %llu, %s): %s: %s",
         (unsigned long long)req->id, req->client_host, reason, message ? message : "");
  send_json(req, status, body, reason);
}

/* The wrapped handler has the request: forward() sets attest_policy_sha256, nothing else. */
static int handed_on(const sh_request *req) { return req->attest_policy_sha256 != NULL; }

static void forward(sh_request *req) {
  req->attest_policy_sha256 = G.policy_hex;
  if (G.inner->on_request) G.inner->on_request(G.inner, req);
}

static int excluded(const sh_request *r) {
  for (int i = 0; i < G.cfg->num_attest_exclude; i++) {
    const char *p = G.cfg->attest_exclude[i];
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--; /* p.rstrip("/") */
    if (n == 1 && p[0] == '/') return 1;
    if (r->path.len == n && memcmp(r->path.base, p, n) == 0) return 1;
    if (r->path.len > n && memcmp(r->path.base, p, n) == 0 && r->path.base[n] == '/') return 1;
  }
  return 0;
}

static int path_is(const sh_request *r, const char *p) {
  return r->path.len == strlen(p) && memcmp(r->path.base, p, r->path.len) == 0;
}

static int method_is(const sh_request *r, const char *m) {
  return r->method.len == strlen(m) && memcmp(r->method.base, m, r->method.len) == 0;
}

static void nonce_key(const uint8_t *nonce, uint8_t key[SH_SHM_KEY_LEN]) {
  sh_gate_table_key(nonce, SH_ATTEST_NONCE_LEN, key);
}

static sh_shm_table *table(void) {
  sh_shm_table *t = G.srv ? sh_server_shared_table(G.srv) : NULL;
  return t ? t : G.own_table;
}

static const uint8_t *secret(size_t *len) {
  const unsigned char *s = G.srv ? sh_server_state_secret(G.srv, len) : NULL;
  if (s && *len >= SH_ATTEST_SECRET_MIN) return s;
  *len = sizeof G.own_secret;
  return G.own_secret;
}

/* ---------------------------------------------------------------- the pool */

static void session_check(gate_req *j);
static void after_verify(gate_req *j);
static int replayed_before_verifying(gate_req *j);

/* Append a job to one of the pool's queues and wake a thread (I/O thread). */
static void push_job(gate_req **head, gate_req **tail, gate_req *gr) {
  pthread_mutex_lock(&G.mu);
  if (*tail) (*tail)->next = gr;
  else *head = gr;
  *tail = gr;
  pthread_cond_signal(&G.cv);
  pthread_mutex_unlock(&G.mu);
}

/* The next job (G.mu held): the state queue first — its jobs are one Redis round trip each and
 * a request waits on them, while the verification queue's are milliseconds of crypto. */
static gate_req *take_job(void) {
  gate_req **head = G.sqhead ? &G.sqhead : &G.qhead, **tail = G.sqhead ? &G.sqtail : &G.qtail;
  gate_req *j = *head;
  *head = j->next;
  if (!*head) *tail = NULL;
  return j;
}

static void *pool_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&G.mu);
  for (;;) {
    while (!G.qhead && !G.sqhead && !G.stopping) pthread_cond_wait(&G.cv, &G.mu);
    if (G.stopping) break;
    gate_req *j = take_job();
    pthread_mutex_unlock(&G.mu);
    if (j->kind == K_SESSION) { /* Redis: the session's state checks (no verification) */
      session_check(j);
      goto done;
    }
    if (replayed_before_verifying(j)) goto done;

    sh_attest_options o = {0};
    o.at = j->at;
    o.policy = G.policy;
    if (!j->timestamp) {
      o.nonce = j->nonce;
      o.nonce_len = SH_ATTEST_NONCE_LEN;
      o.public_key = j->pk ? j->pk : (const uint8_t *)""; /* header mode: k is empty */
      o.public_key_len = j->pk ? j->pk_len : 0;
    }
    o.cache = G.cache;
    o.trust_simulated = G.cfg->trust_simulated;
    o.certs = j->certs; /* the session POST's "certs" (SNP VCEK/VLEK, ASK/ASVK, ARK) */
    o.ncerts = j->ncerts;
    if (G.cfg->attest_clock)
      sh_log(SH_LOG_WARNING, "attestation: verifying with --attest-clock %lld, NOT the real "
             "time (--dev)", (long long)j->at);
    if (G.test_delay_ms > 0) {
      struct timespec d = {G.test_delay_ms / 1000, (G.test_delay_ms % 1000) * 1000000L};
      nanosleep(&d, NULL);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* keys/issuer/audience/collateral of the type, and fetching what is missing (gate_verify.c):
     * the one place the network may be used, on this pool thread, never on the I/O thread */
    if (sh_gate_verify(G.verifier, j->evidence, j->evidence_len, (int)j->tee, &o, &j->result) < 0)
      j->result = NULL;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    j->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    free(j->evidence);
    j->evidence = NULL;
    after_verify(j);

  done:
    pthread_mutex_lock(&G.mu);
    j->next = G.done;
    G.done = j;
    if (!G.stopping) uv_async_send(&G.async);
  }
  pthread_mutex_unlock(&G.mu);
  sh_gate_state_thread_done();
  return NULL;
}

static void client_add(const char *host, int d) {
  client_count *free_slot = NULL;
  for (int i = 0; i < MAX_PENDING; i++) {
    if (G.clients[i].n > 0 && strcmp(G.clients[i].host, host) == 0) {
      G.clients[i].n += d;
      return;
    }
    if (G.clients[i].n == 0 && !free_slot) free_slot = &G.clients[i];
  }
  if (d > 0 && free_slot) {
    snprintf(free_slot->host, sizeof free_slot->host, "%s", host);
    free_slot->n = d;
  }
}

static int client_n(const char *host) {
  for (int i = 0; i < MAX_PENDING; i++)
    if (G.clients[i].n > 0 && strcmp(G.clients[i].host, host) == 0) return G.clients[i].n;
  return 0;
}

static void establish_done(sh_request *req, gate_req *gr, sh_attest_result *r);

/* Metrics (summed over workers by the supervisor): verifications by evidence type, mode and
 * outcome, and their duration.  Ids are looked up once per label set (I/O thread only). */
#define TEE_SLOTS SH_ATTEST_TEE_COUNT_

static void count_verification(const gate_req *gr) {
  static int ids[TEE_SLOTS][2][SH_ATTEST_REASON_COUNT_], hist = -2, init;
  if (!init) {
    for (int t = 0; t < TEE_SLOTS; t++)
      for (int m = 0; m < 2; m++)
        for (int i = 0; i < SH_ATTEST_REASON_COUNT_; i++) ids[t][m][i] = -2;
    init = 1;
  }
  int m = gr->kind == K_ESTABLISH ? 1 : 0;
  int t = (int)gr->tee;
  int i = gr->result ? (int)gr->result->reason : (int)SH_ATTEST_OVERLOADED;
  if (i < 0 || i >= SH_ATTEST_REASON_COUNT_ || t < 0 || t >= TEE_SLOTS) return;
  if (ids[t][m][i] == -2) {
    char labels[128];
    const char *nm = sh_attest_reason_name((sh_attest_reason)i);
    snprintf(labels, sizeof labels, "type=\"%s\",mode=\"%s\",result=\"%s\"",
             sh_attest_tee_name((sh_attest_tee)t), m ? "session" : "header", nm ? nm : "ok");
    ids[t][m][i] = sh_metrics_counter("shield_attest_verifications_total", labels,
                                      "Client attestation verifications by type, mode, outcome");
  }
  sh_metrics_add(ids[t][m][i], 1);
  if (hist == -2)
    hist = sh_metrics_histogram("shield_attest_verify_seconds", "",
                                "Time to verify client attestation evidence");
  sh_metrics_observe(hist, gr->seconds);
}

static void session_checked(sh_request *req, gate_req *gr);

/* The pool's state-store outcome (gate_state.c) answered as §3 says.  1 when it answered. */
static int state_failed(sh_request *req, const gate_req *gr) {
  static const struct {
    const char *reason, *message;
  } answers[] = {
      [ST_SEAL] = {"malformed", "public key is not DER SPKI of an X25519 or RSA (>= 2048) key"},
      [ST_UNKNOWN] = {"session_unknown", "no such session"},
      [ST_EXPIRED] = {"session_expired", "the session has expired: attest again"},
      [ST_BADMAC] = {"proof_invalid", "the proof MAC does not verify"},
      [ST_STALE] = {"proof_invalid", "the proof time is not after the last one"},
  };
  if (gr->state == ST_OK) return 0;
  if (gr->state == ST_REPLAYED)
    send_error(req, "nonce_replayed", gr->timestamp ? "the evidence was already used"
                                                    : "the nonce was already used");
  else if (gr->state == ST_PROOF)
    send_error(req, "proof_invalid", gr->proof_error);
  else if (gr->state < (int)(sizeof answers / sizeof *answers) && answers[gr->state].reason)
    send_error(req, answers[gr->state].reason, answers[gr->state].message);
  else /* ST_STORE (and ST_NONE, which cannot happen) */
    send_error(req, "overloaded", gr->state_msg[0] ? gr->state_msg : "state store unavailable");
  return 1;
}

static void complete(gate_req *gr) {
  sh_request *req = gr->req;
  gr->pending = 0;
  if (gr->kind == K_SESSION) {
    G.state_pending--;
  } else {
    G.pending--;
    client_add(gr->client, -1);
    if (gr->result || gr->state != ST_REPLAYED) count_verification(gr);
  }
  if (gr->disconnected) { /* nobody to answer: drop our reference (on_release frees gr) */
    sh_request_release(req);
    return;
  }
  if (gr->kind == K_SESSION) {
    session_checked(req, gr);
    return;
  }
  sh_attest_result *r = gr->result;
  if (!r && gr->state == ST_REPLAYED) { /* found consumed before verifying (Redis) */
    state_failed(req, gr);
    return;
  }
  if (!r) {
    sh_request_fail(req);
    sh_request_release(req);
    return;
  }
  if (!r->verified) {
    send_error(req, sh_attest_reason_name(r->reason), r->message);
    return;
  }
  /* the pool consumed the nonce (only a successful verification does, §1.1) and, for an
   * establishment, sealed and stored the session: after_verify */
  if (state_failed(req, gr)) return;
  if (gr->kind == K_ESTABLISH) {
    establish_done(req, gr, r);
    return;
  }
  req->attest_result = r;
  req->attest_mode = "header";
  forward(req);
}

static void on_async(uv_async_t *a) {
  (void)a;
  pthread_mutex_lock(&G.mu);
  gate_req *list = G.done;
  G.done = NULL;
  pthread_mutex_unlock(&G.mu);
  /* oldest first */
  gate_req *rev = NULL;
  while (list) {
    gate_req *n = list->next;
    list->next = rev;
    rev = list;
    list = n;
  }
  if (rev && G.srv) sh_server_fired(G.srv); /* on_flush at the end of this iteration */
  while (rev) {
    gate_req *n = rev->next;
    rev->next = NULL;
    complete(rev);
    rev = n;
  }
}

/* ---------------------------------------------------------------- cheap checks (I/O thread)
 * Each answers the §3 error itself and returns a failure value. */

/* X-Attestation-Type / "type" -> an accepted type, or UNKNOWN (answered). */
static sh_attest_tee check_type(sh_request *req, const char *s, size_t len) {
  char msg[160];
  if (!s || len == 0) {
    send_error(req, "malformed", "X-Attestation-Type is required");
    return SH_ATTEST_TEE_UNKNOWN;
  }
  char tname[32];
  sh_attest_tee tee = SH_ATTEST_TEE_UNKNOWN;
  if (len < sizeof tname) {
    memcpy(tname, s, len);
    tname[len] = '\0';
    tee = sh_attest_tee_from_name(tname);
  }
  if (tee == SH_ATTEST_TEE_UNKNOWN) {
    snprintf(msg, sizeof msg, "unknown evidence type '%.*s'", (int)(len > 64 ? 64 : len), s);
    send_error(req, "unsupported_type", msg);
    return SH_ATTEST_TEE_UNKNOWN;
  }
  if (!(G.types & (1u << tee)) && !(tee == SH_ATTEST_TEE_SIMULATED && G.cfg->trust_simulated)) {
    snprintf(msg, sizeof msg, "evidence type %s is not accepted here", sh_attest_tee_name(tee));
    send_error(req, "unsupported_type", msg);
    return SH_ATTEST_TEE_UNKNOWN;
  }
  return tee;
}

/* The presented nonce: ours (MAC), not expired, not consumed.  0, or -1 (answered). */
static int check_nonce(sh_request *req, const char *s, size_t len, uint8_t out[32],
                       int64_t *issued) {
  if (!s || len == 0) {
    send_error(req, "nonce_invalid", "the nonce is missing");
    return -1;
  }
  size_t nlen = 0;
  uint8_t *nonce = b64_decode(s, len, &nlen);
  if (!nonce) {
    send_error(req, "nonce_invalid", "the nonce is not base64url");
    return -1;
  }
  size_t slen;
  const uint8_t *sec = secret(&slen);
  sh_attest_reason bad = sh_attest_nonce_check(sec, slen, nonce, nlen, gate_now(),
                                               SH_ATTEST_NONCE_TTL, issued);
  if (bad == SH_ATTEST_OK && nlen != SH_ATTEST_NONCE_LEN) bad = SH_ATTEST_NONCE_INVALID;
  if (bad != SH_ATTEST_OK) {
    free(nonce);
    send_error(req, sh_attest_reason_name(bad),
               bad == SH_ATTEST_NONCE_INVALID ? "the nonce is not one this deployment issued"
                                              : "the nonce has expired");
    return -1;
  }
  memcpy(out, nonce, SH_ATTEST_NONCE_LEN);
  free(nonce);
  /* A replay is refused before any verification work; with Redis that lookup is a round trip,
   * so the pool makes it (replayed_before_verifying). */
  if (sh_gate_state_remote()) return 0;
  uint8_t key[SH_SHM_KEY_LEN];
  char m[8];
  nonce_key(out, key);
  if (sh_gate_state_consumed(table(), key, gate_now(), m, sizeof m) == 1) {
    send_error(req, "nonce_replayed", "the nonce was already used");
    return -1;
  }
  return 0;
}

/* Evidence as sent -> bytes: JWT types as is, binary types base64/base64url.  NULL: bad. */
static uint8_t *decode_evidence(sh_attest_tee tee, const char *s, size_t len, size_t *out_len) {
  if (tee == SH_ATTEST_TEE_MAA || tee == SH_ATTEST_TEE_GCP) {
    uint8_t *ev = malloc(len ? len : 1);
    if (ev) memcpy(ev, s, len);
    *out_len = len;
    return ev;
  }
  return b64_decode(s, len, out_len);
}

/* Queue gr (filled: evidence, tee, nonce...) on the pool, within the caps.  0, or -1
 * (answered and released: on the I/O thread that frees gr at once, so the caller must not
 * touch gr or req afterwards — true of every send_error/send_json here). */
static int enqueue(sh_request *req, gate_req *gr) {
  if (G.pending >= MAX_PENDING || client_n(req->client_host) >= MAX_PER_CLIENT) {
    send_error(req, "overloaded", "too many verifications in progress");
    return -1;
  }
  gr->at = gate_now();
  gr->pending = 1;
  snprintf(gr->client, sizeof gr->client, "%s", req->client_host);
  G.pending++;
  client_add(gr->client, 1);
  push_job(&G.qhead, &G.qtail, gr);
  return 0;
}

static gate_req *attach(sh_request *req) {
  gate_req *gr = req->gate_data;
  if (gr) return gr;
  gr = calloc(1, sizeof *gr);
  if (!gr) {
    sh_request_fail(req);
    sh_request_release(req);
    return NULL;
  }
  gr->req = req;
  req->gate_data = gr;
  return gr;
}

/* ---------------------------------------------------------------- header mode */

static void header_mode(sh_request *req, const sh_iovec *token) {
  if (token->len > MAX_EVIDENCE_HEADER) {
    send_error(req, "malformed", "evidence header too large");
    return;
  }
  const sh_iovec *type = header(req, "x-attestation-type");
  sh_attest_tee tee = check_type(req, type ? type->base : NULL, type ? type->len : 0);
  if (tee == SH_ATTEST_TEE_UNKNOWN) return;
  const sh_iovec *nh = header(req, "x-attestation-nonce");
  /* Without a nonce only under a "timestamp" policy, for the types it is defined for (§1.3):
   * the document time is checked against max_age and the signed content is consumed.  Under
   * "freshness": "none" (development, allow_unfresh) any type, consumed the same way. */
  int timestamp = (!nh || nh->len == 0) &&
                  ((G.timestamp_ok && (tee == SH_ATTEST_TEE_NITRO || tee == SH_ATTEST_TEE_MAA ||
                                       tee == SH_ATTEST_TEE_GCP)) ||
                   G.unfresh_ok);
  uint8_t nonce[SH_ATTEST_NONCE_LEN];
  int64_t issued = 0;
  if (!timestamp &&
      check_nonce(req, nh ? nh->base : NULL, nh ? nh->len : 0, nonce, &issued) < 0)
    return;
  size_t evlen;
  uint8_t *ev = decode_evidence(tee, token->base, token->len, &evlen);
  if (!ev) {
    send_error(req, "malformed", "evidence is not base64");
    return;
  }
  gate_req *gr = attach(req);
  if (!gr) {
    free(ev);
    return;
  }
  gr->evidence = ev;
  gr->evidence_len = evlen;
  gr->tee = tee;
  if (!timestamp) memcpy(gr->nonce, nonce, SH_ATTEST_NONCE_LEN);
  gr->timestamp = timestamp ? 1 : 0;
  gr->nonce_issued = issued;
  enqueue(req, gr); /* on failure it answered: gr may be gone (released at once) */
}

/* ---------------------------------------------------------------- session mode (§1.4, 2)
 * The session record (key, last accepted t, type) lives in the shared table, so every worker
 * checks proofs; the verification result is cached by the worker that established the
 * session; the others load the compact JSON copy kept with the session record. */

#define SESSION_TTL 3600
#define PROOF_WINDOW_MS 60000
#define MAX_ATTEST_BODY (256 * 1024)
#define SESSION_INFO "shield-session-v1"

typedef struct sess {
  struct sess *next;
  char sid[72];   /* session id, or "m:" + hex of the mutual-TLS connection key */
  char *tcb;      /* tcb_status of a result loaded from the shared table (owned) */
  sh_attest_result *r;
  int64_t expires;
  int refs; /* 1 for the cache + 1 per request handed on with it */
} sess;

static sess *sess_buckets[256]; /* I/O thread only */
static size_t sess_n;            /* cached entries (bounded by MAX_SESSIONS) */
#define MAX_SESSIONS 16384

static unsigned sess_bucket(const char *sid) {
  unsigned h = 2166136261u;
  for (; *sid; sid++) h = (h ^ (unsigned char)*sid) * 16777619u;
  return h & 255;
}

static void sess_unref(sess *s) {
  if (s && --s->refs == 0) {
    sh_attest_result_free(s->r);
    free(s->tcb);
    free(s);
  }
}

static sess *sess_find(const char *sid, int64_t now) {
  sess **pp = &sess_buckets[sess_bucket(sid)];
  while (*pp) {
    sess *s = *pp;
    if (s->expires <= now) { /* sweep as we go */
      *pp = s->next;
      sess_n--;
      sess_unref(s);
      continue;
    }
    if (strcmp(s->sid, sid) == 0) return s;
    pp = &s->next;
  }
  return NULL;
}

static sess *sess_add(const char *sid, sh_attest_result *r, int64_t expires) {
  if (sess_n >= MAX_SESSIONS) return NULL;
  sess *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  snprintf(s->sid, sizeof s->sid, "%s", sid);
  s->r = r;
  s->expires = expires;
  s->refs = 1;
  sess_n++;
  unsigned b = sess_bucket(sid);
  s->next = sess_buckets[b];
  sess_buckets[b] = s;
  return s;
}

static int64_t now_ms(void) {
  if (G.cfg->attest_clock) return G.cfg->attest_clock * 1000;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Mutual TLS (§1.4, 3): the connection is the session.  Connections never move between
 * workers, so the attested state is this worker's memory, keyed by the client key and the
 * connection (a reused address under the same key is the same key holder). */
static int mtls_count; /* attested connections ever: skips the lookup while none */

static int mtls_id(const sh_request *req, char out[72]) {
  const sh_tls_info *ti = req->tls ? req->tls_info : NULL;
  if (!ti || ti->client_spki_der.len == 0 || ti->client_verify_error != NULL) return -1;
  uint8_t d[32];
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  uintptr_t ids[2] = {(uintptr_t)((const sh_req *)req)->conn, (uintptr_t)ti};
  int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
           EVP_DigestUpdate(c, "shield-mtls-v1", 15) == 1 &&
           EVP_DigestUpdate(c, ti->client_spki_der.base, ti->client_spki_der.len) == 1 &&
           EVP_DigestUpdate(c, ids, sizeof ids) == 1 && EVP_DigestFinal_ex(c, d, NULL) == 1;
  EVP_MD_CTX_free(c);
  if (!ok) return -1;
  out[0] = 'm';
  out[1] = ':';
  for (int i = 0; i < 32; i++) snprintf(out + 2 + 2 * i, 3, "%02x", d[i]);
  return 0;
}

/* The session's result for the other workers and replicas: compact JSON kept with the session
 * record by the state store (what a request handed on needs; no per-establishment bytes). */
#define RESULT_MAX (32 * 1024)

static char *result_to_json(const sh_attest_result *r) {
  char hex[65];
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", r->evidence_sha256[i]);
  json_t *o = json_pack("{s:O?, s:O?, s:O?, s:b, s:s?, s:s?, s:f}", "m", r->measurements,
                        "c", r->claims, "a", r->advisories, "d", r->debug, "s", r->tcb_status,
                        "e", r->has_evidence_sha256 ? hex : NULL, "t", r->timestamp);
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (text && strlen(text) > RESULT_MAX) {
    free(text);
    text = NULL;
  }
  return text;
}

/* A stored result as a new verified result of type `tee`, or NULL. */
static sh_attest_result *result_from_json(const char *text, uint8_t tee, char **tcb) {
  json_error_t je;
  json_t *o = text ? json_loads(text, 0, &je) : NULL;
  if (!json_is_object(o)) {
    json_decref(o);
    return NULL;
  }
  sh_attest_result *r = calloc(1, sizeof *r);
  if (!r) {
    json_decref(o);
    return NULL;
  }
  r->verified = 1;
  r->tee = (sh_attest_tee)tee;
  json_t *m = json_object_get(o, "m"), *c = json_object_get(o, "c"),
         *a = json_object_get(o, "a");
  r->measurements = json_is_object(m) ? json_incref(m) : json_object();
  r->claims = json_is_object(c) ? json_incref(c) : json_object();
  r->advisories = json_is_array(a) ? json_incref(a) : json_array();
  r->debug = json_is_true(json_object_get(o, "d"));
  r->timestamp = json_real_value(json_object_get(o, "t"));
  const char *s = json_string_value(json_object_get(o, "s"));
  if (s) r->tcb_status = *tcb = strdup(s);
  const char *e = json_string_value(json_object_get(o, "e"));
  if (e && strlen(e) == 64) {
    for (int i = 0; i < 32; i++) {
      unsigned v;
      if (sscanf(e + 2 * i, "%2x", &v) != 1) break;
      r->evidence_sha256[i] = (uint8_t)v;
    }
    r->has_evidence_sha256 = 1;
  }
  memcpy(r->policy_sha256, sh_attest_policy_sha256(G.policy), 32);
  json_decref(o);
  return r;
}

/* A verified establishment: seal a fresh session key to k, store the session, answer. */
static void strip_result(sh_attest_result *r) {
  /* what later requests see: no per-establishment bytes (as the Python middleware) */
  free(r->public_key);
  free(r->user_data);
  free(r->nonce);
  free(r->raw_evidence);
  r->public_key = r->user_data = r->nonce = r->raw_evidence = NULL;
  r->public_key_len = r->user_data_len = r->nonce_len = r->raw_evidence_len = 0;
}

/* ---- on the pool, after a verification (pool_main) */

/* Redis: a consumed nonce is refused before the verification work (the table does this on the
 * I/O thread, check_nonce).  1 when refused. */
static int replayed_before_verifying(gate_req *j) {
  if (!sh_gate_state_remote() || j->timestamp) return 0;
  uint8_t key[SH_SHM_KEY_LEN];
  nonce_key(j->nonce, key);
  if (sh_gate_state_consumed(NULL, key, j->at, j->state_msg, sizeof j->state_msg) != 1) return 0;
  j->state = ST_REPLAYED;
  return 1;
}

/* A fresh session key sealed to k (HPKE or RSA-OAEP, §1.4) into j->alg/enc/ct.  0 or -1. */
static int seal_session_key(gate_req *j, uint8_t skey[32]) {
  if (RAND_bytes(skey, 32) != 1) return -1;
  return sh_crypto_seal_to_spki(j->pk, j->pk_len, (const uint8_t *)SESSION_INFO,
                                strlen(SESSION_INFO), skey, 32, &j->alg, j->enc, &j->enc_len,
                                &j->ct, &j->ct_len);
}

/* Store the new session (a random id) with its key and result.  0 or -1 (j->state set). */
static int store_session(gate_req *j, const uint8_t skey[32]) {
  uint8_t sidb[24];
  if (RAND_bytes(sidb, sizeof sidb) != 1) {
    snprintf(j->state_msg, sizeof j->state_msg, "no randomness for a session id");
    return -1;
  }
  b64url(sidb, sizeof sidb, j->sid);
  strip_result(j->result);
  char *json = result_to_json(j->result);
  if (!json) {
    snprintf(j->state_msg, sizeof j->state_msg, "the verification result is too large");
    return -1;
  }
  sh_gate_session rec = {.last_t = -1, .expires = j->at + SESSION_TTL,
                         .tee = (uint8_t)j->result->tee};
  memcpy(rec.key, skey, 32);
  int rc = sh_gate_state_session_put(table(), j->sid, &rec, json, j->at, j->state_msg,
                                     sizeof j->state_msg);
  OPENSSL_cleanse(&rec, sizeof rec);
  free(json);
  return rc;
}

/* After a successful verification: consume the nonce (or, under a timestamp policy, the signed
 * content, §1.3) — of two racing requests exactly one wins here, atomically in the store — and
 * for an establishment seal a new session key to k (before consuming: a bad k must not burn the
 * nonce) and store the session.  The I/O thread answers from j->state (complete). */
static void after_verify(gate_req *j) {
  sh_attest_result *r = j->result;
  if (!r || !r->verified) return;
  uint8_t key[SH_SHM_KEY_LEN], skey[32];
  int64_t expires;
  if (j->timestamp) {
    if (!r->has_evidence_sha256) {
      r->verified = 0;
      r->reason = SH_ATTEST_MALFORMED;
      snprintf(r->message, sizeof r->message, "no signed content to key the replay cache");
      return;
    }
    uint8_t m[18 + 32];
    memcpy(m, "shield-evidence-v1", 18);
    memcpy(m + 18, r->evidence_sha256, 32);
    sh_gate_table_key(m, sizeof m, key);
    expires = j->at + G.max_age + 10;
  } else {
    nonce_key(j->nonce, key);
    expires = (j->nonce_issued > j->at ? j->nonce_issued : j->at) + SH_ATTEST_NONCE_TTL + 10;
  }
  int sealing = j->kind == K_ESTABLISH && !j->mtls;
  if (sealing && seal_session_key(j, skey) < 0) {
    j->state = ST_SEAL;
    return;
  }
  int rc = sh_gate_state_consume(table(), key, expires, j->at, j->state_msg,
                                 sizeof j->state_msg);
  if (rc == 1 && sealing && store_session(j, skey) < 0) rc = -1;
  OPENSSL_cleanse(skey, sizeof skey);
  j->state = rc == 1 ? ST_OK : rc == 0 ? ST_REPLAYED : ST_STORE;
}

/* ---- back on the I/O thread */

static void establish_done(sh_request *req, gate_req *gr, sh_attest_result *r) {
  if (sess_n >= MAX_SESSIONS) {
    send_error(req, "overloaded", "too many sessions");
    return;
  }
  int64_t now = gate_now();
  if (gr->mtls) {
    strip_result(r);
    if (!sess_add(gr->mtls_id, r, now + SESSION_TTL)) {
      sh_request_fail(req);
      sh_request_release(req);
      return;
    }
    gr->result = NULL;
    mtls_count++;
    send_json(req, 200, json_pack("{s:s, s:i}", "mode", "mtls", "expires_in", SESSION_TTL),
              NULL);
    return;
  }
  if (sess_add(gr->sid, r, gr->at + SESSION_TTL)) gr->result = NULL; /* the cache owns it */
  char *sealed = malloc(gr->ct_len * 4 / 3 + 4), encs[64];
  if (!sealed) {
    sh_request_fail(req);
    sh_request_release(req);
    return;
  }
  b64url(gr->ct, gr->ct_len, sealed);
  json_t *out = json_pack("{s:s, s:i, s:s, s:s}", "session", gr->sid, "expires_in",
                          SESSION_TTL, "alg", gr->alg, "sealed_key", sealed);
  free(sealed);
  if (out && gr->enc_len) {
    b64url(gr->enc, gr->enc_len, encs);
    json_object_set_new(out, "enc", json_string(encs));
  }
  send_json(req, 200, out, NULL);
}

/* The establishment body's optional "certs" (protocol.md §1.4, 2: the SNP certificates the
 * report does not carry, as in the §1.5 CBOR bundle): {"vcek"|"vlek", "ask"|"asvk", "ark"} ->
 * base64url DER, at most one of each pair.  0 (absent is fine), or -1 when malformed. */
static int take_certs(gate_req *gr, json_t *certs) {
  if (!certs) return 0;
  if (!json_is_object(certs) || json_object_size(certs) > 3) return -1;
  static const char *const names[] = {"vcek", "vlek", "ask", "asvk", "ark"};
  const char *name;
  json_t *v;
  json_object_foreach(certs, name, v) {
    int known = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
      if (strcmp(name, names[i]) == 0) known = 1;
    if (!known || !json_is_string(v) || gr->ncerts >= 3) return -1;
    size_t n = 0;
    uint8_t *der = b64_decode(json_string_value(v), json_string_length(v), &n);
    if (!der) return -1;
    gr->certs[gr->ncerts++] = (sh_attest_bytes){.ptr = der, .len = n};
  }
  return 0;
}

/* POST /.well-known/shield/attest with the whole body read: parse, check, queue. */
static void establish_parse(sh_request *req, gate_req *gr) {
  json_error_t je;
  json_t *doc = json_loadb(gr->body ? gr->body : "", gr->body_len, 0, &je);
  free(gr->body);
  gr->body = NULL;
  if (!json_is_object(doc)) {
    json_decref(doc);
    send_error(req, "malformed", "the body is not a JSON object");
    return;
  }
  json_t *t = json_object_get(doc, "type");
  sh_attest_tee tee;
  if (t && !json_is_string(t)) {
    send_error(req, "unsupported_type", "unknown evidence type");
    json_decref(doc);
    return;
  }
  tee = check_type(req, t ? json_string_value(t) : NULL, t ? json_string_length(t) : 0);
  if (tee == SH_ATTEST_TEE_UNKNOWN) {
    json_decref(doc);
    return;
  }
  json_t *n = json_object_get(doc, "nonce");
  if (n && !json_is_string(n)) {
    send_error(req, "nonce_invalid", "the nonce is not base64url");
    json_decref(doc);
    return;
  }
  int64_t issued = 0;
  if (check_nonce(req, n ? json_string_value(n) : NULL, n ? json_string_length(n) : 0,
                  gr->nonce, &issued) < 0) {
    json_decref(doc);
    return;
  }
  if (take_certs(gr, json_object_get(doc, "certs")) < 0) {
    json_decref(doc);
    send_error(req, "malformed", "\"certs\" must map vcek|vlek, ask|asvk, ark to base64url DER");
    return;
  }
  json_t *pk = json_object_get(doc, "public_key"), *ev = json_object_get(doc, "evidence");
  if (json_is_string(pk)) {
    gr->pk = b64_decode(json_string_value(pk), json_string_length(pk), &gr->pk_len);
  } else if (!pk && mtls_id(req, gr->mtls_id) == 0) {
    /* mutual TLS: no public_key, a verified client certificate: k is its key */
    const sh_iovec *spki = &req->tls_info->client_spki_der;
    gr->pk = malloc(spki->len);
    if (gr->pk) {
      memcpy(gr->pk, spki->base, spki->len);
      gr->pk_len = spki->len;
      gr->mtls = 1;
    }
  }
  if (json_is_string(ev))
    gr->evidence = decode_evidence(tee, json_string_value(ev), json_string_length(ev),
                                   &gr->evidence_len);
  json_decref(doc);
  if (!gr->pk || !gr->evidence) {
    send_error(req, "malformed", "evidence and public_key are required");
    return;
  }
  gr->tee = tee;
  gr->nonce_issued = issued;
  enqueue(req, gr); /* on failure it answered: gr may be gone (released at once) */
}

static void establish_body(sh_request *req, gate_req *gr, char *chunk, size_t len, int last) {
  if (gr->answered || gr->discard) {
    free(chunk);
    sh_request_consumed(req, len);
    return;
  }
  if (gr->body_len + len > MAX_ATTEST_BODY) {
    free(chunk);
    sh_request_consumed(req, len);
    gr->discard = 1; /* answered now (the server core drains or closes the rest) */
    send_error(req, "malformed", "attestation body too large");
    return;
  }
  if (gr->body_len + len > gr->body_cap) {
    size_t cap = gr->body_cap ? gr->body_cap * 2 : 4096;
    while (cap < gr->body_len + len) cap *= 2;
    char *b = realloc(gr->body, cap);
    if (!b) {
      free(chunk);
      send_error(req, "malformed", "attestation body too large");
      return;
    }
    gr->body = b;
    gr->body_cap = cap;
  }
  if (len) memcpy(gr->body + gr->body_len, chunk, len);
  gr->body_len += len;
  free(chunk);
  sh_request_consumed(req, len);
  if (last) establish_parse(req, gr);
}

/* RFC 9530 "sha-256=:<base64>:" (other algorithms ignored); 0 with out filled, or -1. */
static int parse_content_digest(const char *v, size_t len, uint8_t out[64], size_t *out_len) {
  size_t i = 0;
  while (i < len) {
    size_t e = i;
    while (e < len && v[e] != ',') e++;
    const char *p = v + i, *q = v + e;
    while (p < q && (*p == ' ' || *p == '\t')) p++;
    while (q > p && (q[-1] == ' ' || q[-1] == '\t')) q--;
    const char *eq = memchr(p, '=', (size_t)(q - p));
    const char *ke = eq ? eq : q;
    while (ke > p && (ke[-1] == ' ' || ke[-1] == '\t')) ke--;
    if (ke - p == 7 && strncasecmp(p, "sha-256", 7) == 0) {
      const char *a = eq ? eq + 1 : q;
      while (a < q && (*a == ' ' || *a == '\t')) a++;
      if (q - a < 2 || a[0] != ':' || q[-1] != ':') return -1;
      for (const char *c = a + 1; c < q - 1; c++)
        if (*c == '-' || *c == '_' || *c == ' ') return -1; /* standard alphabet only */
      size_t n = 0;
      uint8_t *d = b64_decode(a + 1, (size_t)(q - 1 - (a + 1)), &n);
      if (!d) return -1;
      *out_len = n > 64 ? 64 : n;
      memcpy(out, d, *out_len);
      if (n > 64) *out_len = 0; /* can never match */
      free(d);
      return 0;
    }
    i = e + 1;
  }
  return -1;
}

/* X-Attestation-Proof "t=<unix ms>, mac=<b64url>" into gr->proof_t/proof_mac.  NULL, or what
 * is wrong with it (answered after the session lookup, as the middleware does). */
static const char *parse_proof(sh_request *req, gate_req *gr) {
  const sh_iovec *proof = header(req, "x-attestation-proof");
  if (!proof || proof->len == 0) return "X-Attestation-Proof is missing";
  int64_t t = -1;
  long mac_len = -2; /* -2: no mac=, -1: not base64 */
  int have_t = 0, bad = 0;
  for (size_t i = 0; i < proof->len;) {
    size_t e = i;
    while (e < proof->len && proof->base[e] != ',') e++;
    const char *p = proof->base + i, *q = proof->base + e;
    while (p < q && (*p == ' ' || *p == '\t')) p++;
    while (q > p && (q[-1] == ' ' || q[-1] == '\t')) q--;
    const char *eq = memchr(p, '=', (size_t)(q - p));
    if (eq) {
      const char *ke = eq, *a = eq + 1;
      while (ke > p && ke[-1] == ' ') ke--;
      while (a < q && *a == ' ') a++;
      if (ke - p == 1 && *p == 't') {
        have_t = 1;
        t = 0;
        if (a == q || q - a > 18) bad = 1;
        for (const char *c = a; c < q && !bad; c++) {
          if (*c < '0' || *c > '9') bad = 1;
          else t = t * 10 + (*c - '0');
        }
      } else if (ke - p == 3 && memcmp(p, "mac", 3) == 0) {
        mac_len = b64_decode_into(a, (size_t)(q - a), gr->proof_mac, sizeof gr->proof_mac);
        if (mac_len < 0) bad = 1;
      }
    }
    i = e + 1;
  }
  if (!have_t || mac_len == -2 || bad) return "X-Attestation-Proof is malformed";
  if (mac_len != 32) return "the proof MAC does not verify";
  gr->proof_t = t;
  int64_t nm = now_ms();
  if (t > nm + PROOF_WINDOW_MS || t < nm - PROOF_WINDOW_MS)
    return "the proof time is outside ±60 s";
  return NULL;
}

/* What the proof MAC covers (§1.4), copied so the check can run on a pool thread.  0 or -1. */
static int copy_mac_input(sh_request *req, gate_req *gr, const sh_iovec *digest) {
  gr->method_len = req->method.len;
  gr->target_len = req->target.len;
  gr->digest_len = digest ? digest->len : 0;
  gr->mac_input = malloc(gr->method_len + gr->target_len + gr->digest_len + 1);
  if (!gr->mac_input) return -1;
  memcpy(gr->mac_input, req->method.base, gr->method_len);
  memcpy(gr->mac_input + gr->method_len, req->target.base, gr->target_len);
  if (digest) memcpy(gr->mac_input + gr->method_len + gr->target_len, digest->base, digest->len);
  return 0;
}

/* The body's expected Content-Digest, hashed as it streams (session_body), set up when the
 * request is handed on.  0 or -1 (answered). */
static int expect_digest(sh_request *req, gate_req *gr) {
  if (!req->has_body) {
    uint8_t d[32];
    if (sh_attest_sha256("", 0, d) < 0 || gr->want_len != 32 ||
        CRYPTO_memcmp(d, gr->want_digest, 32) != 0) {
      send_error(req, "proof_invalid", "the body does not match Content-Digest");
      return -1;
    }
    return 0;
  }
  gr->md = EVP_MD_CTX_new();
  if (!gr->md || EVP_DigestInit_ex(gr->md, EVP_sha256(), NULL) != 1) {
    sh_request_fail(req);
    sh_request_release(req);
    return -1;
  }
  return 0;
}

/* Queue a session request's state checks for the pool (Redis: a round trip each). */
static void enqueue_state(sh_request *req, gate_req *gr) {
  if (G.state_pending >= MAX_STATE_PENDING) {
    send_error(req, "overloaded", "too many requests waiting on the state store");
    return;
  }
  gr->pending = 1;
  G.state_pending++;
  push_job(&G.sqhead, &G.sqtail, gr);
}

/* A session request (§1.4, 2): the cheap checks of the proof here; the session record, the
 * MAC and the proof-time advance through the state store — inline for the shared table, on the
 * pool for Redis (session_check) — then session_checked hands it on. */
static void session_mode(sh_request *req, const sh_iovec *sidv) {
  if (sidv->len >= sizeof ((gate_req *)0)->sid) {
    send_error(req, "session_unknown", "no such session");
    return;
  }
  gate_req *gr = attach(req);
  if (!gr) return;
  gr->kind = K_SESSION;
  memcpy(gr->sid, sidv->base, sidv->len);
  gr->sid[sidv->len] = '\0';
  const sh_iovec *digest = header(req, "content-digest");
  if (digest && digest->len == 0) digest = NULL;
  const char *bad = parse_proof(req, gr);
  if (!bad && (req->chunked || req->content_length > 0) && !digest)
    bad = "a request with a body needs Content-Digest";
  if (!bad && digest &&
      parse_content_digest(digest->base, digest->len, gr->want_digest, &gr->want_len) < 0)
    bad = "Content-Digest is not sha-256=:…:";
  gr->proof_error = bad;
  if (copy_mac_input(req, gr, digest) < 0) {
    sh_request_fail(req);
    sh_request_release(req);
    return;
  }
  gr->has_digest = digest != NULL;
  gr->at = gate_now();
  gr->need_result = sess_find(gr->sid, gr->at) == NULL;
  if (sh_gate_state_remote()) {
    enqueue_state(req, gr);
    return;
  }
  session_check(gr);
  session_checked(req, gr);
}

/* Any thread: the session record, the proof MAC, the proof time (gr->state). */
static void session_check(gate_req *j) {
  sh_gate_session s;
  int rc = sh_gate_state_session_get(table(), j->sid, &s, j->need_result ? &j->result_json : NULL,
                                     j->at, j->state_msg, sizeof j->state_msg);
  if (rc != 0) {
    j->state = rc == SH_GATE_SESSION_UNKNOWN   ? ST_UNKNOWN
               : rc == SH_GATE_SESSION_EXPIRED ? ST_EXPIRED
                                               : ST_STORE;
    return;
  }
  if (j->proof_error) { /* a missing or malformed proof, once the session is known */
    OPENSSL_cleanse(&s, sizeof s);
    j->state = ST_PROOF;
    return;
  }
  const char *m = j->mac_input;
  uint8_t want[32];
  int mac_ok = sh_attest_proof_mac(s.key, j->proof_t, m, j->method_len, m + j->method_len,
                                   j->target_len, m + j->method_len + j->target_len,
                                   j->digest_len, want) == 0 &&
               CRYPTO_memcmp(want, j->proof_mac, 32) == 0;
  int after_last = j->proof_t > s.last_t;
  j->sess_tee = s.tee;
  j->sess_expires = s.expires;
  OPENSSL_cleanse(&s, sizeof s);
  if (!mac_ok) {
    j->state = ST_BADMAC;
    return;
  }
  if (!after_last) {
    j->state = ST_STALE;
    return;
  }
  /* t strictly after the last accepted one, decided atomically by the store (two workers or
   * replicas racing with the same proof: one wins) */
  rc = sh_gate_state_session_advance(table(), j->sid, j->proof_t, j->at, j->state_msg,
                                     sizeof j->state_msg);
  j->state = rc == 1 ? ST_OK : rc == 0 ? ST_STALE : rc == SH_GATE_SESSION_EXPIRED ? ST_EXPIRED
                                                                                 : ST_STORE;
}

/* I/O thread: answer a failed check, or hand the request on with the session's result (this
 * worker's cached copy, or the stored one). */
static void session_checked(sh_request *req, gate_req *gr) {
  if (state_failed(req, gr)) return;
  sess *s = sess_find(gr->sid, gr->at);
  if (!s) {
    char *tcb = NULL;
    sh_attest_result *r = result_from_json(gr->result_json, gr->sess_tee, &tcb);
    if (r) {
      s = sess_add(gr->sid, r, gr->sess_expires);
      if (s) s->tcb = tcb;
      else {
        sh_attest_result_free(r);
        free(tcb);
      }
    }
  }
  free(gr->result_json);
  gr->result_json = NULL;
  if (!s) {
    send_error(req, "overloaded", "too many sessions");
    return;
  }
  if (gr->has_digest && expect_digest(req, gr) < 0) return;
  s->refs++;
  gr->sess = s;
  req->attest_result = s->r;
  req->attest_mode = "session";
  req->attest_session = s->sid;
  forward(req);
}

/* The body did not match its Content-Digest: answer 401 now (unless the app already started
 * its response), then cut the app's side short — it sees a disconnect and its answer is
 * dropped.  "connection: close": the app's request never ended for it, so the connection is
 * not reused. */
static void digest_failed_answer(sh_request *req, gate_req *gr) {
  sh_req *pr = (sh_req *)req;
  if (atomic_load(&pr->app_state) == 0) {
    json_t *body = json_pack("{s:s, s:s, s:s}", "error", "attestation_failed", "reason",
                             "proof_invalid", "message",
                             "the body does not match Content-Digest");
    char *text = body ? json_dumps(body, JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII) : NULL;
    json_decref(body);
    sh_header h[3] = {{{"content-type", 12}, {"application/json", 16}},
                      {{"www-authenticate", 16}, {"Attestation realm=\"shield\"", 26}},
                      {{"connection", 10}, {"close", 5}}};
    if (text && sh_request_start(req, 401, h, 3) == 0)
      sh_request_write(req, text, strlen(text), 0);
    free(text);
  }
  atomic_store(&pr->closed, 1); /* the app's own answer is dropped from now on */
  if (!gr->inner_disconnected) {
    gr->inner_disconnected = 1;
    if (G.inner->on_disconnect) G.inner->on_disconnect(G.inner, req);
  }
}

/* A body chunk of a session request with Content-Digest: hash, and on the last chunk compare
 * (a mismatch is answered here: digest_failed_answer).  Returns 1 when the chunk was consumed
 * here. */
static int session_body(sh_request *req, gate_req *gr, char *chunk, size_t len, int last) {
  if (gr->digest_failed) {
    free(chunk);
    return 1;
  }
  EVP_DigestUpdate(gr->md, chunk, len);
  if (!last) return 0;
  uint8_t d[32];
  unsigned dl = 0;
  EVP_DigestFinal_ex(gr->md, d, &dl);
  if (gr->want_len == 32 && dl == 32 && CRYPTO_memcmp(d, gr->want_digest, 32) == 0) return 0;
  gr->digest_failed = 1;
  free(chunk);
  digest_failed_answer(req, gr);
  return 1;
}

/* ---------------------------------------------------------------- handler callbacks */

static void gate_req_free(gate_req *gr);

static void g_on_request(sh_handler *h, sh_request *req) {
  (void)h;
  if (!G.srv) {
    G.srv = ((sh_req *)req)->srv;
    if (uv_async_init(&G.srv->loop, &G.async, on_async) == 0) {
      uv_unref((uv_handle_t *)&G.async);
      G.async_init = 1;
    }
  }
  if (!G.async_init) {
    sh_request_fail(req);
    sh_request_release(req);
    return;
  }
  if (path_is(req, NONCE_PATH)) {
    if (!method_is(req, "GET") && !method_is(req, "HEAD")) {
      send_405(req, "GET, HEAD");
      return;
    }
    uint8_t n[SH_ATTEST_NONCE_LEN];
    size_t slen;
    const uint8_t *sec = secret(&slen);
    if (sh_attest_nonce_issue(sec, slen, gate_now(), n) < 0) {
      sh_request_fail(req);
      sh_request_release(req);
      return;
    }
    char s[64];
    b64url(n, sizeof n, s);
    send_json(req, 200, json_pack("{s:s, s:i}", "nonce", s, "expires_in", SH_ATTEST_NONCE_TTL),
              NULL);
    return;
  }
  if (path_is(req, ATTEST_PATH)) {
    if (!method_is(req, "POST")) {
      send_405(req, "POST");
      return;
    }
    gate_req *gr = attach(req);
    if (!gr) return;
    gr->kind = K_ESTABLISH;
    if (req->has_body) sh_request_read(req);
    else establish_parse(req, gr);
    return;
  }
  const sh_iovec *sid = header(req, "x-attestation-session");
  if (sid && sid->len) {
    session_mode(req, sid);
    return;
  }
  const sh_iovec *token = header(req, "x-attestation-token");
  if (token && token->len) {
    header_mode(req, token);
    return;
  }
  char mid[72];
  if (mtls_count && mtls_id(req, mid) == 0) {
    sess *s = sess_find(mid, gate_now());
    if (s) {
      gate_req *gr = attach(req);
      if (!gr) return;
      s->refs++;
      gr->sess = s;
      req->attest_result = s->r;
      req->attest_mode = "mtls";
      forward(req);
      return;
    }
  }
  if (G.cfg->attest_required && !excluded(req)) {
    send_error(req, "missing", "client attestation is required");
    return;
  }
  forward(req);
}

static void g_on_body(sh_handler *h, sh_request *req, char *chunk, size_t len, int last) {
  (void)h;
  gate_req *gr = req->gate_data;
  if (!handed_on(req)) {
    if (gr && gr->kind == K_ESTABLISH) establish_body(req, gr, chunk, len, last);
    else free(chunk);
    return;
  }
  if (gr && gr->md && session_body(req, gr, chunk, len, last)) return;
  if (G.inner->on_body) G.inner->on_body(G.inner, req, chunk, len, last);
  else free(chunk);
}

static void g_on_disconnect(sh_handler *h, sh_request *req) {
  (void)h;
  gate_req *gr = req->gate_data;
  if (!handed_on(req)) {
    /* The gate still holds the request: a job on the pool releases it when it comes back
     * (complete); otherwise (an establishment body being read when the client aborted or
     * --timeout-body cut it) nobody else will, so release it now — on_release frees gr and
     * the body read so far, and the request leaves the in-flight count. */
    if (gr) gr->disconnected = 1;
    if (!gr || !gr->pending) sh_request_release(req);
    return;
  }
  if (gr) {
    if (gr->inner_disconnected) return; /* at most once (a digest failure told it already) */
    gr->inner_disconnected = 1;
  }
  if (G.inner->on_disconnect) G.inner->on_disconnect(G.inner, req);
}

static void g_on_writable(sh_handler *h, sh_request *req) {
  (void)h;
  if (!handed_on(req)) return;
  if (G.inner->on_writable) G.inner->on_writable(G.inner, req);
}

static void g_on_release(sh_handler *h, sh_request *req) {
  (void)h;
  gate_req *gr = req->gate_data;
  if (handed_on(req) && G.inner->on_release) G.inner->on_release(G.inner, req);
  if (gr) {
    req->gate_data = NULL;
    gate_req_free(gr);
  }
}

static void gate_req_free(gate_req *gr) {
  sh_attest_result_free(gr->result);
  free(gr->evidence);
  free(gr->body);
  free(gr->pk);
  EVP_MD_CTX_free(gr->md);
  sess_unref(gr->sess);
  free(gr->ct);
  for (size_t i = 0; i < gr->ncerts; i++) free((void *)gr->certs[i].ptr);
  free(gr->mac_input);
  free(gr->result_json);
  free(gr);
}

static void g_on_flush(sh_handler *h) {
  (void)h;
  if (G.inner->on_flush) G.inner->on_flush(G.inner);
}

/* ---------------------------------------------------------------- setup */

sh_handler *sh_gate_wrap(const sh_config *cfg, sh_handler *inner, sh_error *err) {
  if (!cfg->attest_types) return inner;
  if (G.on) {
    SH_ERR(err, SH_EINVAL, "attestation gate already set up");
    return NULL;
  }
  G.cfg = cfg;
  G.inner = inner;
  G.types = 0;
  const char *p = cfg->attest_types;
  while (*p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    char name[32];
    snprintf(name, sizeof name, "%.*s", (int)(len < 31 ? len : 31), p);
    sh_attest_tee t = sh_attest_tee_from_name(name);
    if (t == SH_ATTEST_TEE_UNKNOWN) {
      SH_ERR(err, SH_EINVAL, "--attest-types: '%s' is not a TEE type", name);
      return NULL;
    }
    G.types |= 1u << t;
    if (!e) break;
    p = e + 1;
  }
  char msg[160];
  if (cfg->attest_policy) {
    if (sh_attest_policy_load_file(cfg->attest_policy, &G.policy, msg, sizeof msg) < 0) {
      SH_ERR(err, SH_EINVAL, "--attest-policy %.60s: %s", cfg->attest_policy, msg);
      return NULL;
    }
  } else {
    G.policy = sh_attest_policy_production();
    if (!G.policy) {
      SH_ERR(err, SH_ENOMEM, "out of memory");
      return NULL;
    }
  }
  if (cfg->attest_policy) { /* the one policy field the gate itself needs (§1.3) */
    json_error_t je;
    json_t *doc = json_load_file(cfg->attest_policy, 0, &je);
    const char *fr = json_string_value(json_object_get(doc, "freshness"));
    json_int_t ma = json_integer_value(json_object_get(doc, "max_age"));
    G.timestamp_ok = fr && strcmp(fr, "timestamp") == 0;
    G.unfresh_ok = fr && strcmp(fr, "none") == 0; /* the policy loader required allow_unfresh */
    G.max_age = ma > 0 ? (int64_t)ma : 300;
    json_decref(doc);
  }
  const uint8_t *ps = sh_attest_policy_sha256(G.policy);
  for (int i = 0; i < 32; i++) snprintf(G.policy_hex + 2 * i, 3, "%02x", ps[i]);
  G.cache = sh_attest_cache_new(4096);
  /* JWKS files and DCAP collateral read once, the fetcher created (gate_verify.c) */
  if (!(G.verifier = sh_gate_verifier_new(cfg, err))) return NULL;
  if (G.unfresh_ok)
    sh_log(SH_LOG_WARNING, "*** --attest-policy says \"freshness\": \"none\": evidence is "
           "accepted without a nonce (development only; each document is still single-use) ***");
  if (!cfg->shared_table) {
    if (sh_shm_table_create(cfg->state_table_size ? cfg->state_table_size : 65536,
                            &G.own_table, err) < 0)
      return NULL;
  }
  if (RAND_bytes(G.own_secret, sizeof G.own_secret) != 1) {
    SH_ERR(err, SH_ESYS, "cannot generate the nonce secret");
    return NULL;
  }
  if (sh_gate_state_init(cfg->state_url, err) < 0) return NULL;
  pthread_mutex_init(&G.mu, NULL);
  pthread_cond_init(&G.cv, NULL);
  for (int i = 0; i < POOL_THREADS; i++) {
    if (pthread_create(&G.threads[i], NULL, pool_main, NULL) != 0) break;
    G.nthreads++;
  }
  if (G.nthreads == 0) {
    SH_ERR(err, SH_ESYS, "cannot start the attestation pool");
    return NULL;
  }
  G.h = (sh_handler){.data = &G,
                     .on_request = g_on_request,
                     .on_body = g_on_body,
                     .on_disconnect = g_on_disconnect,
                     .on_writable = g_on_writable,
                     .on_release = g_on_release,
                     .on_flush = g_on_flush};
  G.on = 1;
  sh_log(SH_LOG_INFO, "client attestation: types %s, policy %s (sha256 %.16s…), %s%s",
         cfg->attest_types, cfg->attest_policy ? cfg->attest_policy : "production",
         G.policy_hex, cfg->attest_required ? "required" : "optional",
         cfg->trust_simulated ? ", simulated evidence TRUSTED (development)" : "");
  const char *delay = cfg->dev ? getenv("SHIELD_ATTEST_VERIFY_DELAY_MS") : NULL;
  if (delay && *delay) {
    G.test_delay_ms = strtol(delay, NULL, 10);
    sh_log(SH_LOG_WARNING, "--dev: every attestation verification is delayed by %ld ms "
           "(SHIELD_ATTEST_VERIFY_DELAY_MS)", G.test_delay_ms);
  }
  if (cfg->attest_clock) {
    time_t t = (time_t)cfg->attest_clock;
    struct tm tm;
    char when[32];
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    sh_log(SH_LOG_WARNING,
           "*** --dev --attest-clock %s: attestation is verified as of that time, NOT the "
           "real time.  Never use this in production. ***",
           when);
  }
  return &G.h;
}

void sh_gate_shutdown(sh_handler *h) {
  if (h != &G.h || !G.on) return;
  pthread_mutex_lock(&G.mu);
  G.stopping = 1;
  pthread_cond_broadcast(&G.cv);
  pthread_mutex_unlock(&G.mu);
  for (int i = 0; i < G.nthreads; i++) pthread_join(G.threads[i], NULL);
  G.nthreads = 0;
  /* Jobs still queued or done belong to requests sh_server_free frees: drop ours. */
  for (gate_req *lists[3] = {G.qhead, G.sqhead, G.done}, **l = lists; l < lists + 3; l++) {
    for (gate_req *j = *l, *n; j; j = n) {
      n = j->next;
      j->req->gate_data = NULL;
      gate_req_free(j);
    }
  }
  G.qhead = G.qtail = G.sqhead = G.sqtail = G.done = NULL;
  for (int b = 0; b < 256; b++) { /* the cache's references (in-flight ones die with them) */
    for (sess *s = sess_buckets[b], *n; s; s = n) {
      n = s->next;
      sess_unref(s);
    }
    sess_buckets[b] = NULL;
  }
  sess_n = 0;
  sh_attest_cache_free(G.cache);
  G.cache = NULL;
  sh_gate_verifier_free(G.verifier); /* the pool is joined: no fetch is running */
  G.verifier = NULL;
  sh_attest_policy_free(G.policy);
  G.policy = NULL;
  sh_shm_table_free(G.own_table);
  G.own_table = NULL;
}
