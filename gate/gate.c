/*
 * gate/gate.c — the gate as a handler (server.h) wrapped around another: routing of the
 * well-known endpoints, handing requests on, and the gate's lifetime.
 *
 * For each request head (I/O thread):
 *   GET  /.well-known/shield/nonce   answered here (nonce.c);
 *   POST /.well-known/shield/attest  a session or a mutual-TLS connection is established
 *                                    (establish.c);
 *   X-Attestation-Session            a request of a session (session.c);
 *   X-Attestation-Token              header mode (header.c);
 *   a connection attested by mutual TLS: handed on with its result (mtls.c);
 *   otherwise 401 missing under --attest-required (unless the path is excluded), else handed
 *   on without a result.
 * The inner handler sees a request only once the gate hands it on, with the attestation in
 * the gate's extension slot (sh_gate_request_attestation); until then the body is not read
 * (the inner handler asks for it), so no body event can overtake its on_request.  Error
 * bodies and messages mirror the Python middleware (the same protocol under other servers).
 *
 * Per-request state: a gate_req in the gate's extension slot (one key for every gate of the
 * process; a gate serves one server), or a pointer to the gate's `plain` attestation for a
 * request handed on without evidence (no allocation on that path).  Every gate_req is on the
 * gate's live list until on_release frees it, so sh_gate_free can free what a server never
 * released.
 */
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "gate_internal.h"

/* ---- the extension slot */

static pthread_once_t ext_once = PTHREAD_ONCE_INIT;
static int ext_key = -1; /* written once, before any gate serves */

static void take_ext_key(void) {
  ext_key = sh_request_ext_key();
}

gate_req *sh_gate__req_of(const sh_gate *g, const sh_request *req) {
  void *x = sh_request_ext(req, ext_key);
  return x == (const void *)&g->plain || x == (const void *)&g->passthru ? NULL : x;
}

/* The inner handler has the request: forward() set the policy marker (or, without
 * --attest-types, the passthru slot), nothing else does. */
static int handed_on(const sh_gate *g, const sh_request *req) {
  const sh_gate_attestation *a = sh_request_ext(req, ext_key);
  return a && (a->policy_sha256 || a == &g->passthru);
}

const sh_gate_attestation *sh_gate_request_attestation(const sh_request *req) {
  if (!req || ext_key < 0) return NULL;
  const sh_gate_attestation *a = sh_request_ext(req, ext_key);
  return a && a->policy_sha256 ? a : NULL;
}

/* ---- helpers */

int64_t sh_gate__now(const sh_gate *g) {
  return g->cfg.clock ? g->cfg.clock : (int64_t)time(NULL);
}

