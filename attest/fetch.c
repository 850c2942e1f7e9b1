/* attest/fetch.c — fetching keys and collateral (see attest.h, "Fetching keys and collateral").
 *
 * Endpoints (the base URL of each is configurable, for PCCS, a caching proxy or a vsock-proxy):
 *   OpenID:  {issuer}/.well-known/openid-configuration (its "issuer" must equal ours, OpenID
 *            Connect Discovery 1.0 §4.3; its jwks_uri must be https), then jwks_uri.
 *   AMD KDS (SEV-SNP Key Distribution Service spec): /vcek/v1/{product}/{hwid}?blSPL=&teeSPL=
 *            &snpSPL=&ucodeSPL= (Turin: fmcSPL too, 8-byte hwid), /{vcek|vlek}/v1/{product}/
 *            cert_chain (PEM), /{vcek|vlek}/v1/{product}/crl (DER).
 *   Intel PCS v4 (and PCCS, same paths): /{sgx|tdx}/certification/v4/tcb?fmspc=, .../qe/identity,
 *            /sgx/certification/v4/pckcrl?ca=&encoding=der; the issuer chain comes URL-encoded in
 *            a response header (TCB-Info-Issuer-Chain, SGX-Enclave-Identity-Issuer-Chain,
 *            SGX-PCK-CRL-Issuer-Chain).  Intel SGX Root CA CRL: Intel's certificates host, or
 *            {PCCS}/sgx/certification/v4/rootcacrl for an override.
 * Safety: CURLOPT_PROTOCOLS_STR "https" (plus "http" only for an override URL on a loopback
 * host), TLS peer and host verified, no redirects, CURLOPT_TIMEOUT_MS, CURLOPT_MAXFILESIZE_LARGE
 * and a write callback that enforces the same cap (the length header may be absent or lie),
 * header values capped; a 200 with the expected Content-Type whose body parses (JSON, DER or PEM)
 * is the only success.  Only successes are written to disk.
 * Disk cache (and offline files): {cache_dir}/{name} where name is e.g. "jwks-<issuer>.json",
 * "openid-<issuer>.json", "amd-vcek-Milan-<hwid hex>-<tcb hex>.der", "amd-vcek-Milan-chain.pem",
 * "amd-vlek-Genoa-crl.der", "intel-sgx-tcb-<fmspc>.json", "intel-tdx-qe.json",
 * "intel-pckcrl-processor.der" (<issuer>: every byte outside [A-Za-z0-9.-] becomes '_'), with the
 * issuer chain, when there is one, in "{name}.chain.pem".  Freshness on disk is the file's mtime.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define FETCH_SLOTS 128
#define FETCH_MAX_HEADER (32u * 1024u)
#define FETCH_MAX_URL 2048

enum kind { K_JSON, K_DER_CERT, K_PEM_CERTS, K_DER_CRL };

typedef struct slot {
  char *name; /* cache key = disk file name */
  uint8_t *data;
  size_t len;
  char *chain;
  int64_t fetched_at; /* success time; 0 when none */
  int64_t failed_at;  /* last failure (negative cache); 0 when none */
  char failure[200];
  uint64_t used; /* LRU tick */
} slot;

/* When a configured issuer's JWKS was last refetched for a kid it lacked (under `lock`):
 * kept apart from the slots, which an LRU may evict, so the bound always holds. */
typedef struct jwks_refresh {
  int done;
  int64_t at;
} jwks_refresh;

struct sh_attest_fetcher {
  sh_attest_fetch_config c;  /* strings borrowed from the caller's config (documented) */
  pthread_mutex_t lock, net; /* lock: slots and counters; net: one request at a time */
  slot slots[FETCH_SLOTS];
  uint64_t tick;
  int64_t window_start;
  unsigned window_count;
  jwks_refresh *refresh; /* one per c.issuers entry */
};

