/*
 * server/tls.c — TLS termination with OpenSSL 3, driven by the libuv I/O thread.
 *
 * Inside a TEE the TLS session must end inside the TEE, so the server terminates it itself.
 * The socket stays a plain libuv stream; OpenSSL never touches it.  Per connection an SSL
 * object sits between two BIOs:
 *
 *   socket --read_cb--> [memory BIO] --SSL_read--> plaintext in the connection's input
 *   buffer (conn.c's `ib`) --> llhttp, exactly as on a plain connection;
 *   response bufs --SSL_write--> [our write BIO: a growable buffer] --> ONE sh_conn_write_sock
 *   per flush (uv_try_write, else uv_write), whatever the number of records.
 *
 * Why this shape: the I/O thread already owns the socket and never blocks, so handshakes and
 * record crypto run there with no extra thread and never near the GIL; the plain-HTTP path is
 * untouched (conn.c branches once on `c->tls` at the read and write boundaries).  Small
 * response pieces (head, chunk-size lines, a small body) are first gathered into one 16 KiB
 * staging buffer so a typical response is one TLS record and one write(2).
 *
 * All plaintext a read yields is decrypted at once (SSL_read until WANT_READ): no plaintext
 * is ever left inside OpenSSL, where nothing would wake us to fetch it.  The input buffer is
 * still bounded: conn.c stops reading the socket once it holds --max-header-size + 64 KiB,
 * and one read brings at most 64 KiB of ciphertext.
 *
 * Session resumption.  TLS 1.3 and 1.2 tickets are encrypted with keys made once per process
 * tree by sh_tls_prepare (RAND_bytes; AES-256-CBC + HMAC-SHA256 via
 * SSL_CTX_set_tlsext_ticket_key_evp_cb), before workers fork, so any worker resumes any
 * worker's session and a certificate reload keeps them.  TLS 1.2 session IDs use OpenSSL's
 * per-process server cache (they resume on the same worker only).
 *
 * Plain HTTP on the TLS port: when the first bytes of a connection look like an HTTP request
 * line rather than a TLS record, we answer, in plaintext as nginx does, "400 The plain HTTP
 * request was sent to HTTPS port" and close: the developer who typed http:// sees why.  Any
 * other handshake failure sends OpenSSL's alert and closes that connection only (logged at
 * debug level: scanners would otherwise flood the log).  A handshake that stalls is cut by the
 * header timeout (conn.c: nothing parsed yet, so the connection is just closed).
 *
 * Certificates from memory (sh_config.ssl_key/ssl_issue; the gate's --tls-attested): the key
 * is an EVP_PKEY made before the fork and the certificate PEM bytes; no file is read.  Under
 * the supervisor each certificate it issues is published in a shared-memory slot with a
 * generation number; a worker compares generations when it accepts a connection (one atomic
 * load) and builds the new context from the slot before that handshake.  Swapping srv->tls
 * is the reload's swap: contexts are refcounted, so open connections keep theirs.
 *
 * Renegotiation is refused (SSL_OP_NO_RENEGOTIATION): it is a CPU-exhaustion vector and
 * HTTP/1.1 servers have no use for it.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/mman.h>

#include "server_internal.h"

#define STAGE_MAX (16 * 1024) /* one full TLS record of plaintext */
#define OUT_MIN 4096

struct sh_tls_ctx {
  atomic_int refs;
  SSL_CTX *ctx;
  char *cert_pem;
  size_t cert_pem_len;
  unsigned char *cert_der;
  size_t cert_der_len;
};

struct sh_tls_conn {
  SSL *ssl;
  BIO *rbio;       /* memory BIO: ciphertext from the socket */
  sh_tls_ctx *ctx; /* the context this connection was made with (a reference) */
  struct sh_tls_info_priv *info;
  char *out; /* ciphertext produced by OpenSSL, not yet handed to libuv */
  size_t out_len, out_cap;
  int out_failed; /* out of memory while OpenSSL wrote: the connection is lost */
  unsigned hs_done : 1;
  unsigned first_seen : 1;
  unsigned notify_sent : 1;
};

typedef struct sh_tls_info_priv {
  sh_tls_info pub;
  int refs;        /* loop thread only (requests and the connection) */
  sh_tls_ctx *ctx; /* keeps the server certificate alive */
  sh_iovec *chain;
  char **chain_mem;
  char *subject;
  unsigned char *spki;
} sh_tls_info_priv;

/* ---- process-wide ticket keys (sh_tls_prepare) ---- */

static struct {
  int ready;
  unsigned char name[16];
  unsigned char aes[32];
  unsigned char hmac[32];
} T;

static void set_err_openssl(sh_error *err, const char *what, const char *file) {
  unsigned long e = ERR_peek_last_error();
  char reason[160];
  if (e)
    ERR_error_string_n(e, reason, sizeof reason);
  else
    snprintf(reason, sizeof reason, "unknown error");
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  if (file)
    SH_ERR(err, SH_EINVAL, "%s %s: %s", what, file, r ? r : reason);
  else
    SH_ERR(err, SH_EINVAL, "%s: %s", what, r ? r : reason);
  ERR_clear_error();
}

