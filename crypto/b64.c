/* crypto/b64.c — base64url without padding (the protocol's byte-string encoding) and a
 * lenient decoder (url or standard alphabet, padding optional, no whitespace). */
#include "crypto.h"

static const char URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t sh_crypto_b64url_encode(const uint8_t *in, size_t n, char *out) {
  size_t o = 0, i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = URL[v >> 18];
    out[o++] = URL[(v >> 12) & 63];
    out[o++] = URL[(v >> 6) & 63];
    out[o++] = URL[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = URL[v >> 18];
    out[o++] = URL[(v >> 12) & 63];
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = URL[v >> 18];
    out[o++] = URL[(v >> 12) & 63];
    out[o++] = URL[(v >> 6) & 63];
  }
  out[o] = 0;
  return o;
}

static int val(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-' || c == '+') return 62;
  if (c == '_' || c == '/') return 63;
  return -1;
}

long sh_crypto_b64_decode(const char *in, size_t n, uint8_t *out) {
  while (n && in[n - 1] == '=')
    n--;
  if (n % 4 == 1) return -1;
  uint32_t acc = 0;
  int bits = 0;
  long o = 0;
  for (size_t i = 0; i < n; i++) {
    int v = val(in[i]);
    if (v < 0) return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
    }
  }
  /* the unused low bits must be zero (canonical encoding: one string per byte sequence) */
  if (bits && (acc & ((1u << bits) - 1))) return -1;
  return o;
}
