/*
 * gate/mtls.c — mutual TLS (docs/protocol.md §1.4, 3): the connection is the session.  Once a
 * client has POSTed evidence bound to its certificate's key on a connection (establish.c),
 * every later request on that connection is handed on with the result (mode "mtls"); the TLS
 * channel is the proof, no session headers.
 *
 * Connections never move between workers, so the attested state is this gate's memory, keyed
 * by SHA-256 of the client key and the server's connection id (sh_request_conn_id: never
 * reused, unlike a connection's address in memory, so a later connection can never inherit
 * an earlier one's attestation).
 */
#include <openssl/evp.h>
#include <string.h>

#include "gate_internal.h"

int sh_gate__mtls_id(const sh_request *req, char out[72]) {
  const sh_tls_info *ti = req->tls ? req->tls_info : NULL;
  if (!ti || ti->client_spki_der.len == 0 || ti->client_verify_error != NULL) return -1;
  uint64_t conn = sh_request_conn_id(req);
  uint8_t d[32];
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
           EVP_DigestUpdate(c, "shield-mtls-v1", 15) == 1 &&
           EVP_DigestUpdate(c, ti->client_spki_der.base, ti->client_spki_der.len) == 1 &&
           EVP_DigestUpdate(c, &conn, sizeof conn) == 1 && EVP_DigestFinal_ex(c, d, NULL) == 1;
  EVP_MD_CTX_free(c);
  if (!ok) return -1;
  out[0] = 'm';
  out[1] = ':';
  sh_hex_encode(d, 32, out + 2);
  return 0;
}

int sh_gate__mtls_request(sh_gate *g, sh_request *req) {
  char mid[72];
  if (sh_gate__mtls_id(req, mid) < 0) return 0;
  sess *s = sh_gate__sess_find(g, mid, sh_gate__now(g));
  if (!s) return 0;
  gate_req *gr = sh_gate__attach(g, req);
  if (!gr) return 1; /* answered (500) */
  gr->kind = K_MTLS;
  s->refs++;
  gr->sess = s;
  gr->pub.result = s->r;
  gr->pub.mode = "mtls";
  sh_gate__forward(g, req, gr);
  return 1;
}
