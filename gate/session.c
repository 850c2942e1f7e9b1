/*
 * gate/session.c — requests of a session (docs/protocol.md §1.4, 2): X-Attestation-Session +
 * X-Attestation-Proof "t=<unix ms>, mac=<b64url>", mac = HMAC-SHA256(session key,
 * "shield-proof-v1" 0 t 0 METHOD 0 target 0 Content-Digest), t within ±60 s and after the last
 * accepted one; a body's Content-Digest (RFC 9530) is checked as the body streams.
 *
 * The session record (key, last accepted t, type) is in the state store, so every worker (and,
 * with Redis, every replica) checks proofs; the verified result is cached by the gate that
 * established the session, the others load the compact JSON copy kept with the record.  The
 * proof's cheap checks run here; the record, the MAC and the advance of t go through the store
 * — inline for the shared table, on the pool for Redis (a round trip) — then the request is
 * handed on with the session's result.
 *
 * A body that does not match its Content-Digest is found at its last byte, when the request
 * is already the app's: the gate takes the response over (sh_request_cut: 401 unless the app's
 * answer is on the wire, connection closed) and the app sees a disconnect.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "gate_internal.h"

/* ---- the sessions' cached results (I/O thread) */

static unsigned sess_bucket(const char *sid) {
  unsigned h = 2166136261u; /* FNV-1a: ids are random, the spread is all that matters */
  for (; *sid; sid++)
    h = (h ^ (unsigned char)*sid) * 16777619u;
  return h % SH_GATE_SESS_BUCKETS;
}

void sh_gate__sess_unref(sess *s) {
  if (s && --s->refs == 0) {
    sh_attest_result_free(s->r);
    free(s->tcb);
    free(s);
  }
}

sess *sh_gate__sess_find(sh_gate *g, const char *sid, int64_t now) {
  sess **pp = &g->sess_buckets[sess_bucket(sid)];
  while (*pp) {
    sess *s = *pp;
    if (s->expires <= now) { /* sweep as we go */
      *pp = s->next;
      g->sess_n--;
      sh_gate__sess_unref(s);
      continue;
    }
    if (strcmp(s->sid, sid) == 0) return s;
    pp = &s->next;
  }
  return NULL;
}

sess *sh_gate__sess_add(sh_gate *g, const char *sid, sh_attest_result *r, int64_t expires) {
  if (g->sess_n >= SH_GATE_MAX_SESSIONS) return NULL;
  sess *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  snprintf(s->sid, sizeof s->sid, "%s", sid);
  s->r = r;
  s->expires = expires;
  s->refs = 1;
  g->sess_n++;
  unsigned b = sess_bucket(sid);
  s->next = g->sess_buckets[b];
  g->sess_buckets[b] = s;
  return s;
}

void sh_gate__sess_free_all(sh_gate *g) {
  for (int b = 0; b < SH_GATE_SESS_BUCKETS; b++) { /* the cache's references */
    for (sess *s = g->sess_buckets[b], *n; s; s = n) {
      n = s->next;
      sh_gate__sess_unref(s);
    }
    g->sess_buckets[b] = NULL;
  }
  g->sess_n = 0;
}

void sh_gate__strip_result(sh_attest_result *r) {
  /* what later requests see: no per-establishment bytes (as the Python middleware) */
  free(r->public_key);
  free(r->user_data);
  free(r->nonce);
  free(r->raw_evidence);
  r->public_key = r->user_data = r->nonce = r->raw_evidence = NULL;
  r->public_key_len = r->user_data_len = r->nonce_len = r->raw_evidence_len = 0;
}

/* The result as the store keeps it for the other workers and replicas: compact JSON of what a
 * request handed on needs (no per-establishment bytes). */
char *sh_gate__result_to_json(const sh_attest_result *r) {
  char hex[65];
  sh_hex_encode(r->evidence_sha256, 32, hex);
  json_t *o = json_pack("{s:O?, s:O?, s:O?, s:b, s:s?, s:s?, s:f}", "m", r->measurements, "c",
                        r->claims, "a", r->advisories, "d", r->debug, "s", r->tcb_status, "e",
                        r->has_evidence_sha256 ? hex : NULL, "t", r->timestamp);
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (text && strlen(text) > SH_GATE_RESULT_MAX) {
    free(text);
    text = NULL;
  }
  return text;
}

/* A stored result as a new verified result of type `tee` under this gate's policy, or NULL. */
static sh_attest_result *result_from_json(const sh_gate *g, const char *text, uint8_t tee,
                                          char **tcb) {
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
  r->tee = (sh_tee)tee;
  json_t *m = json_object_get(o, "m"), *c = json_object_get(o, "c"), *a = json_object_get(o, "a");
  r->measurements = json_is_object(m) ? json_incref(m) : json_object();
  r->claims = json_is_object(c) ? json_incref(c) : json_object();
  r->advisories = json_is_array(a) ? json_incref(a) : json_array();
  r->debug = json_is_true(json_object_get(o, "d"));
  r->timestamp = json_real_value(json_object_get(o, "t"));
  const char *s = json_string_value(json_object_get(o, "s"));
  if (s) r->tcb_status = *tcb = strdup(s);
  const char *e = json_string_value(json_object_get(o, "e"));
  if (e && sh_hex_decode(e, strlen(e), r->evidence_sha256, 32) == 0) r->has_evidence_sha256 = 1;
  memcpy(r->policy_sha256, sh_attest_policy_sha256(g->policy), 32);
  json_decref(o);
  return r;
}

