/*
 * server/http1.c — HTTP/1.1 on top of llhttp: the parser callbacks (head capture, limits),
 * and response framing (status line, Content-Length / chunked / close-delimited).
 *
 * Parser callbacks only record; handler callbacks run from conn.c after llhttp_execute has
 * returned (the parser pauses at the end of a head that has a body, and at the end of every
 * message), so a handler can never re-enter llhttp.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server_internal.h"

/* Chunk extensions (RFC 9112 §7.1.1) carry nothing we use, yet each byte is read and parsed:
 * without a cap a client streams megabytes of them around --max-body-size (the class of
 * Node's CVE-2024-22019).  Budgets in bytes (names and values, plus one per ';' and '='),
 * per chunk and per request; beyond them, 400 and close. */
#define SH_CHUNK_EXT_MAX 1024
#define SH_CHUNK_EXT_TOTAL (16 * 1024)

/* ---- small tables ---- */

/* RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
 * "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */
int sh_http_token_char(unsigned char ch) {
  if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) return 1;
  return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

const char *sh_http_reason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 102:
      return "Processing";
    case 103:
      return "Early Hints";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 203:
      return "Non-Authoritative Information";
    case 204:
      return "No Content";
    case 205:
      return "Reset Content";
    case 206:
      return "Partial Content";
    case 207:
      return "Multi-Status";
    case 208:
      return "Already Reported";
    case 226:
      return "IM Used";
    case 300:
      return "Multiple Choices";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 305:
      return "Use Proxy";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 402:
      return "Payment Required";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 407:
      return "Proxy Authentication Required";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 416:
      return "Range Not Satisfiable";
    case 417:
      return "Expectation Failed";
    case 418:
      return "I'm a teapot";
    case 421:
      return "Misdirected Request";
    case 422:
      return "Unprocessable Content";
    case 423:
      return "Locked";
    case 424:
      return "Failed Dependency";
    case 425:
      return "Too Early";
    case 426:
      return "Upgrade Required";
    case 428:
      return "Precondition Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 451:
      return "Unavailable For Legal Reasons";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    case 506:
      return "Variant Also Negotiates";
    case 507:
      return "Insufficient Storage";
    case 508:
      return "Loop Detected";
    case 510:
      return "Not Extended";
    case 511:
      return "Network Authentication Required";
    default:
      return "";
  }
}

/* ---- parser callbacks ---- */

#define CONN(p) ((sh_conn *)(p)->data)

static int fail_with(sh_conn *c, int status, const char *reason) {
  c->err_status = status;
  c->err_reason = reason;
  return -1;
}

/* Head bytes count against max_header_size as they arrive, so an endless header line is
 * refused at the limit rather than buffered (RFC 6585 §5: 431). */
static int head_add(sh_conn *c, size_t n) {
  c->head_bytes += n;
  if (c->head_bytes > c->srv->cfg.max_header_size)
    return fail_with(c, 431, "request head larger than --max-header-size");
  return 0;
}

static int hb_append(sh_conn *c, const char *at, size_t len) {
  if (c->hb_cap - c->hb_len < len) {
    size_t cap = c->hb_cap ? c->hb_cap * 2 : 1024;
    while (cap - c->hb_len < len)
      cap *= 2;
    char *nb = realloc(c->hb, cap);
    if (!nb) return fail_with(c, 503, "out of memory");
    c->hb = nb;
    c->hb_cap = cap;
  }
  memcpy(c->hb + c->hb_len, at, len);
  c->hb_len += len;
  return 0;
}

static int cb_message_begin(llhttp_t *p) {
  sh_conn *c = CONN(p);
  c->in_head = 1;
  c->in_message = 1;
  c->hb_len = 0;
  c->hp_n = 0;
  c->head_bytes = 12; /* two spaces, "HTTP/1.1", CRLF */
  c->trailer_bytes = 0;
  c->chunk_ext = c->chunk_ext_total = 0;
  c->method_len = c->url_len = 0;
  c->hdr_field_open = 0;
  c->err_status = 0;
  c->err_reason = NULL;
  if (c->state == CS_HEAD) {
    /* The header timeout runs from accept, or from the first byte of a later request. */
    if (c->dl_kind != DL_HEADER) sh_conn_set_deadline(c, DL_HEADER, c->srv->cfg.timeout_header);
    if (c->srv->cfg.access_log || c->srv->cfg.metrics) c->t_start = uv_hrtime();
  }
  return 0;
}