/* A file we cannot open gets errno's words, not OpenSSL's "system lib". */
static int check_readable(const char *flag, const char *path, sh_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    SH_ERR(err, SH_EINVAL, "%s %s: %s", flag, path, strerror(errno));
    return SH_EINVAL;
  }
  fclose(f);
  return 0;
}

/*
 * RFC 5077 §4 ticket protection, via OpenSSL 3's EVP callback: enc=1 picks our key for a new
 * ticket; enc=0 accepts only tickets named with our key (anything else: 0 = full handshake).
 */
static int ticket_cb(SSL *s, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc) {
  (void)s;
  OSSL_PARAM params[3];
  params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, T.hmac, sizeof T.hmac);
  params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
  params[2] = OSSL_PARAM_construct_end();
  if (enc) {
    if (RAND_bytes(iv, 16) <= 0) return -1;
    memcpy(key_name, T.name, 16);
    if (!EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, T.aes, iv)) return -1;
    if (!EVP_MAC_CTX_set_params(hctx, params)) return -1;
    return 1;
  }
  if (memcmp(key_name, T.name, 16) != 0) return 0;
  if (!EVP_MAC_CTX_set_params(hctx, params)) return -1;
  if (!EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, T.aes, iv)) return -1;
  return 1;
}

/* ALPN (RFC 7301): we speak http/1.1 only.  A client that offers no http/1.1 gets no ALPN
 * answer (rather than a fatal alert) and may still try HTTP/1.1. */
static int alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg) {
  (void)s;
  (void)arg;
  static const unsigned char h11[] = "\x08http/1.1";
  unsigned char *sel = NULL;
  if (SSL_select_next_proto(&sel, outlen, h11, sizeof h11 - 1, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

/* No prompting on a terminal for an encrypted key: the password comes from the flag only.
 * `asked` tells the error message whether the key was encrypted at all. */
typedef struct pass_req {
  const char *pw;
  int asked;
} pass_req;

static int pass_cb(char *buf, int size, int rwflag, void *u) {
  (void)rwflag;
  pass_req *pr = u;
  pr->asked = 1;
  const char *pw = pr->pw;
  if (!pw) return -1;
  size_t n = strlen(pw);
  if (n > (size_t)size) n = (size_t)size;
  memcpy(buf, pw, n);
  return (int)n;
}

/* ---- contexts ---- */

/* What was written to a memory BIO, as a NUL-terminated malloc'd string (len: its length), or
 * NULL.  Frees the BIO.  `ok` is whether the write into it succeeded. */
static char *bio_take_string(BIO *mem, int ok, size_t *len) {
  char *out = NULL, *p = NULL;
  if (mem && ok) {
    long n = BIO_get_mem_data(mem, &p);
    out = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (out) {
      memcpy(out, p, (size_t)n);
      out[n] = '\0';
      if (len) *len = (size_t)n;
    }
  }
  BIO_free(mem);
  return out;
}

static char *x509_pem(X509 *x, size_t *len) {
  BIO *mem = BIO_new(BIO_s_mem());
  return bio_take_string(mem, mem && PEM_write_bio_X509(mem, x) == 1, len);
}

static char *x509_subject(X509 *x) {
  BIO *mem = BIO_new(BIO_s_mem());
  /* RFC 2253 flags give an RFC 4514 string (most specific RDN first). */
  int ok = mem && X509_NAME_print_ex(mem, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0;
  return bio_take_string(mem, ok, NULL);
}

void sh_tls_ctx_unref(sh_tls_ctx *t) {
  if (!t || atomic_fetch_sub(&t->refs, 1) != 1) return;
  SSL_CTX_free(t->ctx);
  free(t->cert_pem);
  OPENSSL_free(t->cert_der);
  free(t);
}

static sh_tls_ctx *ctx_ref(sh_tls_ctx *t) {
  atomic_fetch_add(&t->refs, 1);
  return t;
}

/* What every context shares, whatever its certificate comes from: versions, options,
 * client certificates, resumption, ALPN.  0, or -1 with err set. */
static int ctx_setup(SSL_CTX *ctx, const sh_config *cfg, sh_error *err) {
  int minv = cfg->ssl_min_version ? cfg->ssl_min_version : TLS1_2_VERSION;
  SSL_CTX_set_min_proto_version(ctx, minv);
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
  /* Idle keep-alive connections then hold no 16 KiB OpenSSL buffers (TEEs are often
   * memory-tight); CPython's ssl module does the same. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (cfg->ssl_ciphers && SSL_CTX_set_cipher_list(ctx, cfg->ssl_ciphers) != 1) {
    set_err_openssl(err, "--ssl-ciphers", cfg->ssl_ciphers);
    return -1;
  }
  if (cfg->ssl_ca_certs) {
    if (SSL_CTX_load_verify_locations(ctx, cfg->ssl_ca_certs, NULL) != 1) {
      set_err_openssl(err, "cannot load --ssl-ca-certs", cfg->ssl_ca_certs);
      return -1;
    }
    /* Tell clients which CAs we accept (RFC 8446 §4.2.4), so they pick the right cert. */
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ssl_ca_certs);
    if (names) SSL_CTX_set_client_CA_list(ctx, names);
    ERR_clear_error();
  }
  if (cfg->ssl_cert_reqs == 1)
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  else if (cfg->ssl_cert_reqs == 2)
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);

  /* Resumption: tickets (all versions) with the shared keys, plus the TLS 1.2 ID cache.  The
   * session ID context is required for resuming sessions that carry a verified client cert. */
  SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"shield", 6);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
  SSL_CTX_sess_set_cache_size(ctx, 20480);
  SSL_CTX_set_timeout(ctx, 7200);
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
  /* One TLS 1.3 ticket per handshake rather than two: half the ticket crypto per new
   * connection; clients reuse a ticket or get a new one on the resumed connection. */
  SSL_CTX_set_num_tickets(ctx, 1);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
  return 0;
}