static int ferr(sh_attest_fetch_error *e, sh_attest_reason r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ferr(sh_attest_fetch_error *e, sh_attest_reason r, const char *fmt, ...) {
  if (e) {
    va_list ap;
    e->reason = r;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
  }
  return -1;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

sh_attest_fetcher *sh_attest_fetcher_new(const sh_attest_fetch_config *cfg, char *err, size_t en) {
  sh_attest_fetcher *f = calloc(1, sizeof *f);
  if (!f) {
    if (err && en) snprintf(err, en, "out of memory");
    return NULL;
  }
  f->c = *cfg;
  if (!f->c.timeout_ms) f->c.timeout_ms = 10000;
  if (!f->c.max_bytes) f->c.max_bytes = 1u << 20;
  if (!f->c.ttl) f->c.ttl = 3600;
  if (!f->c.negative_ttl) f->c.negative_ttl = 60;
  if (!f->c.max_per_minute) f->c.max_per_minute = 30;
  if (f->c.jwks_refresh_interval <= 0) f->c.jwks_refresh_interval = SH_ATTEST_JWKS_REFRESH_INTERVAL;
  if (!f->c.amd_kds_url) f->c.amd_kds_url = "https://kdsintf.amd.com";
  if (!f->c.intel_pcs_url) f->c.intel_pcs_url = "https://api.trustedservices.intel.com";
  if (!(f->refresh = calloc(f->c.nissuers ? f->c.nissuers : 1, sizeof *f->refresh))) {
    if (err && en) snprintf(err, en, "out of memory");
    free(f);
    return NULL;
  }
  if (f->c.cache_dir && mkdir(f->c.cache_dir, 0700) < 0 && errno != EEXIST) {
    if (err && en) snprintf(err, en, "cache dir %s: %s", f->c.cache_dir, strerror(errno));
    free(f->refresh);
    free(f);
    return NULL;
  }
  pthread_mutex_init(&f->lock, NULL);
  pthread_mutex_init(&f->net, NULL);
  pthread_once(&curl_once, curl_init_once);
  return f;
}

int sh_attest__fetch_is_offline(const sh_attest_fetcher *f) {
  return f && f->c.offline;
}

static void slot_clear(slot *s) {
  free(s->name);
  free(s->data);
  free(s->chain);
  memset(s, 0, sizeof *s);
}

void sh_attest_fetcher_free(sh_attest_fetcher *f) {
  if (!f) return;
  for (int i = 0; i < FETCH_SLOTS; i++)
    slot_clear(&f->slots[i]);
  pthread_mutex_destroy(&f->lock);
  pthread_mutex_destroy(&f->net);
  free(f->refresh);
  free(f);
}

void sh_attest_fetched_free(sh_attest_fetched *o) {
  if (!o) return;
  free(o->data);
  free(o->issuer_chain);
  memset(o, 0, sizeof *o);
}

/* ---- URL policy ---- */

/* A loopback host: "localhost", an IPv4 literal in 127.0.0.0/8 (inet_pton: four decimal
 * parts, nothing else), or the IPv6 literal [::1]. */
static int loopback_host(const char *h, size_t n) {
  char buf[INET6_ADDRSTRLEN + 2];
  struct in_addr a4;
  struct in6_addr a6;
  if (n == 9 && !strncasecmp(h, "localhost", 9)) return 1;
  if (n == 0 || n >= sizeof buf) return 0;
  if (h[0] == '[') {
    if (n < 3 || h[n - 1] != ']') return 0;
    memcpy(buf, h + 1, n - 2);
    buf[n - 2] = 0;
    return inet_pton(AF_INET6, buf, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
  }
  memcpy(buf, h, n);
  buf[n] = 0;
  return inet_pton(AF_INET, buf, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

int sh_attest_url_ok(const char *url, int allow_loopback_http) {
  size_t n = url ? strlen(url) : 0;
  if (n == 0 || n >= FETCH_MAX_URL) return 0;
  for (size_t i = 0; i < n; i++) /* printable ASCII: no spaces, controls or raw UTF-8 */
    if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f) return 0;
  int https = !strncasecmp(url, "https://", 8);
  if (!https && !(allow_loopback_http && !strncasecmp(url, "http://", 7))) return 0;
  /* authority (RFC 3986 §3.2) up to the path, query or fragment */
  const char *h = url + (https ? 8 : 7);
  size_t alen = strcspn(h, "/?#");
  if (memchr(h, '@', alen))
    return 0; /* userinfo: refused rather than parsed (it can disguise the host) */
  size_t hlen = alen;
  const char *port = NULL;
  if (h[0] == '[') { /* IP literal: the port follows "]" */
    const char *close = memchr(h, ']', alen);
    if (!close) return 0;
    hlen = (size_t)(close + 1 - h);
    if (hlen < alen) {
      if (h[hlen] != ':') return 0;
      port = h + hlen + 1;
    }
  } else {
    const char *colon = memchr(h, ':', alen);
    if (colon) {
      hlen = (size_t)(colon - h);
      port = colon + 1;
    }
  }
  if (hlen == 0) return 0;
  if (port) { /* 1 to 5 digits, 1..65535 */
    size_t plen = (size_t)(h + alen - port);
    long v = 0;
    if (plen == 0 || plen > 5 || strspn(port, "0123456789") < plen) return 0;
    for (size_t i = 0; i < plen; i++)
      v = v * 10 + (port[i] - '0');
    if (v < 1 || v > 65535) return 0;
  }
  return https || loopback_host(h, hlen);
}

/* ---- one HTTPS request ---- */

typedef struct body {
  uint8_t *p;
  size_t n, cap;
  char ctype[128];
  char *chain; /* wanted header's value */
  const char *chain_header;
  int too_big;
} body;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud) {
  body *b = ud;
  size_t n = size * nmemb;
  if (b->n + n > b->cap) {
    b->too_big = 1;
    return 0; /* CURLE_WRITE_ERROR: the cap holds even without (or against) Content-Length */
  }
  memcpy(b->p + b->n, ptr, n);
  b->n += n;
  return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud) {
  body *b = ud;
  size_t n = size * nmemb, kl;
  if (n > FETCH_MAX_HEADER) return 0;
  const char *colon = memchr(ptr, ':', n);
  if (!colon) return n;
  kl = (size_t)(colon - ptr);
  const char *v = colon + 1, *end = ptr + n;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
    end--;
  if (kl == 12 && !strncasecmp(ptr, "Content-Type", 12)) {
    size_t l = (size_t)(end - v);
    if (l >= sizeof b->ctype) l = sizeof b->ctype - 1;
    memcpy(b->ctype, v, l);
    b->ctype[l] = 0;
  } else if (b->chain_header && kl == strlen(b->chain_header) &&
             !strncasecmp(ptr, b->chain_header, kl)) {
    free(b->chain);
    b->chain = strndup(v, (size_t)(end - v));
  }
  return n;
}

static int ctype_ok(enum kind k, const char *ct) {
  size_t l = strcspn(ct, "; ");
  static const char *const json[] = {"application/json", "application/jwk-set+json", NULL};
  static const char *const der[] = {"application/octet-stream", "application/pkix-cert",
                                    "application/x-x509-ca-cert", NULL};
  static const char *const pem[] = {"application/x-pem-file", "application/pem-certificate-chain",
                                    "application/octet-stream", "text/plain", NULL};
  static const char *const crl[] = {"application/pkix-crl", "application/x-pkcs7-crl",
                                    "application/octet-stream", NULL};
  const char *const *list = k == K_JSON        ? json
                            : k == K_DER_CERT  ? der
                            : k == K_PEM_CERTS ? pem
                                               : crl;
  for (int i = 0; list[i]; i++)
    if (strlen(list[i]) == l && !strncasecmp(ct, list[i], l)) return 1;
  return 0;
}

/* The body must be what the kind says: a JSON object, one DER certificate, PEM certificates,
 * one DER CRL.  Signatures and validity are the verifier's business, not the fetcher's. */
static int content_ok(enum kind k, const uint8_t *p, size_t n) {
  int ok = 0;
  if (k == K_JSON) {
    json_error_t je;
    json_t *j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &je);
    ok = json_is_object(j);
    json_decref(j);
  } else if (k == K_DER_CERT) {
    const unsigned char *q = p;
    X509 *x = d2i_X509(NULL, &q, (long)n);
    ok = x && q == p + n;
    X509_free(x);
  } else if (k == K_PEM_CERTS) {
    STACK_OF(X509) *sk = sk_X509_new_null();
    ok = sk && n > 10 && memmem(p, n, "-----BEGIN", 10) && sh_attest__x509_add_blob(sk, p, n) == 0;
    sk_X509_pop_free(sk, X509_free);
  } else {
    const unsigned char *q = p;
    X509_CRL *c = d2i_X509_CRL(NULL, &q, (long)n);
    ok = c && q == p + n;
    X509_CRL_free(c);
  }
  ERR_clear_error();
  return ok;
}

static int http_get(sh_attest_fetcher *f, const char *url, int override, enum kind k,
                    const char *chain_header, body *b, sh_attest_fetch_error *e) {
  /* plain http only for an explicitly configured override on loopback (sh_attest_url_ok) */
  int plain = strncasecmp(url, "https://", 8) != 0;
  memset(b, 0, sizeof *b);
  if (!sh_attest_url_ok(url, override))
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "refusing non-https URL %.120s", url);
  b->cap = f->c.max_bytes;
  b->chain_header = chain_header;
  if (!(b->p = malloc(b->cap + 1))) return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "out of memory");
  CURL *c = curl_easy_init();
  if (!c) return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "curl_easy_init failed");
  char ebuf[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, plain ? "http" : "https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
  if (f->c.ca_file) curl_easy_setopt(c, CURLOPT_CAINFO, f->c.ca_file);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, f->c.timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, f->c.timeout_ms);
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->c.max_bytes);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, b);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "shield-attest/1");
  curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, NULL); /* no decompression bombs */
  CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(c);
  if (b->too_big || rc == CURLE_FILESIZE_EXCEEDED)
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "%.120s: response larger than %zu bytes", url,
                f->c.max_bytes);
  if (rc != CURLE_OK)
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "%.120s: %s", url,
                ebuf[0] ? ebuf : curl_easy_strerror(rc));
  if (status != 200)
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "%.120s: HTTP status %ld", url, status);
  if (!ctype_ok(k, b->ctype))
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "%.120s: unexpected Content-Type \"%.60s\"", url,
                b->ctype);
  if (!content_ok(k, b->p, b->n))
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "%.120s: body is not the expected format", url);
  if (chain_header && !b->chain)
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "%.120s: no %s header", url, chain_header);
  b->p[b->n] = 0;
  return 0;
}

