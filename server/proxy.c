/*
 * server/proxy.c — --proxy-headers: the client address and scheme a trusted reverse proxy
 * reports (X-Forwarded-For / X-Forwarded-Proto, or RFC 7239 Forwarded).
 *
 * Trust (--forwarded-allow-ips, default 127.0.0.1, env FORWARDED_ALLOW_IPS): a comma list of
 * IPv4/IPv6 addresses and CIDRs, or "*".  Headers are applied only when the *peer* (the
 * socket's remote address) is trusted; UNIX-socket peers are trusted (only local processes
 * can connect, and a proxy in front is the reason to use a socket).  As uvicorn >= 0.30, the
 * client is the rightmost X-Forwarded-For entry that is not itself a trusted proxy (each
 * trusted hop appends the address it saw), so a client cannot spoof its address by sending
 * its own X-Forwarded-For through the proxy; with "*" it is the leftmost.  The port becomes
 * 0 (the proxy does not tell it).  Forwarded (RFC 7239 §4) is used the same way when no
 * X-Forwarded-For/-Proto header is present.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server_internal.h"

typedef struct net {
  int family; /* AF_INET / AF_INET6 */
  unsigned char addr[16];
  int prefix;
} net;

struct sh_proxy_list {
  int all;
  size_t n;
  net nets[];
};

static int parse_addr(const char *s, size_t len, net *out) {
  char buf[64];
  if (len == 0 || len >= sizeof buf) return -1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  int prefix = -1;
  char *slash = strchr(buf, '/');
  if (slash) {
    *slash = '\0';
    char *end = NULL;
    long p = strtol(slash + 1, &end, 10);
    if (end == slash + 1 || *end || p < 0 || p > 128) return -1;
    prefix = (int)p;
  }
  memset(out, 0, sizeof *out);
  if (inet_pton(AF_INET, buf, out->addr) == 1) {
    out->family = AF_INET;
    if (prefix > 32) return -1;
    out->prefix = prefix < 0 ? 32 : prefix;
  } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
    out->family = AF_INET6;
    out->prefix = prefix < 0 ? 128 : prefix;
  } else {
    return -1;
  }
  return 0;
}

int sh_proxy_list_parse(const char *spec, sh_proxy_list **out, sh_error *err) {
  *out = NULL;
  size_t n = 1;
  for (const char *p = spec; *p; p++)
    n += *p == ',';
  sh_proxy_list *l = calloc(1, sizeof *l + n * sizeof(net));
  if (!l) {
    SH_ERR(err, SH_ENOMEM, "out of memory");
    return SH_ENOMEM;
  }
  const char *p = spec;
  while (*p) {
    while (*p == ' ' || *p == ',')
      p++;
    if (!*p) break;
    const char *e = p;
    while (*e && *e != ',')
      e++;
    size_t len = (size_t)(e - p);
    while (len && p[len - 1] == ' ')
      len--;
    if (len == 1 && *p == '*') {
      l->all = 1;
    } else if (parse_addr(p, len, &l->nets[l->n]) == 0) {
      l->n++;
    } else {
      SH_ERR(err, SH_EINVAL, "--forwarded-allow-ips: '%.*s' is not an IP address, a CIDR or '*'",
             (int)len, p);
      free(l);
      return SH_EINVAL;
    }
    p = e;
  }
  *out = l;
  return 0;
}

void sh_proxy_list_free(sh_proxy_list *l) {
  free(l);
}

static int in_net(const net *nt, const net *a) {
  if (nt->family != a->family) return 0;
  int bits = nt->prefix;
  int bytes = bits / 8;
  if (memcmp(nt->addr, a->addr, (size_t)bytes) != 0) return 0;
  int rest = bits % 8;
  if (rest == 0) return 1;
  unsigned char mask = (unsigned char)(0xFF << (8 - rest));
  return (nt->addr[bytes] & mask) == (a->addr[bytes] & mask);
}

static int trusted_n(const sh_proxy_list *l, const char *s, size_t len) {
  if (l->all) return 1;
  net a;
  if (len && s[0] == '[') { /* "[v6]" or "[v6]:port" (Forwarded) */
    const char *close = memchr(s, ']', len);
    if (!close) return 0;
    if (parse_addr(s + 1, (size_t)(close - s - 1), &a) < 0) return 0;
  } else if (parse_addr(s, len, &a) < 0) {
    return 0;
  }
  for (size_t i = 0; i < l->n; i++)
    if (in_net(&l->nets[i], &a)) return 1;
  return 0;
}

int sh_proxy_trusted(const sh_proxy_list *l, const char *host) {
  return trusted_n(l, host, strlen(host));
}

/* The last header named `name` (uvicorn keeps the last of duplicates). */
static const sh_header *last_header(const sh_request *r, const char *name) {
  size_t nl = strlen(name);
  const sh_header *found = NULL;
  for (size_t i = 0; i < r->num_headers; i++)
    if (r->headers[i].name.len == nl && memcmp(r->headers[i].name.base, name, nl) == 0)
      found = &r->headers[i];
  return found;
}

