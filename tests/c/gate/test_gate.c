/*
 * tests/c/gate/test_gate.c — the attestation gate (gate/) in front of a C handler, on a real
 * server on 127.0.0.1, driven by raw sockets.
 *
 * Evidence comes from attest's simulated TEE with a dev root made for this run in a temporary
 * directory (passed to the gate as its simulated root), so nothing of the user's data
 * directory is read or written.  The inner handler answers on the I/O thread with what the
 * gate attached to the request (sh_gate_request_attestation).
 *
 * Covered: the nonce endpoint (and 405 + Allow); header mode (accepted, replayed nonce, a
 * nonce not ours, missing evidence under required, an excluded path); session establishment
 * (the sealed key opened with crypto/'s HPKE), proofs (accepted, replayed), a body with a
 * good Content-Digest and one that does not match it (the gate takes the response over:
 * sh_request_cut, and the inner handler sees a disconnect); the pool's caps (per client
 * address and in total, 503 overloaded with Retry-After, refused nonces not consumed);
 * aborted establishment uploads released (they must leave --limit-concurrency's count); two
 * gates in one process, each with its own secret and sessions.
 * Prints "N passed, N failed".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "attest.h"
#include "crypto.h"
#include "gate.h"
#include "server.h"
#include "testutil.h"

static char g_dir[256]; /* the dev root's directory (temporary) */
static uint8_t *g_root; /* its certificate, DER */
static size_t g_root_len;

/* ------------------------------------------------------------------ the inner handler */

static atomic_int inner_requests, inner_disconnects, inner_releases;

typedef struct inner_req {
  size_t body_len;
  int released_by_us;
} inner_req;

/* "mode=…;tee=…;session=…;marker=yes|no;len=N": what the handler saw of the attestation. */
static void answer(sh_request *req, size_t body_len) {
  const sh_gate_attestation *a = sh_gate_request_attestation(req);
  char text[512];
  snprintf(text, sizeof text, "mode=%s;tee=%s;session=%s;marker=%s;len=%zu",
           a && a->mode ? a->mode : "none", a && a->result ? sh_tee_name(a->result->tee) : "none",
           a && a->session ? a->session : "none", a && a->policy_sha256 ? "yes" : "no", body_len);
  sh_header h[] = {{{"content-type", 12}, {"text/plain", 10}}};
  if (sh_request_start(req, 200, h, 1) == 0) sh_request_write(req, text, strlen(text), 0);
}

static void finish(sh_request *req) {
  inner_req *ir = req->handler_data;
  if (ir->released_by_us) return;
  ir->released_by_us = 1;
  sh_request_release(req); /* on_release frees ir */
}

static void in_on_request(sh_handler *h, sh_request *req) {
  (void)h;
  atomic_fetch_add(&inner_requests, 1);
  req->handler_data = calloc(1, sizeof(inner_req));
  if (req->has_body) {
    sh_request_read(req);
    return;
  }
  answer(req, 0);
  finish(req);
}

static void in_on_body(sh_handler *h, sh_request *req, char *chunk, size_t len, int last) {
  (void)h;
  inner_req *ir = req->handler_data;
  ir->body_len += len;
  free(chunk);
  sh_request_consumed(req, len);
  if (!last) return;
  answer(req, ir->body_len);
  finish(req);
}

static void in_on_disconnect(sh_handler *h, sh_request *req) {
  (void)h;
  atomic_fetch_add(&inner_disconnects, 1);
  finish(req);
}

static void in_on_release(sh_handler *h, sh_request *req) {
  (void)h;
  atomic_fetch_add(&inner_releases, 1);
  free(req->handler_data);
  req->handler_data = NULL;
}

static sh_handler inner = {
    .on_request = in_on_request,
    .on_body = in_on_body,
    .on_disconnect = in_on_disconnect,
    .on_release = in_on_release,
};

/* ------------------------------------------------------------------ servers */

typedef struct running {
  sh_gate *gate;
  sh_server *srv;
  pthread_t th;
  int port;
} running;

static void *run_main(void *arg) {
  sh_server_run(((running *)arg)->srv);
  return NULL;
}

static void base_gate(sh_gate_config *gc) {
  sh_gate_config_init(gc);
  gc->types = "simulated";
  gc->trust_simulated = 1;
  gc->simulated_root = g_root;
  gc->simulated_root_len = g_root_len;
  gc->state_table_size = 4096;
}

static int start(running *r, const sh_gate_config *gc, int limit_concurrency) {
  sh_config cfg;
  sh_config_init(&cfg);
  cfg.host = "127.0.0.1";
  cfg.port = 0;
  cfg.access_log = 0;
  cfg.limit_concurrency = limit_concurrency;
  sh_error err = {0};
  memset(r, 0, sizeof *r);
  if (!(r->gate = sh_gate_new(gc, &inner, &err))) {
    fprintf(stderr, "sh_gate_new: %s\n", err.message);
    return -1;
  }
  if (sh_server_new(&cfg, sh_gate_handler(r->gate), &r->srv, &err) < 0) {
    fprintf(stderr, "sh_server_new: %s\n", err.message);
    sh_gate_free(r->gate);
    return -1;
  }
  r->port = sh_server_port(r->srv);
  pthread_create(&r->th, NULL, run_main, r);
  return 0;
}

static void stop(running *r) {
  sh_server_stop(r->srv, 2.0);
  pthread_join(r->th, NULL);
  sh_gate_free(r->gate); /* before the server: its pool posts to it */
  sh_server_free(r->srv);
}