/* %XX decoding of the issuer chain headers (PCS sends the PEM URL-encoded). */
static char *url_decode(const char *s) {
  size_t n = strlen(s);
  char *o = malloc(n + 1), *q = o;
  if (!o) return NULL;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    if (s[i] == '%' && i + 2 < n + 0 && sscanf(s + i + 1, "%2x", &v) == 1) {
      *q++ = (char)v;
      i += 2;
    } else {
      *q++ = s[i];
    }
  }
  *q = 0;
  return o;
}

/* ---- disk ---- */

static char *path_of(sh_attest_fetcher *f, const char *name, const char *suffix) {
  size_t n = strlen(f->c.cache_dir) + strlen(name) + strlen(suffix) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s%s", f->c.cache_dir, name, suffix);
  return p;
}

static uint8_t *read_all(const char *path, size_t cap, size_t *len, int64_t *mtime) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0) return NULL;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > cap) {
    close(fd);
    return NULL;
  }
  uint8_t *b = malloc((size_t)st.st_size + 1);
  ssize_t got = b ? read(fd, b, (size_t)st.st_size) : -1;
  close(fd);
  if (got != st.st_size) {
    free(b);
    return NULL;
  }
  b[got] = 0;
  *len = (size_t)got;
  if (mtime) *mtime = (int64_t)st.st_mtime;
  return b;
}

