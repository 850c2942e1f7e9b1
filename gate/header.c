/*
 * gate/header.c — header mode (docs/protocol.md §1.4, 1): X-Attestation-Token carries the
 * evidence, X-Attestation-Type its type, X-Attestation-Nonce the nonce; k is empty and the
 * evidence is good for this one request.  The cheap checks run here on the I/O thread (size
 * cap, type, base64, nonce MAC/expiry/not consumed); the verification is queued on the pool,
 * and the request is handed on (or refused) when it comes back (pool.c).
 *
 * Also here: the presented type and evidence, which an establishment (establish.c) checks the
 * same way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate_internal.h"

sh_tee sh_gate__check_type(sh_gate *g, sh_request *req, const char *s, size_t len) {
  char msg[160];
  if (!s || len == 0) {
    sh_gate__refuse(g, req, SH_ATTEST_MALFORMED, "X-Attestation-Type is required");
    return SH_TEE_UNKNOWN;
  }
  char tname[32];
  sh_tee tee = SH_TEE_UNKNOWN;
  if (len < sizeof tname) {
    memcpy(tname, s, len);
    tname[len] = '\0';
    tee = sh_tee_from_name(tname); /* docs/protocol.md §0 names and aliases */
  }
  if (tee == SH_TEE_UNKNOWN) {
    snprintf(msg, sizeof msg, "unknown evidence type '%.*s'", (int)(len > 64 ? 64 : len), s);
    sh_gate__refuse(g, req, SH_ATTEST_UNSUPPORTED_TYPE, msg);
    return SH_TEE_UNKNOWN;
  }
  if (!(g->types & (1u << tee)) && !(tee == SH_TEE_SIMULATED && g->cfg.trust_simulated)) {
    snprintf(msg, sizeof msg, "evidence type %s is not accepted here", sh_tee_name(tee));
    sh_gate__refuse(g, req, SH_ATTEST_UNSUPPORTED_TYPE, msg);
    return SH_TEE_UNKNOWN;
  }
  return tee;
}

uint8_t *sh_gate__decode_evidence(sh_tee tee, const char *s, size_t len, size_t *out_len) {
  if (tee == SH_TEE_MAA || tee == SH_TEE_GCP) { /* JWTs are text (§1.4, 1) */
    uint8_t *ev = malloc(len ? len : 1);
    if (ev) memcpy(ev, s, len);
    *out_len = len;
    return ev;
  }
  return sh_b64_decode_alloc(s, len, SH_B64_LENIENT, out_len);
}

void sh_gate__header_mode(sh_gate *g, sh_request *req, const sh_iovec *token) {
  if (token->len > SH_GATE_MAX_EVIDENCE_HEADER) {
    sh_gate__refuse(g, req, SH_ATTEST_MALFORMED, "evidence header too large");
    return;
  }
  const sh_iovec *type = sh_request_header(req, "x-attestation-type");
  sh_tee tee = sh_gate__check_type(g, req, type ? type->base : NULL, type ? type->len : 0);
  if (tee == SH_TEE_UNKNOWN) return;
  const sh_iovec *nh = sh_request_header(req, "x-attestation-nonce");
  /* Without a nonce only under a "timestamp" policy, for the types it is defined for (§1.3):
   * the document time is checked against max_age and the signed content is consumed.  Under
   * "freshness": "none" (development, allow_unfresh) any type, consumed the same way. */
  int timestamp =
      (!nh || nh->len == 0) &&
      ((g->timestamp_ok && (tee == SH_TEE_NITRO || tee == SH_TEE_MAA || tee == SH_TEE_GCP)) ||
       g->unfresh_ok);
  uint8_t nonce[SH_ATTEST_NONCE_LEN];
  int64_t issued = 0;
  if (!timestamp &&
      sh_gate__check_nonce(g, req, nh ? nh->base : NULL, nh ? nh->len : 0, nonce, &issued) < 0)
    return;
  size_t evlen;
  uint8_t *ev = sh_gate__decode_evidence(tee, token->base, token->len, &evlen);
  if (!ev) {
    sh_gate__refuse(g, req, SH_ATTEST_MALFORMED, "evidence is not base64");
    return;
  }
  gate_req *gr = sh_gate__attach(g, req);
  if (!gr) {
    free(ev);
    return;
  }
  gr->kind = K_HEADER;
  gr->evidence = ev;
  gr->evidence_len = evlen;
  gr->tee = tee;
  if (!timestamp) memcpy(gr->nonce, nonce, SH_ATTEST_NONCE_LEN);
  gr->timestamp = timestamp ? 1 : 0;
  gr->nonce_issued = issued;
  sh_gate__enqueue(g, req, gr); /* on failure it answered: gr may be gone (released at once) */
}