int64_t sh_gate__now_ms(const sh_gate *g) {
  if (g->cfg.clock) return g->cfg.clock * 1000;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sh_gate__fail(sh_request *req) {
  sh_request_fail(req);
  sh_request_release(req);
}

static void gate_req_free(gate_req *gr) {
  sh_attest_result_free(gr->result);
  free(gr->evidence);
  free(gr->body);
  free(gr->pk);
  EVP_MD_CTX_free(gr->md);
  sh_gate__sess_unref(gr->sess);
  free(gr->ct);
  for (size_t i = 0; i < gr->ncerts; i++)
    free((void *)gr->certs[i].ptr);
  free(gr->mac_input);
  free(gr->result_json);
  sh_gate__evjob_free(gr->ev);
  free(gr);
}

gate_req *sh_gate__attach(sh_gate *g, sh_request *req) {
  gate_req *gr = sh_gate__req_of(g, req);
  if (gr) return gr;
  gr = calloc(1, sizeof *gr);
  if (!gr) {
    sh_gate__fail(req);
    return NULL;
  }
  gr->g = g;
  gr->req = req;
  gr->live_next = g->live.live_next;
  gr->live_prev = &g->live;
  g->live.live_next->live_prev = gr;
  g->live.live_next = gr;
  sh_request_set_ext(req, ext_key, gr);
  return gr;
}

static void detach(sh_gate *g, sh_request *req) {
  gate_req *gr = sh_gate__req_of(g, req);
  sh_request_set_ext(req, ext_key, NULL);
  if (!gr) return;
  gr->live_prev->live_next = gr->live_next;
  gr->live_next->live_prev = gr->live_prev;
  gate_req_free(gr);
}

void sh_gate__forward(sh_gate *g, sh_request *req, gate_req *gr) {
  if (!g->types) /* --tee alone: no client attestation, no policy marker */
    sh_request_set_ext(req, ext_key, &g->passthru);
  else if (gr)
    gr->pub.policy_sha256 = g->policy_hex;
  else
    sh_request_set_ext(req, ext_key, &g->plain);
  if (g->inner->on_request) g->inner->on_request(g->inner, req);
}

static int excluded(const sh_gate *g, const sh_request *r) {
  for (int i = 0; i < g->cfg.num_exclude; i++) {
    const char *p = g->cfg.exclude[i];
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
      n--; /* p.rstrip("/") */
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

/* RFC 9110 §15.5.6: a 405 carries Allow with the methods the resource supports. */
static void send_405(sh_gate *g, sh_request *req, const char *allow) {
  sh_gate__send_json(g, req, 405, json_pack("{s:s}", "error", "method_not_allowed"), allow);
}

/* ---- handler callbacks */

/* The server is known: the state every worker shares is the server's (a supervisor mapped the
 * table and made the secret before forking), else the gate's own (a single process). */
static void g_on_start(sh_handler *h, sh_server *srv) {
  sh_gate *g = h->data;
  g->srv = srv;
  size_t slen = 0;
  const unsigned char *sec = sh_server_state_secret(srv, &slen);
  if (sec && slen >= SH_ATTEST_SECRET_MIN) {
    g->secret = sec;
    g->secret_len = slen;
  }
  if (!g->store->remote) {
    sh_shm_table *t = sh_server_shared_table(srv);
    if (t) { /* the shared one: ours is never used */
      sh_shm_table_free(g->own_table);
      g->own_table = NULL;
    }
    sh_gate__store_shm_set_table(g->store, t ? t : g->own_table);
  }
  if (g->tee) sh_gate__tee_start(g);
  if (g->inner->on_start) g->inner->on_start(g->inner, srv);
}

static void g_on_request(sh_handler *h, sh_request *req) {
  sh_gate *g = h->data;
  if (!g->srv) { /* on_start never came: no state to check anything against */
    sh_gate__fail(req);
    return;
  }
  /* the server's own TEE (§4) first: its endpoints never need client attestation */
  if (g->tee && sh_gate__tee_request(g, req)) return;
  if (!g->types) { /* --tee alone: the client-attestation endpoints and modes are off */
    sh_gate__forward(g, req, NULL);
    return;
  }
  if (path_is(req, SH_GATE_NONCE_PATH)) {
    if (!method_is(req, "GET") && !method_is(req, "HEAD"))
      send_405(g, req, "GET, HEAD");
    else
      sh_gate__nonce_endpoint(g, req);
    return;
  }
  if (path_is(req, SH_GATE_ATTEST_PATH)) {
    if (!method_is(req, "POST"))
      send_405(g, req, "POST");
    else
      sh_gate__establish_start(g, req);
    return;
  }
  const sh_iovec *sid = sh_request_header(req, "x-attestation-session");
  if (sid && sid->len) {
    sh_gate__session_mode(g, req, sid);
    return;
  }
  const sh_iovec *token = sh_request_header(req, "x-attestation-token");
  if (token && token->len) {
    sh_gate__header_mode(g, req, token);
    return;
  }
  if (g->mtls_count && sh_gate__mtls_request(g, req)) return;
  if (g->cfg.required && !excluded(g, req)) {
    sh_gate__refuse(g, req, SH_ATTEST_MISSING, "client attestation is required");
    return;
  }
  sh_gate__forward(g, req, NULL);
}

static void g_on_body(sh_handler *h, sh_request *req, char *chunk, size_t len, int last) {
  sh_gate *g = h->data;
  gate_req *gr = sh_gate__req_of(g, req);
  if (!handed_on(g, req)) {
    if (gr && gr->kind == K_ESTABLISH)
      sh_gate__establish_body(g, req, gr, chunk, len, last);
    else
      free(chunk);
    return;
  }
  if (gr && gr->md && sh_gate__session_body(g, req, gr, chunk, len, last)) return;
  if (g->inner->on_body)
    g->inner->on_body(g->inner, req, chunk, len, last);
  else
    free(chunk);
}

static void g_on_disconnect(sh_handler *h, sh_request *req) {
  sh_gate *g = h->data;
  gate_req *gr = sh_gate__req_of(g, req);
  if (!handed_on(g, req)) {
    /* The gate still holds the request: a job on the pool releases it when it comes back
     * (pool.c); otherwise (an establishment body being read when the client aborted or
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
  if (g->inner->on_disconnect) g->inner->on_disconnect(g->inner, req);
}

static void g_on_writable(sh_handler *h, sh_request *req) {
  sh_gate *g = h->data;
  if (handed_on(g, req) && g->inner->on_writable) g->inner->on_writable(g->inner, req);
}

static void g_on_release(sh_handler *h, sh_request *req) {
  sh_gate *g = h->data;
  if (handed_on(g, req) && g->inner->on_release) g->inner->on_release(g->inner, req);
  detach(g, req);
}

static void g_on_flush(sh_handler *h) {
  sh_gate *g = h->data;
  if (g->inner->on_flush) g->inner->on_flush(g->inner);
}

/* ---- lifetime */

/* The one policy field the gate itself needs (§1.3): its freshness mode and max age. */
static void read_freshness(sh_gate *g) {
  g->max_age = 300;
  if (!g->cfg.policy) return;
  json_error_t je;
  json_t *doc = json_load_file(g->cfg.policy, 0, &je);
  const char *fr = json_string_value(json_object_get(doc, "freshness"));
  json_int_t ma = json_integer_value(json_object_get(doc, "max_age"));
  g->timestamp_ok = fr && strcmp(fr, "timestamp") == 0;
  g->unfresh_ok = fr && strcmp(fr, "none") == 0; /* the policy loader required allow_unfresh */
  if (ma > 0) g->max_age = (int64_t)ma;
  json_decref(doc);
}

/* What the gate runs with, once it is set up (development settings loudly). */
static void log_settings(const sh_gate *g) {
  const sh_gate_config *c = &g->cfg;
  sh_log(SH_LOG_INFO, "client attestation: types %s, policy %s (sha256 %.16s…), %s%s", c->types,
         c->policy ? c->policy : "production", g->policy_hex, c->required ? "required" : "optional",
         c->trust_simulated ? ", simulated evidence TRUSTED (development)" : "");
  if (c->verify_delay_ms > 0)
    sh_log(SH_LOG_WARNING,
           "--dev: every attestation verification is delayed by %ld ms "
           "(SHIELD_ATTEST_VERIFY_DELAY_MS)",
           c->verify_delay_ms);
  if (c->clock) {
    time_t t = (time_t)c->clock;
    struct tm tm;
    char when[32];
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    sh_log(SH_LOG_WARNING,
           "*** --dev --attest-clock %s: attestation is verified as of that time, NOT the "
           "real time.  Never use this in production. ***",
           when);
  }
}

sh_gate *sh_gate_new(const sh_gate_config *gc, sh_handler *inner, sh_error *err) {
  if (!gc || !inner) {
    sh_error_set(err, SH_EINVAL, "sh_gate_new: a config and an inner handler are required");
    return NULL;
  }
  if (!gc->types && !gc->tee) {
    sh_error_set(err, SH_EINVAL,
                 "the gate needs --attest-types (client attestation) or --tee (the server's "
                 "own TEE)");
    return NULL;
  }
  pthread_once(&ext_once, take_ext_key);
  if (ext_key < 0) {
    sh_error_set(err, SH_ENOMEM, "no request extension slot left for the attestation gate");
    return NULL;
  }
  if (sh_gate_config_check(gc, err) < 0) return NULL;
  sh_gate *g = calloc(1, sizeof *g);
  if (!g) {
    sh_error_set(err, SH_ENOMEM, "out of memory");
    return NULL;
  }
  g->live.live_next = g->live.live_prev = &g->live;
  g->cfg = *gc;
  g->inner = inner;
  g->metric_hist = -2;
  for (int t = 0; t < SH_GATE_TEE_SLOTS; t++)
    for (int m = 0; m < 2; m++)
      for (int i = 0; i < SH_ATTEST_REASON_COUNT_; i++)
        g->metric_ids[t][m][i] = -2;
  if (g->cfg.pool_threads <= 0) g->cfg.pool_threads = 4;
  if (g->cfg.max_pending <= 0) g->cfg.max_pending = 64;
  if (g->cfg.max_per_client <= 0) g->cfg.max_per_client = 16;
  if (!g->cfg.state_table_size) g->cfg.state_table_size = 65536;
  char bad[48], msg[160];
  if (gc->types && sh_gate__parse_types(gc->types, &g->types, bad, sizeof bad) < 0) {
    sh_error_set(err, SH_EINVAL, "--attest-types: '%s' is not a TEE type", bad); /* checked above */
    goto fail;
  }
  if (gc->policy) {
    if (sh_attest_policy_load_file(gc->policy, &g->policy, msg, sizeof msg) < 0) {
      sh_error_set(err, SH_EINVAL, "--attest-policy %.60s: %s", gc->policy, msg);
      goto fail;
    }
  } else if (!(g->policy = sh_attest_policy_production())) {
    sh_error_set(err, SH_ENOMEM, "out of memory");
    goto fail;
  }
  read_freshness(g);
  sh_hex_encode(sh_attest_policy_sha256(g->policy), 32, g->policy_hex);
  g->plain.policy_sha256 = g->policy_hex;
  g->simulated_root = (sh_iovec){.ptr = gc->simulated_root, .len = gc->simulated_root_len};
  if (!(g->cache = sh_attest_cache_new(4096)) ||
      !(g->clients = calloc((size_t)g->cfg.max_pending, sizeof *g->clients))) {
    sh_error_set(err, SH_ENOMEM, "out of memory");
    goto fail;
  }
  /* JWKS files and DCAP collateral read once, the fetcher created (verifier.c) */
  if (!(g->verifier = sh_gate__verifier_new(&g->cfg, g->types, err))) goto fail;
  if (g->unfresh_ok)
    sh_log(SH_LOG_WARNING,
           "*** --attest-policy says \"freshness\": \"none\": evidence is accepted without a "
           "nonce (development only; each document is still single-use) ***");
  if (RAND_bytes(g->own_secret, sizeof g->own_secret) != 1) {
    sh_error_set(err, SH_ESYS, "cannot generate the nonce secret");
    goto fail;
  }
  g->secret = g->own_secret; /* until the server's shared one is known (on_start) */
  g->secret_len = sizeof g->own_secret;
  if (gc->state_url) {
    if (!(g->store = sh_gate__store_redis_new(gc->state_url, err))) goto fail;
  } else {
    /* Made now so that a failure stops start-up; dropped in on_start when the server has a
     * shared table (anonymous memory, untouched until used: costs address space only). */
    if (sh_shm_table_create(g->cfg.state_table_size, &g->own_table, err) < 0) goto fail;
    if (!(g->store = sh_gate__store_shm_new())) {
      sh_error_set(err, SH_ENOMEM, "out of memory");
      goto fail;
    }
  }
  g->h = (sh_handler){.data = g,
                      .on_start = g_on_start,
                      .on_request = g_on_request,
                      .on_body = g_on_body,
                      .on_disconnect = g_on_disconnect,
                      .on_writable = g_on_writable,
                      .on_release = g_on_release,
                      .on_flush = g_on_flush};
  if (gc->tee && !(g->tee = sh_gate__tee_new(gc, g->verifier, err))) goto fail;
  if (sh_gate__pool_start(g, err) < 0) goto fail;
  if (gc->types) log_settings(g);
  return g;
fail:
  sh_gate_free(g);
  return NULL;
}

sh_handler *sh_gate_handler(sh_gate *g) {
  return g ? &g->h : NULL;
}

void sh_gate_free(sh_gate *g) {
  if (!g) return;
  sh_gate__pool_stop(g); /* joined: no thread touches a job or posts to the server any more */
  /* Requests the server never released (it frees them itself): drop our state of them. */
  while (g->live.live_next != &g->live) {
    gate_req *gr = g->live.live_next;
    gr->live_next->live_prev = &g->live;
    g->live.live_next = gr->live_next;
    gate_req_free(gr);
  }
  sh_gate__sess_free_all(g);
  sh_gate__tee_free(g->tee); /* after the pool: its refresh job is back or never ran */
  sh_attest_cache_free(g->cache);
  sh_gate__verifier_free(g->verifier); /* the pool is joined: no fetch is running */
  sh_attest_policy_free(g->policy);
  if (g->store) g->store->ops->free(g->store);
  sh_shm_table_free(g->own_table);
  free(g->clients);
  free(g);
}