/* ------------------------------------------------------------------ raw HTTP client */

typedef struct conn {
  int fd;
  char buf[1 << 17];
  size_t len;
} conn;

typedef struct resp {
  int status;
  char head[8192];
  char body[1 << 16];
  size_t body_len;
} resp;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A connection to the port from source address `from` (NULL: any). */
static conn *dial_from(int port, const char *from) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return NULL;
  struct timeval tv = {.tv_sec = 15};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (from) {
    struct sockaddr_in b = {.sin_family = AF_INET};
    inet_pton(AF_INET, from, &b.sin_addr);
    if (bind(fd, (struct sockaddr *)&b, sizeof b) < 0) {
      close(fd);
      return NULL;
    }
  }
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(fd);
    return NULL;
  }
  conn *c = calloc(1, sizeof *c);
  c->fd = fd;
  return c;
}

static conn *dial(int port) {
  return dial_from(port, NULL);
}

static void hang_up(conn *c) {
  if (!c) return;
  close(c->fd);
  free(c);
}

static int send_all(conn *c, const void *p, size_t n) {
  const char *s = p;
  while (n) {
    ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

static int fill(conn *c) {
  if (c->len == sizeof c->buf) return -1;
  ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
  if (r <= 0) return -1;
  c->len += (size_t)r;
  return 0;
}

/* The value of header `name` in r (case-insensitive), or NULL. */
static const char *hdr(const resp *r, const char *name, char *out, size_t cap) {
  size_t n = strlen(name);
  for (const char *p = strstr(r->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
    const char *l = p + 2;
    if (strncasecmp(l, name, n) == 0 && l[n] == ':') {
      const char *v = l + n + 1, *e = strstr(v, "\r\n");
      while (*v == ' ')
        v++;
      snprintf(out, cap, "%.*s", (int)(e ? e - v : (long)strlen(v)), v);
      return out;
    }
  }
  return NULL;
}

/* One response (every answer here is Content-Length framed).  0, or -1 (closed, timeout). */
static int read_resp(conn *c, resp *r) {
  memset(r, 0, sizeof *r);
  char *end;
  while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
    if (fill(c) < 0) return -1;
  size_t hl = (size_t)(end - c->buf) + 4;
  if (hl >= sizeof r->head) return -1;
  memcpy(r->head, c->buf, hl);
  r->head[hl] = '\0';
  if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1) return -1;
  char v[32];
  size_t cl = hdr(r, "content-length", v, sizeof v) ? strtoul(v, NULL, 10) : 0;
  if (cl >= sizeof r->body) return -1;
  while (c->len < hl + cl)
    if (fill(c) < 0) return -1;
  memcpy(r->body, c->buf + hl, cl);
  r->body_len = cl;
  memmove(c->buf, c->buf + hl + cl, c->len - hl - cl);
  c->len -= hl + cl;
  return 0;
}

/* Send a request (head lines after the request line, body) and read its response. */
static int exchange(conn *c, const char *method, const char *target, const char *headers,
                    const void *body, size_t len, resp *r) {
  char head[1 << 17];
  int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: t\r\n%s", method, target,
                   headers ? headers : "");
  if (body && n > 0 && (size_t)n < sizeof head)
    n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", len);
  if (n > 0 && (size_t)n < sizeof head) n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
  if (n <= 0 || (size_t)n >= sizeof head || send_all(c, head, (size_t)n) < 0 ||
      (len && send_all(c, body, len) < 0))
    return -1;
  return read_resp(c, r);
}

/* A one-off exchange on a new connection. */
static int fetch(int port, const char *method, const char *target, const char *headers,
                 const void *body, size_t len, resp *r) {
  conn *c = dial(port);
  int rc = c ? exchange(c, method, target, headers, body, len, r) : -1;
  hang_up(c);
  return rc;
}

/* The §3 error of a response: its JSON "error" and "reason" (static buffers). */
static int is_error(const resp *r, int status, const char *cls, const char *reason) {
  json_error_t je;
  json_t *o = json_loadb(r->body, r->body_len, 0, &je);
  const char *c = json_string_value(json_object_get(o, "error"));
  const char *rs = json_string_value(json_object_get(o, "reason"));
  int ok = r->status == status && c && rs && !strcmp(c, cls) && !strcmp(rs, reason) &&
           json_string_value(json_object_get(o, "message"));
  json_decref(o);
  return ok;
}

/* ------------------------------------------------------------------ protocol helpers */

static void b64url(const uint8_t *in, size_t n, char *out) {
  sh_b64_encode(in, n, SH_B64_PROTOCOL, out);
}

/* GET the nonce endpoint: 0 with the 32 bytes, or -1. */
static int get_nonce(int port, uint8_t nonce[32]) {
  resp r;
  if (fetch(port, "GET", "/.well-known/shield/nonce", NULL, NULL, 0, &r) < 0 || r.status != 200)
    return -1;
  json_error_t je;
  json_t *o = json_loadb(r.body, r.body_len, 0, &je);
  const char *s = json_string_value(json_object_get(o, "nonce"));
  uint8_t out[48];
  size_t n = 0;
  int bad = !s || sh_b64_decode(s, strlen(s), SH_B64_PROTOCOL, out, sizeof out, &n) < 0;
  json_decref(o);
  if (bad || n != 32) return -1;
  memcpy(nonce, out, 32);
  return 0;
}

/* Simulated evidence bound to (nonce, spki) as base64url text (malloc'd). */
static char *evidence_b64(const uint8_t *nonce, const uint8_t *spki, size_t spki_len) {
  sh_attest_sim_params p = {.dir = g_dir,
                            .at = (int64_t)time(NULL),
                            .nonce = nonce,
                            .nonce_len = nonce ? 32 : 0,
                            .public_key = spki,
                            .public_key_len = spki_len};
  uint8_t *ev = NULL;
  size_t len = 0;
  char err[256];
  if (sh_attest_simulated_evidence(&p, &ev, &len, err, sizeof err) < 0) {
    fprintf(stderr, "simulated evidence: %s\n", err);
    return NULL;
  }
  char *out = malloc(len * 4 / 3 + 4);
  b64url(ev, len, out);
  free(ev);
  return out;
}

/* Header-mode headers for a fresh nonce of `port`'s gate (malloc'd), or NULL. */
static char *header_mode(int port, uint8_t nonce_out[32]) {
  uint8_t nonce[32];
  if (get_nonce(port, nonce) < 0) return NULL;
  char *ev = evidence_b64(nonce, NULL, 0);
  if (!ev) return NULL;
  char n64[64];
  b64url(nonce, 32, n64);
  size_t cap = strlen(ev) + 256;
  char *h = malloc(cap);
  snprintf(h, cap,
           "X-Attestation-Type: simulated\r\nX-Attestation-Nonce: %s\r\n"
           "X-Attestation-Token: %s\r\n",
           n64, ev);
  free(ev);
  if (nonce_out) memcpy(nonce_out, nonce, 32);
  return h;
}

/* A client key pair for a session: X25519, its SPKI and raw private key. */
typedef struct client_key {
  uint8_t spki[64];
  size_t spki_len;
  uint8_t sk[32];
} client_key;

static int make_key(client_key *k) {
  EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
  size_t sl = sizeof k->sk;
  unsigned char *p = k->spki;
  int n = pk ? i2d_PUBKEY(pk, NULL) : -1;
  int ok = n > 0 && (size_t)n <= sizeof k->spki && i2d_PUBKEY(pk, &p) == n &&
           EVP_PKEY_get_raw_private_key(pk, k->sk, &sl) == 1 && sl == 32;
  k->spki_len = ok ? (size_t)n : 0;
  EVP_PKEY_free(pk);
  return ok ? 0 : -1;
}

typedef struct session {
  char id[64];
  uint8_t key[32];
  int64_t last_t;
} session;

/* Establish a session at `port` (POST /attest), opening the sealed key.  0, or -1. */
static int establish(int port, session *s, resp *r) {
  client_key k;
  uint8_t nonce[32];
  if (make_key(&k) < 0 || get_nonce(port, nonce) < 0) return -1;
  char *ev = evidence_b64(nonce, k.spki, k.spki_len);
  char n64[64], k64[128];
  b64url(nonce, 32, n64);
  b64url(k.spki, k.spki_len, k64);
  json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "type", "simulated", "evidence", ev, "nonce",
                           n64, "public_key", k64);
  free(ev);
  char *text = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  int rc = fetch(port, "POST", "/.well-known/shield/attest", "Content-Type: application/json\r\n",
                 text, strlen(text), r);
  free(text);
  if (rc < 0 || r->status != 200) return -1;
  json_error_t je;
  json_t *o = json_loadb(r->body, r->body_len, 0, &je);
  const char *id = json_string_value(json_object_get(o, "session"));
  const char *alg = json_string_value(json_object_get(o, "alg"));
  const char *enc = json_string_value(json_object_get(o, "enc"));
  const char *sealed = json_string_value(json_object_get(o, "sealed_key"));
  uint8_t encb[48], ct[96];
  size_t el = 0, cl = 0;
  if (!enc || sh_b64_decode(enc, strlen(enc), SH_B64_PROTOCOL, encb, sizeof encb, &el) < 0) el = 0;
  if (!sealed || sh_b64_decode(sealed, strlen(sealed), SH_B64_PROTOCOL, ct, sizeof ct, &cl) < 0)
    cl = 0;
  int ok =
      id && strlen(id) < sizeof s->id && alg && !strcmp(alg, "HPKE-X25519-SHA256-AES256GCM") &&
      el == 32 && cl == 32 + 16 &&
      sh_crypto_hpke_open(SH_HPKE_AEAD_AES256GCM, k.sk, encb, (const uint8_t *)"shield-session-v1",
                          17, (const uint8_t *)"", 0, ct, (size_t)cl, s->key) == 0;
  if (ok) snprintf(s->id, sizeof s->id, "%s", id);
  s->last_t = 0;
  json_decref(o);
  return ok ? 0 : -1;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The session headers of a request (§1.4, 2) into out; digest: the Content-Digest value or
 * NULL.  t: the proof time (0: now, after the last one). */
static void session_headers(session *s, const char *method, const char *target, const char *digest,
                            int64_t t, char *out, size_t cap) {
  if (!t) t = now_ms() > s->last_t ? now_ms() : s->last_t + 1;
  s->last_t = t;
  uint8_t mac[32];
  sh_attest_proof_mac(s->key, t, method, strlen(method), target, strlen(target),
                      digest ? digest : "", digest ? strlen(digest) : 0, mac);
  char m64[64];
  b64url(mac, 32, m64);
  int n = snprintf(out, cap, "X-Attestation-Session: %s\r\nX-Attestation-Proof: t=%lld, mac=%s\r\n",
                   s->id, (long long)t, m64);
  if (digest) snprintf(out + n, cap - (size_t)n, "Content-Digest: %s\r\n", digest);
}

/* RFC 9530 Content-Digest of body: "sha-256=:<standard base64>:". */
static void content_digest(const void *body, size_t len, char out[64]) {
  uint8_t d[32];
  unsigned dl = 0;
  EVP_Digest(body, len, d, &dl, EVP_sha256(), NULL);
  unsigned char b[48];
  EVP_EncodeBlock(b, d, 32);
  snprintf(out, 64, "sha-256=:%s:", b);
}

/* ------------------------------------------------------------------ tests */

static void test_nonce_endpoint(int port) {
  resp r;
  uint8_t n[32];
  CHECK(get_nonce(port, n) == 0, "nonce");
  CHECK(fetch(port, "GET", "/.well-known/shield/nonce", NULL, NULL, 0, &r) == 0 && r.status == 200,
        "nonce status %d", r.status);
  char v[64];
  CHECK(hdr(&r, "cache-control", v, sizeof v) && !strcmp(v, "no-store"), "nonce not cached");
  CHECK(strstr(r.body, "\"expires_in\": 60") != NULL, "expires_in: %s", r.body);
  /* RFC 9110 §15.5.6: 405 with Allow */
  CHECK(fetch(port, "POST", "/.well-known/shield/nonce", NULL, "x", 1, &r) == 0 &&
            r.status == 405 && hdr(&r, "allow", v, sizeof v) && !strcmp(v, "GET, HEAD"),
        "POST nonce -> 405 Allow: GET, HEAD (%d)", r.status);
  CHECK(fetch(port, "GET", "/.well-known/shield/attest", NULL, NULL, 0, &r) == 0 &&
            r.status == 405 && hdr(&r, "allow", v, sizeof v) && !strcmp(v, "POST"),
        "GET attest -> 405 Allow: POST (%d)", r.status);
  CHECK(atomic_load(&inner_requests) == 0, "the app never saw the well-known endpoints");
}

static void test_header_mode(int port) {
  resp r;
  char v[128];
  int before = atomic_load(&inner_requests);
  char *h = header_mode(port, NULL);
  CHECK(h != NULL, "header-mode evidence");
  if (!h) return;
  CHECK(fetch(port, "GET", "/whoami", h, NULL, 0, &r) == 0 && r.status == 200 &&
            strstr(r.body, "mode=header;tee=simulated;session=none;marker=yes"),
        "header mode accepted: %d %s", r.status, r.body);
  /* the same nonce again: consumed by the first success (§1.1) */
  CHECK(fetch(port, "GET", "/whoami", h, NULL, 0, &r) == 0 &&
            is_error(&r, 401, "attestation_failed", "nonce_replayed"),
        "replay: %d %s", r.status, r.body);
  CHECK(hdr(&r, "www-authenticate", v, sizeof v) != NULL, "401 names its scheme");
  free(h);
  /* a nonce this deployment never issued */
  uint8_t fake[32];
  memset(fake, 7, sizeof fake);
  char *ev = evidence_b64(fake, NULL, 0), n64[64];
  b64url(fake, 32, n64);
  char buf[16384];
  snprintf(buf, sizeof buf,
           "X-Attestation-Type: simulated\r\nX-Attestation-Nonce: %s\r\nX-Attestation-Token: "
           "%s\r\n",
           n64, ev ? ev : "");
  free(ev);
  CHECK(fetch(port, "GET", "/whoami", buf, NULL, 0, &r) == 0 &&
            is_error(&r, 401, "attestation_failed", "nonce_invalid"),
        "forged nonce: %d %s", r.status, r.body);
  CHECK(fetch(port, "GET", "/whoami", "X-Attestation-Type: bogus\r\nX-Attestation-Token: x\r\n",
              NULL, 0, &r) == 0 &&
            is_error(&r, 401, "attestation_invalid", "unsupported_type"),
        "unknown type: %d %s", r.status, r.body);
  /* --attest-required: no evidence is 401 missing, except on an excluded path */
  CHECK(fetch(port, "GET", "/whoami", NULL, NULL, 0, &r) == 0 &&
            is_error(&r, 401, "attestation_required", "missing"),
        "missing: %d %s", r.status, r.body);
  CHECK(fetch(port, "GET", "/health/x", NULL, NULL, 0, &r) == 0 && r.status == 200 &&
            strstr(r.body, "mode=none;tee=none;session=none;marker=yes"),
        "excluded path handed on with the marker, no result: %d %s", r.status, r.body);
  CHECK(atomic_load(&inner_requests) == before + 2, "the app saw the two accepted requests only");
}

static void test_session(int port) {
  session s;
  resp r;
  CHECK(establish(port, &s, &r) == 0, "session established: %d %s", r.status, r.body);
  if (!s.id[0]) return;
  char h[1024], want[256];
  session_headers(&s, "GET", "/whoami?x=1", NULL, 0, h, sizeof h);
  snprintf(want, sizeof want, "mode=session;tee=simulated;session=%s;marker=yes", s.id);
  conn *c = dial(port);
  CHECK(c && exchange(c, "GET", "/whoami?x=1", h, NULL, 0, &r) == 0 && r.status == 200 &&
            strstr(r.body, want),
        "session request: %d %s", r.status, r.body);
  /* the same proof again: t is not after the last one (§1.4, 2) */
  CHECK(c && exchange(c, "GET", "/whoami?x=1", h, NULL, 0, &r) == 0 &&
            is_error(&r, 401, "attestation_failed", "proof_invalid"),
        "replayed proof: %d %s", r.status, r.body);
  /* a proof for another target */
  session_headers(&s, "GET", "/other", NULL, 0, h, sizeof h);
  CHECK(c && exchange(c, "GET", "/whoami", h, NULL, 0, &r) == 0 &&
            is_error(&r, 401, "attestation_failed", "proof_invalid"),
        "proof for another target: %d %s", r.status, r.body);
  /* a body with its Content-Digest, on the same connection */
  static char body[200000];
  for (size_t i = 0; i < sizeof body; i++)
    body[i] = (char)('a' + i % 26);
  char digest[64];
  content_digest(body, sizeof body, digest);
  session_headers(&s, "POST", "/echo", digest, 0, h, sizeof h);
  snprintf(want, sizeof want, "mode=session;tee=simulated;session=%s;marker=yes;len=%zu", s.id,
           sizeof body);
  CHECK(c && exchange(c, "POST", "/echo", h, body, sizeof body, &r) == 0 && r.status == 200 &&
            strstr(r.body, want),
        "body with a good digest: %d %s", r.status, r.body);
  hang_up(c);

  /* The body does not match its digest: found at its last byte, after the request was handed
   * on.  The gate takes the response over (sh_request_cut): 401 with connection: close, and
   * the app sees a disconnect instead of its last chunk. */
  int disc = atomic_load(&inner_disconnects);
  body[sizeof body - 1] ^= 1;
  session_headers(&s, "POST", "/echo", digest, 0, h, sizeof h);
  c = dial(port);
  char v[32];
  CHECK(c && exchange(c, "POST", "/echo", h, body, sizeof body, &r) == 0 &&
            is_error(&r, 401, "attestation_failed", "proof_invalid") &&
            strstr(r.body, "Content-Digest"),
        "digest mismatch: %d %s", r.status, r.body);
  CHECK(hdr(&r, "connection", v, sizeof v) && !strcmp(v, "close"),
        "the connection is not reused after a cut");
  char b;
  CHECK(c && recv(c->fd, &b, 1, 0) == 0, "the server closed the connection");
  hang_up(c);
  CHECK(atomic_load(&inner_disconnects) == disc + 1, "the app saw a disconnect (%d -> %d)", disc,
        atomic_load(&inner_disconnects));
  /* the session still works */
  session_headers(&s, "GET", "/whoami", NULL, 0, h, sizeof h);
  CHECK(fetch(port, "GET", "/whoami", h, NULL, 0, &r) == 0 && r.status == 200,
        "session after a cut: %d %s", r.status, r.body);
  /* unknown session */
  CHECK(fetch(port, "GET", "/whoami",
              "X-Attestation-Session: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"
              "X-Attestation-Proof: t=1, mac=AA\r\n",
              NULL, 0, &r) == 0 &&
            is_error(&r, 401, "attestation_failed", "session_unknown"),
        "unknown session: %d %s", r.status, r.body);
}

/* The pool's caps: a hook blocks every verification until released. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int entered, block;
} hook = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void on_verify(void *arg) {
  (void)arg;
  pthread_mutex_lock(&hook.mu);
  hook.entered++;
  pthread_cond_broadcast(&hook.cv);
  while (hook.block)
    pthread_cond_wait(&hook.cv, &hook.mu);
  pthread_mutex_unlock(&hook.mu);
}

/* Wait (at most 20 s: never a timing assumption, only a bound on a hang) until n
 * verifications entered the hook. */
static int wait_entered(int n) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 20;
  pthread_mutex_lock(&hook.mu);
  while (hook.entered < n)
    if (pthread_cond_timedwait(&hook.cv, &hook.mu, &dl) != 0) break;
  int ok = hook.entered >= n;
  pthread_mutex_unlock(&hook.mu);
  return ok;
}