static int cb_method(llhttp_t *p, const char *at, size_t len) {
  sh_conn *c = CONN(p);
  if (head_add(c, len) < 0) return -1;
  if (c->method_len == 0) c->method_off = (uint32_t)c->hb_len;
  c->method_len += (uint32_t)len;
  return hb_append(c, at, len);
}

static int cb_url(llhttp_t *p, const char *at, size_t len) {
  sh_conn *c = CONN(p);
  if (head_add(c, len) < 0) return -1;
  if (c->url_len == 0) c->url_off = (uint32_t)c->hb_len;
  c->url_len += (uint32_t)len;
  return hb_append(c, at, len);
}

/* Trailer fields (RFC 9112 §7.1.2) are bounded by the same limit and then ignored. */
static int trailer_add(sh_conn *c, size_t n) {
  c->trailer_bytes += n;
  if (c->trailer_bytes > c->srv->cfg.max_header_size)
    return fail_with(c, 431, "chunked trailer larger than --max-header-size");
  return 0;
}

static int cb_header_field(llhttp_t *p, const char *at, size_t len) {
  sh_conn *c = CONN(p);
  if (!c->in_head) return trailer_add(c, len + 4);
  if (head_add(c, len) < 0) return -1;
  if (!c->hdr_field_open) {
    if (c->hp_n == c->hp_cap) {
      size_t cap = c->hp_cap ? c->hp_cap * 2 : 32;
      sh_hdr_pos *np = realloc(c->hp, cap * sizeof *np);
      if (!np) return fail_with(c, 503, "out of memory");
      c->hp = np;
      c->hp_cap = cap;
    }
    c->hp[c->hp_n++] = (sh_hdr_pos){(uint32_t)c->hb_len, 0, 0, 0};
    c->hdr_field_open = 1;
  }
  c->hp[c->hp_n - 1].nl += (uint32_t)len;
  return hb_append(c, at, len);
}

static int cb_header_field_complete(llhttp_t *p) {
  sh_conn *c = CONN(p);
  if (!c->in_head) return 0;
  c->hdr_field_open = 0;
  c->hp[c->hp_n - 1].vo = (uint32_t)c->hb_len;
  return head_add(c, 4); /* ": " and CRLF */
}

static int cb_header_value(llhttp_t *p, const char *at, size_t len) {
  sh_conn *c = CONN(p);
  if (!c->in_head) return trailer_add(c, len);
  if (head_add(c, len) < 0) return -1;
  c->hp[c->hp_n - 1].vl += (uint32_t)len;
  return hb_append(c, at, len);
}

static int ieq(const char *a, size_t al, const char *lit) {
  size_t l = strlen(lit);
  return al == l && strncasecmp(a, lit, l) == 0;
}

static int is_ows(char ch) {
  return ch == ' ' || ch == '\t';
}

static int is_digit(char ch) {
  return ch >= '0' && ch <= '9';
}

