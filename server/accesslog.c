/*
 * server/accesslog.c — the JSON access log (--access-log-format json) and request ids.
 *
 * One JSON object per line, written after the response (like the common format), through the
 * logger thread (log.c), so the I/O thread never blocks on disk.  The request target is wire
 * data: every byte outside printable ASCII, and '"' and '\\', is escaped (\\u00XX), so a line
 * is always valid JSON whatever the client sent (RFC 8259 §7).
 *
 * Request ids are 16 hex digits: a random per-process prefix and the process's request
 * counter, so they are unique across workers and restarts without coordination.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <stdarg.h>
#include <unistd.h>

#include "server_internal.h"

void sh_request_id(const sh_req *req, char out[24]) {
  snprintf(out, 24, "%08x%08llx", req->srv->id_prefix,
           (unsigned long long)(req->pub.id & 0xFFFFFFFFull));
}

typedef struct jbuf {
  char *p, *end;
  int overflow;
} jbuf;

static void jput(jbuf *b, const char *s, size_t n) {
  if ((size_t)(b->end - b->p) < n) {
    b->overflow = 1;
    return;
  }
  memcpy(b->p, s, n);
  b->p += n;
}

static void jstr(jbuf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  jput(b, "\"", 1);
  for (size_t i = 0; i < n && !b->overflow; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\') {
      char e[2] = {'\\', (char)ch};
      jput(b, e, 2);
    } else if (ch < 0x20 || ch >= 0x7F) {
      char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
      jput(b, e, 6);
    } else {
      jput(b, (const char *)&ch, 1);
    }
  }
  jput(b, "\"", 1);
}

static void jraw(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jraw(jbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b->p, (size_t)(b->end - b->p), fmt, ap);
  va_end(ap);
  if (n < 0 || n >= b->end - b->p)
    b->overflow = 1;
  else
    b->p += n;
}

void sh_access_log_json(sh_req *req, uint64_t us) {
  const sh_request *r = &req->pub;
  char line[4096];
  jbuf b = {line, line + sizeof line - 2, 0};
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[40];
  size_t wl = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(when + wl, sizeof when - wl, ".%06ldZ", ts.tv_nsec / 1000);
  char rid[24];
  sh_request_id(req, rid);
  jraw(&b, "{\"time\":\"%s\",\"type\":\"access\",\"method\":", when);
  jstr(&b, r->method.base, r->method.len);
  jraw(&b, ",\"path\":");
  jstr(&b, r->path.base, r->path.len > 2048 ? 2048 : r->path.len);
  jraw(&b, ",\"query\":");
  jstr(&b, r->query.base, r->query.len > 1024 ? 1024 : r->query.len);
  jraw(&b, ",\"http_version\":\"%d.%d\",\"status\":%d,\"bytes\":%llu,\"duration_us\":%llu,",
       r->http_major, r->http_minor, req->status,
       (unsigned long long)(req->no_body_out ? 0 : req->resp_body), (unsigned long long)us);
  if (r->addr_kind == SH_ADDR_INET) {
    jraw(&b, "\"client\":");
    jstr(&b, r->client_host, strlen(r->client_host));
    jraw(&b, ",\"client_port\":%d,", r->client_port);
  } else {
    jraw(&b, "\"client\":null,\"client_port\":null,");
  }
  jraw(&b, "\"request_id\":\"%s\",\"pid\":%d}", rid, (int)getpid());
  if (b.overflow) return; /* cannot happen with the caps above; never log half a line */
  *b.p++ = '\n';
  sh_log_raw(SH_LOG_INFO, line, (size_t)(b.p - line));
}