static void send_header_mode(conn *c, const char *h) {
  char req[32768];
  int n = snprintf(req, sizeof req, "GET /whoami HTTP/1.1\r\nHost: t\r\n%s\r\n", h);
  if (c) send_all(c, req, (size_t)n);
}

static void test_caps(void) {
  sh_gate_config gc;
  base_gate(&gc);
  gc.required = 1;
  gc.pool_threads = 2;
  gc.max_pending = 2;    /* in total */
  gc.max_per_client = 1; /* per client address */
  gc.on_verify = on_verify;
  running r;
  if (start(&r, &gc, 0) < 0) {
    CHECK(0, "start the caps server");
    return;
  }
  char *ha = header_mode(r.port, NULL), *hb = header_mode(r.port, NULL),
       *hc = header_mode(r.port, NULL), *hd = header_mode(r.port, NULL);
  CHECK(ha && hb && hc && hd, "evidence for the caps");
  pthread_mutex_lock(&hook.mu);
  hook.block = 1;
  hook.entered = 0;
  pthread_mutex_unlock(&hook.mu);
  conn *a = dial_from(r.port, "127.0.0.1"), *c = dial_from(r.port, "127.0.0.2");
  CHECK(a && c, "connections from two client addresses");
  send_header_mode(a, ha);
  CHECK(wait_entered(1), "the first verification runs (held)");
  resp rb, rd, ra, rc;
  char v[16];
  /* a second one from the same address: over the per-client cap */
  CHECK(fetch(r.port, "GET", "/whoami", hb, NULL, 0, &rb) == 0 &&
            is_error(&rb, 503, "attestation_unavailable", "overloaded") &&
            hdr(&rb, "retry-after", v, sizeof v) && !strcmp(v, "1"),
        "per-client cap: %d %s", rb.status, rb.body);
  send_header_mode(c, hc); /* another address: within both caps */
  CHECK(wait_entered(2), "the second address's verification runs (held)");
  conn *d = dial_from(r.port, "127.0.0.3");
  CHECK(d && (send_header_mode(d, hd), read_resp(d, &rd) == 0) &&
            is_error(&rd, 503, "attestation_unavailable", "overloaded"),
        "total cap: %d %s", rd.status, rd.body);
  pthread_mutex_lock(&hook.mu);
  hook.block = 0;
  pthread_cond_broadcast(&hook.cv);
  pthread_mutex_unlock(&hook.mu);
  CHECK(a && read_resp(a, &ra) == 0 && ra.status == 200, "held one answered: %d %s", ra.status,
        ra.body);
  CHECK(c && read_resp(c, &rc) == 0 && rc.status == 200, "held one answered: %d %s", rc.status,
        rc.body);
  /* a refused request did not consume its nonce: it passes once there is room */
  CHECK(fetch(r.port, "GET", "/whoami", hb, NULL, 0, &rb) == 0 && rb.status == 200,
        "refused nonce still good: %d %s", rb.status, rb.body);
  hang_up(a);
  hang_up(c);
  hang_up(d);
  free(ha);
  free(hb);
  free(hc);
  free(hd);
  stop(&r);
}