static int is_hex(char ch) {
  return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* RFC 3986 §2.3, §2.2: unreserved / sub-delims, the bytes of a reg-name besides %XX.  A bit
 * per ASCII byte (mask[ch / 64] bit ch % 64) rather than strchr over the set: the Host of
 * every request is checked byte by byte, and a table test is a load and a shift. */
#define REG_BIT(c) (1ull << ((unsigned)(c)&63))
static const uint64_t reg_name_mask[2] = {
    /* 0-63: digits, "-." and the sub-delims below 64 */
    (0x3FFull << 48) | REG_BIT('-') | REG_BIT('.') | REG_BIT('!') | REG_BIT('$') | REG_BIT('&') |
        REG_BIT('\'') | REG_BIT('(') | REG_BIT(')') | REG_BIT('*') | REG_BIT('+') | REG_BIT(',') |
        REG_BIT(';') | REG_BIT('='),
    /* 64-127: A-Z, a-z, "_~" */
    (0x07FFFFFEull) | (0x07FFFFFEull << 32) | REG_BIT('_') | REG_BIT('~'),
};
#undef REG_BIT

static int reg_name_char(unsigned char ch) {
  return ch < 128 && (reg_name_mask[ch >> 6] >> (ch & 63)) & 1;
}

/*
 * RFC 9112 §3.2 (Host = uri-host [ ":" port ]) with RFC 3986 §3.2.2-3: uri-host is an
 * IP-literal ("[" IPv6address / IPvFuture "]"), or a reg-name (IPv4 addresses are reg-names
 * lexically), possibly empty; port = *DIGIT.  Anything else (a '/', '@', space, backslash, a
 * bad %XX) is an invalid field value: 400.  A few compares per byte, no allocation.
 */
static int authority_ok(const char *s, size_t n) {
  size_t i = 0;
  if (n && s[0] == '[') {
    const char *end = memchr(s, ']', n);
    if (!end) return 0;
    const char *ip = s + 1;
    size_t il = (size_t)(end - ip);
    if (il && (ip[0] == 'v' || ip[0] == 'V')) {
      /* IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ) */
      size_t k = 1;
      while (k < il && is_hex(ip[k]))
        k++;
      if (k == 1 || k >= il - 1 || ip[k] != '.') return 0;
      for (k++; k < il; k++)
        if (!reg_name_char((unsigned char)ip[k]) && ip[k] != ':') return 0;
    } else {
      char tmp[INET6_ADDRSTRLEN];
      struct in6_addr a;
      if (il == 0 || il >= sizeof tmp) return 0;
      memcpy(tmp, ip, il);
      tmp[il] = '\0';
      if (inet_pton(AF_INET6, tmp, &a) != 1) return 0;
    }
    i = il + 2;
  } else {
    while (i < n && s[i] != ':') {
      if (s[i] == '%') {
        if (n - i < 3 || !is_hex(s[i + 1]) || !is_hex(s[i + 2])) return 0;
        i += 3;
        continue;
      }
      if (!reg_name_char((unsigned char)s[i])) return 0;
      i++;
    }
  }
  if (i == n) return 1;
  if (s[i] != ':') return 0;
  for (i++; i < n; i++)
    if (!is_digit(s[i])) return 0;
  return 1;
}

/* The transfer codings in one Transfer-Encoding field line (a list, RFC 9110 §5.6.1: empty
 * elements are skipped): how many there are, or -1 when one is not "chunked" (coding names
 * are case-insensitive, RFC 9112 §7) or the line names none at all (an empty field). */
static int te_line(const char *v, size_t n) {
  int count = 0;
  size_t i = 0;
  while (i < n) {
    while (i < n && (v[i] == ',' || is_ows(v[i])))
      i++;
    size_t s = i;
    while (i < n && v[i] != ',')
      i++;
    size_t e = i;
    while (e > s && is_ows(v[e - 1]))
      e--;
    if (e == s) continue;
    if (!ieq(v + s, e - s, "chunked")) return -1;
    count++;
  }
  return count ? count : -1;
}

/*
 * RFC 9112 §3.2.2: absolute-form ("http" / "https" "://" authority path-abempty ["?" query]).
 * On success the authority is [*ao, *ao + *al) and the path (possibly empty: "/") starts at
 * *po.  An empty host (RFC 9110 §4.2.1) and userinfo (§4.2.4: an error) are refused; other
 * schemes too, since this server only serves http(s) resources.
 */
static int absolute_form(const char *u, size_t n, size_t *ao, size_t *al, size_t *po) {
  size_t i;
  if (n >= 7 && strncasecmp(u, "http://", 7) == 0)
    i = 7;
  else if (n >= 8 && strncasecmp(u, "https://", 8) == 0)
    i = 8;
  else
    return -1;
  size_t a = i;
  while (i < n && u[i] != '/' && u[i] != '?')
    i++;
  if (i == a || u[a] == ':' || !authority_ok(u + a, i - a)) return -1;
  *ao = a;
  *al = i - a;
  *po = i;
  return 0;
}

static int cb_headers_complete(llhttp_t *p) {
  sh_conn *c = CONN(p);
  sh_server *srv = c->srv;
  c->in_head = 0;
  /* RFC 9112 §2.3: we speak HTTP/1.x only. */
  if (p->http_major != 1) return fail_with(c, 505, "unsupported HTTP version");

  int64_t cl = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
  int chunked = (p->flags & F_CHUNKED) != 0;
  /* RFC 9110 §15.5.14: refuse an announced body over the limit before reading any of it. */
  if (srv->cfg.max_body_size && cl > 0 && (uint64_t)cl > srv->cfg.max_body_size)
    return fail_with(c, 413, "Content-Length over --max-body-size");

  /* One pass over the field names (compared by length first): Host and Transfer-Encoding. */
  int hosts = 0, codings = 0;
  size_t host_i = 0;
  for (size_t i = 0; i < c->hp_n; i++) {
    const sh_hdr_pos *h = &c->hp[i];
    if (h->nl == 4 && ieq(c->hb + h->no, 4, "host")) {
      hosts++;
      host_i = i;
    } else if (h->nl == 17 && ieq(c->hb + h->no, 17, "transfer-encoding")) {
      /* RFC 9112 §6.3: a Transfer-Encoding that is not exactly one final "chunked" leaves
       * the body length unknown (and llhttp lets an empty field through, which would make a
       * smuggled body the next request): 400 and close, whatever the order of the fields. */
      int k = te_line(c->hb + h->vo, h->vl);
      if (k < 0) return fail_with(c, 400, "Transfer-Encoding other than chunked");
      codings += k;
    }
  }
  if (codings) {
    /* RFC 9112 §6.3: Transfer-Encoding and Content-Length together are refused; chunked
     * applied twice is invalid (§7).  llhttp must agree that the body is chunked. */
    if (codings != 1 || cl >= 0 || !chunked)
      return fail_with(c, 400, "Transfer-Encoding other than one chunked, or with Content-Length");
  }
  /* RFC 9112 §3.2: a 1.1 request needs exactly one Host; more than one is always invalid, and
   * so is a Host that is not an authority (RFC 3986 §3.2). */
  if (hosts > 1 || (hosts == 0 && p->http_minor >= 1))
    return fail_with(c, 400, hosts ? "more than one Host header" : "missing Host header");
  if (hosts) {
    const char *v = c->hb + c->hp[host_i].vo;
    size_t vl = c->hp[host_i].vl;
    while (vl && is_ows(*v))
      v++, vl--;
    while (vl && is_ows(v[vl - 1]))
      vl--;
    if (!authority_ok(v, vl)) return fail_with(c, 400, "invalid Host header");
  }

  /* Request targets (RFC 9112 §3.2).  The server is not a proxy: CONNECT's authority-form
   * never reaches the app.  A fragment is not part of any form of request-target. */
  if (p->method == HTTP_CONNECT) return fail_with(c, 400, "CONNECT is not supported");
  const char *url = c->hb + c->url_off;
  if (memchr(url, '#', c->url_len)) return fail_with(c, 400, "fragment in the request-target");
  size_t auth_off = 0, auth_len = 0, path_off = 0;
  int absolute = c->url_len && url[0] != '/' && !(c->url_len == 1 && url[0] == '*');
  if (absolute && absolute_form(url, c->url_len, &auth_off, &auth_len, &path_off) < 0)
    return fail_with(c, 400, "invalid absolute-form request-target");
  /* absolute-form without a Host field (HTTP/1.0): the authority becomes one */
  size_t nh = c->hp_n + (absolute && !hosts);

  sh_req *req = sh_req_new(srv);
  if (!req) return fail_with(c, 503, "out of memory");
  req->conn_id = c->id;
  char *base = sh_arena_alloc(&req->arena, c->hb_len + 1);
  sh_header *hdrs = nh ? sh_arena_alloc(&req->arena, nh * sizeof(sh_header)) : NULL;
  if (!base || (nh && !hdrs)) {
    sh_req_unref(req);
    return fail_with(c, 503, "out of memory");
  }
  memcpy(base, c->hb, c->hb_len);
  base[c->hb_len] = '\0';
  sh_request *r = &req->pub;
  int expect = 0;
  for (size_t i = 0; i < c->hp_n; i++) {
    char *n = base + c->hp[i].no;
    size_t nl = c->hp[i].nl;
    for (size_t k = 0; k < nl; k++)
      if (n[k] >= 'A' && n[k] <= 'Z') n[k] = (char)(n[k] + 32);
    const char *v = base + c->hp[i].vo;
    size_t vl = c->hp[i].vl;
    while (vl && is_ows(*v))
      v++, vl--;
    while (vl && is_ows(v[vl - 1]))
      vl--;
    hdrs[i].name = (sh_iovec){n, nl};
    hdrs[i].value = (sh_iovec){v, vl};
    if (nl == 6 && memcmp(n, "expect", 6) == 0 && ieq(v, vl, "100-continue")) expect = 1;
  }
  r->method = (sh_iovec){base + c->method_off, c->method_len};
  r->target = (sh_iovec){base + c->url_off, c->url_len};
  /* Routing uses the path and query; for absolute-form they come from the URI and its
   * authority replaces the Host field (RFC 9112 §3.2.2), while target stays as sent. */
  sh_iovec pq = r->target;
  if (absolute) {
    pq = (sh_iovec){r->target.base + path_off, r->target.len - path_off};
    sh_iovec authority = {r->target.base + auth_off, auth_len};
    if (hosts)
      hdrs[host_i].value = authority;
    else
      hdrs[c->hp_n] = (sh_header){{"host", 4}, authority};
  }
  const char *q = memchr(pq.base, '?', pq.len);
  if (q) {
    r->path = (sh_iovec){pq.base, (size_t)(q - pq.base)};
    r->query = (sh_iovec){q + 1, pq.len - (size_t)(q - pq.base) - 1};
  } else {
    r->path = pq;
    r->query = (sh_iovec){pq.base + pq.len, 0};
  }
  if (r->path.len == 0) r->path = (sh_iovec){"/", 1}; /* RFC 9110 §4.2.3: empty path is "/" */
  r->http_major = p->http_major;
  r->http_minor = p->http_minor;
  r->headers = hdrs;
  r->num_headers = nh;
  r->content_length = chunked ? -1 : cl;
  r->chunked = chunked;
  /* RFC 9110 §10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request. */
  r->expect_continue = expect && p->http_minor >= 1;
  r->has_body = chunked || cl > 0;
  r->tls = c->tls != NULL;
  r->tls_info = c->tls ? sh_tls_conn_info(c) : NULL; /* a reference, dropped with req */
  if (c->tls && !r->tls_info) {
    sh_req_unref(req);
    return fail_with(c, 503, "out of memory");
  }
  r->addr_kind = c->addr_kind;
  memcpy(r->client_host, c->client_host, sizeof r->client_host);
  r->client_port = c->client_port;
  memcpy(r->server_host, c->server_host, sizeof r->server_host);
  r->server_port = c->server_port;
  r->id = ++srv->next_id;
  r->handler_data = NULL;
  r->forwarded_proto = 0;
  if (srv->proxy) sh_proxy_apply(srv->proxy, r);
  if (srv->max_requests && srv->next_id >= srv->max_requests) sh_worker_request_limit(srv);

  /* RFC 9112 §9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive". */
  if (p->http_minor >= 1)
    req->keep_alive = !(p->flags & F_CONNECTION_CLOSE);
  else
    req->keep_alive = (p->flags & F_CONNECTION_KEEP_ALIVE) && !(p->flags & F_CONNECTION_CLOSE);
  /* RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing: answer it,
   * then close. */
  if (codings && p->http_minor == 0) req->keep_alive = 0;
  if (p->upgrade) {
    /* Upgrade/CONNECT are not supported: answer like any request, then close, since the
     * bytes after this head are not HTTP/1.1. */
    c->no_reuse = 1;
    req->keep_alive = 0;
  }
  req->is_head = r->method.len == 4 && memcmp(r->method.base, "HEAD", 4) == 0;
  req->t_start = c->t_start;
  req->conn = c;
  c->req = req;
  sh_conn_set_deadline(c, DL_NONE, 0);
  /* Stop before the body: nothing is delivered until sh_request_read. */
  return r->has_body ? HPE_PAUSED : 0;
}

/* Chunk extension bytes against their budgets (SH_CHUNK_EXT_*); `n` includes the ';' or '='
 * before a name or value, so even empty ones count. */
static int chunk_ext_add(sh_conn *c, size_t n) {
  c->chunk_ext += n;
  c->chunk_ext_total += n;
  if (c->chunk_ext > SH_CHUNK_EXT_MAX || c->chunk_ext_total > SH_CHUNK_EXT_TOTAL)
    return fail_with(c, 400, "chunk extensions over their size budget");
  return 0;
}

static int cb_chunk_ext_data(llhttp_t *p, const char *at, size_t len) {
  (void)at;
  return chunk_ext_add(CONN(p), len);
}

static int cb_chunk_ext_complete(llhttp_t *p) {
  return chunk_ext_add(CONN(p), 1);
}

static int cb_chunk_header(llhttp_t *p) {
  sh_conn *c = CONN(p);
  sh_server *srv = c->srv;
  c->chunk_ext = 0; /* the size line (and its extensions) ends here */
  /* Refuse a chunk that would cross the limit before receiving it. */
  if (c->state != CS_DRAIN && c->req && srv->cfg.max_body_size &&
      c->req->body_received + p->content_length > srv->cfg.max_body_size)
    return fail_with(c, 413, "chunked body over --max-body-size");
  return 0;
}

static int cb_body(llhttp_t *p, const char *at, size_t len) {
  sh_conn *c = CONN(p);
  if (c->state == CS_DRAIN || !c->req) {
    c->drain_bytes += len;
    if (c->drain_bytes > SH_DRAIN_MAX) return fail_with(c, -1, "unread body too large to drain");
    return 0;
  }
  sh_req *req = c->req;
  req->body_received += len;
  if (c->srv->cfg.max_body_size && req->body_received > c->srv->cfg.max_body_size)
    return fail_with(c, 413, "body over --max-body-size");
  if (c->acc_cap - c->acc_len < len) {
    size_t cap = c->acc_cap ? c->acc_cap : 4096;
    while (cap - c->acc_len < len)
      cap *= 2;
    char *nb = realloc(c->acc, cap);
    if (!nb) return fail_with(c, 503, "out of memory");
    c->acc = nb;
    c->acc_cap = cap;
  }
  memcpy(c->acc + c->acc_len, at, len);
  c->acc_len += len;
  return 0;
}

static int cb_message_complete(llhttp_t *p) {
  sh_conn *c = CONN(p);
  c->in_message = 0;
  if (c->req && c->state != CS_DRAIN) c->req->msg_complete = 1;
  /* One request in flight: stop here; the unparsed rest waits for the response. */
  return HPE_PAUSED;
}

const llhttp_settings_t sh_http1_settings = {
    .on_message_begin = cb_message_begin,
    .on_method = cb_method,
    .on_url = cb_url,
    .on_header_field = cb_header_field,
    .on_header_field_complete = cb_header_field_complete,
    .on_header_value = cb_header_value,
    .on_headers_complete = cb_headers_complete,
    .on_chunk_extension_name = cb_chunk_ext_data,
    .on_chunk_extension_value = cb_chunk_ext_data,
    .on_chunk_extension_name_complete = cb_chunk_ext_complete,
    .on_chunk_extension_value_complete = cb_chunk_ext_complete,
    .on_chunk_header = cb_chunk_header,
    .on_body = cb_body,
    .on_message_complete = cb_message_complete,
};

/* ---- response framing ---- */

static char *put(char *p, const char *s, size_t n) {
  memcpy(p, s, n);
  return p + n;
}
#define PUTLIT(p, lit) put((p), (lit), sizeof(lit) - 1)

static char *put_u64(char *p, uint64_t v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n)
    *p++ = tmp[--n];
  return p;
}

