/*
 * gate/pool.c — the bounded verification pool (docs/protocol.md §1.6): threads of the gate's own
 * (not libuv's shared pool, which also serves DNS and files), with caps on the verifications
 * queued or running per client address and in total (503 overloaded + Retry-After beyond).
 *
 * Two queues: verifications (header mode, establishments) and, with Redis, the state checks
 * of session requests (a round trip each; served first, since a request waits on each while a
 * verification is milliseconds of crypto).  A job (gate_req) is a copy of what the pool needs;
 * the pool never touches a sh_request.  After a verification the pool also does the state
 * step (after_verify): it consumes the nonce — or, under a timestamp policy, the signed
 * content — in the store (atomic: of two racing requests exactly one wins) and, for an
 * establishment, seals the session key and stores the session.
 *
 * Completions come back to the I/O thread through sh_server_post, one post per batch (the
 * first job done when none is on its way posts; the I/O thread takes them all), then
 * complete() answers or hands each request on.  A request the client abandoned while its job
 * ran is released then (the gate's reference), never before: the job still uses its gate_req.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "gate_internal.h"

/* ---- queues (pool.mu) */

static void push_job(sh_gate *g, gate_req **head, gate_req **tail, gate_req *gr) {
  pthread_mutex_lock(&g->pool.mu);
  gr->next = NULL;
  if (*tail)
    (*tail)->next = gr;
  else
    *head = gr;
  *tail = gr;
  pthread_cond_signal(&g->pool.cv);
  pthread_mutex_unlock(&g->pool.mu);
}

static gate_req *take_job(sh_gate *g) {
  int state = g->pool.sqhead != NULL;
  gate_req **head = state ? &g->pool.sqhead : &g->pool.qhead;
  gate_req **tail = state ? &g->pool.sqtail : &g->pool.qtail;
  gate_req *j = *head;
  *head = j->next;
  if (!*head) *tail = NULL;
  return j;
}

/* ---- on a pool thread */

/* Redis: a consumed nonce is refused before the verification work (the table does this on the
 * I/O thread, nonce.c).  1 when refused. */
static int replayed_before_verifying(sh_gate *g, gate_req *j) {
  if (!g->store->remote || j->timestamp) return 0;
  uint8_t key[SH_SHM_KEY_LEN];
  sh_gate__table_key(j->nonce, SH_ATTEST_NONCE_LEN, key);
  if (g->store->ops->consumed(g->store, key, j->at, j->state_msg, sizeof j->state_msg) != 1)
    return 0;
  j->state = ST_REPLAYED;
  return 1;
}

/* After a successful verification: consume the nonce (or, under a timestamp policy, the signed
 * content, §1.3) and for an establishment seal a new session key to k (before consuming: a bad
 * k must not burn the nonce) and store the session.  The I/O thread answers from j->state. */
static void after_verify(sh_gate *g, gate_req *j) {
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
    sh_gate__table_key(m, sizeof m, key);
    expires = j->at + g->max_age + 10;
  } else {
    sh_gate__table_key(j->nonce, SH_ATTEST_NONCE_LEN, key);
    expires = (j->nonce_issued > j->at ? j->nonce_issued : j->at) + SH_ATTEST_NONCE_TTL + 10;
  }
  int sealing = j->kind == K_ESTABLISH && !j->mtls;
  if (sealing && sh_gate__seal_session_key(j, skey) < 0) {
    j->state = ST_SEAL;
    return;
  }
  int rc = g->store->ops->consume(g->store, key, expires, j->at, j->state_msg, sizeof j->state_msg);
  if (rc == 1 && sealing && sh_gate__store_session(g, j, skey) < 0) rc = -1;
  OPENSSL_cleanse(skey, sizeof skey);
  j->state = rc == 1 ? ST_OK : rc == 0 ? ST_REPLAYED : ST_STORE;
}

