/*
 * gate/nonce.c — freshness (docs/protocol.md §1.1): GET /.well-known/shield/nonce, and the checks
 * of a presented nonce.
 *
 * A nonce is MAC'd with the state secret every worker shares (the server's, or the gate's own
 * in a single process), so any worker checks any worker's nonce without a lookup.  Only a
 * *successful* verification consumes it (pool.c, in the store); a replay is refused here,
 * before any verification work, when the store answers without blocking (the shared table);
 * with Redis that lookup is a round trip, so the pool makes it first thing.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gate_internal.h"

void sh_gate__nonce_endpoint(sh_gate *g, sh_request *req) {
  uint8_t n[SH_ATTEST_NONCE_LEN];
  if (sh_attest_nonce_issue(g->secret, g->secret_len, sh_gate__now(g), n) < 0) {
    sh_gate__fail(req);
    return;
  }
  char s[64];
  sh_b64_encode(n, sizeof n, SH_B64_PROTOCOL, s);
  sh_gate__send_json(g, req, 200,
                     json_pack("{s:s, s:i}", "nonce", s, "expires_in", SH_ATTEST_NONCE_TTL), NULL);
}

int sh_gate__check_nonce(sh_gate *g, sh_request *req, const char *s, size_t len,
                         uint8_t out[SH_ATTEST_NONCE_LEN], int64_t *issued) {
  if (!s || len == 0) {
    sh_gate__refuse(g, req, SH_ATTEST_NONCE_INVALID, "the nonce is missing");
    return -1;
  }
  size_t nlen = 0;
  uint8_t *nonce = sh_b64_decode_alloc(s, len, SH_B64_LENIENT, &nlen);
  if (!nonce) {
    sh_gate__refuse(g, req, SH_ATTEST_NONCE_INVALID, "the nonce is not base64url");
    return -1;
  }
  sh_attest_reason bad = sh_attest_nonce_check(g->secret, g->secret_len, nonce, nlen,
                                               sh_gate__now(g), SH_ATTEST_NONCE_TTL, issued);
  if (bad == SH_ATTEST_OK && nlen != SH_ATTEST_NONCE_LEN) bad = SH_ATTEST_NONCE_INVALID;
  if (bad != SH_ATTEST_OK) {
    free(nonce);
    sh_gate__refuse(g, req, bad,
                    bad == SH_ATTEST_NONCE_INVALID ? "the nonce is not one this deployment issued"
                                                   : "the nonce has expired");
    return -1;
  }
  memcpy(out, nonce, SH_ATTEST_NONCE_LEN);
  free(nonce);
  if (g->store->remote) return 0; /* the pool looks first (pool.c) */
  uint8_t key[SH_SHM_KEY_LEN];
  char m[8];
  sh_gate__table_key(out, SH_ATTEST_NONCE_LEN, key);
  if (g->store->ops->consumed(g->store, key, sh_gate__now(g), m, sizeof m) == 1) {
    sh_gate__refuse(g, req, SH_ATTEST_NONCE_REPLAYED, "the nonce was already used");
    return -1;
  }
  return 0;
}