/* write to a temporary file then rename: readers never see half a file */
static void write_atomic(const char *path, const void *p, size_t n) {
  size_t l = strlen(path) + 8;
  char *tmp = malloc(l);
  if (!tmp) return;
  snprintf(tmp, l, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd >= 0) {
    int ok = write(fd, p, n) == (ssize_t)n && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) < 0) unlink(tmp);
  }
  free(tmp);
}

/* ---- the cache around one named object ---- */

static slot *slot_get(sh_attest_fetcher *f, const char *name) {
  slot *lru = &f->slots[0];
  for (int i = 0; i < FETCH_SLOTS; i++) {
    slot *s = &f->slots[i];
    if (s->name && !strcmp(s->name, name)) {
      s->used = ++f->tick;
      return s;
    }
    if (!s->name || s->used < lru->used) lru = s;
    if (!s->name) break;
  }
  slot_clear(lru);
  if (!(lru->name = strdup(name))) return NULL;
  lru->used = ++f->tick;
  return lru;
}

static int copy_out(sh_attest_fetched *out, const uint8_t *d, size_t n, const char *chain,
                    int from) {
  memset(out, 0, sizeof *out);
  if (!(out->data = malloc(n + 1)) || (chain && !(out->issuer_chain = strdup(chain)))) {
    sh_attest_fetched_free(out);
    return -1;
  }
  memcpy(out->data, d, n);
  out->data[n] = 0;
  out->len = n;
  out->from_cache = from;
  return 0;
}

/* The object `name` from memory, disk or `url`.  force (a JWKS refresh, see
 * sh_attest_fetch_jwks_refresh): skip the fresh copies in memory and on disk and go to the
 * network (offline: re-read the disk file, where the operator may have put a newer one); the
 * negative cache and the rate limit still apply, and a failure keeps the copy held before. */