static char *put_status(char *p, int status) {
  p = PUTLIT(p, "HTTP/1.1 ");
  p = put_u64(p, (uint64_t)status);
  *p++ = ' ';
  const char *reason = sh_http_reason(status);
  p = put(p, reason, strlen(reason));
  return PUTLIT(p, "\r\n");
}

/* date, server and connection lines shared by every response. */
static size_t common_max(void) {
  return 64 + 18 + 26;
}

/* Date and Server, then the other --header lines.  A Date or Server from --header replaces
 * the default one; one the app set itself (app_flags) replaces both. */
static char *put_server_date(char *p, sh_server *srv, int app_flags) {
  const char *x = srv->extra_hdrs;
  size_t sl = srv->extra_server_len, dl = srv->extra_date_len;
  if (!(app_flags & SH_APPHDR_DATE)) {
    if (dl) {
      p = put(p, x + sl, dl);
    } else if (srv->cfg.date_header) {
      size_t n;
      const char *d = sh_server_date(srv, &n);
      p = put(p, d, n);
    }
  }
  if (!(app_flags & SH_APPHDR_SERVER)) {
    if (sl)
      p = put(p, x, sl);
    else if (srv->cfg.server_header)
      p = PUTLIT(p, "server: shield\r\n");
  }
  if (srv->extra_hdrs_len > sl + dl) p = put(p, x + sl + dl, srv->extra_hdrs_len - sl - dl);
  if (srv->hook_hdrs_len) p = put(p, srv->hook_hdrs, srv->hook_hdrs_len);
  return p;
}

