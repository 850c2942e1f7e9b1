/*
 * gate/establish.c — POST /.well-known/shield/attest (docs/protocol.md §1.4, 2 and 3).
 *
 * The body {"type", "evidence", "nonce", "public_key"?, "certs"?} is read here (at most
 * SH_GATE_MAX_ATTEST_BODY), checked like header mode (type, nonce) and verified on the pool
 * with k = public_key.  Then, on the pool too (pool.c after_verify): a fresh 32-byte session
 * key is sealed to k (HPKE base mode, or RSA-OAEP-256 for an RSA k) and the session stored
 * — before the nonce is consumed, so that a bad k never burns a nonce — and the answer is
 * {"session", "expires_in", "alg", "enc"?, "sealed_key"}.  Only the holder of k's private key
 * can unseal the key: the proof of possession a bare evidence header lacks.
 *
 * Mutual TLS: the same POST without "public_key" on a connection whose client certificate
 * the server verified binds k = that certificate's SPKI; the connection is then the session
 * (mtls.c) and the answer is {"mode": "mtls", "expires_in"}.
 */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gate_internal.h"

#define SESSION_INFO "shield-session-v1"

/* The body's optional "certs" (§1.4, 2: the SNP certificates the report does not carry, as
 * in the §1.5 CBOR bundle): {"vcek"|"vlek", "ask"|"asvk", "ark"} -> base64url DER, at most
 * one of each pair.  0 (absent is fine), or -1 when malformed. */
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
    uint8_t *der =
        sh_b64_decode_alloc(json_string_value(v), json_string_length(v), SH_B64_LENIENT, &n);
    if (!der) return -1;
    gr->certs[gr->ncerts++] = (sh_iovec){.ptr = der, .len = n};
  }
  return 0;
}