/* The server certificate, for the ASGI tls extension (PEM) and attestation (DER). */
static int ctx_keep_leaf(sh_tls_ctx *t, const char *what, sh_error *err) {
  X509 *leaf = SSL_CTX_get0_certificate(t->ctx);
  int der_len = leaf ? i2d_X509(leaf, &t->cert_der) : -1;
  if (der_len <= 0 || !(t->cert_pem = x509_pem(leaf, &t->cert_pem_len))) {
    set_err_openssl(err, "cannot encode the certificate of", what);
    return -1;
  }
  t->cert_der_len = (size_t)der_len;
  return 0;
}

static sh_tls_ctx *ctx_alloc(sh_error *err) {
  sh_tls_ctx *t = calloc(1, sizeof *t);
  if (!t) {
    SH_ERR(err, SH_ENOMEM, "out of memory");
    return NULL;
  }
  atomic_init(&t->refs, 1);
  ERR_clear_error();
  t->ctx = SSL_CTX_new(TLS_server_method());
  if (!t->ctx) {
    set_err_openssl(err, "SSL_CTX_new", NULL);
    free(t);
    return NULL;
  }
  return t;
}

sh_tls_ctx *sh_tls_ctx_new(const sh_config *cfg, sh_error *err) {
  const char *certfile = cfg->ssl_certfile;
  const char *keyfile = cfg->ssl_keyfile ? cfg->ssl_keyfile : certfile;
  BIO *bio = NULL;
  EVP_PKEY *key = NULL;
  if (check_readable("--ssl-certfile", certfile, err) < 0) return NULL;
  if (check_readable("--ssl-keyfile", keyfile, err) < 0) return NULL;
  if (cfg->ssl_ca_certs && check_readable("--ssl-ca-certs", cfg->ssl_ca_certs, err) < 0)
    return NULL;
  sh_tls_ctx *t = ctx_alloc(err);
  if (!t) return NULL;
  SSL_CTX *ctx = t->ctx;
  if (ctx_setup(ctx, cfg, err) < 0) goto fail;

  if (SSL_CTX_use_certificate_chain_file(ctx, certfile) != 1) {
    set_err_openssl(err, "cannot load --ssl-certfile", certfile);
    goto fail;
  }
  bio = BIO_new_file(keyfile, "rb");
  if (!bio) {
    set_err_openssl(err, "cannot open --ssl-keyfile", keyfile);
    goto fail;
  }
  pass_req pr = {cfg->ssl_keyfile_password, 0};
  key = PEM_read_bio_PrivateKey(bio, NULL, pass_cb, &pr);
  if (!key) {
    if (pr.asked)
      SH_ERR(err, SH_EINVAL, "cannot load --ssl-keyfile %s: %s", keyfile,
             cfg->ssl_keyfile_password ? "wrong --ssl-keyfile-password"
                                       : "the key is encrypted: give --ssl-keyfile-password");
    else
      set_err_openssl(err, "cannot load --ssl-keyfile", keyfile);
    ERR_clear_error();
    goto fail;
  }
  /* SSL_CTX_use_PrivateKey already refuses a key of another certificate: say which files. */
  if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    SH_ERR(err, SH_EINVAL, "--ssl-keyfile %s does not match the certificate in --ssl-certfile %s",
           keyfile, certfile);
    goto fail;
  }
  if (ctx_keep_leaf(t, certfile, err) < 0) goto fail;
  EVP_PKEY_free(key);
  BIO_free(bio);
  return t;
fail:
  EVP_PKEY_free(key);
  BIO_free(bio);
  ERR_clear_error();
  sh_tls_ctx_unref(t);
  return NULL;
}