static char *put_common(char *p, sh_req *req, int app_flags, int close) {
  p = put_server_date(p, req->srv, app_flags);
  if (close)
    p = PUTLIT(p, "connection: close\r\n");
  else if (req->pub.http_minor == 0)
    p = PUTLIT(p, "connection: keep-alive\r\n");
  return p;
}

/* Should this response close the connection?  (Decided when the head is written.) */
static int must_close(sh_req *req) {
  sh_conn *c = req->conn;
  /* After the client's FIN (a half-close) only requests it already sent can follow. */
  return req->close_after || !req->keep_alive || req->srv->stopping || c->no_reuse ||
         (c->read_eof && c->in_len == 0) || req->srv->cfg.timeout_keep_alive <= 0 ||
         (!req->msg_complete && !sh_conn_drain_ok(req));
}

void sh_http_start_applied(sh_req *req, sh_op *op) {
  req->start_op = op;
  req->status = op->status;
  if (op->flags & SH_APPHDR_CLOSE) req->close_after = 1;
  /* RFC 9112 §6.3: HEAD, 1xx, 204 and 304 responses never carry a body. */
  req->no_body_out = req->is_head || op->status < 200 || op->status == 204 || op->status == 304;
}

static const char crlf[2] = {'\r', '\n'};
static const char last_chunk[5] = {'0', '\r', '\n', '\r', '\n'};

