/*
 * gate/server_evidence.c — the server proves its own TEE (docs/protocol.md §4): the evidence
 * provider of --tee (attest.h), GET /.well-known/shield/attestation?nonce=, the health
 * endpoint (--health-path), and the X-Server-Attestation / X-Server-TEE-Type headers of
 * --attach-server-attestation.  The same document as pyshim/shield_asgi/server_attestation.py
 * builds in Python, so shield_asgi.client.AttestedClient accepts either.
 *
 * Fresh evidence (the attestation endpoint): the nonce is checked on the I/O thread (32 bytes
 * of base64url, else 400 malformed), then a per-client token bucket (the Python router's:
 * 2 per second, a burst of 10; 503 overloaded + Retry-After beyond) and the pool's caps
 * (pool.c: 64 jobs, 16 per client; 503 overloaded + Retry-After: 1) are applied, and the job
 * goes to the gate's pool: binding CBOR k = {1: SHA-256 of the DER SPKI of the certificate of
 * the request's own TLS connection | null over plain HTTP, 2: null (no HPKE key config yet),
 * 3: 1} (RFC 8949 §4.2.1 deterministic encoding, libcbor), D = D(n, k) (§1.2,
 * sh_attest_binding_digest), the provider's evidence for D, and, until they are known, the
 * measurements read back by verifying that evidence with attest/ and the gate's verifier (a
 * TEE's measurements are fixed at launch: read once — in practice from the first cached
 * evidence, in sh_gate_new — then reused, as server_attestation.py does).  Evidence that was
 * verified and did not pass is never served: 503 collateral_missing naming the cause (fail
 * closed), as for a provider that fails; the first such failure stops start-up.
 *
 * Cached evidence (health, headers): n = 32 zero bytes (§4: no client nonce exists for it)
 * and k = the same binding CBOR, for the TLS certificate the server serves: the one of the
 * latest TLS connection seen (a certificate the gate cannot know before one; plain HTTP: null).
 * Made once in sh_gate_new (main thread: the server does not start without it; bound to no
 * certificate yet), re-bound on the pool when a request arrives over a connection whose
 * certificate is not the one bound (at first, and after a certificate reload; at most once
 * per SH_GATE_TEE_RETRY seconds, so connections of an old and a new certificate alternating
 * during a reload do not keep the pool busy), and refreshed on the pool once it is
 * SH_GATE_TEE_REFRESH_AT of its max age old (SH_GATE_TEE_MAX_AGE, 300 s, the Python health_ttl),
 * triggered by the requests that arrive (no timer: the gate has no loop of its own; a failed
 * refresh is retried 10 s later).  The health answer never waits on the TEE while the cache is
 * younger than its max age and bound to the certificate in use; otherwise health requests wait
 * (held, not blocking) for the refresh under way, and get 503 unavailable naming the cause when it
 * fails.  The headers follow the cache: replaced by each refresh (sh_server_set_response_headers),
 * removed once the cache is past its max age.
 *
 * Threads: struct sh_gate__tee is I/O-thread only once serving, except `p` (the provider is
 * thread-safe) and the constants; a job's sh_gate__evjob belongs to the pool thread that runs
 * it until it comes back (pool.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cbor.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "gate_internal.h"

#define SH_GATE_TEE_ATTEST_PATH "/.well-known/shield/attestation"
#define SH_GATE_TEE_HEALTH_PATH "/.well-known/shield/health"
#define SH_GATE_TEE_MAX_AGE 300    /* seconds the cached evidence is served */
#define SH_GATE_TEE_REFRESH_AT 0.8 /* ... refreshed from this fraction of it on */
#define SH_GATE_TEE_RETRY 10       /* seconds between failed refreshes */
#define SH_GATE_TEE_RATE 2.0       /* fresh evidence per client: tokens per second */
#define SH_GATE_TEE_BURST 10.0     /*   and the bucket's size */
#define SH_GATE_TEE_BUCKETS 1024   /* clients remembered (a forgotten one starts full) */
#define SH_GATE_TEE_CERT_MAX (64 * 1024)