/* An establishment whose client goes away mid-body: the gate held the request (the app never
 * saw it) and must release it, or it counts against --limit-concurrency for ever. */
static void test_aborted_upload(void) {
  sh_gate_config gc;
  base_gate(&gc);
  running r;
  if (start(&r, &gc, 2) < 0) {
    CHECK(0, "start the upload server");
    return;
  }
  static const char head[] =
      "POST /.well-known/shield/attest HTTP/1.1\r\nHost: t\r\n"
      "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{";
  for (int round = 0; round < 3; round++) {
    conn *up[2];
    for (int i = 0; i < 2; i++) {
      up[i] = dial(r.port);
      if (up[i]) send_all(up[i], head, sizeof head - 1);
    }
    /* both held by the gate: --limit-concurrency 2 refuses anything else */
    int full = 0;
    resp p;
    for (double t0 = now_s(); !full && now_s() - t0 < 20;)
      full = fetch(r.port, "GET", "/health", NULL, NULL, 0, &p) == 0 && p.status == 503;
    CHECK(full, "round %d: the uploads are held", round);
    hang_up(up[0]);
    hang_up(up[1]);
    /* released: other clients are served again */
    int ok = 0;
    for (double t0 = now_s(); !ok && now_s() - t0 < 20;)
      ok = fetch(r.port, "GET", "/health", NULL, NULL, 0, &p) == 0 && p.status == 200;
    CHECK(ok, "round %d: aborted uploads released", round);
  }
  stop(&r);
}