void sh_http_send(sh_req *req, const char *data, size_t len, int more, void *owned) {
  sh_conn *c = req->conn;
  sh_op *op = owned; /* WRITE ops carry their body; chunk-size lines go in op->chunk_hdr */
  uv_buf_t bufs[5];
  unsigned n = 0;
  if (!req->start_op && !req->head_sent) { /* defensive: write before start */
    free(owned);
    atomic_fetch_sub(&req->out_pending, (long long)len);
    sh_conn_abort(c);
    return;
  }
  if (!req->head_sent) {
    sh_op *so = req->start_op;
    int status = req->status;
    int bodyless = status < 200 || status == 204 || status == 304;
    int64_t cl = so->cl;
    int add_cl = 0, chunked = 0;
    int close = must_close(req);
    if (cl < 0 && !bodyless) {
      if (!more) {
        cl = (int64_t)len; /* the whole body is known: frame it with Content-Length */
        add_cl = 1;
      } else if (req->is_head) {
        /* no framing needed: a HEAD response ends with its head */
      } else if (req->pub.http_minor >= 1) {
        chunked = 1; /* RFC 9112 §7.1 */
      } else {
        close = 1; /* HTTP/1.0 client: the body ends when the connection does (§6.3 ¶8) */
      }
    }
    req->close_after = close;
    req->chunked_out = chunked;
    req->resp_cl = bodyless ? -1 : cl;
    size_t cap = 64 + strlen(sh_http_reason(status)) + so->len + common_max() + 64 +
                 req->srv->extra_hdrs_len + req->srv->hook_hdrs_len;
    char *head = sh_arena_alloc(&req->arena, cap);
    if (!head) {
      free(owned);
      atomic_fetch_sub(&req->out_pending, (long long)len);
      sh_conn_abort(c);
      return;
    }
    char *p = put_status(head, status);
    p = put(p, so->data, so->len);
    if (add_cl) {
      p = PUTLIT(p, "content-length: ");
      p = put_u64(p, (uint64_t)cl);
      p = PUTLIT(p, "\r\n");
    }
    if (chunked) p = PUTLIT(p, "transfer-encoding: chunked\r\n");
    p = put_common(p, req, so->flags, close);
    p = PUTLIT(p, "\r\n");
    bufs[n++] = uv_buf_init(head, (unsigned)(p - head));
    req->head_sent = 1;
    free(req->start_op);
    req->start_op = NULL;
  }
  if (!req->no_body_out && len) {
    if (req->chunked_out) {
      char *h = op->chunk_hdr;
      int hl = snprintf(h, sizeof op->chunk_hdr, "%zx\r\n", len);
      bufs[n++] = uv_buf_init(h, (unsigned)hl);
      bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
      bufs[n++] = uv_buf_init((char *)crlf, 2);
    } else {
      bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
    }
  }
  req->resp_body += len;
  if (!more) {
    if (req->chunked_out && !req->no_body_out) bufs[n++] = uv_buf_init((char *)last_chunk, 5);
    /* A body shorter than its Content-Length leaves the client waiting for bytes that never
     * come and desynchronises the connection: close it after this response. */
    if (req->resp_cl >= 0 && !req->no_body_out && req->resp_body < (uint64_t)req->resp_cl)
      req->close_after = 1;
    req->resp_done = 1;
  }
  req->refs++; /* a failed write may drop the other references */
  if (n) {
    sh_conn_write(c, req, bufs, n, owned, len);
  } else {
    free(owned);
    atomic_fetch_sub(&req->out_pending, (long long)len);
    sh_req_check_writable(req);
  }
  if (!more && req->conn == c && !c->closing) sh_conn_response_done(c);
  sh_req_unref(req);
}