typedef struct bucket {
  char host[64];
  double tokens, last; /* last: monotonic seconds */
} bucket;

struct sh_gate__tee {
  sh_attest_provider *p;
  const sh_gate__verifier *v; /* the gate's: keys, collateral and fetching of the types */
  sh_tee type;
  const char *type_name;
  const char *health_path;
  int attach;
  int64_t max_age;
  /* the cache (I/O thread) */
  char *b64;           /* the cached evidence, base64url; NULL: none */
  json_t *cached_meas; /* its measurements */
  int64_t issued_at;
  json_t *measurements;             /* the TEE's measurements, once read back (any binding) */
  gate_req *refresh;                /* the refresh on the pool, or NULL */
  int64_t next_try;                 /* no refresh before (after a failed one) */
  char error[256];                  /* why the last refresh failed ("" when it did not) */
  gate_req *waiters, *waiters_tail; /* health requests waiting for the refresh */
  uint8_t *cert;                    /* DER of the TLS certificate in use (latest seen) */
  size_t cert_len;
  unsigned cert_gen;   /* bumped when it changes */
  unsigned cached_gen; /* the generation the cache is bound to (0: no certificate) */
  int64_t last_rebind; /* when a change of certificate last started a refresh */
  int headers_on;      /* the response headers are set */
  bucket buckets[SH_GATE_TEE_BUCKETS];
};

struct sh_gate__evjob {
  uint8_t nonce[SH_ATTEST_NONCE_LEN];
  uint8_t *cert; /* DER of the connection's server certificate, or NULL */
  size_t cert_len;
  int want_measurements;
  int64_t at;
  unsigned gen; /* cache jobs: the certificate generation bound */
  /* out */
  uint8_t spki_sha[32];
  int has_spki;
  uint8_t *cbor;
  size_t cbor_len;
  uint8_t *evidence;
  size_t evidence_len;
  json_t *measurements;
  char error[256]; /* "" when the evidence is there */
};

void sh_gate__evjob_free(struct sh_gate__evjob *j) {
  if (!j) return;
  free(j->cert);
  free(j->cbor);
  free(j->evidence);
  json_decref(j->measurements);
  free(j);
}

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int path_is(const sh_request *r, const char *p) {
  return r->path.len == strlen(p) && memcmp(r->path.base, p, r->path.len) == 0;
}

static int method_is(const sh_request *r, const char *m) {
  return r->method.len == strlen(m) && memcmp(r->method.base, m, r->method.len) == 0;
}

/* ---- configuration (main thread) */

static int fail(sh_error *err, const char *fmt, const char *a, const char *b) {
  return sh_error_set(err, SH_EINVAL, fmt, a, b);
}

/* --tee's provider: "auto" detects (never simulated); simulated uses the default data
 * directory's dev root, the one a gate with --trust-simulated trusts by default. */
static int open_provider(const sh_gate_config *gc, sh_attest_provider **out, sh_error *err) {
  sh_attest_provider_config pc = {0};
  pc.tee = strcmp(gc->tee, "auto") == 0 ? SH_ATTEST_TEE_AUTO : sh_tee_from_name(gc->tee);
  pc.now = (int64_t)time(NULL);
  pc.gcp_audience = gc->tee_gcp_audience;
  char msg[200];
  if (sh_attest_provider_open(&pc, out, msg, sizeof msg) < 0)
    return sh_error_set(err, SH_EINVAL, "--tee %.20s: %s", gc->tee, msg);
  return 0;
}