/* Two gates in one process, each in front of its own server: own secrets, own sessions. */
static void test_two_gates(void) {
  sh_gate_config ga, gb;
  base_gate(&ga);
  base_gate(&gb);
  gb.required = 1;
  running a, b;
  if (start(&a, &ga, 0) < 0 || start(&b, &gb, 0) < 0) {
    CHECK(0, "start two gates");
    return;
  }
  resp r;
  CHECK(fetch(a.port, "GET", "/whoami", NULL, NULL, 0, &r) == 0 && r.status == 200 &&
            strstr(r.body, "mode=none;tee=none;session=none;marker=yes"),
        "gate A is optional: %d %s", r.status, r.body);
  CHECK(fetch(b.port, "GET", "/whoami", NULL, NULL, 0, &r) == 0 &&
            is_error(&r, 401, "attestation_required", "missing"),
        "gate B is required: %d %s", r.status, r.body);
  /* A's nonce means nothing to B (its own secret) */
  char *ha = header_mode(a.port, NULL);
  CHECK(ha && fetch(b.port, "GET", "/whoami", ha, NULL, 0, &r) == 0 &&
            is_error(&r, 401, "attestation_failed", "nonce_invalid"),
        "A's nonce at B: %d %s", r.status, r.body);
  CHECK(ha && fetch(a.port, "GET", "/whoami", ha, NULL, 0, &r) == 0 && r.status == 200 &&
            strstr(r.body, "mode=header"),
        "A's nonce at A: %d %s", r.status, r.body);
  free(ha);
  char *hb = header_mode(b.port, NULL);
  CHECK(hb && fetch(b.port, "GET", "/whoami", hb, NULL, 0, &r) == 0 && r.status == 200,
        "B's nonce at B: %d %s", r.status, r.body);
  free(hb);
  /* A's session is unknown at B */
  session s;
  CHECK(establish(a.port, &s, &r) == 0, "session at A");
  char h[1024];
  session_headers(&s, "GET", "/whoami", NULL, 0, h, sizeof h);
  CHECK(fetch(b.port, "GET", "/whoami", h, NULL, 0, &r) == 0 &&
            is_error(&r, 401, "attestation_failed", "session_unknown"),
        "A's session at B: %d %s", r.status, r.body);
  session_headers(&s, "GET", "/whoami", NULL, 0, h, sizeof h);
  CHECK(fetch(a.port, "GET", "/whoami", h, NULL, 0, &r) == 0 && r.status == 200,
        "A's session at A: %d %s", r.status, r.body);
  stop(&a);
  stop(&b);
}