static int fetch_obj(sh_attest_fetcher *f, const char *name, const char *url, int override,
                     enum kind k, const char *chain_header, int64_t now, int force,
                     sh_attest_fetched *out, sh_attest_fetch_error *e) {
  int rc = -1;
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&f->lock);
  slot *s = slot_get(f, name);
  if (!s) {
    pthread_mutex_unlock(&f->lock);
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "out of memory");
  }
  /* 1. memory, fresh */
  if (!force && s->fetched_at && now - s->fetched_at < f->c.ttl) {
    rc = copy_out(out, s->data, s->len, s->chain, 1);
    pthread_mutex_unlock(&f->lock);
    return rc < 0 ? ferr(e, SH_ATTEST_COLLATERAL_MISSING, "out of memory") : 0;
  }
  pthread_mutex_unlock(&f->lock);
  /* 2. disk: fresh (or anything, offline) */
  char *path = f->c.cache_dir ? path_of(f, name, "") : NULL;
  char *cpath = f->c.cache_dir ? path_of(f, name, ".chain.pem") : NULL;
  size_t dl = 0, cl = 0;
  int64_t mt = 0;
  uint8_t *disk = path ? read_all(path, f->c.max_bytes, &dl, &mt) : NULL;
  char *dchain =
      chain_header && cpath ? (char *)read_all(cpath, FETCH_MAX_HEADER, &cl, NULL) : NULL;
  int disk_ok = disk && content_ok(k, disk, dl) && (!chain_header || dchain);
  if (disk_ok && (f->c.offline || (!force && now - mt < f->c.ttl))) {
    rc = copy_out(out, disk, dl, dchain, 2);
    if (rc == 0) {
      pthread_mutex_lock(&f->lock);
      if ((s = slot_get(f, name))) {
        /* the slot holds the disk copy, or nothing (never a length without data) */
        free(s->data);
        free(s->chain);
        s->data = malloc(dl + 1);
        s->chain = s->data && dchain ? strdup(dchain) : NULL;
        if (s->data && (!dchain || s->chain)) {
          memcpy(s->data, disk, dl);
          s->len = dl;
          s->fetched_at = f->c.offline ? now : mt;
        } else {
          free(s->data);
          free(s->chain);
          s->data = NULL;
          s->chain = NULL;
          s->len = 0;
          s->fetched_at = 0;
        }
      }
      pthread_mutex_unlock(&f->lock);
    } else {
      ferr(e, SH_ATTEST_COLLATERAL_MISSING, "out of memory");
    }
    goto done;
  }
  if (f->c.offline) {
    ferr(e, SH_ATTEST_COLLATERAL_MISSING, "offline and no usable file %.100s in the cache dir",
         name);
    goto done;
  }
  /* 3. network, one request at a time, unless negative-cached or over the rate */
  pthread_mutex_lock(&f->net);
  pthread_mutex_lock(&f->lock);
  s = slot_get(f, name);
  /* another thread got it meanwhile (a refresh wants a newer copy than any held) */
  int cached_now = !force && s && s->fetched_at && now - s->fetched_at < f->c.ttl;
  if (cached_now) {
    rc = copy_out(out, s->data, s->len, s->chain, 1);
    pthread_mutex_unlock(&f->lock);
    pthread_mutex_unlock(&f->net);
    if (rc < 0) ferr(e, SH_ATTEST_COLLATERAL_MISSING, "out of memory");
    goto done;
  }
  if (s && s->failed_at && now - s->failed_at < f->c.negative_ttl) {
    ferr(e, SH_ATTEST_COLLATERAL_MISSING, "recent failure (cached): %s", s->failure);
    pthread_mutex_unlock(&f->lock);
    pthread_mutex_unlock(&f->net);
    goto stale;
  }
  if (now - f->window_start >= 60) {
    f->window_start = now;
    f->window_count = 0;
  }
  if (f->window_count >= f->c.max_per_minute) {
    ferr(e, SH_ATTEST_COLLATERAL_MISSING, "fetch rate limit reached (%u per minute)",
         f->c.max_per_minute);
    pthread_mutex_unlock(&f->lock);
    pthread_mutex_unlock(&f->net);
    goto stale;
  }
  f->window_count++;
  pthread_mutex_unlock(&f->lock);
  body b;
  int hr = http_get(f, url, override, k, chain_header, &b, e);
  char *chain = hr == 0 && b.chain ? url_decode(b.chain) : NULL;
  if (hr == 0 && chain_header && !chain)
    hr = ferr(e, SH_ATTEST_COLLATERAL_MISSING, "out of memory");
  pthread_mutex_lock(&f->lock);
  s = slot_get(f, name);
  if (hr == 0) {
    rc = copy_out(out, b.p, b.n, chain, 0);
    if (s) {
      free(s->data);
      free(s->chain);
      s->data = b.p;
      s->len = b.n;
      s->chain = chain;
      s->fetched_at = now;
      s->failed_at = 0;
      b.p = NULL;
      chain = NULL;
    }
    if (rc < 0) ferr(e, SH_ATTEST_COLLATERAL_MISSING, "out of memory");
  } else if (s) {
    s->failed_at = now;
    snprintf(s->failure, sizeof s->failure, "%.190s", e ? e->message : "fetch failed");
  }
  pthread_mutex_unlock(&f->lock);
  pthread_mutex_unlock(&f->net);
  if (hr == 0 && rc == 0 && path) {
    write_atomic(path, out->data, out->len);
    if (out->issuer_chain && cpath)
      write_atomic(cpath, out->issuer_chain, strlen(out->issuer_chain));
  }
  free(b.p);
  free(b.chain);
  free(chain);
  if (hr == 0) goto done;
stale:
  /* the network failed: an old disk copy is better than nothing; the caller sees `stale` and
   * the verifier still checks the collateral's own validity (nextUpdate, certificate dates) */
  if (disk_ok && copy_out(out, disk, dl, dchain, 2) == 0) {
    out->stale = 1;
    rc = 0;
  }
done:
  free(disk);
  free(dchain);
  free(path);
  free(cpath);
  return rc;
}

static int fetch_named(sh_attest_fetcher *f, const char *name, const char *url, int override,
                       enum kind k, const char *chain_header, int64_t now, sh_attest_fetched *out,
                       sh_attest_fetch_error *e) {
  return fetch_obj(f, name, url, override, k, chain_header, now, 0, out, e);
}

/* ---- the endpoints ---- */

static void sanitize(char *dst, size_t n, const char *src) {
  size_t i = 0;
  for (; src[i] && i + 1 < n; i++) {
    char c = src[i];
    dst[i] = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-')
                 ? c
                 : '_';
  }
  dst[i] = 0;
}

static const sh_attest_fetch_issuer *find_issuer(sh_attest_fetcher *f, const char *iss) {
  for (size_t i = 0; iss && i < f->c.nissuers; i++)
    if (!strcmp(f->c.issuers[i].issuer, iss)) return &f->c.issuers[i];
  return NULL;
}