void sh_http_respond_fixed(sh_req *req, int status, const char *ctype, const char *body,
                           size_t len) {
  sh_conn *c = req->conn;
  req->status = status;
  req->no_body_out = req->is_head;
  int close = must_close(req);
  req->close_after = close;
  size_t cap = 64 + 40 + strlen(ctype) + common_max() + 32 + req->srv->extra_hdrs_len +
               req->srv->hook_hdrs_len;
  char *head = sh_arena_alloc(&req->arena, cap);
  if (!head) {
    sh_conn_abort(c);
    return;
  }
  char *p = put_status(head, status);
  p = PUTLIT(p, "content-type: ");
  p = put(p, ctype, strlen(ctype));
  p = PUTLIT(p, "\r\ncontent-length: ");
  p = put_u64(p, len);
  p = PUTLIT(p, "\r\n");
  p = put_common(p, req, 0, close);
  p = PUTLIT(p, "\r\n");
  uv_buf_t bufs[2];
  unsigned n = 0;
  bufs[n++] = uv_buf_init(head, (unsigned)(p - head));
  if (!req->is_head && len) bufs[n++] = uv_buf_init((char *)body, (unsigned)len);
  req->head_sent = 1;
  req->resp_body = len;
  req->resp_done = 1;
  req->refs++; /* a failed write may drop the other references */
  sh_conn_write(c, req, bufs, n, NULL, 0);
  if (req->conn == c && !c->closing) sh_conn_response_done(c);
  sh_req_unref(req);
}