int sh_gate__tee_check(const sh_gate_config *gc, sh_error *err) {
  if (!gc->tee) {
    if (gc->health_path || gc->attach_server_attestation || gc->tee_gcp_audience)
      return fail(err, "%s%s need --tee (the server's own TEE)",
                  "--health-path, --attach-server-attestation and --tee-gcp-audience", "");
    return 0;
  }
  int gcp = strcmp(gc->tee, "gcp") == 0;
  if (gcp && !gc->tee_gcp_audience)
    return fail(err,
                "--tee gcp: add --tee-gcp-audience VALUE (the audience of the server's own "
                "Confidential Space token%s)%s",
                "", "");
  if (!gcp && gc->tee_gcp_audience)
    return fail(err, "--tee-gcp-audience is for --tee gcp, not --tee %.20s%s", gc->tee, "");
  const char *hp = gc->health_path;
  if (hp && (hp[0] != '/' || strpbrk(hp, "?# \t") || strcmp(hp, SH_GATE_TEE_ATTEST_PATH) == 0 ||
             strcmp(hp, SH_GATE_NONCE_PATH) == 0 || strcmp(hp, SH_GATE_ATTEST_PATH) == 0))
    return fail(err,
                "--health-path: '%.100s' is not a path of its own (it starts with '/', has no "
                "'?', '#' or blanks, and is not one of the other /.well-known/shield/ "
                "endpoints)%s",
                hp, "");
  sh_attest_provider *p = NULL;
  if (open_provider(gc, &p, err) < 0) return SH_EINVAL; /* names the missing device */
  sh_attest_provider_free(p);
  return 0;
}

/* ---- the job (pool thread, or the main thread for the first cached evidence) */

/* §4's binding CBOR, deterministic (RFC 8949 §4.2.1): a definite map, keys 1 < 2 < 3 as the
 * shortest unsigned integers, {1: bstr(32) | null, 2: null, 3: 1}.  0, or -1. */
static int binding_cbor(const uint8_t *spki_sha, uint8_t **out, size_t *len) {
  cbor_item_t *m = cbor_new_definite_map(3);
  if (!m) return -1;
  cbor_item_t *k1 = cbor_build_uint8(1), *k2 = cbor_build_uint8(2), *k3 = cbor_build_uint8(3);
  cbor_item_t *v1 = spki_sha ? cbor_build_bytestring(spki_sha, 32) : cbor_new_null();
  cbor_item_t *v2 = cbor_new_null(), *v3 = cbor_build_uint8(1);
  int ok = k1 && k2 && k3 && v1 && v2 && v3 &&
           cbor_map_add(m, (struct cbor_pair){.key = k1, .value = v1}) &&
           cbor_map_add(m, (struct cbor_pair){.key = k2, .value = v2}) &&
           cbor_map_add(m, (struct cbor_pair){.key = k3, .value = v3});
  size_t cap = 0;
  *out = NULL;
  *len = ok ? cbor_serialize_alloc(m, out, &cap) : 0;
  cbor_item_t *items[] = {k1, k2, k3, v1, v2, v3};
  for (size_t i = 0; i < 6; i++)
    if (items[i]) cbor_decref(&items[i]);
  cbor_decref(&m);
  if (*len == 0) {
    free(*out);
    *out = NULL;
    return -1;
  }
  return 0;
}

/* SHA-256 of the DER SubjectPublicKeyInfo of a DER certificate's key.  0, or -1. */
static int spki_sha256(const uint8_t *der, size_t len, uint8_t out[32]) {
  const unsigned char *q = der;
  X509 *x = d2i_X509(NULL, &q, (long)len);
  unsigned char *spki = NULL;
  int n = x ? i2d_PUBKEY(X509_get0_pubkey(x), &spki) : -1;
  int rc = n > 0 ? sh_attest_sha256(spki, (size_t)n, out) : -1;
  OPENSSL_free(spki);
  X509_free(x);
  return rc;
}