sh_tls_ctx *sh_tls_ctx_new_mem(const sh_config *cfg, const char *pem, size_t pem_len,
                               sh_error *err) {
  if (!cfg->ssl_key) {
    SH_ERR(err, SH_EINVAL, "TLS from memory needs its key (sh_config.ssl_key)");
    return NULL;
  }
  if (!pem || pem_len == 0 || pem_len > INT_MAX) {
    SH_ERR(err, SH_EINVAL, "no certificate, or one too large (%zu bytes)", pem_len);
    return NULL;
  }
  if (cfg->ssl_ca_certs && check_readable("--ssl-ca-certs", cfg->ssl_ca_certs, err) < 0)
    return NULL;
  sh_tls_ctx *t = ctx_alloc(err);
  if (!t) return NULL;
  X509 *x = NULL;
  BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
  if (!bio) {
    SH_ERR(err, SH_ENOMEM, "out of memory");
    goto fail;
  }
  if (ctx_setup(t->ctx, cfg, err) < 0) goto fail;
  /* Leaf first, then its chain (what SSL_CTX_use_certificate_chain_file does for a file). */
  x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
  if (!x || SSL_CTX_use_certificate(t->ctx, x) != 1) {
    set_err_openssl(err, "cannot load the server certificate", "(held in memory)");
    goto fail;
  }
  X509_free(x);
  while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    if (SSL_CTX_add0_chain_cert(t->ctx, x) != 1) { /* takes x on success only */
      set_err_openssl(err, "cannot add to the certificate chain", "(held in memory)");
      goto fail;
    }
  }
  x = NULL;
  ERR_clear_error(); /* the end of the PEM data */
  if (SSL_CTX_use_PrivateKey(t->ctx, cfg->ssl_key) != 1 || SSL_CTX_check_private_key(t->ctx) != 1) {
    ERR_clear_error();
    SH_ERR(err, SH_EINVAL, "the certificate held in memory is not for the server's key");
    goto fail;
  }
  if (ctx_keep_leaf(t, "the certificate", err) < 0) goto fail;
  BIO_free(bio);
  return t;
fail:
  X509_free(x);
  BIO_free(bio);
  ERR_clear_error();
  sh_tls_ctx_unref(t);
  return NULL;
}

int sh_tls_on(const sh_config *cfg) {
  return cfg->ssl_certfile != NULL || cfg->ssl_issue != NULL;
}

/* ---- the certificate slot (TLS from memory under the supervisor) ---- */

struct sh_tls_slot {
  pthread_mutex_t lock; /* process-shared, robust: guards len and pem */
  _Atomic uint64_t gen; /* 0: nothing published yet */
  size_t len;
  char pem[SH_TLS_SLOT_MAX];
};

int sh_tls_slot_create(sh_tls_slot **out, sh_error *err) {
  *out = NULL;
  sh_tls_slot *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED) {
    SH_ERR(err, SH_ESYS, "cannot map the TLS certificate slot: %s", strerror(errno));
    return SH_ESYS;
  }
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  int r = pthread_mutex_init(&s->lock, &a);
  pthread_mutexattr_destroy(&a);
  if (r != 0) {
    munmap(s, sizeof *s);
    SH_ERR(err, SH_ESYS, "cannot initialise the TLS certificate slot: %s", strerror(r));
    return SH_ESYS;
  }
  atomic_init(&s->gen, 0);
  *out = s;
  return 0;
}

/* A holder that died inside the lock only ever held it for a memcpy: the bytes it guards may
 * be torn, which the generation (bumped after the copy) makes harmless. */
static void slot_lock(sh_tls_slot *s) {
  if (pthread_mutex_lock(&s->lock) == EOWNERDEAD) pthread_mutex_consistent(&s->lock);
}

int sh_tls_slot_put(sh_tls_slot *s, const char *pem, size_t len, sh_error *err) {
  if (len > SH_TLS_SLOT_MAX) {
    SH_ERR(err, SH_EINVAL, "the certificate is %zu bytes: at most %d fit the workers' slot", len,
           SH_TLS_SLOT_MAX);
    return SH_EINVAL;
  }
  slot_lock(s);
  memcpy(s->pem, pem, len);
  s->len = len;
  atomic_fetch_add(&s->gen, 1);
  pthread_mutex_unlock(&s->lock);
  return 0;
}

void sh_tls_slot_free(sh_tls_slot *s) {
  if (s) munmap(s, sizeof *s);
}

/* A copy of the slot's certificate and its generation (NULL when out of memory or empty). */
static char *slot_get(sh_tls_slot *s, size_t *len, uint64_t *gen) {
  slot_lock(s);
  char *pem = s->len ? malloc(s->len) : NULL;
  if (pem) memcpy(pem, s->pem, s->len);
  *len = s->len;
  *gen = atomic_load(&s->gen);
  pthread_mutex_unlock(&s->lock);
  return pem;
}