/* ------------------------------------------------------------------ the server's own TEE */

/* The JSON body of a response (NULL when it is not JSON). */
static json_t *body_json(const resp *r) {
  json_error_t je;
  return json_loadb(r->body, r->body_len, 0, &je);
}

/* base64url text -> bytes (malloc'd), or NULL. */
static uint8_t *unb64(const char *s, size_t *n) {
  return s ? sh_b64_decode_alloc(s, strlen(s), SH_B64_URL, n) : NULL;
}

/* Simulated evidence verified against the default data directory's dev root (the provider's:
 * $XDG_DATA_HOME/shield), binding nonce and k. */
static int verifies(const uint8_t *ev, size_t len, const uint8_t *nonce, const uint8_t *k,
                    size_t klen, char pcr0[97]) {
  sh_attest_options o = {0};
  o.at = (int64_t)time(NULL);
  o.nonce = nonce;
  o.nonce_len = 32;
  o.public_key = k;
  o.public_key_len = klen;
  o.trust_simulated = 1;
  sh_attest_result *res = NULL;
  int ok = sh_attest_verify(ev, len, SH_TEE_SIMULATED, &o, &res) == 0 && res->verified;
  const char *p0 = res ? json_string_value(json_object_get(res->measurements, "PCR0")) : NULL;
  if (pcr0) snprintf(pcr0, 97, "%s", p0 ? p0 : "");
  sh_attest_result_free(res);
  return ok;
}

