/* attest/binding.c — the binding digest (docs/protocol.md §1.2) and evidence text decoding. */
#include "internal.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

/* D = SHA-512("shield-binding-v1" ‖ 0x00 ‖ u16be(len n) ‖ n ‖ u16be(len k) ‖ k) */
int sh_attest_binding_digest(const uint8_t *nonce, size_t nonce_len, const uint8_t *spki,
                             size_t spki_len, uint8_t out[64]) {
  static const char label[] = "shield-binding-v1"; /* sizeof includes the 0x00 */
  if (nonce_len > 0xFFFF || spki_len > 0xFFFF) return -1;
  uint8_t ln[2] = {(uint8_t)(nonce_len >> 8), (uint8_t)nonce_len};
  uint8_t lk[2] = {(uint8_t)(spki_len >> 8), (uint8_t)spki_len};
  unsigned int olen = 0;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  int ok = c && EVP_DigestInit_ex(c, EVP_sha512(), NULL) &&
           EVP_DigestUpdate(c, label, sizeof label) && EVP_DigestUpdate(c, ln, 2) &&
           (!nonce_len || EVP_DigestUpdate(c, nonce, nonce_len)) && EVP_DigestUpdate(c, lk, 2) &&
           (!spki_len || EVP_DigestUpdate(c, spki, spki_len)) &&
           EVP_DigestFinal_ex(c, out, &olen) && olen == 64;
  EVP_MD_CTX_free(c);
  return ok ? 0 : -1;
}

int sh_attest__binding_of(const sh_attest_options *o, uint8_t D[64]) {
  if (!o->nonce) return -1;
  return sh_attest_binding_digest(o->nonce, o->nonce_len, o->public_key,
                                  o->public_key ? o->public_key_len : 0, D);
}

/* Raw evidence (CBOR, reports) always contains bytes outside the text alphabets in practice;
 * a text form is taken only when the whole input decodes as one.  Whitespace is dropped first
 * (a file's final newline, a wrapped base64 body); hex is tried before base64, since hex
 * digits are base64 characters too; both decoders are common.h's (exact-length hex; base64
 * under SH_B64_LENIENT: either alphabet, padding optional, canonical). */
uint8_t *sh_attest_decode_input(const uint8_t *in, size_t len, size_t *out_len) {
  char *t = malloc(len ? len : 1);
  uint8_t *out = malloc(len ? len : 1);
  size_t n = 0;
  if (!t || !out) {
    free(t);
    free(out);
    return NULL;
  }
  for (size_t i = 0; i < len; i++)
    if (in[i] != ' ' && in[i] != '\t' && in[i] != '\r' && in[i] != '\n') t[n++] = (char)in[i];
  if (n && sh_hex_decode(t, n, out, n / 2) == 0) {
    *out_len = n / 2;
  } else if (!n || sh_b64_decode(t, n, SH_B64_LENIENT, out, len, out_len) < 0) {
    memcpy(out, in, len); /* not text: the bytes as given */
    *out_len = len;
  }
  free(t);
  return out;
}