static void run_job(sh_attest_provider *p, const sh_gate__verifier *v, struct sh_gate__evjob *j) {
  const uint8_t *sha = NULL;
  if (j->cert) {
    if (spki_sha256(j->cert, j->cert_len, j->spki_sha) < 0) {
      snprintf(j->error, sizeof j->error, "cannot read the key of the TLS certificate");
      return;
    }
    j->has_spki = 1;
    sha = j->spki_sha;
  }
  uint8_t D[64];
  if (binding_cbor(sha, &j->cbor, &j->cbor_len) < 0 ||
      sh_attest_binding_digest(j->nonce, sizeof j->nonce, j->cbor, j->cbor_len, D) < 0) {
    snprintf(j->error, sizeof j->error, "out of memory");
    return;
  }
  char msg[200];
  if (sh_attest_provider_evidence(p, D, j->nonce, sizeof j->nonce, j->cbor, j->cbor_len, j->at,
                                  &j->evidence, &j->evidence_len, msg, sizeof msg) < 0) {
    snprintf(j->error, sizeof j->error, "the TEE (%s) cannot produce evidence: %s",
             sh_attest_provider_source(p), msg);
    return;
  }
  if (!j->want_measurements) return;
  /* The measurements are the verifier's reading of the very evidence (never a second
   * parser's), and evidence that does not verify is not served.  Debug TEEs pass: the server
   * reports what it is, clients apply their own policy (server_attestation.py does the same).
   * What a type needs to verify (the VCEK of an SNP report without its certificate table, DCAP
   * collateral, a JWKS) comes from the gate's --attest-* settings of that type (verifier.c),
   * fetched on this thread when --attest-fetch is on; without them such evidence is refused
   * (collateral_missing) and not served. */
  sh_attest_options o = {0};
  o.at = j->at;
  o.nonce = j->nonce;
  o.nonce_len = sizeof j->nonce;
  o.public_key = j->cbor;
  o.public_key_len = j->cbor_len;
  o.allow_debug = 1;
  o.trust_simulated = sh_attest_provider_tee(p) == SH_TEE_SIMULATED; /* the default dev root */
  sh_attest_result *r = NULL;
  if (sh_gate__verify(v, j->evidence, j->evidence_len, sh_attest_provider_tee(p), &o, &r) < 0 ||
      !r->verified) {
    snprintf(j->error, sizeof j->error, "the TEE's own evidence does not verify: %s: %.180s",
             r ? sh_attest_reason_name(r->reason) : "out of memory", r ? r->message : "");
    free(j->evidence);
    j->evidence = NULL;
  } else {
    j->measurements = json_deep_copy(r->measurements ? r->measurements : json_object());
  }
  sh_attest_result_free(r);
}

void sh_gate__tee_job(sh_gate *g, gate_req *j) {
  run_job(g->tee->p, g->tee->v, j->ev);
}

/* ---- lifetime (main thread) */

static struct sh_gate__evjob *cache_job(const sh_gate__tee *t, int64_t now) {
  struct sh_gate__evjob *j = calloc(1, sizeof *j); /* nonce: 32 zero bytes (§4) */
  if (!j) return NULL;
  j->want_measurements = t->measurements == NULL;
  j->at = now;
  return j;
}

static void set_headers(sh_gate *g);

/* A cache job's outcome: the new cached evidence, or the reason it is not there. */
static void take_cache(sh_gate__tee *t, struct sh_gate__evjob *j) {
  if (j->measurements && !t->measurements) t->measurements = json_incref(j->measurements);
  if (j->error[0] || !j->evidence) {
    snprintf(t->error, sizeof t->error, "%s", j->error[0] ? j->error : "no evidence");
    t->next_try = j->at + SH_GATE_TEE_RETRY;
    return;
  }
  char *b64 = sh_b64_encode_alloc(j->evidence, j->evidence_len, SH_B64_PROTOCOL);
  if (!b64) {
    snprintf(t->error, sizeof t->error, "out of memory");
    t->next_try = j->at + SH_GATE_TEE_RETRY;
    return;
  }
  free(t->b64);
  t->b64 = b64;
  t->issued_at = j->at;
  t->cached_gen = j->gen;
  json_decref(t->cached_meas);
  t->cached_meas = json_incref(t->measurements);
  t->error[0] = 0;
  t->next_try = 0;
}

