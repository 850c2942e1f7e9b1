/* common/rfc3339.c — RFC 3339 times: one strict parser and the formatter.
 *
 * The grammar (RFC 3339 §5.6) is checked here field by field; libc's timegm() and gmtime_r()
 * do the calendar arithmetic.  strptime() is not used: it takes one-digit fields and leading
 * spaces, and timegm() normalises what it is given (February 30 becomes March 2, second 60 the
 * next minute), so a parser built on them accepts times that do not exist.  Here every field
 * is range-checked first, so timegm() only ever converts a real instant. */
#include "common.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* n decimal digits at s -> *v; 0, or -1 when one is not a digit. */
static int digits(const char *s, int n, int *v) {
  *v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    *v = *v * 10 + (s[i] - '0');
  }
  return 0;
}

static int days_in_month(int y, int m) {
  static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : d[m - 1];
}

/* Decimal Unix seconds (digits only, no sign, no spaces). */
static int parse_unix(const char *s, size_t len, int64_t *out) {
  int64_t v = 0;
  if (len == 0 || len > 18) return -1; /* 18 digits cannot overflow int64 */
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

int sh_rfc3339_parse(const char *s, size_t len, unsigned flags, int64_t *out) {
  if (!s) return -1;
  if ((flags & SH_RFC3339_UNIX) && parse_unix(s, len, out) == 0) return 0;
  /* full-date "T" partial-time: YYYY-MM-DDTHH:MM:SS is 19 characters */
  int Y, M, D, h, m, sec;
  if (len < 20 || digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' ||
      digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &m) || s[16] != ':' ||
      digits(s + 17, 2, &sec))
    return -1;
  /* date-month 01-12, date-mday per month and year, hour 00-23, minute 00-59; time-second
   * allows 60 only for a leap second, which Unix time cannot represent: refused */
  if (M < 1 || M > 12 || D < 1 || D > days_in_month(Y, M) || h > 23 || m > 59 || sec > 59)
    return -1;
  size_t i = 19;
  if (s[i] == '.') { /* time-secfrac = "." 1*DIGIT */
    size_t f = ++i;
    while (i < len && s[i] >= '0' && s[i] <= '9')
      i++;
    if (i == f) return -1;
  }
  int64_t off = 0;
  if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
    i++;
  } else if (i + 6 <= len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
    int oh, om; /* time-numoffset = ("+" / "-") time-hour ":" time-minute */
    if (digits(s + i + 1, 2, &oh) || digits(s + i + 4, 2, &om) || oh > 23 || om > 59) return -1;
    off = (int64_t)oh * 3600 + om * 60;
    if (s[i] == '-') off = -off;
    i += 6;
  } else {
    return -1;
  }
  if (i != len) return -1;
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  tm.tm_year = Y - 1900;
  tm.tm_mon = M - 1;
  tm.tm_mday = D;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = sec;
  /* local time = UTC + offset (RFC 3339 §4.2), so UTC = local time - offset */
  *out = (int64_t)timegm(&tm) - off;
  return 0;
}

int sh_rfc3339_format(int64_t t, char out[SH_RFC3339_LEN + 1]) {
  struct tm tm;
  time_t tt = (time_t)t;
  if ((int64_t)tt != t || !gmtime_r(&tt, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
    return -1;
  /* unsigned and reduced: the ranges are checked, and the compiler then sees 20 bytes fit */
  snprintf(out, SH_RFC3339_LEN + 1, "%04u-%02u-%02uT%02u:%02u:%02uZ",
           (unsigned)(tm.tm_year + 1900) % 10000u, (unsigned)(tm.tm_mon + 1) % 100u,
           (unsigned)tm.tm_mday % 100u, (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u,
           (unsigned)tm.tm_sec % 100u);
  return 0;
}
