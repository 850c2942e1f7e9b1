/*
 * tests/c/server/test_tls_mem.c — TLS from memory (server.h: sh_config.ssl_key/ssl_issue,
 * sh_server_set_tls_cert) on a real server on 127.0.0.1 without a supervisor, with the
 * built-in hello handler and an OpenSSL client.
 *
 * Covered: the first certificate comes from ssl_issue (called once by sh_server_new); a
 * replacement is served to new connections while a keep-alive connection opened before keeps
 * its certificate and is still answered; a certificate for another key is refused with the
 * old one kept; sh_server_set_tls_cert on a server whose TLS is from files or off, and
 * sh_server_reload_tls on a memory server, say why they cannot.
 * Prints "N passed, N failed".
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "server.h"
#include "testutil.h"

/* A self-signed certificate for key, CN = cn, as PEM (malloc'd). */
static char *make_cert(EVP_PKEY *key, const char *cn, size_t *len) {
  X509 *x = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL));
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME *n = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, n);
  X509_sign(x, key, EVP_sha256());
  BIO *b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  char *p = NULL;
  long l = BIO_get_mem_data(b, &p);
  char *out = malloc((size_t)l);
  memcpy(out, p, (size_t)l);
  *len = (size_t)l;
  BIO_free(b);
  X509_free(x);
  return out;
}

typedef struct issuer {
  EVP_PKEY *key;
  int calls;
} issuer;

static int issue(void *arg, char **pem, size_t *len, sh_error *err) {
  (void)err;
  issuer *is = arg;
  is->calls++;
  *pem = make_cert(is->key, "first", len);
  return 0;
}

typedef struct running {
  sh_server *srv;
  pthread_t th;
} running;

static void *run_main(void *arg) {
  sh_server_run(((running *)arg)->srv);
  return NULL;
}

/* A TLS client connection (the socket, its SSL). */
typedef struct tconn {
  int fd;
  SSL *ssl;
} tconn;

static int tconn_open(SSL_CTX *ctx, int port, tconn *c) {
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct timeval tv = {10, 0};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  c->ssl = NULL;
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) return -1;
  c->ssl = SSL_new(ctx);
  SSL_set_fd(c->ssl, c->fd);
  return SSL_connect(c->ssl) == 1 ? 0 : -1;
}

static void tconn_close(tconn *c) {
  if (c->ssl) SSL_free(c->ssl);
  close(c->fd);
}

/* The CN of the connection's server certificate ("" when unknown). */
static void peer_cn(tconn *c, char *out, size_t n) {
  out[0] = '\0';
  X509 *x = SSL_get1_peer_certificate(c->ssl);
  if (x) X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)n);
  X509_free(x);
}

/* One keep-alive GET; 1 when "Hello, world!" came back. */
static int hello(tconn *c) {
  static const char req[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
  if (SSL_write(c->ssl, req, (int)sizeof req - 1) <= 0) return 0;
  char buf[4096];
  size_t got = 0;
  while (got < sizeof buf - 1) {
    int r = SSL_read(c->ssl, buf + got, (int)(sizeof buf - 1 - got));
    if (r <= 0) return 0;
    got += (size_t)r;
    buf[got] = '\0';
    if (strstr(buf, "Hello, world!")) return 1;
  }
  return 0;
}

static void test_memory_tls(void) {
  issuer is = {EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), 0};
  EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  sh_config cfg;
  sh_config_init(&cfg);
  cfg.port = 0;
  cfg.access_log = 0;
  cfg.ssl_key = is.key;
  cfg.ssl_issue = issue;
  cfg.ssl_issue_arg = &is;
  sh_error err = {0};
  CHECK(sh_config_check(&cfg, &err) == 0, "TLS from memory passes the checks: %s", err.message);
  running r = {0};
  CHECK(sh_server_new(&cfg, sh_hello_handler(), &r.srv, &err) == 0, "server: %s", err.message);
  if (!r.srv) goto out;
  CHECK(is.calls == 1, "ssl_issue called once by sh_server_new (%d)", is.calls);
  pthread_create(&r.th, NULL, run_main, &r);
  int port = sh_server_port(r.srv);

  SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
  tconn kept;
  char cn[64];
  CHECK(tconn_open(cctx, port, &kept) == 0, "handshake");
  peer_cn(&kept, cn, sizeof cn);
  CHECK(strcmp(cn, "first") == 0, "the issued certificate: %s", cn);
  CHECK(hello(&kept), "answered");

  /* a certificate for another key: refused, the first one stays */
  size_t bl = 0;
  char *bad = make_cert(other, "other key", &bl);
  memset(&err, 0, sizeof err);
  CHECK(sh_server_set_tls_cert(r.srv, bad, bl, &err) == SH_EINVAL &&
            strstr(err.message, "not for the server's key"),
        "another key refused: %s", err.message);
  free(bad);
  CHECK(sh_server_set_tls_cert(r.srv, "junk", 4, &err) == SH_EINVAL, "junk refused: %s",
        err.message);
  CHECK(sh_server_set_tls_cert(r.srv, NULL, 0, &err) == SH_EINVAL, "nothing refused: %s",
        err.message);
  CHECK(sh_server_reload_tls(r.srv, &err) == SH_EINVAL && strstr(err.message, "memory"),
        "nothing to reload: %s", err.message);

  size_t sl = 0;
  char *second = make_cert(is.key, "second", &sl);
  CHECK(sh_server_set_tls_cert(r.srv, second, sl, &err) == 0, "replaced: %s", err.message);
  free(second);
  /* the swap is applied by the I/O thread: new connections see it once it ran */
  int seen = 0;
  for (int i = 0; i < 200 && !seen; i++) {
    tconn c;
    if (tconn_open(cctx, port, &c) == 0) {
      peer_cn(&c, cn, sizeof cn);
      seen = strcmp(cn, "second") == 0 && hello(&c);
    }
    tconn_close(&c);
    if (!seen) usleep(20000);
  }
  CHECK(seen, "a new connection gets the new certificate and is answered");
  /* the connection from before (made with the first context) is not dropped: still served */
  CHECK(hello(&kept) && hello(&kept), "the open connection keeps working");
  tconn_close(&kept);
  SSL_CTX_free(cctx);
  sh_server_stop(r.srv, 1.0);
  pthread_join(r.th, NULL);
  sh_server_free(r.srv);
out:
  EVP_PKEY_free(other);
  EVP_PKEY_free(is.key);
}

static void test_not_memory(void) {
  sh_config cfg;
  sh_config_init(&cfg);
  cfg.port = 0;
  cfg.access_log = 0;
  sh_error err = {0};
  sh_server *srv = NULL;
  CHECK(sh_server_new(&cfg, sh_hello_handler(), &srv, &err) == 0, "plain server: %s", err.message);
  if (!srv) return;
  CHECK(sh_server_set_tls_cert(srv, "x", 1, &err) == SH_EINVAL && strstr(err.message, "memory"),
        "plain: %s", err.message);
  sh_server_free(srv);
}

int main(void) {
  test_memory_tls();
  test_not_memory();
  ERR_clear_error();
  return test_summary();
}