/* The context of the slot's current certificate, and its generation in *gen. */
static sh_tls_ctx *slot_ctx(const sh_config *cfg, uint64_t *gen, sh_error *err) {
  size_t len = 0;
  char *pem = slot_get(cfg->ssl_slot, &len, gen);
  if (!pem) {
    SH_ERR(err, len ? SH_ENOMEM : SH_EINVAL,
           len ? "out of memory" : "no TLS certificate was published to the workers");
    return NULL;
  }
  sh_tls_ctx *t = sh_tls_ctx_new_mem(cfg, pem, len, err);
  free(pem);
  return t;
}

void sh_tls_slot_check(sh_server *srv) {
  sh_tls_slot *s = srv->cfg.ssl_slot;
  if (!s || atomic_load_explicit(&s->gen, memory_order_acquire) == srv->tls_gen) return;
  sh_error err = {0};
  uint64_t gen = 0;
  sh_tls_ctx *t = slot_ctx(&srv->cfg, &gen, &err);
  uint64_t was = srv->tls_gen;
  srv->tls_gen = gen; /* a bad one is not retried for every connection: the next one is */
  if (!t) {
    sh_log(SH_LOG_ERROR,
           "the new TLS certificate (generation %llu) cannot be served: %s; "
           "serving the previous one",
           (unsigned long long)gen, err.message);
    return;
  }
  sh_tls_ctx_unref(srv->tls);
  srv->tls = t;
  sh_log(SH_LOG_DEBUG,
         "TLS certificate re-issued (generation %llu after %llu): new connections "
         "get it, open ones keep theirs",
         (unsigned long long)gen, (unsigned long long)was);
}

/* The context a server starts with: the files, the supervisor's slot, or ssl_issue. */
sh_tls_ctx *sh_tls_ctx_first(sh_server *srv, sh_error *err) {
  const sh_config *cfg = &srv->cfg;
  if (cfg->ssl_certfile) return sh_tls_ctx_new(cfg, err);
  if (cfg->ssl_slot) return slot_ctx(cfg, &srv->tls_gen, err);
  char *pem = NULL;
  size_t len = 0;
  if (cfg->ssl_issue(cfg->ssl_issue_arg, &pem, &len, err) < 0) {
    free(pem);
    return NULL;
  }
  sh_tls_ctx *t = sh_tls_ctx_new_mem(cfg, pem, len, err);
  free(pem);
  return t;
}

int sh_tls_prepare(const sh_config *cfg, sh_error *err) {
  if (!sh_tls_on(cfg)) return 0;
  if (!T.ready) {
    if (RAND_bytes(T.name, sizeof T.name) != 1 || RAND_bytes(T.aes, sizeof T.aes) != 1 ||
        RAND_bytes(T.hmac, sizeof T.hmac) != 1) {
      set_err_openssl(err, "cannot generate TLS ticket keys", NULL);
      return SH_ESYS;
    }
    T.ready = 1;
  }
  /* Fail before serving (and before forking) when a file is bad, or the certificate the
   * supervisor published.  (Without either, sh_server_new calls ssl_issue itself.) */
  if (!cfg->ssl_certfile && !cfg->ssl_slot) return 0;
  uint64_t gen = 0;
  sh_tls_ctx *t = cfg->ssl_certfile ? sh_tls_ctx_new(cfg, err) : slot_ctx(cfg, &gen, err);
  if (!t) return err ? err->code : SH_EINVAL;
  sh_tls_ctx_unref(t);
  return 0;
}

/* Hand a new context to the I/O thread (any thread). */
static void queue_ctx(sh_server *srv, sh_tls_ctx *t) {
  sh_tls_ctx *old = atomic_exchange(&srv->tls_pending, t);
  sh_tls_ctx_unref(old); /* a reload not yet applied: never used by anyone */
  pthread_mutex_lock(&srv->qlock);
  if (!srv->qclosed) uv_async_send(&srv->async);
  pthread_mutex_unlock(&srv->qlock);
}

int sh_server_reload_tls(sh_server *srv, sh_error *err) {
  if (srv->cfg.ssl_slot) return 0; /* the next connection picks up what was published */
  if (!srv->cfg.ssl_certfile) {
    SH_ERR(err, SH_EINVAL,
           srv->cfg.ssl_issue ? "the TLS certificate is held in memory: nothing to re-read"
                              : "TLS is not enabled (no --ssl-certfile)");
    return SH_EINVAL;
  }
  sh_tls_ctx *t = sh_tls_ctx_new(&srv->cfg, err);
  if (!t) return err ? err->code : SH_EINVAL;
  queue_ctx(srv, t);
  return 0;
}

int sh_server_set_tls_cert(sh_server *srv, const char *pem, size_t pem_len, sh_error *err) {
  if (!srv->cfg.ssl_issue) {
    SH_ERR(err, SH_EINVAL, "the server's TLS is not from memory (sh_config.ssl_issue)");
    return SH_EINVAL;
  }
  sh_tls_ctx *t = sh_tls_ctx_new_mem(&srv->cfg, pem, pem_len, err);
  if (!t) return err ? err->code : SH_EINVAL;
  queue_ctx(srv, t);
  return 0;
}