/* ---- the proof and the digest (I/O thread) */

/* RFC 9530 "sha-256=:<base64>:" (other algorithms ignored); 0 with out filled, or -1. */
static int parse_content_digest(const char *v, size_t len, uint8_t out[64], size_t *out_len) {
  size_t i = 0;
  while (i < len) {
    size_t e = i;
    while (e < len && v[e] != ',')
      e++;
    const char *p = v + i, *q = v + e;
    while (p < q && (*p == ' ' || *p == '\t'))
      p++;
    while (q > p && (q[-1] == ' ' || q[-1] == '\t'))
      q--;
    const char *eq = memchr(p, '=', (size_t)(q - p));
    const char *ke = eq ? eq : q;
    while (ke > p && (ke[-1] == ' ' || ke[-1] == '\t'))
      ke--;
    if (ke - p == 7 && strncasecmp(p, "sha-256", 7) == 0) {
      const char *a = eq ? eq + 1 : q;
      while (a < q && (*a == ' ' || *a == '\t'))
        a++;
      if (q - a < 2 || a[0] != ':' || q[-1] != ':') return -1;
      for (const char *c = a + 1; c < q - 1; c++)
        if (*c == '-' || *c == '_' || *c == ' ') return -1; /* RFC 8941 byte sequence */
      size_t n = 0;
      uint8_t *d = sh_b64_decode_alloc(a + 1, (size_t)(q - 1 - (a + 1)), SH_B64_LENIENT, &n);
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
static const char *parse_proof(sh_gate *g, sh_request *req, gate_req *gr) {
  const sh_iovec *proof = sh_request_header(req, "x-attestation-proof");
  if (!proof || proof->len == 0) return "X-Attestation-Proof is missing";
  int64_t t = -1;
  long mac_len = -2; /* -2: no mac=, -1: not base64 */
  int have_t = 0, bad = 0;
  for (size_t i = 0; i < proof->len;) {
    size_t e = i;
    while (e < proof->len && proof->base[e] != ',')
      e++;
    const char *p = proof->base + i, *q = proof->base + e;
    while (p < q && (*p == ' ' || *p == '\t'))
      p++;
    while (q > p && (q[-1] == ' ' || q[-1] == '\t'))
      q--;
    const char *eq = memchr(p, '=', (size_t)(q - p));
    if (eq) {
      const char *ke = eq, *a = eq + 1;
      while (ke > p && ke[-1] == ' ')
        ke--;
      while (a < q && *a == ' ')
        a++;
      if (ke - p == 1 && *p == 't') {
        have_t = 1;
        t = 0;
        if (a == q || q - a > 18) bad = 1;
        for (const char *c = a; c < q && !bad; c++) {
          if (*c < '0' || *c > '9')
            bad = 1;
          else
            t = t * 10 + (*c - '0');
        }
      } else if (ke - p == 3 && memcmp(p, "mac", 3) == 0) {
        /* decoded into room for more than 32 bytes, so a MAC of the wrong length is
         * "does not verify" and only non-base64 is "malformed" */
        uint8_t mac[64];
        size_t n = 0;
        if (q - a > 86 ||
            sh_b64_decode(a, (size_t)(q - a), SH_B64_LENIENT, mac, sizeof mac, &n) < 0)
          bad = 1;
        else {
          mac_len = (long)n;
          if (n == 32) memcpy(gr->proof_mac, mac, 32);
        }
      }
    }
    i = e + 1;
  }
  if (!have_t || mac_len == -2 || bad) return "X-Attestation-Proof is malformed";
  if (mac_len != 32) return "the proof MAC does not verify";
  gr->proof_t = t;
  int64_t nm = sh_gate__now_ms(g);
  if (t > nm + SH_GATE_PROOF_WINDOW_MS || t < nm - SH_GATE_PROOF_WINDOW_MS)
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
static int expect_digest(sh_gate *g, sh_request *req, gate_req *gr) {
  if (!req->has_body) {
    uint8_t d[32];
    if (sh_attest_sha256("", 0, d) < 0 || gr->want_len != 32 ||
        CRYPTO_memcmp(d, gr->want_digest, 32) != 0) {
      sh_gate__refuse(g, req, SH_ATTEST_PROOF_INVALID, "the body does not match Content-Digest");
      return -1;
    }
    return 0;
  }
  gr->md = EVP_MD_CTX_new();
  if (!gr->md || EVP_DigestInit_ex(gr->md, EVP_sha256(), NULL) != 1) {
    sh_gate__fail(req);
    return -1;
  }
  return 0;
}

void sh_gate__session_mode(sh_gate *g, sh_request *req, const sh_iovec *sidv) {
  if (sidv->len >= sizeof((gate_req *)0)->sid) {
    sh_gate__refuse(g, req, SH_ATTEST_SESSION_UNKNOWN, "no such session");
    return;
  }
  gate_req *gr = sh_gate__attach(g, req);
  if (!gr) return;
  gr->kind = K_SESSION;
  memcpy(gr->sid, sidv->base, sidv->len);
  gr->sid[sidv->len] = '\0';
  const sh_iovec *digest = sh_request_header(req, "content-digest");
  if (digest && digest->len == 0) digest = NULL;
  const char *bad = parse_proof(g, req, gr);
  if (!bad && (req->chunked || req->content_length > 0) && !digest)
    bad = "a request with a body needs Content-Digest";
  if (!bad && digest &&
      parse_content_digest(digest->base, digest->len, gr->want_digest, &gr->want_len) < 0)
    bad = "Content-Digest is not sha-256=:…:";
  gr->proof_error = bad;
  if (copy_mac_input(req, gr, digest) < 0) {
    sh_gate__fail(req);
    return;
  }
  gr->has_digest = digest != NULL;
  gr->at = sh_gate__now(g);
  gr->need_result = sh_gate__sess_find(g, gr->sid, gr->at) == NULL;
  if (g->store->remote) {
    sh_gate__enqueue_state(g, req, gr);
    return;
  }
  sh_gate__session_check(g, gr);
  sh_gate__session_checked(g, req, gr);
}

/* Any thread (the I/O thread with the table, the pool with Redis). */
void sh_gate__session_check(sh_gate *g, gate_req *j) {
  gate_session s;
  int rc = sh_gate__session_get(g->store, j->sid, &s, j->need_result ? &j->result_json : NULL,
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
  int mac_ok =
      sh_attest_proof_mac(s.key, j->proof_t, m, j->method_len, m + j->method_len, j->target_len,
                          m + j->method_len + j->target_len, j->digest_len, want) == 0 &&
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
  rc = g->store->ops->session_advance(g->store, j->sid, j->proof_t, j->at, j->state_msg,
                                      sizeof j->state_msg);
  j->state = rc == 1                         ? ST_OK
             : rc == 0                       ? ST_STALE
             : rc == SH_GATE_SESSION_EXPIRED ? ST_EXPIRED
                                             : ST_STORE;
}

void sh_gate__session_checked(sh_gate *g, sh_request *req, gate_req *gr) {
  if (sh_gate__state_failed(g, req, gr)) return;
  sess *s = sh_gate__sess_find(g, gr->sid, gr->at);
  if (!s) {
    char *tcb = NULL;
    sh_attest_result *r = result_from_json(g, gr->result_json, gr->sess_tee, &tcb);
    if (r) {
      s = sh_gate__sess_add(g, gr->sid, r, gr->sess_expires);
      if (s)
        s->tcb = tcb;
      else {
        sh_attest_result_free(r);
        free(tcb);
      }
    }
  }
  free(gr->result_json);
  gr->result_json = NULL;
  if (!s) {
    sh_gate__refuse(g, req, SH_ATTEST_OVERLOADED, "too many sessions");
    return;
  }
  if (gr->has_digest && expect_digest(g, req, gr) < 0) return;
  s->refs++;
  gr->sess = s;
  gr->pub.result = s->r;
  gr->pub.mode = "session";
  gr->pub.session = s->sid;
  sh_gate__forward(g, req, gr);
}

/* ---- the body (I/O thread) */

/* The body did not match its Content-Digest: the gate takes the response over (401 unless
 * the app's answer is on the wire already; the connection is not reused, the app's own
 * answer is dropped) and tells the app, which sees a disconnect. */
static void digest_failed(sh_gate *g, sh_request *req, gate_req *gr) {
  const char *msg = "the body does not match Content-Digest";
  char *text = sh_gate__error_body(SH_ATTEST_PROOF_INVALID, msg);
  sh_header h[2] = {{{"content-type", 12}, {"application/json", 16}},
                    {{"www-authenticate", 16}, {"Attestation realm=\"shield\"", 26}}};
  sh_log(SH_LOG_INFO, "attestation refused (request %llu, %s): proof_invalid: %s",
         (unsigned long long)req->id, req->client_host, msg);
  sh_request_cut(req, sh_attest_reason_status(SH_ATTEST_PROOF_INVALID), h, 2, text ? text : "",
                 text ? strlen(text) : 0);
  free(text);
  if (!gr->inner_disconnected) {
    gr->inner_disconnected = 1;
    if (g->inner->on_disconnect) g->inner->on_disconnect(g->inner, req);
  }
}

int sh_gate__session_body(sh_gate *g, sh_request *req, gate_req *gr, char *chunk, size_t len,
                          int last) {
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
  digest_failed(g, req, gr);
  return 1;
}
