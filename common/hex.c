/* common/hex.c — lower-case hex out, exact-length hex in (either case).
 *
 * Decoding goes through OpenSSL's OPENSSL_hexchar2int one digit at a time, so that the input
 * needs no NUL terminator (OPENSSL_hexstr2buf_ex reads to one, and also takes ':' separators,
 * which no field of ours allows).  OpenSSL's encoders write upper case: the protocol and the
 * result JSON use lower case (measurements, digests), hence the table below. */
#include "common.h"

#include <openssl/crypto.h>

size_t sh_hex_encode(const void *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  const uint8_t *p = in;
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * n] = 0;
  return 2 * n;
}

int sh_hex_decode(const char *in, size_t len, uint8_t *out, size_t n) {
  if (len / 2 != n || len % 2) return -1;
  for (size_t i = 0; i < n; i++) {
    int hi = OPENSSL_hexchar2int((unsigned char)in[2 * i]);
    int lo = OPENSSL_hexchar2int((unsigned char)in[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}