sh_gate__tee *sh_gate__tee_new(const sh_gate_config *gc, const sh_gate__verifier *v,
                               sh_error *err) {
  sh_gate__tee *t = calloc(1, sizeof *t);
  if (!t) {
    sh_error_set(err, SH_ENOMEM, "out of memory");
    return NULL;
  }
  if (open_provider(gc, &t->p, err) < 0) {
    free(t);
    return NULL;
  }
  t->v = v;
  t->type = sh_attest_provider_tee(t->p);
  t->type_name = sh_tee_name(t->type);
  t->health_path = gc->health_path ? gc->health_path : SH_GATE_TEE_HEALTH_PATH;
  t->attach = gc->attach_server_attestation;
  t->max_age = gc->tee_max_age > 0 ? gc->tee_max_age : SH_GATE_TEE_MAX_AGE;
  /* The first cached evidence now: a TEE that cannot produce evidence stops start-up here
   * (fail closed), and the headers are on the very first response. */
  struct sh_gate__evjob *j = cache_job(t, gc->clock ? gc->clock : (int64_t)time(NULL));
  if (!j) {
    sh_gate__tee_free(t);
    sh_error_set(err, SH_ENOMEM, "out of memory");
    return NULL;
  }
  run_job(t->p, t->v, j);
  take_cache(t, j);
  sh_gate__evjob_free(j);
  if (!t->b64) {
    sh_error_set(err, SH_EINVAL, "--tee %.20s: %s", gc->tee, t->error);
    sh_gate__tee_free(t);
    return NULL;
  }
  sh_log(SH_LOG_INFO, "server attestation: TEE %s (%s), attestation at %s, health at %s%s",
         t->type_name, sh_attest_provider_source(t->p), SH_GATE_TEE_ATTEST_PATH, t->health_path,
         t->attach ? ", X-Server-Attestation on every response" : "");
  if (t->type == SH_TEE_SIMULATED)
    sh_log(SH_LOG_WARNING,
           "*** --tee simulated: the server's evidence is SIMULATED (development only; "
           "clients accept it only when they trust the development root) ***");
  return t;
}

void sh_gate__tee_free(sh_gate__tee *t) {
  if (!t) return;
  /* The pool is joined: a refresh still out is ours to free; waiters are on the live list. */
  if (t->refresh) {
    sh_gate__evjob_free(t->refresh->ev);
    free(t->refresh);
  }
  sh_attest_provider_free(t->p);
  free(t->b64);
  free(t->cert);
  json_decref(t->cached_meas);
  json_decref(t->measurements);
  free(t);
}

/* ---- the cache (I/O thread) */

static int64_t cache_age(const sh_gate__tee *t, int64_t now) {
  return now > t->issued_at ? now - t->issued_at : 0;
}

static int cache_valid(const sh_gate__tee *t, int64_t now) {
  return t->b64 && cache_age(t, now) < t->max_age;
}

static void set_headers(sh_gate *g) {
  sh_gate__tee *t = g->tee;
  if (!t->attach || !g->srv) return;
  sh_error err = {0};
  int on = cache_valid(t, sh_gate__now(g));
  sh_header h[2] = {
      {{"X-Server-Attestation", 20}, {t->b64, t->b64 ? strlen(t->b64) : 0}},
      {{"X-Server-TEE-Type", 17}, {t->type_name, strlen(t->type_name)}},
  };
  /* Stale evidence is not shown (fail closed): no headers until a refresh succeeds. */
  if (sh_server_set_response_headers(g->srv, on ? h : NULL, on ? 2 : 0, &err) < 0)
    sh_log(SH_LOG_ERROR, "server attestation: cannot set the response headers: %s", err.message);
  else
    t->headers_on = on;
}

void sh_gate__tee_start(sh_gate *g) {
  set_headers(g);
}