/* The configured issuer `issuer`, or NULL with e set (keys come only from configured ones). */
static const sh_attest_fetch_issuer *configured_issuer(sh_attest_fetcher *f, const char *issuer,
                                                       sh_attest_fetch_error *e) {
  const sh_attest_fetch_issuer *ci = find_issuer(f, issuer);
  if (!ci)
    ferr(e, SH_ATTEST_POLICY_DENIED, "issuer %.100s is not configured", issuer ? issuer : "(null)");
  return ci;
}

static int trim_slash(char *dst, size_t n, const char *url) {
  size_t l = strlen(url);
  while (l && url[l - 1] == '/')
    l--;
  if (l + 1 > n) return -1;
  memcpy(dst, url, l);
  dst[l] = 0;
  return 0;
}

int sh_attest_fetch_openid_config(sh_attest_fetcher *f, const char *issuer, int64_t now,
                                  sh_attest_fetched *out, sh_attest_fetch_error *e) {
  char base[FETCH_MAX_URL], url[FETCH_MAX_URL + 64], name[300], san[256];
  memset(out, 0, sizeof *out);
  const sh_attest_fetch_issuer *ci = configured_issuer(f, issuer, e);
  if (!ci) return -1;
  /* discovery_url: the configured place to reach the issuer (a forwarder, a test server);
   * the document must still name `issuer` itself */
  int override = ci->discovery_url != NULL;
  if (trim_slash(base, sizeof base, override ? ci->discovery_url : issuer) < 0)
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "issuer URL too long");
  snprintf(url, sizeof url, "%s/.well-known/openid-configuration", base);
  sanitize(san, sizeof san, issuer);
  snprintf(name, sizeof name, "openid-%s.json", san);
  if (fetch_named(f, name, url, override, K_JSON, NULL, now, out, e) < 0) return -1;
  json_error_t je;
  json_t *j = json_loadb((const char *)out->data, out->len, JSON_REJECT_DUPLICATES, &je);
  const char *iss = json_string_value(json_object_get(j, "issuer"));
  const char *ju = json_string_value(json_object_get(j, "jwks_uri"));
  int ok = iss && !strcmp(iss, issuer) && ju && sh_attest_url_ok(ju, 0);
  json_decref(j);
  if (!ok) {
    sh_attest_fetched_free(out);
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING,
                "OpenID configuration: issuer differs or jwks_uri is not https");
  }
  return 0;
}

static int jwks_get(sh_attest_fetcher *f, const sh_attest_fetch_issuer *ci, int64_t now, int force,
                    sh_attest_fetched *out, sh_attest_fetch_error *e) {
  char url[FETCH_MAX_URL], name[300], san[256];
  const char *issuer = ci->issuer;
  int override = ci->jwks_url != NULL;
  if (override) {
    snprintf(url, sizeof url, "%s", ci->jwks_url);
  } else {
    /* a refresh refetches the keys, not the discovery document: jwks_uri stays put when an
     * issuer rotates keys (the document is refetched on its own ttl) */
    sh_attest_fetched oc;
    if (sh_attest_fetch_openid_config(f, issuer, now, &oc, e) < 0) return -1;
    json_error_t je;
    json_t *j = json_loadb((const char *)oc.data, oc.len, JSON_REJECT_DUPLICATES, &je);
    snprintf(url, sizeof url, "%s", json_string_value(json_object_get(j, "jwks_uri")));
    json_decref(j);
    sh_attest_fetched_free(&oc);
  }
  sanitize(san, sizeof san, issuer);
  snprintf(name, sizeof name, "jwks-%s.json", san);
  if (fetch_obj(f, name, url, override, K_JSON, NULL, now, force, out, e) < 0) return -1;
  json_error_t je;
  json_t *j = json_loadb((const char *)out->data, out->len, JSON_REJECT_DUPLICATES, &je);
  int ok = json_is_array(json_object_get(j, "keys"));
  json_decref(j);
  if (!ok) {
    sh_attest_fetched_free(out);
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "JWKS has no \"keys\" array");
  }
  return 0;
}

/* Both JWKS calls: *out emptied, and the issuer's configuration (NULL, e set: not configured). */
static const sh_attest_fetch_issuer *jwks_start(sh_attest_fetcher *f, const char *issuer,
                                                sh_attest_fetched *out, sh_attest_fetch_error *e) {
  memset(out, 0, sizeof *out);
  return configured_issuer(f, issuer, e);
}

int sh_attest_fetch_jwks(sh_attest_fetcher *f, const char *issuer, int64_t now,
                         sh_attest_fetched *out, sh_attest_fetch_error *e) {
  const sh_attest_fetch_issuer *ci = jwks_start(f, issuer, out, e);
  return ci ? jwks_get(f, ci, now, 0, out, e) : -1;
}