void sh_tls_apply_pending(sh_server *srv) {
  sh_tls_ctx *t = atomic_exchange(&srv->tls_pending, NULL);
  if (!t) return;
  sh_tls_ctx_unref(srv->tls);
  srv->tls = t;
  if (srv->cfg.ssl_certfile)
    sh_log(SH_LOG_INFO, "TLS certificate and key reloaded from %s", srv->cfg.ssl_certfile);
  else
    sh_log(SH_LOG_INFO, "TLS certificate replaced: new connections get it, open ones keep theirs");
}

/* ---- the write BIO: OpenSSL appends records to t->out ---- */

static BIO_METHOD *wbio_method;

static int wbio_write(BIO *b, const char *data, int len) {
  sh_tls_conn *t = BIO_get_data(b);
  if (len <= 0) return 0;
  size_t need = t->out_len + (size_t)len;
  if (need > t->out_cap) {
    size_t cap = t->out_cap ? t->out_cap : OUT_MIN;
    while (cap < need)
      cap *= 2;
    char *nb = realloc(t->out, cap);
    if (!nb) {
      t->out_failed = 1;
      return -1;
    }
    t->out = nb;
    t->out_cap = cap;
  }
  memcpy(t->out + t->out_len, data, (size_t)len);
  t->out_len = need;
  return len;
}

static long wbio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b;
  (void)num;
  (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int wbio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static BIO_METHOD *get_wbio_method(void) {
  if (wbio_method) return wbio_method;
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "shield-out");
  if (!m) return NULL;
  BIO_meth_set_write(m, wbio_write);
  BIO_meth_set_ctrl(m, wbio_ctrl);
  BIO_meth_set_create(m, wbio_create);
  wbio_method = m;
  return m;
}

/* Hand what OpenSSL wrote to the socket in one write; the buffer goes with it (no copy). */
static int flush_out(sh_conn *c, sh_req *req, size_t pend) {
  sh_tls_conn *t = c->tls;
  if (t->out_failed) {
    if (req) atomic_fetch_sub(&req->out_pending, (long long)pend);
    sh_conn_abort(c);
    return SH_ECLOSED;
  }
  if (t->out_len == 0) {
    if (req) {
      atomic_fetch_sub(&req->out_pending, (long long)pend);
      sh_req_check_writable(req);
    }
    return 0;
  }
  char *buf = t->out;
  uv_buf_t b = uv_buf_init(buf, (unsigned)t->out_len);
  t->out = NULL;
  t->out_len = t->out_cap = 0;
  return sh_conn_write_sock(c, req, &b, 1, buf, pend);
}

/* ---- connections ---- */

int sh_tls_conn_new(sh_conn *c) {
  sh_server *srv = c->srv;
  BIO_METHOD *m = get_wbio_method();
  sh_tls_conn *t = calloc(1, sizeof *t);
  if (!t || !m) goto fail;
  sh_tls_slot_check(srv); /* one atomic load, unless the supervisor re-issued */
  t->ssl = SSL_new(srv->tls->ctx);
  t->rbio = BIO_new(BIO_s_mem());
  BIO *wbio = BIO_new(m);
  if (!t->ssl || !t->rbio || !wbio) {
    BIO_free(t->rbio);
    BIO_free(wbio);
    goto fail;
  }
  BIO_set_mem_eof_return(t->rbio, -1); /* empty = "try again", not EOF */
  BIO_set_data(wbio, t);
  SSL_set_bio(t->ssl, t->rbio, wbio); /* the SSL owns both now */
  SSL_set_accept_state(t->ssl);
  t->ctx = ctx_ref(srv->tls);
  c->tls = t;
  return 0;
fail:
  if (t) SSL_free(t->ssl);
  free(t);
  ERR_clear_error();
  return -1;
}

static void info_unref(sh_tls_info_priv *ip) {
  if (!ip || --ip->refs > 0) return;
  for (size_t i = 0; i < ip->pub.num_client_certs; i++)
    free(ip->chain_mem[i]);
  free(ip->chain_mem);
  free(ip->chain);
  free(ip->subject);
  OPENSSL_free(ip->spki);
  sh_tls_ctx_unref(ip->ctx);
  free(ip);
}

void sh_tls_info_unref(const sh_tls_info *info) {
  info_unref((sh_tls_info_priv *)info);
}

void sh_tls_conn_free(sh_conn *c) {
  sh_tls_conn *t = c->tls;
  if (!t) return;
  c->tls = NULL;
  SSL_free(t->ssl); /* frees both BIOs */
  free(t->out);
  info_unref(t->info);
  sh_tls_ctx_unref(t->ctx);
  free(t);
}