/* A request over TLS: is its certificate the one in use?  (A certificate reload changes it.) */
static void note_certificate(sh_gate__tee *t, const sh_request *req) {
  const sh_tls_info *tls = req->tls ? req->tls_info : NULL;
  if (!tls || !tls->server_cert_der.len || tls->server_cert_der.len > SH_GATE_TEE_CERT_MAX) return;
  if (tls->server_cert_der.len == t->cert_len &&
      memcmp(tls->server_cert_der.ptr, t->cert, t->cert_len) == 0)
    return;
  uint8_t *c = malloc(tls->server_cert_der.len);
  if (!c) return; /* out of memory: the next request tries again */
  memcpy(c, tls->server_cert_der.ptr, tls->server_cert_der.len);
  free(t->cert);
  t->cert = c;
  t->cert_len = tls->server_cert_der.len;
  t->cert_gen++;
}

/* The cache is bound to another certificate than the one in use. */
static int rebind_due(const sh_gate__tee *t) {
  return t->cert_gen != t->cached_gen;
}

static void refresh_if_due(sh_gate *g, int64_t now) {
  sh_gate__tee *t = g->tee;
  if (t->refresh || now < t->next_try) return;
  int rebind = rebind_due(t) && now >= t->last_rebind + SH_GATE_TEE_RETRY;
  if (!rebind && t->b64 && (double)cache_age(t, now) < SH_GATE_TEE_REFRESH_AT * (double)t->max_age)
    return;
  gate_req *gr = calloc(1, sizeof *gr);
  struct sh_gate__evjob *j = gr ? cache_job(t, now) : NULL;
  if (j && t->cert && !(j->cert = malloc(t->cert_len))) {
    sh_gate__evjob_free(j);
    j = NULL;
  }
  if (!j) {
    free(gr);
    return; /* out of memory: the next request tries again */
  }
  if (t->cert) {
    memcpy(j->cert, t->cert, t->cert_len);
    j->cert_len = t->cert_len;
  }
  j->gen = t->cert_gen;
  if (rebind) t->last_rebind = now;
  gr->g = g;
  gr->kind = K_REFRESH;
  gr->ev = j;
  t->refresh = gr;
  sh_gate__enqueue_refresh(g, gr);
}

static void health_answer(sh_gate *g, sh_request *req) {
  sh_gate__tee *t = g->tee;
  int64_t now = sh_gate__now(g);
  if (!cache_valid(t, now)) {
    json_t *b =
        json_pack("{s:s, s:{s:s}, s:s}", "status", "unavailable", "tee", "type", t->type_name,
                  "message", t->error[0] ? t->error : "the cached evidence is too old");
    sh_gate__send_json(g, req, 503, b, NULL);
    return;
  }
  json_t *b =
      json_pack("{s:s, s:{s:s, s:O, s:s, s:I, s:I}}", "status", "ok", "tee", "type", t->type_name,
                "measurements", t->cached_meas ? t->cached_meas : json_null(), "evidence", t->b64,
                "issued_at", (json_int_t)t->issued_at, "age", (json_int_t)cache_age(t, now));
  sh_gate__send_json(g, req, 200, b, NULL);
}

/* A health request while no valid cache exists: held until the refresh under way is back
 * (pending: a disconnect leaves the release to that moment, as for a pool job). */
static void health_wait(sh_gate *g, sh_request *req) {
  sh_gate__tee *t = g->tee;
  gate_req *gr = sh_gate__attach(g, req);
  if (!gr) return;
  gr->kind = K_HEALTH;
  gr->pending = 1;
  gr->next = NULL;
  if (t->waiters_tail)
    t->waiters_tail->next = gr;
  else
    t->waiters = gr;
  t->waiters_tail = gr;
}

static void health_wake(sh_gate *g) {
  sh_gate__tee *t = g->tee;
  gate_req *w = t->waiters;
  t->waiters = t->waiters_tail = NULL;
  while (w) {
    gate_req *n = w->next;
    w->next = NULL;
    w->pending = 0;
    if (w->disconnected)
      sh_request_release(w->req);
    else
      health_answer(g, w->req);
    w = n;
  }
}

