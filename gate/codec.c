/*
 * gate/codec.c — the text helpers gate/ needs that belong to no library yet: a lenient
 * base64 decoder, hex, RFC 3339 and the URL rule of fetch overrides.  Grouped here so that
 * each is swapped for common/'s (issue 15: one base64, one RFC 3339 parser, one url_ok)
 * in one place; the behaviour each must keep is stated next to it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gate_internal.h"

/* Keep: both alphabets, padding optional, ASCII whitespace skipped, data after '=' refused,
 * a lone trailing sextet refused; bytes past cap counted but not written. */
long sh_gate__b64_decode_into(const char *s, size_t len, uint8_t *out, size_t cap) {
  uint32_t acc = 0;
  int bits = 0, n = 0, pad = 0;
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '+' || c == '-')
      v = 62;
    else if (c == '/' || c == '_')
      v = 63;
    else if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
      continue;
    else if (c == '=') {
      pad++;
      continue;
    } else
      return -1;
    if (pad) return -1; /* data after padding */
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    n++;
    if (bits >= 8) {
      bits -= 8;
      if (o < cap) out[o] = (uint8_t)(acc >> bits);
      o++;
    }
  }
  if (n == 0 || n % 4 == 1 || pad > 2) return -1;
  return (long)o;
}

uint8_t *sh_gate__b64_decode(const char *s, size_t len, size_t *out_len) {
  size_t cap = len / 4 * 3 + 3;
  uint8_t *out = malloc(cap);
  long n = out ? sh_gate__b64_decode_into(s, len, out, cap) : -1; /* cap is never reached */
  if (n < 0) {
    free(out);
    return NULL;
  }
  *out_len = (size_t)n;
  return out;
}

void sh_gate__hex(const uint8_t *b, size_t n, char *out) {
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = d[b[i] >> 4];
    out[2 * i + 1] = d[b[i] & 15];
  }
  out[2 * n] = '\0';
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int sh_gate__unhex(const char *s, uint8_t *out, size_t n) {
  if (strlen(s) != 2 * n) return -1;
  for (size_t i = 0; i < n; i++) {
    int h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);
    if (h < 0 || l < 0) return -1;
    out[i] = (uint8_t)(h << 4 | l);
  }
  return 0;
}

/* Howard Hinnant's days_from_civil: days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = (unsigned)(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

/* Keep (--attest-clock): "YYYY-MM-DDTHH:MM:SS", an optional fraction (ignored), then "Z",
 * "z" or "+00:00"; years from 1970; a leap second (:60) accepted. */
int64_t sh_gate__parse_rfc3339(const char *s) {
  int Y, M, D, h, m, sec, n = 0;
  if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &n) != 6 || n != 19)
    return -1;
  const char *p = s + n;
  if (*p == '.')
    for (p++; *p >= '0' && *p <= '9'; p++) {
    }
  if (strcmp(p, "Z") != 0 && strcmp(p, "z") != 0 && strcmp(p, "+00:00") != 0) return -1;
  if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return -1;
  return days_from_civil(Y, (unsigned)M, (unsigned)D) * 86400 + h * 3600 + m * 60 + sec;
}

/* Keep: what attest/fetch.c accepts for an override (its own check is the last word);
 * attest/cli_verify.c has its own copy of this rule, which sh_attest_url_ok (attest.h) is to
 * replace for both. */
int sh_gate__url_ok(const char *u) {
  size_t n = strlen(u);
  if (n > 1800 || n <= 8) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)u[i] <= 0x20 || u[i] == 0x7f) return 0;
  if (strncasecmp(u, "https://", 8) == 0) return 1;
  if (strncasecmp(u, "http://", 7) != 0) return 0;
  const char *h = u + 7;
  return strncasecmp(h, "localhost", 9) == 0 || strncmp(h, "127.", 4) == 0 ||
         strncmp(h, "[::1]", 5) == 0;
}