/* The whole body read: parse, check, queue.  Every failure is answered here. */
static void establish_parse(sh_gate *g, sh_request *req, gate_req *gr) {
  json_error_t je;
  json_t *doc = json_loadb(gr->body ? gr->body : "", gr->body_len, 0, &je);
  free(gr->body);
  gr->body = NULL;
  if (!json_is_object(doc)) {
    json_decref(doc);
    sh_gate__refuse(g, req, SH_ATTEST_MALFORMED, "the body is not a JSON object");
    return;
  }
  json_t *t = json_object_get(doc, "type");
  if (t && !json_is_string(t)) {
    sh_gate__refuse(g, req, SH_ATTEST_UNSUPPORTED_TYPE, "unknown evidence type");
    json_decref(doc);
    return;
  }
  sh_tee tee =
      sh_gate__check_type(g, req, t ? json_string_value(t) : NULL, t ? json_string_length(t) : 0);
  if (tee == SH_TEE_UNKNOWN) {
    json_decref(doc);
    return;
  }
  json_t *n = json_object_get(doc, "nonce");
  if (n && !json_is_string(n)) {
    sh_gate__refuse(g, req, SH_ATTEST_NONCE_INVALID, "the nonce is not base64url");
    json_decref(doc);
    return;
  }
  int64_t issued = 0;
  if (sh_gate__check_nonce(g, req, n ? json_string_value(n) : NULL, n ? json_string_length(n) : 0,
                           gr->nonce, &issued) < 0) {
    json_decref(doc);
    return;
  }
  if (take_certs(gr, json_object_get(doc, "certs")) < 0) {
    json_decref(doc);
    sh_gate__refuse(g, req, SH_ATTEST_MALFORMED,
                    "\"certs\" must map vcek|vlek, ask|asvk, ark to base64url DER");
    return;
  }
  json_t *pk = json_object_get(doc, "public_key"), *ev = json_object_get(doc, "evidence");
  if (json_is_string(pk)) {
    gr->pk = sh_b64_decode_alloc(json_string_value(pk), json_string_length(pk), SH_B64_LENIENT,
                                 &gr->pk_len);
  } else if (!pk && sh_gate__mtls_id(req, gr->mtls_id) == 0) {
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
    gr->evidence = sh_gate__decode_evidence(tee, json_string_value(ev), json_string_length(ev),
                                            &gr->evidence_len);
  json_decref(doc);
  if (!gr->pk || !gr->evidence) {
    sh_gate__refuse(g, req, SH_ATTEST_MALFORMED, "evidence and public_key are required");
    return;
  }
  gr->tee = tee;
  gr->nonce_issued = issued;
  sh_gate__enqueue(g, req, gr); /* on failure it answered: gr may be gone (released at once) */
}

void sh_gate__establish_start(sh_gate *g, sh_request *req) {
  gate_req *gr = sh_gate__attach(g, req);
  if (!gr) return;
  gr->kind = K_ESTABLISH;
  if (req->has_body)
    sh_request_read(req);
  else
    establish_parse(g, req, gr);
}

void sh_gate__establish_body(sh_gate *g, sh_request *req, gate_req *gr, char *chunk, size_t len,
                             int last) {
  if (gr->answered || gr->discard) {
    free(chunk);
    sh_request_consumed(req, len);
    return;
  }
  if (gr->body_len + len > SH_GATE_MAX_ATTEST_BODY) {
    free(chunk);
    sh_request_consumed(req, len);
    gr->discard = 1; /* answered now (the server drains or closes the rest) */
    sh_gate__refuse(g, req, SH_ATTEST_MALFORMED, "attestation body too large");
    return;
  }
  if (gr->body_len + len > gr->body_cap) {
    size_t cap = gr->body_cap ? gr->body_cap * 2 : 4096;
    while (cap < gr->body_len + len)
      cap *= 2;
    char *b = realloc(gr->body, cap);
    if (!b) {
      free(chunk);
      sh_gate__refuse(g, req, SH_ATTEST_MALFORMED, "attestation body too large");
      return;
    }
    gr->body = b;
    gr->body_cap = cap;
  }
  if (len) memcpy(gr->body + gr->body_len, chunk, len);
  gr->body_len += len;
  free(chunk);
  sh_request_consumed(req, len);
  if (last) establish_parse(g, req, gr);
}

/* ---- on the pool, after a verified establishment (pool.c after_verify) */

int sh_gate__seal_session_key(gate_req *j, uint8_t skey[32]) {
  if (RAND_bytes(skey, 32) != 1) return -1;
  return sh_crypto_seal_to_spki(j->pk, j->pk_len, (const uint8_t *)SESSION_INFO,
                                strlen(SESSION_INFO), skey, 32, &j->alg, j->enc, &j->enc_len,
                                &j->ct, &j->ct_len);
}

int sh_gate__store_session(sh_gate *g, gate_req *j, const uint8_t skey[32]) {
  uint8_t sidb[24];
  if (RAND_bytes(sidb, sizeof sidb) != 1) {
    snprintf(j->state_msg, sizeof j->state_msg, "no randomness for a session id");
    return -1;
  }
  sh_b64_encode(sidb, sizeof sidb, SH_B64_PROTOCOL, j->sid);
  sh_gate__strip_result(j->result);
  char *json = sh_gate__result_to_json(j->result);
  if (!json) {
    snprintf(j->state_msg, sizeof j->state_msg, "the verification result is too large");
    return -1;
  }
  gate_session rec = {
      .last_t = -1, .expires = j->at + SH_GATE_SESSION_TTL, .tee = (uint8_t)j->result->tee};
  memcpy(rec.key, skey, 32);
  int rc = g->store->ops->session_put(g->store, j->sid, &rec, json, j->at, j->state_msg,
                                      sizeof j->state_msg);
  OPENSSL_cleanse(&rec, sizeof rec);
  free(json);
  return rc;
}

/* ---- back on the I/O thread */

void sh_gate__establish_done(sh_gate *g, sh_request *req, gate_req *gr, sh_attest_result *r) {
  if (g->sess_n >= SH_GATE_MAX_SESSIONS) {
    sh_gate__refuse(g, req, SH_ATTEST_OVERLOADED, "too many sessions");
    return;
  }
  if (gr->mtls) {
    sh_gate__strip_result(r);
    if (!sh_gate__sess_add(g, gr->mtls_id, r, sh_gate__now(g) + SH_GATE_SESSION_TTL)) {
      sh_gate__fail(req);
      return;
    }
    gr->result = NULL; /* the cache owns it */
    g->mtls_count++;
    sh_gate__send_json(g, req, 200,
                       json_pack("{s:s, s:i}", "mode", "mtls", "expires_in", SH_GATE_SESSION_TTL),
                       NULL);
    return;
  }
  if (sh_gate__sess_add(g, gr->sid, r, gr->at + SH_GATE_SESSION_TTL)) gr->result = NULL;
  char *sealed = malloc(gr->ct_len * 4 / 3 + 4), encs[64];
  if (!sealed) {
    sh_gate__fail(req);
    return;
  }
  sh_b64_encode(gr->ct, gr->ct_len, SH_B64_PROTOCOL, sealed);
  json_t *out = json_pack("{s:s, s:i, s:s, s:s}", "session", gr->sid, "expires_in",
                          SH_GATE_SESSION_TTL, "alg", gr->alg, "sealed_key", sealed);
  free(sealed);
  if (out && gr->enc_len) {
    sh_b64_encode(gr->enc, gr->enc_len, SH_B64_PROTOCOL, encs);
    json_object_set_new(out, "enc", json_string(encs));
  }
  sh_gate__send_json(g, req, 200, out, NULL);
}
