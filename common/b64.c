/* common/b64.c — base64 (RFC 4648) on OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock.
 *
 * OpenSSL does the arithmetic; this file adds what it lacks: the url alphabet (§5) by
 * translation to and from the standard one, the caller's padding rule, whitespace skipping by
 * choice (EVP_DecodeBlock trims it around the input only), and the canonical-encoding check of
 * §3.5 (EVP_DecodeBlock ignores the bits below the last full byte, so "Zh" and "Zg" would both
 * decode to "f").  Input is validated and translated in small chunks on the stack: no
 * allocation, and a long input never needs an int-sized length. */
#include "common.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define ENC_CHUNK 768 /* input bytes per EVP_EncodeBlock call: a multiple of 3, no padding */
#define DEC_CHUNK 512 /* characters per EVP_DecodeBlock call: a multiple of 4 */

size_t sh_b64_encode(const void *in, size_t n, unsigned flags, char *out) {
  const unsigned char *p = in;
  size_t o = 0;
  out[0] = 0;
  while (n > 0) {
    size_t k = n > ENC_CHUNK ? ENC_CHUNK : n;
    o += (size_t)EVP_EncodeBlock((unsigned char *)out + o, p, (int)k); /* NUL-terminates */
    p += k;
    n -= k;
  }
  if (!(flags & SH_B64_PAD))
    while (o > 0 && out[o - 1] == '=')
      out[--o] = 0;
  if (flags & SH_B64_URL)
    for (size_t i = 0; i < o; i++)
      out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
  return o;
}

char *sh_b64_encode_alloc(const void *in, size_t n, unsigned flags) {
  if (n > (SIZE_MAX - 1) / 4 * 3 - 2) return NULL;
  char *out = malloc(SH_B64_ENCODED_LEN(n) + 1);
  if (out) sh_b64_encode(in, n, flags, out);
  return out;
}

/* The 6-bit value of c under the alphabets of `flags`, or -1. */
static int b64_value(unsigned char c, unsigned flags) {
  int std = (flags & SH_B64_STD) || !(flags & SH_B64_URL), url = (flags & SH_B64_URL) != 0;
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if ((c == '+' && std) || (c == '-' && url)) return 62;
  if ((c == '/' && std) || (c == '_' && url)) return 63;
  return -1;
}

static int is_ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Decodes nq full quanta of standard-alphabet characters (no padding) into out + *o. */
static int flush(const unsigned char *q, size_t nq, uint8_t *out, size_t cap, size_t *o) {
  if (nq == 0) return 0;
  if (nq / 4 * 3 > cap - *o) return -1;
  int l = EVP_DecodeBlock(out + *o, q, (int)nq);
  if (l < 0 || (size_t)l != nq / 4 * 3) return -1;
  *o += (size_t)l;
  return 0;
}

int sh_b64_decode(const char *in, size_t n, unsigned flags, uint8_t *out, size_t cap,
                  size_t *out_len) {
  unsigned char q[DEC_CHUNK];
  size_t nq = 0, data = 0, pad = 0, o = 0;
  int last = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)in[i];
    if (is_ws(c) && (flags & SH_B64_WS)) continue;
    if (c == '=') {
      if (++pad > 2) return -1;
      continue;
    }
    if (pad) return -1; /* data after padding (RFC 4648 §3.3) */
    int v = b64_value(c, flags);
    if (v < 0) return -1;
    last = v;
    data++;
    /* EVP_DecodeBlock reads the standard alphabet only */
    q[nq++] = c == '-' ? '+' : c == '_' ? '/' : c;
    if (nq == DEC_CHUNK) {
      if (flush(q, nq, out, cap, &o) < 0) return -1;
      nq = 0;
    }
  }
  size_t rem = data % 4, need = (4 - rem) % 4;
  if (rem == 1) return -1; /* 6 bits cannot make a byte */
  if (pad && pad != need) return -1;
  if ((flags & SH_B64_PAD) && pad != need) return -1;
  if ((flags & SH_B64_NOPAD) && pad) return -1;
  /* RFC 4648 §3.5: the unused bits of the last character must be zero (canonical) */
  if ((rem == 2 && (last & 0x0F)) || (rem == 3 && (last & 0x03))) return -1;
  if (flush(q, nq - rem, out, cap, &o) < 0) return -1;
  if (rem) {
    /* the last partial quantum through a local buffer: EVP_DecodeBlock writes 3 bytes for it */
    unsigned char t[4] = {'=', '=', '=', '='}, b[3];
    memcpy(t, q + nq - rem, rem);
    if (EVP_DecodeBlock(b, t, 4) != 3 || rem - 1 > cap - o) return -1;
    memcpy(out + o, b, rem - 1);
    o += rem - 1;
  }
  *out_len = o;
  return 0;
}

uint8_t *sh_b64_decode_alloc(const char *in, size_t n, unsigned flags, size_t *out_len) {
  size_t cap = SH_B64_DECODED_MAX(n);
  uint8_t *out = malloc(cap ? cap : 1);
  if (out && sh_b64_decode(in, n, flags, out, cap, out_len) < 0) {
    free(out);
    out = NULL;
  }
  return out;
}