static void test_tee_refusals(void) {
  sh_gate_config gc;
  sh_error err = {0};
  sh_gate_config_init(&gc);
  gc.tee = "nitro"; /* no /dev/nsm on a test machine */
  CHECK(sh_gate_config_check(&gc, &err) < 0 && strstr(err.message, "/dev/nsm"),
        "--tee nitro without the device names it: %s", err.message);
  CHECK(sh_gate_new(&gc, &inner, &err) == NULL && strstr(err.message, "/dev/nsm"),
        "sh_gate_new refuses it too: %s", err.message);
  sh_gate_config_init(&gc);
  gc.tee = "gcp";
  CHECK(sh_gate_config_check(&gc, &err) < 0 && strstr(err.message, "--tee-gcp-audience"),
        "--tee gcp without its audience: %s", err.message);
  sh_gate_config_init(&gc);
  gc.attach_server_attestation = 1;
  CHECK(sh_gate_config_check(&gc, &err) < 0 && strstr(err.message, "need --tee"),
        "--attach-server-attestation without --tee: %s", err.message);
  sh_gate_config_init(&gc);
  gc.tee = "simulated";
  gc.health_path = "/.well-known/shield/nonce";
  CHECK(sh_gate_config_check(&gc, &err) < 0 && strstr(err.message, "--health-path"),
        "--health-path on another endpoint: %s", err.message);
}

static void test_server_tee(void) {
  sh_gate_config gc;
  sh_gate_config_init(&gc); /* --tee alone: no client attestation */
  gc.tee = "simulated";
  gc.attach_server_attestation = 1;
  gc.state_table_size = 4096;
  running r;
  if (start(&r, &gc, 0) < 0) {
    CHECK(0, "start the --tee gate");
    return;
  }
  static resp R;
  uint8_t nonce[32];
  char n64[64], target[160], pcr0[97], hv[8192];
  for (size_t i = 0; i < sizeof nonce; i++)
    nonce[i] = (uint8_t)(i * 7 + 1);
  b64url(nonce, sizeof nonce, n64);
  snprintf(target, sizeof target, "/.well-known/shield/attestation?x=1&nonce=%s", n64);
  CHECK(fetch(r.port, "GET", target, NULL, NULL, 0, &R) == 0 && R.status == 200,
        "attestation: 200 (%d)", R.status);
  json_t *doc = body_json(&R);
  json_t *b = json_object_get(doc, "binding");
  size_t evlen = 0, klen = 0;
  uint8_t *ev = unb64(json_string_value(json_object_get(doc, "evidence")), &evlen);
  uint8_t *k = unb64(json_string_value(json_object_get(b, "cbor")), &klen);
  /* RFC 8949 §4.2.1: {1: null, 2: null, 3: 1} over plain HTTP */
  static const uint8_t nulls[] = {0xa3, 0x01, 0xf6, 0x02, 0xf6, 0x03, 0x01};
  CHECK(k && klen == sizeof nulls && !memcmp(k, nulls, klen), "binding.cbor is deterministic");
  CHECK(json_is_null(json_object_get(b, "tls_spki_sha256")) &&
            json_is_null(json_object_get(b, "hpke_key_config")) &&
            json_integer_value(json_object_get(b, "version")) == 1,
        "binding fields over plain HTTP");
  CHECK(!strcmp(json_string_value(json_object_get(doc, "tee_type")), "simulated") &&
            !strcmp(json_string_value(json_object_get(doc, "nonce")), n64),
        "tee_type and nonce");
  CHECK(ev && k && verifies(ev, evlen, nonce, k, klen, pcr0) && pcr0[0] &&
            !strcmp(pcr0, json_string_value(
                              json_object_get(json_object_get(doc, "measurements"), "PCR0"))),
        "the evidence binds D(nonce, binding.cbor) and the measurements are its own");
  nonce[0] ^= 1;
  CHECK(ev && k && !verifies(ev, evlen, nonce, k, klen, NULL), "not for another nonce");
  free(ev);
  free(k);
  json_decref(doc);
  CHECK(hdr(&R, "x-server-attestation", hv, sizeof hv) && strlen(hv) > 100 &&
            hdr(&R, "x-server-tee-type", hv, sizeof hv) && !strcmp(hv, "simulated"),
        "the gate's own answer carries the headers");

  CHECK(
      fetch(r.port, "GET", "/.well-known/shield/attestation?nonce=AAAA", NULL, NULL, 0, &R) == 0 &&
          is_error(&R, 400, "attestation_invalid", "malformed"),
      "a nonce that is not 32 bytes: 400 malformed");
  CHECK(fetch(r.port, "PUT", "/.well-known/shield/health", NULL, "x", 1, &R) == 0 &&
            R.status == 405 && hdr(&R, "allow", hv, sizeof hv) && !strcmp(hv, "GET, HEAD"),
        "health: 405 with Allow");

  int before = atomic_load(&inner_requests);
  CHECK(fetch(r.port, "GET", "/.well-known/shield/nonce", NULL, NULL, 0, &R) == 0 &&
            R.status == 200 && strstr(R.body, "mode=none;tee=none") &&
            strstr(R.body, "marker=no") && atomic_load(&inner_requests) == before + 1,
        "without --attest-types everything else is handed on, with no attestation: %.*s",
        (int)R.body_len, R.body);
  CHECK(hdr(&R, "x-server-attestation", hv, sizeof hv) && strlen(hv) > 100 &&
            hdr(&R, "x-server-tee-type", hv, sizeof hv),
        "the inner handler's response carries the headers");

  stop(&r);

  /* A cache of a max age of 3 s, expired: a health request is held for the refresh, then
   * answered from the new evidence (the refresh has ~3 s to finish, a slow machine's margin). */
  gc.attach_server_attestation = 0;
  gc.tee_max_age = 3;
  if (start(&r, &gc, 0) < 0) {
    CHECK(0, "start the --tee gate (max age 3 s)");
    return;
  }
  struct timespec d = {3, 200000000};
  nanosleep(&d, NULL);
  CHECK(
      fetch(r.port, "GET", "/.well-known/shield/health", NULL, NULL, 0, &R) == 0 && R.status == 200,
      "health after the cache expired: 200 (%d %.*s)", R.status, (int)R.body_len, R.body);
  json_t *h = body_json(&R), *t = json_object_get(h, "tee");
  ev = unb64(json_string_value(json_object_get(t, "evidence")), &evlen);
  uint8_t zero[32] = {0};
  CHECK(!strcmp(json_string_value(json_object_get(h, "status")), "ok") &&
            json_integer_value(json_object_get(t, "age")) < 3 && ev &&
            verifies(ev, evlen, zero, nulls, sizeof nulls, NULL),
        "health: ok, fresh, cached evidence bound to n = 32 zero bytes");
  free(ev);
  json_decref(h);
  stop(&r);
}