/* A host we are willing to put into scope["client"]: printable ASCII, no spaces/quotes. */
static int set_client(sh_request *r, const char *s, size_t len) {
  if (len && s[0] == '"' && len >= 2 && s[len - 1] == '"') s++, len -= 2;
  if (len == 0 || len >= sizeof r->client_host) return 0;
  for (size_t i = 0; i < len; i++)
    if (s[i] <= 0x20 || s[i] >= 0x7F || s[i] == '"' || s[i] == '\\') return 0;
  /* Forwarded: "[2001:db8::1]:4711" -> 2001:db8::1 (the port is not the client's to us). */
  if (s[0] == '[') {
    const char *close = memchr(s, ']', len);
    if (close) len = (size_t)(close - s - 1), s++;
  } else {
    const char *colon = memchr(s, ':', len); /* "1.2.3.4:5678" (one colon: not IPv6) */
    if (colon && !memchr(colon + 1, ':', len - (size_t)(colon - s) - 1)) len = (size_t)(colon - s);
  }
  memcpy(r->client_host, s, len);
  r->client_host[len] = '\0';
  r->client_port = 0;
  r->addr_kind = SH_ADDR_INET;
  return 1;
}

static void trim(const char **s, size_t *len) {
  while (*len && (**s == ' ' || **s == '\t'))
    (*s)++, (*len)--;
  while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
    (*len)--;
}

static void apply_proto(sh_request *r, const char *v, size_t vl) {
  trim(&v, &vl);
  if (vl && v[0] == '"' && vl >= 2 && v[vl - 1] == '"') v++, vl -= 2;
  if (vl == 5 && strncasecmp(v, "https", 5) == 0)
    r->forwarded_proto = 2;
  else if (vl == 4 && strncasecmp(v, "http", 4) == 0)
    r->forwarded_proto = 1;
}

/* Walk a comma list from the right: the first entry that is not a trusted proxy. */
static void apply_for_list(const sh_proxy_list *l, sh_request *r, const char *v, size_t vl,
                           int forwarded) {
  const char *first = NULL, *pick = NULL;
  size_t first_len = 0, pick_len = 0;
  size_t end = vl;
  for (;;) {
    size_t start = end;
    while (start > 0 && v[start - 1] != ',')
      start--;
    const char *e = v + start;
    size_t el = end - start;
    trim(&e, &el);
    if (forwarded) { /* element "for=x;proto=y;by=z": keep the for= value */
      const char *f = NULL;
      size_t fl = 0;
      const char *p = e, *stop = e + el;
      while (p < stop) {
        const char *semi = memchr(p, ';', (size_t)(stop - p));
        const char *pe = semi ? semi : stop;
        const char *pp = p;
        size_t pl = (size_t)(pe - p);
        trim(&pp, &pl);
        if (pl > 4 && strncasecmp(pp, "for=", 4) == 0) f = pp + 4, fl = pl - 4;
        p = semi ? semi + 1 : stop;
      }
      e = f;
      el = fl;
      if (e && el >= 2 && e[0] == '"' && e[el - 1] == '"') e++, el -= 2;
    }
    if (e && el) {
      first = e, first_len = el; /* leftmost seen so far */
      if (!pick && !trusted_n(l, e, el)) pick = e, pick_len = el;
    }
    if (start == 0) break;
    end = start - 1;
  }
  if (l->all) pick = first, pick_len = first_len; /* uvicorn: '*' trusts every hop */
  if (!pick) pick = first, pick_len = first_len;  /* every hop trusted: the origin */
  if (pick) set_client(r, pick, pick_len);
}

void sh_proxy_apply(const sh_proxy_list *l, sh_request *r) {
  if (r->addr_kind == SH_ADDR_INET && !sh_proxy_trusted(l, r->client_host)) return;
  const sh_header *xff = last_header(r, "x-forwarded-for");
  const sh_header *xfp = last_header(r, "x-forwarded-proto");
  if (xff || xfp) {
    if (xfp) apply_proto(r, xfp->value.base, xfp->value.len);
    if (xff) apply_for_list(l, r, xff->value.base, xff->value.len, 0);
    return;
  }
  const sh_header *fwd = last_header(r, "forwarded");
  if (!fwd) return;
  apply_for_list(l, r, fwd->value.base, fwd->value.len, 1);
  /* proto= of the element our trusted peer appended (the last one). */
  const char *v = fwd->value.base;
  size_t vl = fwd->value.len;
  size_t start = vl;
  while (start > 0 && v[start - 1] != ',')
    start--;
  const char *p = v + start, *stop = v + vl;
  while (p < stop) {
    const char *semi = memchr(p, ';', (size_t)(stop - p));
    const char *pe = semi ? semi : stop;
    const char *pp = p;
    size_t pl = (size_t)(pe - p);
    trim(&pp, &pl);
    if (pl > 6 && strncasecmp(pp, "proto=", 6) == 0) apply_proto(r, pp + 6, pl - 6);
    p = semi ? semi + 1 : stop;
  }
}