/* The plain-HTTP answer (RFC 9110 §15.5.1), in clear text since the client speaks no TLS. */
static void plain_http_reply(sh_conn *c) {
  static const char body[] = "The plain HTTP request was sent to HTTPS port\n";
  static char msg[256];
  static int msg_len;
  if (!msg_len)
    msg_len = snprintf(msg, sizeof msg,
                       "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
                       "content-length: %zu\r\nconnection: close\r\n\r\n%s",
                       sizeof body - 1, body);
  sh_log(SH_LOG_DEBUG, "plain HTTP request on the TLS port from %s:%d", c->client_host,
         c->client_port);
  uv_buf_t b = uv_buf_init(msg, (unsigned)msg_len);
  sh_conn_write_sock(c, NULL, &b, 1, NULL, 0);
  if (!c->closing) sh_conn_close(c, 1);
}

/* A TLS record starts with its content type (22 = handshake); an HTTP request line starts
 * with a method token. */
static int looks_like_http(const char *p, size_t n) {
  size_t i = 0;
  while (i < n && i < 8 && p[i] >= 'A' && p[i] <= 'Z')
    i++;
  return i > 0 && (i == n || p[i] == ' ');
}

static void handshake_failed(sh_conn *c, int e) {
  unsigned long ossl = ERR_peek_last_error();
  char why[160];
  if (ossl)
    ERR_error_string_n(ossl, why, sizeof why);
  else
    snprintf(why, sizeof why, "SSL error %d", e);
  sh_log(SH_LOG_DEBUG, "TLS handshake with %s:%d failed: %s", c->client_host, c->client_port, why);
  ERR_clear_error();
  flush_out(c, NULL, 0); /* the alert, when OpenSSL made one */
  if (!c->closing) sh_conn_close(c, 0);
}

/* Room for at least `want` more bytes after the unparsed input, in the connection's buffer. */
static int ib_room(sh_conn *c, size_t want) {
  if (c->in_len == 0) c->in_base = c->ib;
  size_t off = c->in_len ? (size_t)(c->in_base - c->ib) : 0;
  if (c->ib_cap - off - c->in_len >= want) return 0;
  if (off) {
    memmove(c->ib, c->in_base, c->in_len);
    c->in_base = c->ib;
  }
  if (c->ib_cap - c->in_len >= want) return 0;
  size_t cap = c->in_len + want;
  char *nb = realloc(c->ib, cap);
  if (!nb) return -1;
  c->ib = nb;
  c->ib_cap = cap;
  c->in_base = nb;
  return 0;
}

void sh_tls_on_read(sh_conn *c, const char *data, size_t len) {
  sh_tls_conn *t = c->tls;
  if (!t->first_seen) {
    t->first_seen = 1;
    if (looks_like_http(data, len)) {
      plain_http_reply(c);
      return;
    }
  }
  if (BIO_write(t->rbio, data, (int)len) != (int)len) {
    sh_conn_abort(c);
    return;
  }
  if (!t->hs_done) {
    int r = SSL_do_handshake(t->ssl);
    if (r != 1) {
      int e = SSL_get_error(t->ssl, r);
      if (e == SSL_ERROR_WANT_READ) {
        flush_out(c, NULL, 0); /* ServerHello..Finished */
        return;
      }
      handshake_failed(c, e);
      return;
    }
    t->hs_done = 1;
    if (sh_log_enabled(SH_LOG_DEBUG))
      sh_log(SH_LOG_DEBUG, "TLS handshake with %s:%d: %s %s%s", c->client_host, c->client_port,
             SSL_get_version(t->ssl), SSL_CIPHER_get_name(SSL_get_current_cipher(t->ssl)),
             SSL_session_reused(t->ssl) ? " (resumed)" : "");
  }
  /* Decrypt everything available (see the top of this file). */
  for (;;) {
    if (ib_room(c, STAGE_MAX) < 0) {
      sh_conn_abort(c);
      return;
    }
    size_t got = 0;
    char *dst = c->in_base + c->in_len;
    int r = SSL_read_ex(t->ssl, dst, c->ib_cap - (size_t)(dst - c->ib), &got);
    if (r == 1) {
      c->in_len += got;
      continue;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ) break;
    if (e == SSL_ERROR_ZERO_RETURN) break; /* close_notify: the TCP EOF follows */
    sh_log(SH_LOG_DEBUG, "TLS error from %s:%d: %s", c->client_host, c->client_port,
           ERR_reason_error_string(ERR_peek_last_error())
               ? ERR_reason_error_string(ERR_peek_last_error())
               : "SSL_read failed");
    ERR_clear_error();
    flush_out(c, NULL, 0);
    sh_conn_abort(c);
    return;
  }
  /* Handshake tail and session tickets (TLS 1.3 sends them after the client's Finished). */
  if (t->out_len && flush_out(c, NULL, 0) < 0) return;
  if (c->closing) return;
  if (c->in_len) sh_conn_process(c);
  if (c->closing || c->shutting) return;
  sh_conn_update_reading(c);
}