static void test_config_refusals(void) {
  sh_gate_config gc;
  sh_error err = {0};
  sh_gate_config_init(&gc);
  gc.types = "nitro,bogus";
  CHECK(sh_gate_new(&gc, &inner, &err) == NULL && strstr(err.message, "'bogus' is not a TEE type"),
        "bad type: %s", err.message);
  sh_gate_config_init(&gc);
  gc.types = "maa";
  CHECK(sh_gate_new(&gc, &inner, &err) == NULL && strstr(err.message, "--attest-maa-issuer"),
        "maa without its issuer names the flag: %s", err.message);
  sh_gate_config_init(&gc);
  CHECK(sh_gate_new(&gc, &inner, &err) == NULL && strstr(err.message, "--attest-types"),
        "no types: %s", err.message);
  sh_gate_config_init(&gc);
  gc.types = "simulated";
  gc.clock = 1700000000;
  CHECK(sh_gate_config_check(&gc, &err) < 0 && strstr(err.message, "--dev"),
        "--attest-clock needs --dev: %s", err.message);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  sh_log_set_level(getenv("SHIELD_TEST_LOG") ? "debug" : "critical");
  char err[256];
  snprintf(g_dir, sizeof g_dir, "%s/shield-gate-test-XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (!mkdtemp(g_dir) || sh_attest_simulated_root(g_dir, 1, (int64_t)time(NULL), &g_root,
                                                  &g_root_len, err, sizeof err) < 0) {
    fprintf(stderr, "dev root: %s\n", err);
    return 1;
  }
  /* the server's own simulated TEE uses the default data directory: this run's */
  char xdg[300], sub[320];
  snprintf(xdg, sizeof xdg, "%s/data", g_dir);
  snprintf(sub, sizeof sub, "%s/shield", xdg);
  setenv("XDG_DATA_HOME", xdg, 1);
  test_config_refusals();

  sh_gate_config gc;
  base_gate(&gc);
  gc.required = 1;
  gc.exclude[gc.num_exclude++] = "/health";
  running r;
  if (start(&r, &gc, 0) == 0) {
    test_nonce_endpoint(r.port);
    test_header_mode(r.port);
    test_session(r.port);
    stop(&r);
  } else {
    CHECK(0, "start the gate server");
  }
  test_caps();
  test_aborted_upload();
  test_two_gates();
  test_tee_refusals();
  test_server_tee();
  CHECK(atomic_load(&inner_releases) == atomic_load(&inner_requests),
        "every request the app saw was released (%d of %d)", atomic_load(&inner_releases),
        atomic_load(&inner_requests));

  free(g_root);
  char path[400];
  snprintf(path, sizeof path, "%s/simulated-root.pem", g_dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/simulated-root.pem", sub);
  unlink(path);
  rmdir(sub);
  rmdir(xdg);
  rmdir(g_dir);
  sh_log_flush();
  return test_summary();
}