static void verify_job(sh_gate *g, gate_req *j) {
  if (replayed_before_verifying(g, j)) return;
  sh_attest_options o = {0};
  o.at = j->at;
  o.policy = g->policy;
  if (!j->timestamp) {
    o.nonce = j->nonce;
    o.nonce_len = SH_ATTEST_NONCE_LEN;
    o.public_key = j->pk ? j->pk : (const uint8_t *)""; /* header mode: k is empty */
    o.public_key_len = j->pk ? j->pk_len : 0;
  }
  o.cache = g->cache;
  o.trust_simulated = g->cfg.trust_simulated;
  o.simulated_root = g->simulated_root.ptr ? &g->simulated_root : NULL;
  o.certs = j->certs; /* the establishment's "certs" (SNP VCEK/VLEK, ASK/ASVK, ARK) */
  o.ncerts = j->ncerts;
  if (g->cfg.clock)
    sh_log(SH_LOG_WARNING,
           "attestation: verifying with --attest-clock %lld, NOT the real time (--dev)",
           (long long)j->at);
  if (g->cfg.verify_delay_ms > 0) {
    struct timespec d = {g->cfg.verify_delay_ms / 1000, (g->cfg.verify_delay_ms % 1000) * 1000000L};
    nanosleep(&d, NULL);
  }
  if (g->cfg.on_verify) g->cfg.on_verify(g->cfg.on_verify_arg);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  /* keys/issuer/audience/collateral of the type, and fetching what is missing (verifier.c):
   * the one place the network may be used, on this pool thread, never on the I/O thread */
  if (sh_gate__verify(g->verifier, j->evidence, j->evidence_len, j->tee, &o, &j->result) < 0)
    j->result = NULL;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  j->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  free(j->evidence);
  j->evidence = NULL;
  after_verify(g, j);
}

static void on_done(void *arg);

static void *pool_main(void *arg) {
  sh_gate *g = arg;
  pthread_mutex_lock(&g->pool.mu);
  for (;;) {
    while (!g->pool.qhead && !g->pool.sqhead && !g->pool.stopping)
      pthread_cond_wait(&g->pool.cv, &g->pool.mu);
    if (g->pool.stopping) break;
    gate_req *j = take_job(g);
    pthread_mutex_unlock(&g->pool.mu);
    if (j->kind == K_SESSION)
      sh_gate__session_check(g, j); /* Redis: no verification */
    else if (j->kind == K_EVIDENCE || j->kind == K_REFRESH)
      sh_gate__tee_job(g, j); /* the server's own evidence */
    else
      verify_job(g, j);
    pthread_mutex_lock(&g->pool.mu);
    j->next = g->pool.done;
    g->pool.done = j;
    if (!g->pool.post_pending) {
      /* One post per batch.  If it fails (the server is stopping for good, or out of
       * memory), the next completion tries again; sh_gate_free frees what is left. */
      g->pool.post_pending = sh_server_post(g->srv, on_done, g) == 0;
    }
  }
  pthread_mutex_unlock(&g->pool.mu);
  g->store->ops->thread_done(g->store);
  return NULL;
}

/* ---- caps (I/O thread) */

static void client_add(sh_gate *g, const char *host, int d) {
  client_count *free_slot = NULL;
  for (int i = 0; i < g->cfg.max_pending; i++) {
    if (g->clients[i].n > 0 && strcmp(g->clients[i].host, host) == 0) {
      g->clients[i].n += d;
      return;
    }
    if (g->clients[i].n == 0 && !free_slot) free_slot = &g->clients[i];
  }
  if (d > 0 && free_slot) {
    snprintf(free_slot->host, sizeof free_slot->host, "%s", host);
    free_slot->n = d;
  }
}

static int client_n(const sh_gate *g, const char *host) {
  for (int i = 0; i < g->cfg.max_pending; i++)
    if (g->clients[i].n > 0 && strcmp(g->clients[i].host, host) == 0) return g->clients[i].n;
  return 0;
}

int sh_gate__enqueue(sh_gate *g, sh_request *req, gate_req *gr) {
  if (g->pending >= g->cfg.max_pending || client_n(g, req->client_host) >= g->cfg.max_per_client) {
    sh_gate__refuse(g, req, SH_ATTEST_OVERLOADED, "too many verifications in progress");
    return -1;
  }
  gr->at = sh_gate__now(g);
  gr->pending = 1;
  snprintf(gr->client, sizeof gr->client, "%s", req->client_host);
  g->pending++;
  client_add(g, gr->client, 1);
  push_job(g, &g->pool.qhead, &g->pool.qtail, gr);
  return 0;
}