static int ssl_write_all(sh_tls_conn *t, const char *p, size_t n) {
  while (n) {
    size_t w = 0;
    if (SSL_write_ex(t->ssl, p, n, &w) != 1) return -1;
    p += w;
    n -= w;
  }
  return 0;
}

int sh_tls_write(sh_conn *c, sh_req *req, uv_buf_t *bufs, unsigned n, void *owned, size_t pend) {
  sh_tls_conn *t = c->tls;
  if (c->closing || c->shutting || !t->hs_done) {
    free(owned);
    if (req) atomic_fetch_sub(&req->out_pending, (long long)pend);
    return SH_ECLOSED;
  }
  char stage[STAGE_MAX];
  size_t sl = 0;
  int bad = 0;
  for (unsigned i = 0; i < n && !bad; i++) {
    const char *p = bufs[i].base;
    size_t l = bufs[i].len;
    if (l <= sizeof stage - sl) {
      memcpy(stage + sl, p, l);
      sl += l;
      continue;
    }
    if (sl && ssl_write_all(t, stage, sl) < 0) bad = 1;
    sl = 0;
    if (bad) break;
    if (l < sizeof stage) {
      memcpy(stage, p, l);
      sl = l;
    } else if (ssl_write_all(t, p, l) < 0) {
      bad = 1;
    }
  }
  if (!bad && sl && ssl_write_all(t, stage, sl) < 0) bad = 1;
  free(owned);
  if (bad) {
    ERR_clear_error();
    if (req) atomic_fetch_sub(&req->out_pending, (long long)pend);
    sh_conn_abort(c);
    return SH_ECLOSED;
  }
  return flush_out(c, req, pend);
}

void sh_tls_close_notify(sh_conn *c) {
  sh_tls_conn *t = c->tls;
  if (!t || !t->hs_done || t->notify_sent || c->closing || c->shutting) return;
  t->notify_sent = 1;
  SSL_shutdown(t->ssl); /* queues close_notify; we do not wait for the peer's */
  ERR_clear_error();
  flush_out(c, NULL, 0);
}

/* ---- the request's view ---- */

static sh_tls_info_priv *info_build(sh_tls_conn *t) {
  SSL *s = t->ssl;
  sh_tls_info_priv *ip = calloc(1, sizeof *ip);
  if (!ip) return NULL;
  ip->refs = 1;
  ip->ctx = ctx_ref(t->ctx);
  sh_tls_info *i = &ip->pub;
  i->version = SSL_version(s);
  i->version_name = SSL_get_version(s);
  const SSL_CIPHER *ciph = SSL_get_current_cipher(s);
  i->cipher_suite = ciph ? (int)SSL_CIPHER_get_protocol_id(ciph) : 0;
  i->cipher_name = ciph ? SSL_CIPHER_get_name(ciph) : "";
  i->session_reused = SSL_session_reused(s);
  i->server_cert_pem = (sh_iovec){t->ctx->cert_pem, t->ctx->cert_pem_len};
  i->server_cert_der = (sh_iovec){(const char *)t->ctx->cert_der, t->ctx->cert_der_len};

  X509 *peer = SSL_get0_peer_certificate(s);
  if (peer) {
    /* Server side, the chain OpenSSL keeps excludes the peer's own certificate. */
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(s);
    int extra = chain ? sk_X509_num(chain) : 0;
    size_t n = 1 + (size_t)extra;
    ip->chain = calloc(n, sizeof *ip->chain);
    ip->chain_mem = calloc(n, sizeof *ip->chain_mem);
    if (!ip->chain || !ip->chain_mem) goto fail;
    for (size_t k = 0; k < n; k++) {
      X509 *x = k == 0 ? peer : sk_X509_value(chain, (int)k - 1);
      size_t l = 0;
      ip->chain_mem[k] = x509_pem(x, &l);
      if (!ip->chain_mem[k]) goto fail;
      ip->chain[k] = (sh_iovec){ip->chain_mem[k], l};
      i->num_client_certs = k + 1;
    }
    i->client_chain_pem = ip->chain;
    ip->subject = x509_subject(peer);
    if (!ip->subject) goto fail;
    i->client_subject = ip->subject;
    long v = SSL_get_verify_result(s);
    i->client_verify_error = v == X509_V_OK ? NULL : X509_verify_cert_error_string(v);
    int dl = i2d_PUBKEY(X509_get0_pubkey(peer), &ip->spki);
    if (dl <= 0) goto fail;
    i->client_spki_der = (sh_iovec){(const char *)ip->spki, (size_t)dl};
  }
  ERR_clear_error();
  return ip;
fail:
  ERR_clear_error();
  info_unref(ip);
  return NULL;
}

const sh_tls_info *sh_tls_conn_info(sh_conn *c) {
  sh_tls_conn *t = c->tls;
  if (!t->info) t->info = info_build(t);
  if (!t->info) return NULL;
  t->info->refs++;
  return &t->info->pub;
}