/* Key rotation: an issuer publishes a new key and signs with it before our cached JWKS (ttl
 * 1 h) expires.  The refetch is claimed under the lock before any request is made, so however
 * many tokens with unknown kids arrive at once (an attacker can mint them freely: the kid is
 * looked up before any signature is checked), one issuer's JWKS is refetched at most once per
 * jwks_refresh_interval, and only from its configured location. */
int sh_attest_fetch_jwks_refresh(sh_attest_fetcher *f, const char *issuer, int64_t now,
                                 sh_attest_fetched *out, sh_attest_fetch_error *e) {
  const sh_attest_fetch_issuer *ci = jwks_start(f, issuer, out, e);
  if (!ci) return -1;
  jwks_refresh *r = &f->refresh[ci - f->c.issuers];
  pthread_mutex_lock(&f->lock);
  int64_t ago = now - r->at;
  int limited = r->done && ago < f->c.jwks_refresh_interval;
  if (!limited) {
    r->done = 1;
    r->at = now;
  }
  pthread_mutex_unlock(&f->lock);
  if (limited)
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING,
                "the issuer's keys were refetched %llds ago (at most once per %llds)",
                (long long)(ago > 0 ? ago : 0), (long long)f->c.jwks_refresh_interval);
  return jwks_get(f, ci, now, 1, out, e);
}

static int amd_product_ok(sh_attest_fetcher *f, const char *p) {
  static const char *const known[] = {"Milan", "Genoa", "Turin"};
  if (!p) return 0;
  if (!f->c.amd_products) {
    for (int i = 0; i < 3; i++)
      if (!strcmp(p, known[i])) return 1;
    return 0;
  }
  for (size_t i = 0; i < f->c.namd_products; i++)
    if (!strcmp(f->c.amd_products[i], p)) return 1;
  return 0;
}

static int user_url(sh_attest_fetcher *f, int amd) {
  return amd ? strcmp(f->c.amd_kds_url, "https://kdsintf.amd.com") != 0
             : strcmp(f->c.intel_pcs_url, "https://api.trustedservices.intel.com") != 0;
}

int sh_attest_fetch_amd_vcek(sh_attest_fetcher *f, const char *product, const uint8_t chip_id[64],
                             uint64_t tcb, int64_t now, sh_attest_fetched *out,
                             sh_attest_fetch_error *e) {
  char base[FETCH_MAX_URL], url[FETCH_MAX_URL + 400], name[300], hw[129], th[17];
  memset(out, 0, sizeof *out);
  if (!amd_product_ok(f, product))
    return ferr(e, SH_ATTEST_POLICY_DENIED, "AMD product %.20s is not configured",
                product ? product : "(null)");
  if (trim_slash(base, sizeof base, f->c.amd_kds_url) < 0)
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "KDS URL too long");
  int turin = !strcmp(product, "Turin");
  sh_hex_encode(chip_id, turin ? 8 : 64, hw);
  unsigned b[8];
  for (int i = 0; i < 8; i++)
    b[i] = (unsigned)(tcb >> (8 * i)) & 0xFF;
  snprintf(th, sizeof th, "%016llx", (unsigned long long)tcb);
  /* TCB_VERSION (SNP ABI): Milan/Genoa bl[0] tee[1] snp[6] ucode[7]; Turin fmc[0] bl[1] tee[2]
   * snp[3] ucode[7] */
  if (turin)
    snprintf(url, sizeof url, "%s/vcek/v1/%s/%s?fmcSPL=%u&blSPL=%u&teeSPL=%u&snpSPL=%u&ucodeSPL=%u",
             base, product, hw, b[0], b[1], b[2], b[3], b[7]);
  else
    snprintf(url, sizeof url, "%s/vcek/v1/%s/%s?blSPL=%u&teeSPL=%u&snpSPL=%u&ucodeSPL=%u", base,
             product, hw, b[0], b[1], b[6], b[7]);
  snprintf(name, sizeof name, "amd-vcek-%s-%s-%s.der", product, hw, th);
  return fetch_named(f, name, url, user_url(f, 1), K_DER_CERT, NULL, now, out, e);
}

static int amd_other(sh_attest_fetcher *f, const char *product, const char *signer, int crl,
                     int64_t now, sh_attest_fetched *out, sh_attest_fetch_error *e) {
  char base[FETCH_MAX_URL], url[FETCH_MAX_URL + 64], name[128];
  memset(out, 0, sizeof *out);
  if (!amd_product_ok(f, product))
    return ferr(e, SH_ATTEST_POLICY_DENIED, "AMD product %.20s is not configured",
                product ? product : "(null)");
  if (!signer || (strcmp(signer, "vcek") && strcmp(signer, "vlek")))
    return ferr(e, SH_ATTEST_POLICY_DENIED, "signer must be vcek or vlek");
  if (trim_slash(base, sizeof base, f->c.amd_kds_url) < 0)
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "KDS URL too long");
  snprintf(url, sizeof url, "%s/%s/v1/%s/%s", base, signer, product, crl ? "crl" : "cert_chain");
  snprintf(name, sizeof name, "amd-%s-%s-%s", signer, product, crl ? "crl.der" : "chain.pem");
  return fetch_named(f, name, url, user_url(f, 1), crl ? K_DER_CRL : K_PEM_CERTS, NULL, now, out,
                     e);
}