void sh_gate__enqueue_refresh(sh_gate *g, gate_req *gr) {
  gr->at = sh_gate__now(g);
  push_job(g, &g->pool.qhead, &g->pool.qtail, gr);
}

int sh_gate__enqueue_state(sh_gate *g, sh_request *req, gate_req *gr) {
  if (g->state_pending >= SH_GATE_MAX_STATE_PENDING) {
    sh_gate__refuse(g, req, SH_ATTEST_OVERLOADED, "too many requests waiting on the state store");
    return -1;
  }
  gr->pending = 1;
  g->state_pending++;
  push_job(g, &g->pool.sqhead, &g->pool.sqtail, gr);
  return 0;
}

/* ---- completions (I/O thread) */

/* Metrics (summed over workers by the supervisor): verifications by evidence type, mode and
 * outcome, and their duration. */
static void count_verification(sh_gate *g, const gate_req *gr) {
  int m = gr->kind == K_ESTABLISH ? 1 : 0;
  int t = (int)gr->tee;
  int i = gr->result ? (int)gr->result->reason : (int)SH_ATTEST_OVERLOADED;
  if (i < 0 || i >= SH_ATTEST_REASON_COUNT_ || t < 0 || t >= SH_GATE_TEE_SLOTS) return;
  int *id = &g->metric_ids[t][m][i];
  if (*id == -2) {
    char labels[128];
    const char *nm = sh_attest_reason_name((sh_attest_reason)i);
    snprintf(labels, sizeof labels, "type=\"%s\",mode=\"%s\",result=\"%s\"", sh_tee_name((sh_tee)t),
             m ? "session" : "header", nm ? nm : "ok");
    *id = sh_metrics_counter("shield_attest_verifications_total", labels,
                             "Client attestation verifications by type, mode, outcome");
  }
  sh_metrics_add(*id, 1);
  if (g->metric_hist == -2)
    g->metric_hist = sh_metrics_histogram("shield_attest_verify_seconds", "",
                                          "Time to verify client attestation evidence");
  sh_metrics_observe(g->metric_hist, gr->seconds);
}

int sh_gate__state_failed(sh_gate *g, sh_request *req, const gate_req *gr) {
  static const struct {
    sh_attest_reason reason;
    const char *message;
  } answers[] = {
      [ST_SEAL] = {SH_ATTEST_MALFORMED,
                   "public key is not DER SPKI of an X25519 or RSA (>= 2048) key"},
      [ST_UNKNOWN] = {SH_ATTEST_SESSION_UNKNOWN, "no such session"},
      [ST_EXPIRED] = {SH_ATTEST_SESSION_EXPIRED, "the session has expired: attest again"},
      [ST_BADMAC] = {SH_ATTEST_PROOF_INVALID, "the proof MAC does not verify"},
      [ST_STALE] = {SH_ATTEST_PROOF_INVALID, "the proof time is not after the last one"},
  };
  if (gr->state == ST_OK) return 0;
  if (gr->state == ST_REPLAYED)
    sh_gate__refuse(g, req, SH_ATTEST_NONCE_REPLAYED,
                    gr->timestamp ? "the evidence was already used" : "the nonce was already used");
  else if (gr->state == ST_PROOF)
    sh_gate__refuse(g, req, SH_ATTEST_PROOF_INVALID, gr->proof_error);
  else if (gr->state < (int)(sizeof answers / sizeof *answers) && answers[gr->state].reason)
    sh_gate__refuse(g, req, answers[gr->state].reason, answers[gr->state].message);
  else /* ST_STORE (and ST_NONE, which cannot happen) */
    sh_gate__refuse(g, req, SH_ATTEST_OVERLOADED,
                    gr->state_msg[0] ? gr->state_msg : "state store unavailable");
  return 1;
}