static void health_endpoint(sh_gate *g, sh_request *req) {
  sh_gate__tee *t = g->tee;
  int64_t now = sh_gate__now(g);
  /* refresh_if_due ran: without a refresh under way none is possible now */
  if (!t->refresh || (cache_valid(t, now) && !rebind_due(t))) {
    health_answer(g, req);
    return;
  }
  health_wait(g, req);
}

/* ---- the attestation endpoint (I/O thread) */

/* The client's bucket: 0 when it may go on, else the seconds until its next token. */
static int bucket_take(sh_gate__tee *t, const char *host) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const char *c = host; *c; c++)
    h = (h ^ (unsigned char)*c) * 16777619u;
  bucket *b = &t->buckets[h % SH_GATE_TEE_BUCKETS];
  double now = mono();
  if (strcmp(b->host, host) != 0 || b->last == 0) { /* new, or forgotten: a full bucket */
    snprintf(b->host, sizeof b->host, "%s", host);
    b->tokens = SH_GATE_TEE_BURST;
    b->last = now;
  }
  b->tokens += (now - b->last) * SH_GATE_TEE_RATE;
  if (b->tokens > SH_GATE_TEE_BURST) b->tokens = SH_GATE_TEE_BURST;
  b->last = now;
  if (b->tokens >= 1.0) {
    b->tokens -= 1.0;
    return 0;
  }
  double w = (1.0 - b->tokens) / SH_GATE_TEE_RATE;
  int s = (int)w;
  return s < w ? s + 1 : (s > 0 ? s : 1); /* whole seconds, rounded up (Retry-After) */
}

/* The nonce of ?nonce=: the first such parameter, base64url of 32 bytes.  0, or -1. */
static int query_nonce(const sh_request *req, uint8_t out[SH_ATTEST_NONCE_LEN]) {
  const char *q = req->query.base, *end = q ? q + req->query.len : NULL;
  while (q && q < end) {
    const char *amp = memchr(q, '&', (size_t)(end - q));
    const char *e = amp ? amp : end;
    if (e - q >= 6 && memcmp(q, "nonce=", 6) == 0) {
      size_t n = 0;
      uint8_t buf[SH_B64_DECODED_MAX(64)];
      if ((size_t)(e - q - 6) > 64 ||
          sh_b64_decode(q + 6, (size_t)(e - q - 6), SH_B64_URL, buf, sizeof buf, &n) < 0 ||
          n != SH_ATTEST_NONCE_LEN)
        return -1;
      memcpy(out, buf, SH_ATTEST_NONCE_LEN);
      return 0;
    }
    q = e + 1;
  }
  return -1;
}

static void attestation_endpoint(sh_gate *g, sh_request *req) {
  sh_gate__tee *t = g->tee;
  uint8_t nonce[SH_ATTEST_NONCE_LEN];
  if (query_nonce(req, nonce) < 0) {
    sh_gate__send_error(g, req, 400, SH_ATTEST_MALFORMED,
                        "nonce must be the base64url of 32 random bytes", 0);
    return;
  }
  int wait = bucket_take(t, req->client_host);
  if (wait > 0) {
    sh_gate__send_error(g, req, 503, SH_ATTEST_OVERLOADED,
                        "fresh evidence is rate-limited per client", wait);
    return;
  }
  const sh_tls_info *tls = req->tls ? req->tls_info : NULL;
  if (tls && (tls->server_cert_der.len == 0 || tls->server_cert_der.len > SH_GATE_TEE_CERT_MAX)) {
    sh_gate__send_error(g, req, 503, SH_ATTEST_COLLATERAL_MISSING,
                        "the TLS certificate of this connection is not known", 0);
    return;
  }
  gate_req *gr = sh_gate__attach(g, req);
  if (!gr) return;
  struct sh_gate__evjob *j = calloc(1, sizeof *j);
  if (j && tls && !(j->cert = malloc(tls->server_cert_der.len))) {
    free(j);
    j = NULL;
  }
  if (!j) {
    sh_gate__fail(req);
    return;
  }
  if (tls) {
    memcpy(j->cert, tls->server_cert_der.ptr, tls->server_cert_der.len);
    j->cert_len = tls->server_cert_der.len;
  }
  memcpy(j->nonce, nonce, sizeof nonce);
  j->want_measurements = t->measurements == NULL;
  j->at = sh_gate__now(g);
  gr->kind = K_EVIDENCE;
  gr->ev = j;
  sh_gate__enqueue(g, req, gr); /* on failure it answered 503 (gr may be gone) */
}