int sh_attest_fetch_amd_chain(sh_attest_fetcher *f, const char *product, const char *signer,
                              int64_t now, sh_attest_fetched *out, sh_attest_fetch_error *e) {
  return amd_other(f, product, signer, 0, now, out, e);
}

int sh_attest_fetch_amd_crl(sh_attest_fetcher *f, const char *product, const char *signer,
                            int64_t now, sh_attest_fetched *out, sh_attest_fetch_error *e) {
  return amd_other(f, product, signer, 1, now, out, e);
}

static int tee_ok(const char *t) {
  return t && (!strcmp(t, "sgx") || !strcmp(t, "tdx"));
}

/* GET {intel_pcs_url}{path} (path formatted by the caller) into the cache entry `name`. */
static int intel_get(sh_attest_fetcher *f, const char *path, const char *name, enum kind k,
                     const char *chain_header, int64_t now, sh_attest_fetched *out,
                     sh_attest_fetch_error *e) {
  char base[FETCH_MAX_URL], url[FETCH_MAX_URL + 64];
  if (trim_slash(base, sizeof base, f->c.intel_pcs_url) < 0)
    return ferr(e, SH_ATTEST_COLLATERAL_MISSING, "PCS URL too long");
  snprintf(url, sizeof url, "%s%s", base, path);
  return fetch_named(f, name, url, user_url(f, 0), k, chain_header, now, out, e);
}

int sh_attest_fetch_intel_tcb(sh_attest_fetcher *f, const char *tee, const char *fmspc, int64_t now,
                              sh_attest_fetched *out, sh_attest_fetch_error *e) {
  char path[64], name[64], fm[13];
  memset(out, 0, sizeof *out);
  if (!tee_ok(tee) || !fmspc || strlen(fmspc) != 12 ||
      strspn(fmspc, "0123456789abcdefABCDEF") != 12)
    return ferr(e, SH_ATTEST_POLICY_DENIED, "tee must be sgx|tdx and fmspc 12 hex digits");
  for (int i = 0; i < 12; i++)
    fm[i] = (char)(fmspc[i] | 0x20); /* lower case */
  fm[12] = 0;
  snprintf(path, sizeof path, "/%s/certification/v4/tcb?fmspc=%s", tee, fm);
  snprintf(name, sizeof name, "intel-%s-tcb-%s.json", tee, fm);
  return intel_get(f, path, name, K_JSON, "TCB-Info-Issuer-Chain", now, out, e);
}

int sh_attest_fetch_intel_qe_identity(sh_attest_fetcher *f, const char *tee, int64_t now,
                                      sh_attest_fetched *out, sh_attest_fetch_error *e) {
  char path[64], name[64];
  memset(out, 0, sizeof *out);
  if (!tee_ok(tee)) return ferr(e, SH_ATTEST_POLICY_DENIED, "tee must be sgx or tdx");
  snprintf(path, sizeof path, "/%s/certification/v4/qe/identity", tee);
  snprintf(name, sizeof name, "intel-%s-qe.json", tee);
  return intel_get(f, path, name, K_JSON, "SGX-Enclave-Identity-Issuer-Chain", now, out, e);
}

int sh_attest_fetch_intel_pck_crl(sh_attest_fetcher *f, const char *ca, int64_t now,
                                  sh_attest_fetched *out, sh_attest_fetch_error *e) {
  char path[64], name[64];
  memset(out, 0, sizeof *out);
  if (!ca || (strcmp(ca, "processor") && strcmp(ca, "platform")))
    return ferr(e, SH_ATTEST_POLICY_DENIED, "ca must be processor or platform");
  snprintf(path, sizeof path, "/sgx/certification/v4/pckcrl?ca=%s&encoding=der", ca);
  snprintf(name, sizeof name, "intel-pckcrl-%s.der", ca);
  return intel_get(f, path, name, K_DER_CRL, "SGX-PCK-CRL-Issuer-Chain", now, out, e);
}

/* The Intel SGX Root CA CRL (DER): Intel publishes it on its certificates host, not on the PCS
 * API; a PCCS (an intel_pcs_url override) serves it at /sgx/certification/v4/rootcacrl.
 * Disk/offline name "intel-rootcacrl.der". */
int sh_attest_fetch_intel_root_crl(sh_attest_fetcher *f, int64_t now, sh_attest_fetched *out,
                                   sh_attest_fetch_error *e) {
  memset(out, 0, sizeof *out);
  if (user_url(f, 0)) /* a PCCS */
    return intel_get(f, "/sgx/certification/v4/rootcacrl", "intel-rootcacrl.der", K_DER_CRL, NULL,
                     now, out, e);
  return fetch_named(f, "intel-rootcacrl.der",
                     "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der", 0,
                     K_DER_CRL, NULL, now, out, e);
}