/* A response the server makes on its own (no request handed out, or the handler lost it):
 * always closes the connection. */
void sh_http_error_response(sh_conn *c, int status) {
  sh_server *srv = c->srv;
  const char *reason = sh_http_reason(status);
  size_t rl = strlen(reason);
  size_t cap = 256 + rl * 2 + srv->extra_hdrs_len + srv->hook_hdrs_len;
  char *buf = malloc(cap);
  if (!buf) return;
  char *p = put_status(buf, status);
  p = PUTLIT(p, "content-type: text/plain; charset=utf-8\r\ncontent-length: ");
  p = put_u64(p, rl + 1);
  p = PUTLIT(p, "\r\nconnection: close\r\n");
  p = put_server_date(p, srv, 0);
  p = PUTLIT(p, "\r\n");
  p = put(p, reason, rl);
  sh_metrics_response(status, rl + 1, 0.0);
  *p++ = '\n';
  uv_buf_t b = uv_buf_init(buf, (unsigned)(p - buf));
  sh_conn_write(c, NULL, &b, 1, buf, 0);
}

void sh_http_access_log(sh_req *req) {
  if (!sh_log_enabled(SH_LOG_INFO)) return;
  sh_request *r = &req->pub;
  uint64_t us = req->t_start ? (uv_hrtime() - req->t_start) / 1000 : 0;
  if (req->srv->cfg.access_log_format && req->srv->cfg.access_log_format[0] == 'j') {
    sh_access_log_json(req, us);
    return;
  }
  char rid[24];
  sh_request_id(req, rid);
  if (r->addr_kind == SH_ADDR_INET)
    sh_log(SH_LOG_INFO, "%s:%d - \"%.*s %.*s HTTP/%d.%d\" %d %llu %lluus %s", r->client_host,
           r->client_port, (int)r->method.len, r->method.base, (int)r->target.len, r->target.base,
           r->http_major, r->http_minor, req->status,
           (unsigned long long)(req->no_body_out ? 0 : req->resp_body), (unsigned long long)us,
           rid);
  else
    sh_log(SH_LOG_INFO, "unix:%s - \"%.*s %.*s HTTP/%d.%d\" %d %llu %lluus %s", r->server_host,
           (int)r->method.len, r->method.base, (int)r->target.len, r->target.base, r->http_major,
           r->http_minor, req->status, (unsigned long long)(req->no_body_out ? 0 : req->resp_body),
           (unsigned long long)us, rid);
}