static void evidence_done(sh_gate *g, gate_req *gr) {
  sh_gate__tee *t = g->tee;
  struct sh_gate__evjob *j = gr->ev;
  sh_request *req = gr->req;
  if (j->measurements && !t->measurements) t->measurements = json_incref(j->measurements);
  if (j->error[0] || !j->evidence || !t->measurements) {
    sh_log(SH_LOG_ERROR, "server attestation: %s", j->error[0] ? j->error : "no evidence");
    sh_gate__send_error(g, req, 503, SH_ATTEST_COLLATERAL_MISSING,
                        j->error[0] ? j->error : "no evidence", 0);
    return;
  }
  char *ev = sh_b64_encode_alloc(j->evidence, j->evidence_len, SH_B64_PROTOCOL);
  char *cb = sh_b64_encode_alloc(j->cbor, j->cbor_len, SH_B64_PROTOCOL);
  char n64[SH_B64_ENCODED_LEN(SH_ATTEST_NONCE_LEN) + 1], hex[65];
  sh_b64_encode(j->nonce, sizeof j->nonce, SH_B64_PROTOCOL, n64);
  sh_hex_encode(j->spki_sha, 32, hex);
  json_t *b = ev && cb ? json_pack("{s:s, s:s, s:s, s:{s:o, s:n, s:i, s:s}, s:O, s:I}", "tee_type",
                                   t->type_name, "evidence", ev, "nonce", n64, "binding",
                                   "tls_spki_sha256", j->has_spki ? json_string(hex) : json_null(),
                                   "hpke_key_config", "version", 1, "cbor", cb, "measurements",
                                   t->measurements, "issued_at", (json_int_t)j->at)
                       : NULL;
  free(ev);
  free(cb);
  sh_gate__send_json(g, req, 200, b, NULL); /* NULL body: 500 */
}

void sh_gate__tee_done(sh_gate *g, gate_req *gr) {
  sh_gate__tee *t = g->tee;
  if (gr->kind == K_EVIDENCE) {
    evidence_done(g, gr);
    return;
  }
  /* K_REFRESH */
  t->refresh = NULL;
  take_cache(t, gr->ev);
  if (t->error[0]) sh_log(SH_LOG_ERROR, "server attestation: refresh failed: %s", t->error);
  sh_gate__evjob_free(gr->ev);
  free(gr);
  set_headers(g);
  health_wake(g);
}

int sh_gate__tee_request(sh_gate *g, sh_request *req) {
  sh_gate__tee *t = g->tee;
  int64_t now = sh_gate__now(g);
  if (req->tls) note_certificate(t, req);
  refresh_if_due(g, now);
  if (t->headers_on && !cache_valid(t, now)) set_headers(g); /* past its max age: off */
  int att = path_is(req, SH_GATE_TEE_ATTEST_PATH);
  if (!att && !path_is(req, t->health_path)) return 0;
  if (!method_is(req, "GET") && !method_is(req, "HEAD")) {
    sh_gate__send_json(g, req, 405, json_pack("{s:s}", "error", "method_not_allowed"), "GET, HEAD");
    return 1;
  }
  if (att)
    attestation_endpoint(g, req);
  else
    health_endpoint(g, req);
  return 1;
}