static void complete(sh_gate *g, gate_req *gr) {
  if (gr->kind == K_REFRESH) { /* no request: the evidence cache's own job */
    sh_gate__tee_done(g, gr);
    return;
  }
  sh_request *req = gr->req;
  gr->pending = 0;
  if (gr->kind == K_SESSION) {
    g->state_pending--;
  } else {
    g->pending--;
    client_add(g, gr->client, -1);
    if (gr->kind != K_EVIDENCE && (gr->result || gr->state != ST_REPLAYED))
      count_verification(g, gr);
  }
  if (gr->disconnected) { /* nobody to answer: drop our reference (on_release frees gr) */
    sh_request_release(req);
    return;
  }
  if (gr->kind == K_SESSION) {
    sh_gate__session_checked(g, req, gr);
    return;
  }
  if (gr->kind == K_EVIDENCE) {
    sh_gate__tee_done(g, gr);
    return;
  }
  sh_attest_result *r = gr->result;
  if (!r && gr->state == ST_REPLAYED) { /* found consumed before verifying (Redis) */
    sh_gate__state_failed(g, req, gr);
    return;
  }
  if (!r) {
    sh_gate__fail(req);
    return;
  }
  if (!r->verified) {
    sh_gate__refuse(g, req, r->reason, r->message);
    return;
  }
  /* the pool consumed the nonce (only a successful verification does, §1.1) and, for an
   * establishment, sealed and stored the session: after_verify */
  if (sh_gate__state_failed(g, req, gr)) return;
  if (gr->kind == K_ESTABLISH) {
    sh_gate__establish_done(g, req, gr, r);
    return;
  }
  gr->pub.result = r;
  gr->pub.mode = "header";
  sh_gate__forward(g, req, gr);
}

static void on_done(void *arg) {
  sh_gate *g = arg;
  pthread_mutex_lock(&g->pool.mu);
  gate_req *list = g->pool.done;
  g->pool.done = NULL;
  g->pool.post_pending = 0;
  pthread_mutex_unlock(&g->pool.mu);
  gate_req *rev = NULL; /* oldest first */
  while (list) {
    gate_req *n = list->next;
    list->next = rev;
    rev = list;
    list = n;
  }
  while (rev) {
    gate_req *n = rev->next;
    rev->next = NULL;
    complete(g, rev);
    rev = n;
  }
}

/* ---- lifetime (main thread) */

int sh_gate__pool_start(sh_gate *g, sh_error *err) {
  pthread_mutex_init(&g->pool.mu, NULL);
  pthread_cond_init(&g->pool.cv, NULL);
  g->pool.threads = calloc((size_t)g->cfg.pool_threads, sizeof *g->pool.threads);
  if (!g->pool.threads) {
    sh_error_set(err, SH_ENOMEM, "out of memory");
    return SH_ENOMEM;
  }
  for (int i = 0; i < g->cfg.pool_threads; i++) {
    if (pthread_create(&g->pool.threads[i], NULL, pool_main, g) != 0) break;
    g->pool.nthreads++;
  }
  if (g->pool.nthreads == 0) {
    sh_error_set(err, SH_ESYS, "cannot start the attestation pool");
    return SH_ESYS;
  }
  return 0;
}

void sh_gate__pool_stop(sh_gate *g) {
  if (!g->pool.threads) return; /* never started */
  pthread_mutex_lock(&g->pool.mu);
  g->pool.stopping = 1;
  pthread_cond_broadcast(&g->pool.cv);
  pthread_mutex_unlock(&g->pool.mu);
  for (int i = 0; i < g->pool.nthreads; i++)
    pthread_join(g->pool.threads[i], NULL);
  g->pool.nthreads = 0;
  free(g->pool.threads);
  g->pool.threads = NULL;
  /* Jobs still queued or done belong to requests on the gate's live list (sh_gate_free). */
  g->pool.qhead = g->pool.qtail = g->pool.sqhead = g->pool.sqtail = g->pool.done = NULL;
  pthread_mutex_destroy(&g->pool.mu);
  pthread_cond_destroy(&g->pool.cv);
}
