/* tests/c/attest/test_provider.c — attest/provider*.c: the server's own evidence, produced
 * through real files, FIFOs and sockets of fakes this suite makes in a temporary root:
 *   - configfs-tsm: a report tree whose mkdir/rmdir hooks do what configfs does (make and drop
 *     the attributes); outblob and auxblob are FIFOs served by a thread per report that reads
 *     the inblob written and answers a real SNP report shape signed by a test VCEK (so the
 *     evidence verifies under the test ARK, D included) or the vectors' TDX quote with
 *     REPORT_DATA set; the generation moves as configfs moves it, or further (another writer);
 *   - /dev/sev-guest and /dev/nsm: the ioctl seam, checking each request structure;
 *   - Gramine: /dev/attestation pseudo-files (the quote a FIFO served from the written data);
 *   - Confidential Space: an HTTP server thread on the launcher's unix socket;
 *   - /dev/tdx_guest: the ioctl seam for TDX_CMD_GET_REPORT0 and a Quote Generation Service on
 *     a unix socket speaking qgs_msg_lib's messages, answering the vectors' TD quote;
 *   - Azure: swtpm started here as the vTPM (NV 0x01400001 provisioned with HCL reports, see
 *     test_azure_vtpm) and an IMDS stand-in on 127.0.0.1 (THIM certification, /acc/tdquote);
 *   - simulated: evidence our verifier accepts with the right D; auto never picks it; a TEE
 *     named but absent fails naming the device.
 * Prints "N passed, N failed"; SKIP (77) for the parts that need the shared vectors when they
 * are absent. */
#include "testutil.h"
#include "attest_util.h" /* run(), add_ext() */
#include "attest.h"

#include <cbor.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/ioctl.h>
#include <linux/sev-guest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static const int64_t AT = 1748736000; /* 2025-06-01, inside the test certificates' validity */
static char ROOT[256];                /* the temporary tree */

/* ---------------- small helpers ---------------- */

static void mkdirs(const char *path) {
  char b[4096];
  snprintf(b, sizeof b, "%s", path);
  for (char *s = b + 1; *s; s++)
    if (*s == '/') {
      *s = 0;
      mkdir(b, 0700);
      *s = '/';
    }
  mkdir(b, 0700);
}

static void put_file(const char *path, const void *d, size_t n) {
  FILE *f = fopen(path, "wb");
  if (f) {
    fwrite(d, 1, n, f);
    fclose(f);
  }
}

static int contains(const char *s, const char *sub) {
  return strstr(s, sub) != NULL;
}

/* a fresh tree <ROOT>/<name> */
static void tree(const char *name, char *out, size_t n) {
  snprintf(out, n, "%s/%s", ROOT, name);
  mkdirs(out);
}

static void rand_D(uint8_t n[32], const uint8_t *k, size_t kl, uint8_t D[64]) {
  RAND_bytes(n, 32);
  sh_attest_binding_digest(n, 32, k, kl, D);
}

/* Verification options for evidence signed by the run's simulated dev root, bound to n, k. */
static sh_attest_options simulated_options(sh_iovec *sim_root, const uint8_t n[32],
                                           const uint8_t *k, size_t kl) {
  sh_attest_options o = {.at = AT,
                         .trust_simulated = 1,
                         .simulated_root = sim_root,
                         .nonce = n,
                         .nonce_len = 32,
                         .public_key = k,
                         .public_key_len = kl};
  return o;
}

/* Opens a FIFO's write side once its reader is there (the provider blocked in open(2)), or
 * returns -1 when *stop is set first. */
static int open_writer(const char *path, atomic_int *stop) {
  for (;;) {
    int fd = open(path, O_WRONLY | O_NONBLOCK);
    if (fd >= 0) {
      fcntl(fd, F_SETFL, 0);
      return fd;
    }
    if (errno != ENXIO || atomic_load(stop)) return -1;
    usleep(500);
  }
}

static void write_all(int fd, const uint8_t *d, size_t n) {
  while (n) {
    ssize_t w = write(fd, d, n);
    if (w <= 0) return;
    d += w;
    n -= (size_t)w;
  }
}

/* ---------------- a test AMD PKI and SNP reports ---------------- */

static EVP_PKEY *ark_k, *ask_k, *vcek_k;
static X509 *ark, *ask, *vcek;
static uint8_t *ark_der, *ask_der, *vcek_der;
static size_t ark_len, ask_len, vcek_len;
static const uint8_t TCB[8] = {3, 0, 0, 0, 0, 0, 8, 115}; /* Milan TCB_VERSION */
static uint8_t CHIP[64];

static void int_ext(X509 *x, const char *oid, long v) {
  ASN1_INTEGER *ai = ASN1_INTEGER_new();
  ASN1_INTEGER_set(ai, v);
  unsigned char *der = NULL;
  int l = i2d_ASN1_INTEGER(ai, &der);
  ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
  ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
  ASN1_OCTET_STRING_set(os, der, l);
  X509_EXTENSION *e = X509_EXTENSION_create_by_OBJ(NULL, o, 0, os);
  X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
  ASN1_OCTET_STRING_free(os);
  ASN1_OBJECT_free(o);
  OPENSSL_free(der);
  ASN1_INTEGER_free(ai);
}

static X509 *cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ik, int ca, int vc) {
  static long serial = 1;
  X509 *x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_NAME *n = X509_NAME_new();
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_subject_name(x, n);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
  X509_NAME_free(n);
  ASN1_TIME_set(X509_getm_notBefore(x), (time_t)T("2024-01-01T00:00:00Z"));
  ASN1_TIME_set(X509_getm_notAfter(x), (time_t)T("2030-01-01T00:00:00Z"));
  X509_set_pubkey(x, key);
  if (ca) {
    add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
  }
  add_ext(x, issuer, NID_subject_key_identifier, "hash");
  if (issuer) add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
  if (vc) { /* VCEK TCB extensions (AMD #57230) for the Milan layout, and hwID = CHIP_ID */
    int_ext(x, "1.3.6.1.4.1.3704.1.3.1", TCB[0]);
    int_ext(x, "1.3.6.1.4.1.3704.1.3.2", TCB[1]);
    int_ext(x, "1.3.6.1.4.1.3704.1.3.3", TCB[6]);
    int_ext(x, "1.3.6.1.4.1.3704.1.3.8", TCB[7]);
    ASN1_OBJECT *o = OBJ_txt2obj("1.3.6.1.4.1.3704.1.4", 1);
    ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(os, CHIP, 64);
    X509_EXTENSION *e = X509_EXTENSION_create_by_OBJ(NULL, o, 0, os);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(o);
  }
  X509_sign(x, ik ? ik : key, EVP_sha384());
  return x;
}

static uint8_t *der(X509 *x, size_t *n) {
  unsigned char *d = NULL;
  *n = (size_t)i2d_X509(x, &d);
  return d;
}

static void pki_init(void) {
  for (int i = 0; i < 64; i++)
    CHIP[i] = (uint8_t)(i + 1);
  ark_k = EVP_EC_gen("P-384");
  ask_k = EVP_EC_gen("P-384");
  vcek_k = EVP_EC_gen("P-384");
  ark = cert("Test-ARK", ark_k, NULL, NULL, 1, 0);
  ask = cert("SEV-Test", ask_k, ark, ark_k, 1, 0);
  vcek = cert("SEV-VCEK", vcek_k, ask, ask_k, 0, 1);
  ark_der = der(ark, &ark_len);
  ask_der = der(ask, &ask_len);
  vcek_der = der(vcek, &vcek_len);
}

static void pki_free(void) {
  OPENSSL_free(ark_der);
  OPENSSL_free(ask_der);
  OPENSSL_free(vcek_der);
  X509_free(ark);
  X509_free(ask);
  X509_free(vcek);
  EVP_PKEY_free(ark_k);
  EVP_PKEY_free(ask_k);
  EVP_PKEY_free(vcek_k);
}

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* A version-2 SNP report (ABI Table 23) with REPORT_DATA = rd, signed by the test VCEK. */
static void snp_report(const uint8_t rd[64], uint8_t rep[1184]) {
  memset(rep, 0, 1184);
  put32(rep, 2);
  put32(rep + 8, 0x30000);
  put32(rep + 0x34, 1);
  memcpy(rep + 0x38, TCB, 8);
  memcpy(rep + 0x180, TCB, 8);
  memcpy(rep + 0x50, rd, 64);
  memset(rep + 0x90, 0xAB, 48);
  memcpy(rep + 0x1A0, CHIP, 64);
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  size_t sl = 0;
  EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, vcek_k);
  EVP_DigestSign(md, NULL, &sl, rep, 0x2A0);
  unsigned char *sig = malloc(sl);
  EVP_DigestSign(md, sig, &sl, rep, 0x2A0);
  const unsigned char *p = sig;
  ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sl);
  BN_bn2lebinpad(ECDSA_SIG_get0_r(es), rep + 0x2A0, 72);
  BN_bn2lebinpad(ECDSA_SIG_get0_s(es), rep + 0x2A0 + 72, 72);
  ECDSA_SIG_free(es);
  free(sig);
  EVP_MD_CTX_free(md);
}

/* The GHCB certificate table (§4.1.8.1): VCEK, ASK, ARK entries, a zero entry, then the DER. */
static size_t cert_table(uint8_t *t, size_t cap) {
  static const uint8_t g[3][16] = {{0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5,
                                    0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd},
                                   {0x4a, 0xb7, 0xb3, 0x79, 0xbb, 0xac, 0x4f, 0xe4, 0xa0, 0x2f,
                                    0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82},
                                   {0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52, 0x97, 0x43,
                                    0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae}};
  const uint8_t *d[3] = {vcek_der, ask_der, ark_der};
  size_t l[3] = {vcek_len, ask_len, ark_len}, off = 4 * 24;
  memset(t, 0, cap);
  for (int i = 0; i < 3; i++) {
    memcpy(t + 24 * i, g[i], 16);
    put32(t + 24 * i + 16, (uint32_t)off);
    put32(t + 24 * i + 20, (uint32_t)l[i]);
    memcpy(t + off, d[i], l[i]);
    off += l[i];
  }
  return off;
}

/* Verifies sev-snp evidence under the test ARK, bound to (n, k). */
static sh_attest_reason verify_snp(const uint8_t *ev, size_t n, const uint8_t *nonce,
                                   const uint8_t *k, size_t kl, int with_certs) {
  sh_iovec roots[1] = {{.ptr = ark_der, .len = ark_len}};
  sh_iovec certs[2] = {{.ptr = vcek_der, .len = vcek_len}, {.ptr = ask_der, .len = ask_len}};
  sh_attest_options o = {.at = AT,
                         .extra_roots = roots,
                         .nextra_roots = 1,
                         .nonce = nonce,
                         .nonce_len = 32,
                         .public_key = k,
                         .public_key_len = kl};
  if (with_certs) {
    o.certs = certs;
    o.ncerts = 2;
  }
  return run(ev, n, SH_TEE_SEV_SNP, &o, NULL);
}

/* ---------------- a test Intel PKI and TD quotes (test_dcap_gen.h) ---------------- */

static char *hex_of(const uint8_t *b, size_t n) {
  char *h = malloc(2 * n + 1);
  sh_hex_encode(b, n, h);
  return h;
}

#define SHIELD_DCAP_GEN_ONLY
#include "test_dcap_gen.h"

/* ---------------- the configfs-tsm fake ---------------- */

typedef struct fdir {
  char path[4096];
  pthread_t th;
  atomic_int stop;
  struct fake_tsm *f;
  struct fdir *next;
} fdir;

typedef struct fake_tsm {
  const char *provider; /* "sev_guest" or "tdx_guest" */
  int bump_first;       /* the first this-many reports see another writer's generation */
  const uint8_t *quote; /* tdx: the quote to answer, REPORT_DATA replaced (NULL: sev) */
  size_t quote_len;
  size_t rd_off;        /* REPORT_DATA's offset in the quote */
  int keep_report_data; /* 1: answer the quote as is (a report that does not bind D) */
  int eexist_once;      /* the next mkdir finds a directory of that name (a stale one) */
  const gpki *pki;      /* tdx: re-sign the quote with this test PKI (gquote) */
  uint8_t *last;        /* tdx: the last quote answered (malloc'd) */
  size_t last_len;
  atomic_int reports;    /* reports made */
  atomic_int bad_inblob; /* inblobs that were not 64 bytes */
  pthread_mutex_t mu;
  fdir *dirs;
} fake_tsm;

static void *serve_report(void *arg) {
  fdir *d = arg;
  fake_tsm *f = d->f;
  char p[4200];
  snprintf(p, sizeof p, "%s/outblob", d->path);
  int fd = open_writer(p, &d->stop);
  if (fd < 0) return NULL;
  uint8_t in[128];
  snprintf(p, sizeof p, "%s/inblob", d->path);
  FILE *fi = fopen(p, "rb");
  size_t n = fi ? fread(in, 1, sizeof in, fi) : 0;
  if (fi) fclose(fi);
  if (n != 64) atomic_fetch_add(&f->bad_inblob, 1);
  int k = atomic_fetch_add(&f->reports, 1);
  /* configfs: the inblob write made it 1; another writer made it more */
  char g[16];
  int gl = snprintf(g, sizeof g, "%d\n", k < f->bump_first ? 2 : 1);
  snprintf(p, sizeof p, "%s/generation", d->path);
  put_file(p, g, (size_t)gl);
  if (f->quote) {
    uint8_t *q = malloc(f->quote_len);
    memcpy(q, f->quote, f->quote_len);
    size_t ql = f->quote_len;
    if (!f->keep_report_data) memcpy(q + f->rd_off, in, 64);
    if (f->pki) { /* signed again by the test attestation key: a quote that verifies */
      uint8_t *signed_q = gquote(f->pki, q, &ql, 0);
      free(q);
      q = signed_q;
    }
    write_all(fd, q, ql);
    pthread_mutex_lock(&f->mu);
    free(f->last);
    f->last = q;
    f->last_len = ql;
    pthread_mutex_unlock(&f->mu);
    close(fd);
    return NULL;
  }
  uint8_t rep[1184];
  snp_report(in, rep);
  write_all(fd, rep, sizeof rep);
  close(fd);
  snprintf(p, sizeof p, "%s/auxblob", d->path);
  if ((fd = open_writer(p, &d->stop)) < 0) return NULL;
  uint8_t t[8192];
  size_t tl = cert_table(t, sizeof t);
  write_all(fd, t, tl);
  close(fd);
  return NULL;
}

/* configfs's mkdir: the report object with its attributes */
static int fake_mkdir(void *ctx, const char *path) {
  fake_tsm *f = ctx;
  if (f->eexist_once) {
    f->eexist_once = 0;
    errno = EEXIST;
    return -1;
  }
  if (mkdir(path, 0700) < 0) return -1;
  fdir *d = calloc(1, sizeof *d);
  snprintf(d->path, sizeof d->path, "%s", path);
  d->f = f;
  char p[4200];
  snprintf(p, sizeof p, "%s/provider", path);
  put_file(p, f->provider, strlen(f->provider));
  put_file(p, "\n", 0);
  FILE *pf = fopen(p, "wb");
  fprintf(pf, "%s\n", f->provider);
  fclose(pf);
  snprintf(p, sizeof p, "%s/generation", path);
  put_file(p, "0\n", 2);
  snprintf(p, sizeof p, "%s/inblob", path);
  put_file(p, "", 0);
  snprintf(p, sizeof p, "%s/outblob", path);
  mkfifo(p, 0600);
  snprintf(p, sizeof p, "%s/auxblob", path);
  if (!f->quote) mkfifo(p, 0600);
  pthread_mutex_lock(&f->mu);
  d->next = f->dirs;
  f->dirs = d;
  pthread_mutex_unlock(&f->mu);
  pthread_create(&d->th, NULL, serve_report, d);
  return 0;
}

/* configfs's rmdir: the attributes go with the object */
static int fake_rmdir(void *ctx, const char *path) {
  fake_tsm *f = ctx;
  fdir *d = NULL, **pp;
  pthread_mutex_lock(&f->mu);
  for (pp = &f->dirs; *pp; pp = &(*pp)->next)
    if (!strcmp((*pp)->path, path)) {
      d = *pp;
      *pp = d->next;
      break;
    }
  pthread_mutex_unlock(&f->mu);
  if (!d) {
    errno = ENOENT;
    return -1;
  }
  atomic_store(&d->stop, 1);
  pthread_join(d->th, NULL);
  static const char *const attrs[] = {"provider", "generation", "inblob", "outblob", "auxblob"};
  char p[4200];
  for (size_t i = 0; i < 5; i++) {
    snprintf(p, sizeof p, "%s/%s", path, attrs[i]);
    unlink(p);
  }
  free(d);
  return rmdir(path);
}

static void fake_init(fake_tsm *f, const char *provider) {
  memset(f, 0, sizeof *f);
  f->provider = provider;
  pthread_mutex_init(&f->mu, NULL);
}

static int report_dirs_left(const char *root) {
  char p[4096];
  snprintf(p, sizeof p, "%s/sys/kernel/config/tsm/report", root);
  int n = 0;
  DIR *dir = opendir(p);
  struct dirent *e;
  while (dir && (e = readdir(dir)))
    if (e->d_name[0] != '.') n++;
  if (dir) closedir(dir);
  return n;
}

typedef struct worker {
  sh_attest_provider *p;
  int ok, bad;
} worker;

static void *concurrent(void *arg) {
  worker *w = arg;
  for (int i = 0; i < 4; i++) {
    uint8_t n[32], D[64], *ev = NULL;
    size_t el = 0;
    char err[256];
    rand_D(n, NULL, 0, D);
    if (sh_attest_provider_evidence(w->p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) ==
            0 &&
        verify_snp(ev, el, n, NULL, 0, 0) == SH_ATTEST_OK)
      w->ok++;
    else
      w->bad++;
    free(ev);
  }
  return NULL;
}

static void test_tsm_snp(void) {
  char root[512], dir[600], err[512] = "";
  tree("tsm-snp", root, sizeof root);
  snprintf(dir, sizeof dir, "%s/sys/kernel/config/tsm/report", root);
  mkdirs(dir);
  fake_tsm f;
  fake_init(&f, "sev_guest");
  sh_attest_provider_config cfg = {.tee = SH_ATTEST_TEE_AUTO,
                                   .root = root,
                                   .tsm_mkdir = fake_mkdir,
                                   .tsm_rmdir = fake_rmdir,
                                   .ctx = &f};
  sh_attest_provider *p = NULL;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0, "tsm auto: %s", err);
  CHECK(p && sh_attest_provider_tee(p) == SH_TEE_SEV_SNP, "auto picked sev-snp from the provider");
  CHECK(p && !strcmp(sh_attest_provider_source(p), "configfs-tsm"), "source");
  uint8_t n[32], D[64], *ev = NULL, k[] = "a DER SPKI, as far as D is concerned";
  size_t el = 0;
  rand_D(n, k, sizeof k, D);
  CHECK(sh_attest_provider_evidence(p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) == 0,
        "tsm snp evidence: %s", err);
  CHECK(el > 1184 && ev && (ev[0] & 0xE0) == 0xA0, "a CBOR bundle (map), %zu bytes", el);
  CHECK(verify_snp(ev, el, n, k, sizeof k, 0) == SH_ATTEST_OK,
        "the bundle verifies (certificates from auxblob, REPORT_DATA = D)");
  uint8_t n2[32];
  memcpy(n2, n, 32);
  n2[0] ^= 1;
  CHECK(verify_snp(ev, el, n2, k, sizeof k, 0) == SH_ATTEST_BINDING_MISMATCH, "another nonce");
  free(ev);
  CHECK(atomic_load(&f.bad_inblob) == 0, "inblob was 64 bytes");
  /* many threads on one provider: one report directory each */
  worker w[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    w[i] = (worker){p, 0, 0};
    pthread_create(&th[i], NULL, concurrent, &w[i]);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    CHECK(w[i].ok == 4 && w[i].bad == 0, "thread %d: %d ok, %d bad", i, w[i].ok, w[i].bad);
  }
  /* another writer once: the generation check retries in a new directory */
  atomic_store(&f.reports, 0);
  f.bump_first = 1;
  rand_D(n, NULL, 0, D);
  ev = NULL;
  CHECK(sh_attest_provider_evidence(p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) == 0,
        "retried after another writer: %s", err);
  CHECK(atomic_load(&f.reports) == 2, "two reports made (%d)", atomic_load(&f.reports));
  CHECK(ev && verify_snp(ev, el, n, NULL, 0, 0) == SH_ATTEST_OK, "the retried report verifies");
  free(ev);
  /* another writer every time: a clear failure, no evidence */
  atomic_store(&f.reports, 0);
  f.bump_first = 1000;
  ev = NULL;
  CHECK(
      sh_attest_provider_evidence(p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) < 0 && !ev,
      "concurrent writer every time");
  CHECK(contains(err, "generation") && contains(err, "another process"), "message: %s", err);
  f.bump_first = 0;
  /* a stale directory with our name: the next name is taken */
  f.eexist_once = 1;
  ev = NULL;
  CHECK(sh_attest_provider_evidence(p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) == 0 &&
            !f.eexist_once,
        "after EEXIST: %s", err);
  free(ev);
  CHECK(report_dirs_left(root) == 0, "every report directory removed");
  sh_attest_provider_free(p);
  /* explicit tdx on a sev_guest provider: refused, naming both */
  cfg.tee = SH_TEE_TDX;
  p = NULL;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) < 0 && !p, "tdx on sev_guest");
  CHECK(contains(err, "sev_guest") && contains(err, "tdx_guest"), "message: %s", err);
  pthread_mutex_destroy(&f.mu);
}

/* The vectors' v4 TD quote re-signed by a test Intel PKI whose PCK carries the real PCK's SGX
 * extension (FMSPC, TCB levels), the collateral for it, dated inside the vector's window. */
typedef struct tdx_env {
  uint8_t *q, *rc;
  size_t ql, cl;
  json_t *rj;
  int64_t at;
  X509 *rpck;
  ASN1_OBJECT *oid;
  gpki g;
  char *col;
  unsigned char *rder;
  sh_iovec troot;
} tdx_env;

static void tdx_env_init(tdx_env *e) {
  e->q = slurp("tdx/tdx_quote", &e->ql);
  e->rc = slurp("tdx/tdx_quote_collateral.json", &e->cl);
  e->rj = json_loadb((const char *)e->rc, e->cl, 0, NULL);
  e->at = T("2025-06-20T00:00:00Z"); /* the vector's collateral is valid then */
  const uint8_t *b = memmem(e->q, e->ql, "-----BEGIN", 10);
  BIO *bio = BIO_new_mem_buf(b, (int)(e->ql - (size_t)(b - e->q)));
  e->rpck = PEM_read_bio_X509(bio, NULL, NULL, NULL);
  BIO_free(bio);
  e->oid = OBJ_txt2obj("1.2.840.113741.1.13.1", 1);
  gpki_new(&e->g, e->at, X509_get_ext(e->rpck, X509_get_ext_by_OBJ(e->rpck, e->oid, -1)));
  e->col = gcollateral(&e->g, e->rj, e->at, &(gcase){0});
  e->rder = NULL;
  int rl = i2d_X509(e->g.root, &e->rder);
  e->troot = (sh_iovec){.ptr = e->rder, .len = (size_t)rl};
}

/* Options verifying a quote of this PKI at the vector's time, bound to n (NULL: not). */
static sh_attest_options tdx_options(tdx_env *e, const uint8_t *n) {
  sh_attest_options o = {.at = e->at,
                         .collateral = (const uint8_t *)e->col,
                         .collateral_len = strlen(e->col),
                         .extra_roots = &e->troot,
                         .nextra_roots = 1,
                         .nonce = n,
                         .nonce_len = n ? 32 : 0};
  return o;
}

static void tdx_env_free(tdx_env *e) {
  OPENSSL_free(e->rder);
  free(e->col);
  gpki_free(&e->g);
  ASN1_OBJECT_free(e->oid);
  X509_free(e->rpck);
  json_decref(e->rj);
  free(e->rc);
  free(e->q);
}

static void test_tsm_tdx(void) {
  if (!vdir) return;
  tdx_env e;
  tdx_env_init(&e);
  char root[512], dir[600], err[512] = "";
  tree("tsm-tdx", root, sizeof root);
  snprintf(dir, sizeof dir, "%s/sys/kernel/config/tsm/report", root);
  mkdirs(dir);
  fake_tsm f;
  fake_init(&f, "tdx_guest");
  f.quote = e.q;
  f.quote_len = e.ql;
  f.rd_off = 48 + 520; /* v4 quote: header, then the TD report body's REPORT_DATA */
  f.pki = &e.g;
  CHECK(e.ql > 700 && e.q[0] == 4, "the vector is a v4 quote");
  sh_attest_provider_config cfg = {
      .tee = SH_TEE_TDX, .root = root, .tsm_mkdir = fake_mkdir, .tsm_rmdir = fake_rmdir, .ctx = &f};
  sh_attest_provider *p = NULL;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0, "tsm tdx: %s", err);
  uint8_t n[32], D[64], *ev = NULL;
  size_t el = 0;
  rand_D(n, NULL, 0, D);
  CHECK(
      p && sh_attest_provider_evidence(p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) == 0,
      "tdx evidence: %s", err);
  CHECK(ev && el == f.last_len && !memcmp(ev, f.last, el) && !memcmp(ev + f.rd_off, D, 64),
        "the quote as configfs gave it, REPORT_DATA = D");
  sh_attest_options o = tdx_options(&e, n);
  sh_attest_result *r = NULL;
  sh_attest_reason got = ev ? run(ev, el, SH_TEE_TDX, &o, &r) : SH_ATTEST_MISSING;
  CHECK(got == SH_ATTEST_OK, "the TD quote verifies, bound to n: %s", r ? r->message : "");
  sh_attest_result_free(r);
  n[0] ^= 1;
  CHECK(ev && run(ev, el, SH_TEE_TDX, &o, NULL) == SH_ATTEST_BINDING_MISMATCH, "another nonce");
  free(ev);
  /* a quote that does not bind D is never handed out */
  f.keep_report_data = 1;
  f.pki = NULL;
  ev = NULL;
  CHECK(
      p && sh_attest_provider_evidence(p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) < 0 &&
          !ev,
      "quote without D refused");
  CHECK(contains(err, "REPORT_DATA is not D"), "message: %s", err);
  CHECK(report_dirs_left(root) == 0, "every report directory removed");
  sh_attest_provider_free(p);
  /* auto: tdx_guest */
  cfg.tee = SH_ATTEST_TEE_AUTO;
  p = NULL;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0 &&
            sh_attest_provider_tee(p) == SH_TEE_TDX,
        "auto picked tdx: %s", err);
  sh_attest_provider_free(p);
  pthread_mutex_destroy(&f.mu);
  free(f.last);
  tdx_env_free(&e);
}

/* ---------------- /dev/sev-guest through the ioctl seam ---------------- */

typedef struct fake_sev {
  int no_ext;  /* SNP_GET_EXT_REPORT unsupported (ENOTTY) */
  size_t need; /* certificate buffer the host needs */
  int ext_calls, plain_calls, bad_req, short_buf;
} fake_sev;

static void sev_answer(const uint8_t rd[64], struct snp_report_resp *resp) {
  memset(resp, 0, sizeof *resp);
  put32(resp->data + 4, 1184);
  snp_report(rd, resp->data + 0x20);
}

static int fake_sev_ioctl(void *ctx, int fd, unsigned long req, void *arg) {
  fake_sev *s = ctx;
  (void)fd;
  struct snp_guest_request_ioctl *g = arg;
  static const uint8_t zero[28];
  if (g->msg_version != 1) s->bad_req++;
  if (req == SNP_GET_EXT_REPORT) {
    struct snp_ext_report_req *e = (void *)(uintptr_t)g->req_data;
    s->ext_calls++;
    if (e->data.vmpl != 0 || memcmp(e->data.rsvd, zero, 28) || e->certs_len % 4096) s->bad_req++;
    if (s->no_ext) {
      errno = ENOTTY;
      return -1;
    }
    if (e->certs_len < s->need) { /* the kernel: too small, here is the size (whole pages) */
      s->short_buf++;
      e->certs_len = (uint32_t)s->need;
      g->exitinfo2 = (uint64_t)SNP_GUEST_VMM_ERR_INVALID_LEN << 32;
      errno = EINVAL;
      return -1;
    }
    cert_table((uint8_t *)(uintptr_t)e->certs_address, e->certs_len);
    sev_answer(e->data.user_data, (void *)(uintptr_t)g->resp_data);
    return 0;
  }
  if (req == SNP_GET_REPORT) {
    struct snp_report_req *r = (void *)(uintptr_t)g->req_data;
    s->plain_calls++;
    if (r->vmpl != 0 || memcmp(r->rsvd, zero, 28)) s->bad_req++;
    sev_answer(r->user_data, (void *)(uintptr_t)g->resp_data);
    return 0;
  }
  errno = ENOTTY;
  return -1;
}

static void test_sev_guest(void) {
  char root[512], dev[600], err[512] = "";
  tree("sev-guest", root, sizeof root);
  snprintf(dev, sizeof dev, "%s/dev", root);
  mkdirs(dev);
  snprintf(dev, sizeof dev, "%s/dev/sev-guest", root);
  put_file(dev, "", 0);
  fake_sev s = {.need = 5 * 4096};
  sh_attest_provider_config cfg = {
      .tee = SH_ATTEST_TEE_AUTO, .root = root, .ioctl = fake_sev_ioctl, .ctx = &s};
  sh_attest_provider *p = NULL;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0, "sev-guest: %s", err);
  CHECK(p && sh_attest_provider_tee(p) == SH_TEE_SEV_SNP &&
            !strcmp(sh_attest_provider_source(p), "/dev/sev-guest"),
        "auto: /dev/sev-guest without configfs-tsm");
  uint8_t n[32], D[64], *ev = NULL;
  size_t el = 0;
  rand_D(n, NULL, 0, D);
  CHECK(
      p && sh_attest_provider_evidence(p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) == 0,
      "ext report: %s", err);
  CHECK(s.short_buf == 1 && s.ext_calls == 2 && s.plain_calls == 0 && s.bad_req == 0,
        "grew the certificate buffer once (%d short, %d ext, %d bad)", s.short_buf, s.ext_calls,
        s.bad_req);
  CHECK(ev && el > 1184 && verify_snp(ev, el, n, NULL, 0, 0) == SH_ATTEST_OK,
        "the extended report's bundle verifies");
  free(ev);
  /* no extended report: the report alone, certificates from elsewhere */
  s = (fake_sev){.no_ext = 1};
  ev = NULL;
  CHECK(
      p && sh_attest_provider_evidence(p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) == 0,
      "plain report: %s", err);
  CHECK(s.plain_calls == 1 && s.bad_req == 0, "fell back to SNP_GET_REPORT");
  CHECK(ev && el == 1184 && verify_snp(ev, el, n, NULL, 0, 1) == SH_ATTEST_OK,
        "the bare report verifies with the VCEK given");
  free(ev);
  sh_attest_provider_free(p);
}

/* ---------------- /dev/nsm through the ioctl seam ---------------- */

struct nsm_iovec {
  uint64_t addr, len;
};
struct nsm_raw {
  struct nsm_iovec request, response;
};
#define NSM_IOCTL_RAW _IOWR(0x0A, 0x0, struct nsm_raw)

typedef struct fake_nsm {
  const char *sim_dir;
  int refuse;
  int requests, bad_req;
} fake_nsm;

static cbor_item_t *map_get(cbor_item_t *m, const char *k) {
  if (!m || !cbor_isa_map(m)) return NULL;
  struct cbor_pair *p = cbor_map_handle(m);
  for (size_t i = 0; i < cbor_map_size(m); i++)
    if (cbor_isa_string(p[i].key) && cbor_string_length(p[i].key) == strlen(k) &&
        !memcmp(cbor_string_handle(p[i].key), k, strlen(k)))
      return p[i].value;
  return NULL;
}

static int fake_nsm_ioctl(void *ctx, int fd, unsigned long req, void *arg) {
  fake_nsm *s = ctx;
  (void)fd;
  struct nsm_raw *raw = arg;
  s->requests++;
  if (req != NSM_IOCTL_RAW || raw->request.len > 0x1000 || raw->response.len < 0x3000) {
    s->bad_req++;
    errno = EINVAL;
    return -1;
  }
  struct cbor_load_result res;
  cbor_item_t *it =
      cbor_load((const uint8_t *)(uintptr_t)raw->request.addr, raw->request.len, &res);
  cbor_item_t *a = map_get(it, "Attestation");
  cbor_item_t *ud = map_get(a, "user_data"), *nn = map_get(a, "nonce"),
              *pk = map_get(a, "public_key");
  cbor_item_t *resp = cbor_new_definite_map(1);
  if (!it || cbor_map_size(it) != 1 || !a || cbor_map_size(a) != 3 || !ud ||
      !cbor_isa_bytestring(ud) || cbor_bytestring_length(ud) != 64 || !nn ||
      !cbor_isa_bytestring(nn) || !pk || !cbor_isa_bytestring(pk))
    s->bad_req++;
  if (s->refuse || !nn || !cbor_isa_bytestring(nn)) {
    cbor_map_add(resp, (struct cbor_pair){cbor_move(cbor_build_string("Error")),
                                          cbor_move(cbor_build_string("InvalidArgument"))});
  } else {
    /* the NSM signs what it was given: a Nitro-format document (the simulated root's) */
    sh_attest_sim_params sp = {.dir = s->sim_dir,
                               .at = AT,
                               .now = AT,
                               .nonce = cbor_bytestring_handle(nn),
                               .nonce_len = cbor_bytestring_length(nn),
                               .public_key = cbor_bytestring_handle(pk),
                               .public_key_len = cbor_bytestring_length(pk)};
    uint8_t *doc = NULL, want[64];
    size_t dl = 0;
    char e[256];
    sh_attest_binding_digest(sp.nonce, sp.nonce_len, sp.public_key, sp.public_key_len, want);
    if (memcmp(want, cbor_bytestring_handle(ud), 64)) s->bad_req++;
    sh_attest_simulated_evidence(&sp, &doc, &dl, e, sizeof e);
    cbor_item_t *inner = cbor_new_definite_map(1);
    cbor_map_add(inner, (struct cbor_pair){cbor_move(cbor_build_string("document")),
                                           cbor_move(cbor_build_bytestring(doc, dl))});
    cbor_map_add(resp,
                 (struct cbor_pair){cbor_move(cbor_build_string("Attestation")), cbor_move(inner)});
    free(doc);
  }
  size_t n = cbor_serialize(resp, (uint8_t *)(uintptr_t)raw->response.addr, raw->response.len);
  raw->response.len = n;
  cbor_decref(&resp);
  if (it) cbor_decref(&it);
  return 0;
}

static void test_nsm(const char *sim_dir, sh_iovec *sim_root) {
  char root[512], dev[600], err[512] = "";
  tree("nsm", root, sizeof root);
  snprintf(dev, sizeof dev, "%s/dev", root);
  mkdirs(dev);
  snprintf(dev, sizeof dev, "%s/dev/nsm", root);
  put_file(dev, "", 0);
  fake_nsm s = {.sim_dir = sim_dir};
  sh_attest_provider_config cfg = {
      .tee = SH_ATTEST_TEE_AUTO, .root = root, .ioctl = fake_nsm_ioctl, .ctx = &s};
  sh_attest_provider *p = NULL;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0, "nsm: %s", err);
  CHECK(p && sh_attest_provider_tee(p) == SH_TEE_NITRO, "auto: nitro from /dev/nsm");
  uint8_t n[32], D[64], k[91], *ev = NULL;
  size_t el = 0;
  RAND_bytes(k, sizeof k);
  rand_D(n, k, sizeof k, D);
  CHECK(p && sh_attest_provider_evidence(p, D, n, 32, k, sizeof k, AT, &ev, &el, err, sizeof err) ==
                 0,
        "nsm evidence: %s", err);
  CHECK(s.requests == 1 && s.bad_req == 0, "the request: %d bad", s.bad_req);
  sh_attest_options o = simulated_options(sim_root, n, k, sizeof k);
  sh_attest_result *r = NULL;
  CHECK(ev && run(ev, el, SH_TEE_SIMULATED, &o, &r) == SH_ATTEST_OK,
        "the NSM's document verifies, bound to n and k");
  CHECK(r && r->user_data_len == 64 && !memcmp(r->user_data, D, 64), "user_data = D");
  sh_attest_result_free(r);
  free(ev);
  s.refuse = 1;
  ev = NULL;
  CHECK(p &&
            sh_attest_provider_evidence(p, D, n, 32, k, sizeof k, AT, &ev, &el, err, sizeof err) <
                0 &&
            !ev,
        "NSM error answer");
  CHECK(contains(err, "InvalidArgument"), "message: %s", err);
  uint8_t big[1025] = {0};
  CHECK(p && sh_attest_provider_evidence(p, D, n, 32, big, sizeof big, AT, &ev, &el, err,
                                         sizeof err) < 0,
        "public key over 1024 bytes refused");
  CHECK(s.requests == 2, "...before any ioctl");
  sh_attest_provider_free(p);
}

/* ---------------- Gramine ---------------- */

typedef struct fake_gramine {
  char dir[600];
  const uint8_t *quote;
  size_t len;
  atomic_int stop;
} fake_gramine;

static void *serve_quote(void *arg) {
  fake_gramine *g = arg;
  char p[700];
  snprintf(p, sizeof p, "%s/quote", g->dir);
  int fd = open_writer(p, &g->stop);
  if (fd < 0) return NULL;
  uint8_t in[64] = {0}, *q = malloc(g->len);
  snprintf(p, sizeof p, "%s/user_report_data", g->dir);
  FILE *f = fopen(p, "rb");
  if (f) {
    if (fread(in, 1, 64, f) != 64) memset(in, 0, 64);
    fclose(f);
  }
  memcpy(q, g->quote, g->len);
  memcpy(q + 48 + 320, in, 64); /* v3 quote: header, then the enclave report's REPORT_DATA */
  write_all(fd, q, g->len);
  close(fd);
  free(q);
  return NULL;
}

static void test_gramine(void) {
  char root[512], err[512] = "";
  fake_gramine g = {0};
  tree("gramine", root, sizeof root);
  snprintf(g.dir, sizeof g.dir, "%s/dev/attestation", root);
  mkdirs(g.dir);
  char p[700];
  snprintf(p, sizeof p, "%s/attestation_type", g.dir);
  put_file(p, "none\n", 5);
  snprintf(p, sizeof p, "%s/quote", g.dir);
  mkfifo(p, 0600);
  sh_attest_provider_config cfg = {.tee = SH_TEE_SGX, .root = root};
  sh_attest_provider *pr = NULL;
  CHECK(sh_attest_provider_open(&cfg, &pr, err, sizeof err) < 0 && !pr, "attestation_type none");
  CHECK(contains(err, "\"none\"") && contains(err, "dcap"), "message: %s", err);
  if (!vdir) return;
  snprintf(p, sizeof p, "%s/attestation_type", g.dir);
  put_file(p, "dcap", 4);
  snprintf(p, sizeof p, "%s/user_report_data", g.dir);
  put_file(p, "", 0);
  uint8_t *q = slurp("sgx/sgx_quote", &g.len);
  g.quote = q;
  cfg.tee = SH_ATTEST_TEE_AUTO;
  CHECK(sh_attest_provider_open(&cfg, &pr, err, sizeof err) == 0 &&
            sh_attest_provider_tee(pr) == SH_TEE_SGX,
        "auto: sgx from /dev/attestation: %s", err);
  pthread_t th;
  pthread_create(&th, NULL, serve_quote, &g);
  uint8_t n[32], D[64], *ev = NULL;
  size_t el = 0;
  rand_D(n, NULL, 0, D);
  CHECK(pr && sh_attest_provider_evidence(pr, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) ==
                  0,
        "gramine quote: %s", err);
  atomic_store(&g.stop, 1);
  pthread_join(th, NULL);
  CHECK(ev && el == g.len && !memcmp(ev + 368, D, 64) && !memcmp(ev, q, 368),
        "the quote Gramine gave, REPORT_DATA = D");
  free(ev);
  free(q);
  sh_attest_provider_free(pr);
}

/* ---------------- Confidential Space launcher ---------------- */

typedef struct fake_cs {
  int fd;
  int status; /* the answer's status */
  char nonce[128], audience[128], token_type[32], method[16], path[64];
  int nnonces;
} fake_cs;

static const char JWT[] = "eyJhbGciOiJSUzI1NiJ9.eyJlYXRfbm9uY2UiOiJ4In0.c2lnbmF0dXJl";

static void *serve_cs(void *arg) {
  fake_cs *s = arg;
  int c = accept(s->fd, NULL, NULL);
  if (c < 0) return NULL;
  char buf[8192];
  size_t n = 0;
  char *body = NULL;
  long clen = -1;
  while (n < sizeof buf - 1) {
    ssize_t r = read(c, buf + n, sizeof buf - 1 - n);
    if (r <= 0) break;
    n += (size_t)r;
    buf[n] = 0;
    char *end = strstr(buf, "\r\n\r\n");
    if (end && clen < 0) {
      char *cl = strcasestr(buf, "\r\nContent-Length:");
      clen = cl ? strtol(cl + 17, NULL, 10) : 0;
      body = end + 4;
    }
    if (body && (long)(buf + n - body) >= clen) break;
  }
  sscanf(buf, "%15s %63s", s->method, s->path);
  json_t *j = body ? json_loadb(body, (size_t)clen, 0, NULL) : NULL;
  json_t *ns = json_object_get(j, "nonces");
  s->nnonces = (int)json_array_size(ns);
  snprintf(s->nonce, sizeof s->nonce, "%s", json_string_value(json_array_get(ns, 0)) ?: "");
  snprintf(s->audience, sizeof s->audience, "%s",
           json_string_value(json_object_get(j, "audience")) ?: "");
  snprintf(s->token_type, sizeof s->token_type, "%s",
           json_string_value(json_object_get(j, "token_type")) ?: "");
  json_decref(j);
  const char *b = s->status == 200 ? JWT : "nonce too long";
  int hl = snprintf(buf, sizeof buf,
                    "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                    "Connection: close\r\n\r\n%s",
                    s->status, strlen(b), b);
  write_all(c, (const uint8_t *)buf, (size_t)hl);
  close(c);
  return NULL;
}

static void test_gcp(void) {
  char root[512], dir[600], sock[700], err[512] = "";
  tree("gcp", root, sizeof root);
  snprintf(dir, sizeof dir, "%s/run/container_launcher", root);
  mkdirs(dir);
  snprintf(sock, sizeof sock, "%s/teeserver.sock", dir);
  fake_cs s = {.status = 200};
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  CHECK(strlen(sock) < sizeof a.sun_path, "socket path too long: %s", sock);
  memcpy(a.sun_path, sock, strlen(sock) < sizeof a.sun_path ? strlen(sock) + 1 : 0);
  s.fd = socket(AF_UNIX, SOCK_STREAM, 0);
  CHECK(bind(s.fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(s.fd, 4) == 0, "bind %s", sock);
  sh_attest_provider_config cfg = {.tee = SH_ATTEST_TEE_AUTO, .root = root};
  sh_attest_provider *p = NULL;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) < 0 && contains(err, "audience"),
        "gcp without an audience: %s", err);
  cfg.gcp_audience = "https://shield.example";
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0 &&
            sh_attest_provider_tee(p) == SH_TEE_GCP,
        "auto: gcp from the launcher socket: %s", err);
  uint8_t n[32], D[64], *ev = NULL;
  size_t el = 0;
  rand_D(n, NULL, 0, D);
  pthread_t th;
  pthread_create(&th, NULL, serve_cs, &s);
  CHECK(
      p && sh_attest_provider_evidence(p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) == 0,
      "token: %s", err);
  pthread_join(th, NULL);
  char want[100];
  sh_b64_encode(D, 64, SH_B64_PROTOCOL, want);
  CHECK(!strcmp(s.method, "POST") && !strcmp(s.path, "/v1/token"), "%s %s", s.method, s.path);
  CHECK(s.nnonces == 1 && !strcmp(s.nonce, want), "nonces = [base64url(D)]: %s", s.nonce);
  CHECK(!strcmp(s.audience, "https://shield.example") && !strcmp(s.token_type, "OIDC"),
        "audience %s, token_type %s", s.audience, s.token_type);
  CHECK(ev && el == strlen(JWT) && !memcmp(ev, JWT, el), "the body is the token");
  free(ev);
  s.status = 400;
  pthread_create(&th, NULL, serve_cs, &s);
  ev = NULL;
  CHECK(
      p && sh_attest_provider_evidence(p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) < 0 &&
          !ev,
      "launcher error");
  pthread_join(th, NULL);
  CHECK(contains(err, "400") && contains(err, "nonce too long"), "message: %s", err);
  sh_attest_provider_free(p);
  close(s.fd);
  unlink(sock);
}

/* ---------------- /dev/tdx_guest and the Quote Generation Service ---------------- */

/* linux/tdx-guest.h (not in Debian 12's headers): the request of TDX_CMD_GET_REPORT0 */
struct test_tdx_report_req {
  uint8_t reportdata[64];
  uint8_t tdreport[1024];
};
#define TEST_TDX_CMD_GET_REPORT0 _IOWR('T', 1, struct test_tdx_report_req)

typedef struct fake_qgs {
  int fd;                 /* listening unix socket */
  tdx_env *e;             /* the quote to answer, REPORT_DATA set, re-signed by e->g */
  uint8_t tdreport[1024]; /* what the ioctl seam answered */
  int ioctls, bad_ioctl;
  /* the request the QGS got */
  uint32_t prefix, major, type, size, code, report_size, id_list_size;
  int report_is_tdreport;
  uint32_t answer_error; /* non-zero: an error response with this code */
  uint8_t *last;         /* the quote answered (malloc'd) */
  size_t last_len;
} fake_qgs;

static int fake_tdx_ioctl(void *ctx, int fd, unsigned long req, void *arg) {
  fake_qgs *f = ctx;
  (void)fd;
  f->ioctls++;
  if (req != TEST_TDX_CMD_GET_REPORT0) {
    f->bad_ioctl++;
    errno = ENOTTY;
    return -1;
  }
  struct test_tdx_report_req *r = arg;
  /* a TDREPORT_STRUCT: REPORTTYPE (TDX 0x81) at 0, REPORTDATA at 0x80, the rest random */
  RAND_bytes(f->tdreport, sizeof f->tdreport);
  f->tdreport[0] = 0x81;
  memcpy(f->tdreport + 0x80, r->reportdata, 64);
  memcpy(r->tdreport, f->tdreport, 1024);
  return 0;
}

static uint32_t rd_le32(const uint8_t *p) {
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static int read_n(int fd, uint8_t *d, size_t n) {
  while (n) {
    ssize_t r = read(fd, d, n);
    if (r <= 0) return -1;
    d += r;
    n -= (size_t)r;
  }
  return 0;
}

/* One connection: qgs_msg_lib's GET_QUOTE_REQ in, GET_QUOTE_RESP out (both after a 4-byte
 * big-endian length). */
static void *serve_qgs(void *arg) {
  fake_qgs *f = arg;
  int c = accept(f->fd, NULL, NULL);
  if (c < 0) return NULL;
  uint8_t pre[4], m[2048];
  if (read_n(c, pre, 4) == 0) {
    f->prefix = (uint32_t)pre[0] << 24 | (uint32_t)pre[1] << 16 | (uint32_t)pre[2] << 8 | pre[3];
    if (f->prefix >= 24 && f->prefix <= sizeof m && read_n(c, m, f->prefix) == 0) {
      f->major = (uint32_t)(m[0] | m[1] << 8);
      f->type = rd_le32(m + 4);
      f->size = rd_le32(m + 8);
      f->code = rd_le32(m + 12);
      f->report_size = rd_le32(m + 16);
      f->id_list_size = rd_le32(m + 20);
      f->report_is_tdreport = f->prefix == 24 + 1024 && !memcmp(m + 24, f->tdreport, 1024);
    }
  }
  size_t ql = 0;
  uint8_t *q = NULL;
  if (!f->answer_error) { /* the quote of this TDREPORT: its REPORT_DATA */
    uint8_t *body = malloc(f->e->ql);
    memcpy(body, f->e->q, f->e->ql);
    memcpy(body + 48 + 520, f->tdreport + 0x80, 64);
    ql = f->e->ql;
    q = gquote(&f->e->g, body, &ql, 0);
    free(body);
  }
  size_t n = 24 + ql;
  uint8_t *r = calloc(1, 4 + n);
  r[0] = (uint8_t)(n >> 24);
  r[1] = (uint8_t)(n >> 16);
  r[2] = (uint8_t)(n >> 8);
  r[3] = (uint8_t)n;
  r[4] = 1; /* major 1, minor 1 */
  r[6] = 1;
  wr_le32(r + 8, 1); /* GET_QUOTE_RESP */
  wr_le32(r + 12, (uint32_t)n);
  wr_le32(r + 16, f->answer_error);
  wr_le32(r + 20, 0);
  wr_le32(r + 24, (uint32_t)ql);
  if (q) memcpy(r + 28, q, ql);
  write_all(c, r, 4 + n);
  free(r);
  free(f->last);
  f->last = q;
  f->last_len = ql;
  close(c);
  return NULL;
}

static void test_tdx_guest_qgs(void) {
  if (!vdir) return;
  tdx_env e;
  tdx_env_init(&e);
  char root[512], path[700], sock[700], qgs[720], err[1024] = "";
  tree("tdx-guest", root, sizeof root);
  snprintf(path, sizeof path, "%s/dev", root);
  mkdirs(path);
  snprintf(path, sizeof path, "%s/dev/tdx_guest", root);
  put_file(path, "", 0);
  snprintf(sock, sizeof sock, "%s/qgs.sock", root);
  snprintf(qgs, sizeof qgs, "unix:%s", sock);
  fake_qgs f = {.e = &e};
  sh_attest_provider_config cfg = {.tee = SH_TEE_TDX,
                                   .root = root,
                                   .tdx_qgs = qgs,
                                   .tdx_qgs_timeout_ms = 30000,
                                   .ioctl = fake_tdx_ioctl,
                                   .ctx = &f};
  sh_attest_provider *p = NULL;
  /* no configfs-tsm and no QGS listening: refused at open, naming both */
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) < 0 && !p, "tdx without a QGS opened");
  CHECK(contains(err, "needs configfs-tsm") && contains(err, sock) &&
            contains(err, "Quote Generation Service"),
        "message: %s", err);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  CHECK(strlen(sock) < sizeof a.sun_path, "socket path too long: %s", sock);
  memcpy(a.sun_path, sock, strlen(sock) < sizeof a.sun_path ? strlen(sock) + 1 : 0);
  f.fd = socket(AF_UNIX, SOCK_STREAM, 0);
  CHECK(bind(f.fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(f.fd, 4) == 0, "bind %s", sock);
  /* open connects once to see that the QGS is there */
  pthread_t th;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0, "tdx through the QGS: %s", err);
  int probe = accept(f.fd, NULL, NULL);
  if (probe >= 0) close(probe);
  CHECK(p && !strcmp(sh_attest_provider_source(p), "/dev/tdx_guest"), "source %s",
        p ? sh_attest_provider_source(p) : "");
  uint8_t n[32], D[64], *ev = NULL;
  size_t el = 0;
  rand_D(n, NULL, 0, D);
  pthread_create(&th, NULL, serve_qgs, &f);
  CHECK(
      p && sh_attest_provider_evidence(p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) == 0,
      "tdx evidence through the QGS: %s", err);
  pthread_join(th, NULL);
  CHECK(f.ioctls == 1 && f.bad_ioctl == 0, "one TDX_CMD_GET_REPORT0 (%d, %d bad)", f.ioctls,
        f.bad_ioctl);
  CHECK(f.prefix == 1048 && f.major == 1 && f.type == 0 && f.size == 1048 && f.code == 0,
        "GET_QUOTE_REQ header: length %u, version %u, type %u, size %u, error %u", f.prefix,
        f.major, f.type, f.size, f.code);
  CHECK(f.report_size == 1024 && f.id_list_size == 0 && f.report_is_tdreport,
        "the request carries the TDREPORT of the ioctl (report %u, id list %u)", f.report_size,
        f.id_list_size);
  CHECK(ev && el == f.last_len && !memcmp(ev, f.last, el), "the quote as the QGS gave it");
  sh_attest_options o = tdx_options(&e, n);
  sh_attest_result *r = NULL;
  sh_attest_reason got = ev ? run(ev, el, SH_TEE_TDX, &o, &r) : SH_ATTEST_MISSING;
  CHECK(got == SH_ATTEST_OK, "the TD quote verifies, bound to n: %s", r ? r->message : "");
  sh_attest_result_free(r);
  free(ev);
  /* the QGS's error code reaches the message */
  f.answer_error = 0x00012001;
  ev = NULL;
  pthread_create(&th, NULL, serve_qgs, &f);
  CHECK(
      p && sh_attest_provider_evidence(p, D, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) < 0 &&
          !ev,
      "QGS error");
  pthread_join(th, NULL);
  CHECK(contains(err, "0x12001"), "message: %s", err);
  sh_attest_provider_free(p);
  /* auto: /dev/tdx_guest with a QGS is tdx */
  cfg.tee = SH_ATTEST_TEE_AUTO;
  p = NULL;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0 &&
            sh_attest_provider_tee(p) == SH_TEE_TDX,
        "auto picked tdx: %s", err);
  probe = accept(f.fd, NULL, NULL);
  if (probe >= 0) close(probe);
  sh_attest_provider_free(p);
  close(f.fd);
  unlink(sock);
  unlink(path);
  free(f.last);
  tdx_env_free(&e);
}

/* ---------------- Azure: the vTPM (swtpm) and IMDS (a loopback stand-in) ----------------
 * swtpm, started here, is the vTPM; the test provisions NV 0x01400001 with an HCL report in
 * Azure's layout.  A real paravisor regenerates that report when 0x01400002 is written; swtpm
 * cannot, so the fake holds the report made beforehand for the D the test then asks for (and a
 * D it was not made for is refused after the wait).  swtpm (libtpms) caps an NV index at 2048
 * bytes (TPM2_PT_NV_INDEX_MAX): the real Azure reports of the vectors are 2600 (their index
 * size on Azure), so the reports here are built in their layout with an SNP report signed by
 * the test VCEK above (azure-snp) or a TDREPORT whose TD quote the test Intel PKI signs
 * (azure-tdx), padded with zeros to 2048 bytes as Azure pads to 2600: read in two chunks of
 * TPM2_PT_NV_BUFFER_MAX (1024). */

#include <sys/wait.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>

#define HCL_SIZE 2048

typedef struct swtpm {
  pid_t pid;
  int port;
  char tcti[96];
} swtpm;

/* Connectable within ~10 s (scaled for a loaded machine). */
static int port_up(int port) {
  for (int i = 0; i < 400; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    if (ok) return 1;
    usleep(25000);
  }
  return 0;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &al) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

/* swtpm socket --tpm2 on 127.0.0.1:P (commands) and P+1 (control), its state in dir. */
static int swtpm_start(swtpm *s, const char *dir) {
  mkdirs(dir);
  for (int attempt = 0; attempt < 5; attempt++) {
    int port = free_port();
    if (port <= 0 || port > 65000) continue;
    char srv[64], ctl[64], st[700], log[720];
    snprintf(srv, sizeof srv, "type=tcp,port=%d,bindaddr=127.0.0.1", port);
    snprintf(ctl, sizeof ctl, "type=tcp,port=%d,bindaddr=127.0.0.1", port + 1);
    snprintf(st, sizeof st, "dir=%s", dir);
    snprintf(log, sizeof log, "file=%s/swtpm.log", dir);
    pid_t pid = fork();
    if (pid == 0) {
      /* ends with this test, however it ends; its output goes to its log, not our pipes */
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int nul = open("/dev/null", O_RDWR);
      dup2(nul, 0);
      dup2(nul, 1);
      dup2(nul, 2);
      execlp("swtpm", "swtpm", "socket", "--tpm2", "--server", srv, "--ctrl", ctl, "--tpmstate", st,
             "--log", log, "--flags", "startup-clear,not-need-init", (char *)NULL);
      _exit(127);
    }
    if (pid < 0) return -1;
    int status;
    if (port_up(port) && waitpid(pid, &status, WNOHANG) == 0) {
      s->pid = pid;
      s->port = port;
      snprintf(s->tcti, sizeof s->tcti, "swtpm:host=127.0.0.1,port=%d", port);
      return 0;
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  return -1;
}

static void swtpm_stop(swtpm *s) {
  if (s->pid <= 0) return;
  int status;
  kill(s->pid, SIGTERM);
  waitpid(s->pid, &status, 0);
  s->pid = 0;
}

/* The test's own ESYS session to the same swtpm: provisioning and inspection. */
typedef struct tpm {
  TSS2_TCTI_CONTEXT *tcti;
  ESYS_CONTEXT *esys;
} tpm;

static int tpm_open(tpm *t, const char *tcti) {
  memset(t, 0, sizeof *t);
  if (Tss2_TctiLdr_Initialize(tcti, &t->tcti) != TSS2_RC_SUCCESS) return -1;
  if (Esys_Initialize(&t->esys, t->tcti, NULL) != TSS2_RC_SUCCESS) {
    Tss2_TctiLdr_Finalize(&t->tcti);
    return -1;
  }
  return 0;
}

static void tpm_close(tpm *t) {
  if (t->esys) Esys_Finalize(&t->esys);
  if (t->tcti) Tss2_TctiLdr_Finalize(&t->tcti);
}

static int nv_handle(tpm *t, uint32_t index, ESYS_TR *h) {
  return Esys_TR_FromTPMPublic(t->esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, h) ==
                 TSS2_RC_SUCCESS
             ? 0
             : -1;
}

static void nv_undefine(tpm *t, uint32_t index) {
  ESYS_TR h;
  if (nv_handle(t, index, &h) == 0)
    Esys_NV_UndefineSpace(t->esys, ESYS_TR_RH_OWNER, h, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                          ESYS_TR_NONE);
}

/* Defines index (owner read/write) with data d (n bytes; NULL: left unwritten). */
static int nv_provision(tpm *t, uint32_t index, const uint8_t *d, size_t n) {
  TPM2B_AUTH auth = {.size = 0};
  TPM2B_NV_PUBLIC pub = {.nvPublic = {.nvIndex = index,
                                      .nameAlg = TPM2_ALG_SHA256,
                                      .attributes = TPMA_NV_OWNERWRITE | TPMA_NV_OWNERREAD,
                                      .dataSize = (uint16_t)n}};
  ESYS_TR h;
  nv_undefine(t, index);
  if (Esys_NV_DefineSpace(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                          &auth, &pub, &h) != TSS2_RC_SUCCESS)
    return -1;
  for (size_t off = 0; d && off < n; off += 1024) {
    TPM2B_MAX_NV_BUFFER b = {.size = (uint16_t)(n - off < 1024 ? n - off : 1024)};
    memcpy(b.buffer, d + off, b.size);
    if (Esys_NV_Write(t->esys, ESYS_TR_RH_OWNER, h, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                      &b, (uint16_t)off) != TSS2_RC_SUCCESS)
      return -1;
  }
  return 0;
}

/* The size and the first 64 bytes of an index (0x01400002); -1 when it cannot be read. */
static int nv_peek(tpm *t, uint32_t index, uint8_t out[64], uint16_t *size) {
  ESYS_TR h;
  TPM2B_NV_PUBLIC *pub = NULL;
  TPM2B_MAX_NV_BUFFER *d = NULL;
  if (nv_handle(t, index, &h) < 0 ||
      Esys_NV_ReadPublic(t->esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL) !=
          TSS2_RC_SUCCESS)
    return -1;
  *size = pub->nvPublic.dataSize;
  Esys_Free(pub);
  int rc = Esys_NV_Read(t->esys, ESYS_TR_RH_OWNER, h, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                        64, 0, &d) == TSS2_RC_SUCCESS &&
                   d->size == 64
               ? 0
               : -1;
  if (rc == 0) memcpy(out, d->buffer, 64);
  Esys_Free(d);
  return rc;
}

/* An HCL report in Azure's layout (attest/azure.c) of hardware report type `type` (2 SNP,
 * 4 TDX) whose runtime JSON carries user-data = hex(D): runtime (malloc'd) and its SHA-256,
 * for the caller to make the hardware report; then hcl_finish. */
static char *hcl_runtime(const uint8_t D[64], uint8_t digest[32]) {
  char hex[129];
  sh_hex_encode(D, 64, hex);
  char *rt = malloc(700);
  snprintf(rt, 700,
           "{\"keys\":[{\"kid\":\"HCLAkPub\",\"key_ops\":[\"sign\"],\"kty\":\"RSA\",\"e\":"
           "\"AQAB\",\"n\":\"test\"}],\"vm-configuration\":{\"console-enabled\":true,"
           "\"secure-boot\":true,\"tpm-enabled\":true,\"vmUniqueId\":\"shield-test\"},"
           "\"user-data\":\"%s\"}",
           hex);
  unsigned int dl = 32;
  EVP_Digest(rt, strlen(rt), digest, &dl, EVP_sha256(), NULL);
  return rt;
}

static void hcl_finish(uint8_t h[HCL_SIZE], uint32_t type, const uint8_t *hw, size_t hwl,
                       const char *rt) {
  uint32_t vs = (uint32_t)strlen(rt);
  memset(h, 0, HCL_SIZE);
  memcpy(h, "HCLA", 4);
  put32(h + 4, 2);
  put32(h + 8, 0x4C0 + 20 + vs);
  put32(h + 12, 2); /* request type: the vTPM's */
  memcpy(h + 0x20, hw, hwl);
  put32(h + 0x4C0, 20 + vs);
  put32(h + 0x4C4, 1);
  put32(h + 0x4C8, type);
  put32(h + 0x4CC, 1); /* SHA-256 */
  put32(h + 0x4D0, vs);
  memcpy(h + 0x4D4, rt, vs);
}

static void hcl_snp(const uint8_t D[64], uint8_t h[HCL_SIZE]) {
  uint8_t rd[64] = {0}, rep[1184];
  char *rt = hcl_runtime(D, rd);
  snp_report(rd, rep);
  hcl_finish(h, 2, rep, sizeof rep, rt);
  free(rt);
}

/* azure-tdx: the quote (re-signed by e's PKI) whose REPORT_DATA binds the runtime JSON, and the
 * TDREPORT it was made from (the fields the quote body repeats, azure.c td_matches). */
static uint8_t *hcl_tdx(tdx_env *e, const uint8_t D[64], uint8_t h[HCL_SIZE], size_t *ql) {
  uint8_t rd[64] = {0}, tdr[1024] = {0};
  char *rt = hcl_runtime(D, rd);
  uint8_t *body = malloc(e->ql);
  memcpy(body, e->q, e->ql);
  memcpy(body + 48 + 520, rd, 64);
  *ql = e->ql;
  uint8_t *q = gquote(&e->g, body, ql, 0);
  free(body);
  tdr[0] = 0x81;                          /* REPORTTYPE: TDX */
  memcpy(tdr + 0x80, q + 48 + 520, 64);   /* REPORTDATA */
  memcpy(tdr + 0x108, q + 48, 120);       /* TEE_TCB_SVN .. SEAMATTRIBUTES */
  memcpy(tdr + 0x200, q + 48 + 120, 400); /* TDINFO: ATTRIBUTES .. RTMR3 */
  hcl_finish(h, 4, tdr, sizeof tdr, rt);
  free(rt);
  return q;
}

/* IMDS on 127.0.0.1: THIM's certification and the TD quote, each request recorded. */
typedef struct fake_imds {
  int fd, port;
  atomic_int stop;
  pthread_t th;
  int thim_status;         /* 200: the certificates */
  const uint8_t *tdreport; /* the TDREPORT the quote is for */
  const uint8_t *quote;    /* answered to POST /acc/tdquote */
  size_t quote_len;
  atomic_int thim_calls, quote_calls;
  char method[16], path[128];
  int metadata_header, json_type, report_matches;
} fake_imds;

static char *pem_of(X509 *x) {
  BIO *b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  char *d = NULL;
  long n = BIO_get_mem_data(b, &d);
  char *s = strndup(d, (size_t)n);
  BIO_free(b);
  return s;
}

static void imds_answer(fake_imds *f, int c, const char *head, const char *body, size_t bl) {
  char buf[512];
  sscanf(head, "%15s %127s", f->method, f->path);
  f->metadata_header = strcasestr(head, "\r\nMetadata: true\r\n") != NULL;
  f->json_type = strcasestr(head, "\r\nContent-Type: application/json\r\n") != NULL;
  int status = 404;
  char *out = NULL;
  if (!strcmp(f->path, "/metadata/THIM/amd/certification")) {
    atomic_fetch_add(&f->thim_calls, 1);
    status = f->thim_status;
    char *v = pem_of(vcek), *a = pem_of(ask), *r = pem_of(ark);
    json_t *j = json_pack("{s:s, s:s+, s:s, s:s}", "vcekCert", v, "certificateChain", a, r, "tcbm",
                          "7308000000000003", "cacheControl", "86400");
    out = status == 200 ? json_dumps(j, 0) : strdup("{\"error\": \"THIM is busy\"}");
    json_decref(j);
    free(v);
    free(a);
    free(r);
  } else if (!strcmp(f->path, "/acc/tdquote")) {
    atomic_fetch_add(&f->quote_calls, 1);
    json_t *j = json_loadb(body, bl, 0, NULL);
    const char *rep = json_string_value(json_object_get(j, "report"));
    size_t rl = 0;
    uint8_t *tr = rep ? sh_b64_decode_alloc(rep, strlen(rep), SH_B64_PROTOCOL, &rl) : NULL;
    f->report_matches = tr && rl == 1024 && f->tdreport && !memcmp(tr, f->tdreport, 1024);
    free(tr);
    json_decref(j);
    char *q = sh_b64_encode_alloc(f->quote, f->quote_len, SH_B64_PROTOCOL);
    json_t *a = json_pack("{s:s}", "quote", q);
    out = json_dumps(a, 0);
    json_decref(a);
    free(q);
    status = 200;
  } else {
    out = strdup("{}");
  }
  int hl = snprintf(buf, sizeof buf,
                    "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                    "Connection: close\r\n\r\n",
                    status, strlen(out));
  write_all(c, (const uint8_t *)buf, (size_t)hl);
  write_all(c, (const uint8_t *)out, strlen(out));
  free(out);
}

static void *serve_imds(void *arg) {
  fake_imds *f = arg;
  while (!atomic_load(&f->stop)) {
    struct pollfd pf = {.fd = f->fd, .events = POLLIN};
    if (poll(&pf, 1, 50) <= 0) continue;
    int c = accept(f->fd, NULL, NULL);
    if (c < 0) continue;
    char *buf = malloc(65536);
    size_t n = 0;
    char *body = NULL;
    long clen = -1;
    while (n < 65535) {
      ssize_t r = read(c, buf + n, 65535 - n);
      if (r <= 0) break;
      n += (size_t)r;
      buf[n] = 0;
      char *end = strstr(buf, "\r\n\r\n");
      if (end && clen < 0) {
        char *cl = strcasestr(buf, "\r\nContent-Length:");
        clen = cl ? strtol(cl + 17, NULL, 10) : 0;
        body = end + 4;
      }
      if (body && (long)(buf + n - body) >= clen) break;
    }
    if (body) imds_answer(f, c, buf, body, (size_t)clen);
    free(buf);
    close(c);
  }
  return NULL;
}

static void imds_start(fake_imds *f) {
  f->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  CHECK(bind(f->fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(f->fd, 8) == 0 &&
            getsockname(f->fd, (struct sockaddr *)&a, &al) == 0,
        "IMDS stand-in: bind");
  f->port = ntohs(a.sin_port);
  pthread_create(&f->th, NULL, serve_imds, f);
}

static void imds_stop(fake_imds *f) {
  atomic_store(&f->stop, 1);
  pthread_join(f->th, NULL);
  close(f->fd);
}

static cbor_item_t *bundle_get(cbor_item_t *m, const char *k, sh_iovec *v) {
  cbor_item_t *x = m ? map_get(m, k) : NULL;
  *v = (sh_iovec){NULL, 0};
  if (x && cbor_isa_bytestring(x)) {
    v->ptr = cbor_bytestring_handle(x);
    v->len = cbor_bytestring_length(x);
  }
  return x;
}

static void test_azure_vtpm(void) {
  if (system("command -v swtpm >/dev/null 2>&1") != 0) {
    printf("SKIP azure vTPM: swtpm is not installed (scripts/bootstrap installs it)\n");
    return;
  }
  char root[512], dir[600], url[64], err[1024] = "";
  tree("azure", root, sizeof root);
  snprintf(dir, sizeof dir, "%s/swtpm", root);
  swtpm s = {0};
  CHECK(swtpm_start(&s, dir) == 0, "swtpm did not start (see %s/swtpm.log)", dir);
  if (!s.pid) return;
  tpm t;
  CHECK(tpm_open(&t, s.tcti) == 0, "ESYS to swtpm");
  fake_imds f = {.thim_status = 200};
  imds_start(&f);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", f.port);
  sh_attest_provider_config cfg = {.tee = SH_TEE_AZURE_SNP,
                                   .root = root,
                                   .tpm_tcti = s.tcti,
                                   .azure_imds_url = url,
                                   .azure_report_wait_ms = 300};
  sh_attest_provider *p = NULL;

  /* a TPM without the HCL report's index: not Azure */
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) < 0 && !p, "opened without 0x01400001");
  CHECK(contains(err, "no NV index 0x01400001") && contains(err, s.tcti), "message: %s", err);
  cfg.tee = SH_ATTEST_TEE_AUTO;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) < 0 && !p, "auto opened on a bare TPM");
  CHECK(contains(err, "no TEE found") && contains(err, "0x01400001"), "auto message: %s", err);
  cfg.tee = SH_TEE_AZURE_SNP;
  /* the TPM unreachable */
  sh_attest_provider_config gone = cfg;
  char tcti_gone[96];
  snprintf(tcti_gone, sizeof tcti_gone, "swtpm:host=127.0.0.1,port=%d", free_port());
  gone.tpm_tcti = tcti_gone;
  CHECK(sh_attest_provider_open(&gone, &p, err, sizeof err) < 0 && !p, "opened without a TPM");
  CHECK(contains(err, "cannot reach the vTPM") && contains(err, tcti_gone), "message: %s", err);

  /* the HCL report for D1, as the paravisor would have made it */
  uint8_t n1[32], D1[64], n2[32], D2[64], hcl[HCL_SIZE], got[64];
  uint16_t gsize = 0;
  rand_D(n1, NULL, 0, D1);
  rand_D(n2, NULL, 0, D2);
  hcl_snp(D1, hcl);
  CHECK(nv_provision(&t, 0x01400001, hcl, sizeof hcl) == 0, "provision 0x01400001");
  nv_undefine(&t, 0x01400002); /* absent: the provider defines it, as Azure's tooling does */
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0, "azure-snp: %s", err);
  CHECK(p && sh_attest_provider_tee(p) == SH_TEE_AZURE_SNP &&
            !strcmp(sh_attest_provider_source(p), "vtpm"),
        "azure-snp from the vTPM");
  uint8_t *ev = NULL;
  size_t el = 0;
  CHECK(
      p && sh_attest_provider_evidence(p, D1, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) == 0,
      "azure-snp evidence: %s", err);
  CHECK(nv_peek(&t, 0x01400002, got, &gsize) == 0 && gsize == 64 && !memcmp(got, D1, 64),
        "D landed in 0x01400002 (defined with 64 bytes: %u)", gsize);
  CHECK(atomic_load(&f.thim_calls) == 1 && !strcmp(f.method, "GET") && f.metadata_header,
        "THIM asked once with Metadata: true (%d, %s %s)", atomic_load(&f.thim_calls), f.method,
        f.path);
  /* the encoding: {"hcl_report": the whole index, "vcek", "ask", "ark": DER from THIM} */
  struct cbor_load_result lr;
  cbor_item_t *m = ev ? cbor_load(ev, el, &lr) : NULL;
  sh_iovec hv, vv, av, rv;
  bundle_get(m, "hcl_report", &hv);
  bundle_get(m, "vcek", &vv);
  bundle_get(m, "ask", &av);
  bundle_get(m, "ark", &rv);
  CHECK(m && cbor_isa_map(m) && cbor_map_size(m) == 4, "a CBOR map of 4");
  CHECK(hv.len == sizeof hcl && !memcmp(hv.ptr, hcl, sizeof hcl),
        "hcl_report: the 2048 bytes of the index, read in chunks");
  CHECK(vv.len == vcek_len && !memcmp(vv.ptr, vcek_der, vcek_len) && av.len == ask_len &&
            !memcmp(av.ptr, ask_der, ask_len) && rv.len == ark_len &&
            !memcmp(rv.ptr, ark_der, ark_len),
        "vcek, ask, ark: THIM's PEM as DER");
  if (m) cbor_decref(&m);
  /* sh_attest_verify accepts it, bound to n1 (the test ARK stands for AMD's) */
  sh_iovec roots[1] = {{.ptr = ark_der, .len = ark_len}};
  sh_attest_options o = {
      .at = AT, .extra_roots = roots, .nextra_roots = 1, .nonce = n1, .nonce_len = 32};
  sh_attest_result *r = NULL;
  sh_attest_reason rs = ev ? run(ev, el, SH_TEE_AZURE_SNP, &o, &r) : SH_ATTEST_MISSING;
  CHECK(rs == SH_ATTEST_OK, "azure-snp verifies, bound to n1: %s", r ? r->message : "no evidence");
  CHECK(r && r->user_data_len == 64 && !memcmp(r->user_data, D1, 64), "user-data = D1");
  sh_attest_result_free(r);
  o.nonce = n2;
  CHECK(ev && run(ev, el, SH_TEE_AZURE_SNP, &o, NULL) == SH_ATTEST_BINDING_MISMATCH,
        "another nonce: binding_mismatch");
  free(ev);
  /* 0x01400002 of another size: undefined and defined again with 64 bytes; THIM's certificates
   * are kept for the same chip and TCB */
  CHECK(nv_provision(&t, 0x01400002, NULL, 32) == 0, "0x01400002 with 32 bytes");
  ev = NULL;
  CHECK(
      p && sh_attest_provider_evidence(p, D1, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) == 0,
      "evidence again: %s", err);
  CHECK(nv_peek(&t, 0x01400002, got, &gsize) == 0 && gsize == 64 && !memcmp(got, D1, 64),
        "0x01400002 redefined with 64 bytes (%u) holding D1", gsize);
  CHECK(atomic_load(&f.thim_calls) == 1, "THIM not asked again (%d)", atomic_load(&f.thim_calls));
  free(ev);
  /* D2: written, but the stored report still carries D1 (no paravisor here): refused */
  ev = NULL;
  CHECK(
      p &&
          sh_attest_provider_evidence(p, D2, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) < 0 &&
          !ev,
      "a report without D handed out");
  CHECK(contains(err, "does not carry") && contains(err, "0x01400001"), "message: %s", err);
  CHECK(nv_peek(&t, 0x01400002, got, &gsize) == 0 && !memcmp(got, D2, 64), "D2 landed");
  /* user-data = D1 but a runtime JSON the SNP report does not bind (as a read straddling the
   * paravisor's rewrite would see it): refused, never handed out */
  uint8_t torn[HCL_SIZE];
  memcpy(torn, hcl, sizeof torn);
  uint8_t *vm = memmem(torn, sizeof torn, "shield-test", 11);
  CHECK(vm != NULL, "the runtime JSON's vmUniqueId");
  if (vm) vm[0] = 'S';
  CHECK(nv_provision(&t, 0x01400001, torn, sizeof torn) == 0, "provision the torn report");
  ev = NULL;
  CHECK(
      p &&
          sh_attest_provider_evidence(p, D1, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) < 0 &&
          !ev,
      "a report whose runtime data is not bound handed out");
  CHECK(contains(err, "does not bind its runtime data"), "message: %s", err);
  CHECK(nv_provision(&t, 0x01400001, hcl, sizeof hcl) == 0, "provision 0x01400001 again");
  sh_attest_provider_free(p);
  /* THIM failing: its status and body in the message */
  f.thim_status = 503;
  p = NULL;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0, "azure-snp: %s", err);
  ev = NULL;
  CHECK(
      p &&
          sh_attest_provider_evidence(p, D1, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) < 0 &&
          !ev,
      "evidence without THIM");
  CHECK(contains(err, "503") && contains(err, "THIM is busy"), "message: %s", err);
  sh_attest_provider_free(p);
  f.thim_status = 200;
  /* auto: the vTPM's HCL report says azure-snp; azure-tdx named on it is refused */
  cfg.tee = SH_ATTEST_TEE_AUTO;
  p = NULL;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0 &&
            sh_attest_provider_tee(p) == SH_TEE_AZURE_SNP,
        "auto picked azure-snp: %s", err);
  sh_attest_provider_free(p);
  cfg.tee = SH_TEE_AZURE_TDX;
  p = NULL;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) < 0 && contains(err, "azure-snp"),
        "azure-tdx on an SNP report: %s", err);

  /* azure-tdx: the HCL report's TDREPORT quoted through IMDS */
  if (vdir) {
    tdx_env e;
    tdx_env_init(&e);
    uint8_t n3[32], D3[64];
    rand_D(n3, NULL, 0, D3);
    size_t ql = 0;
    uint8_t *q = hcl_tdx(&e, D3, hcl, &ql);
    f.tdreport = hcl + 0x20;
    f.quote = q;
    f.quote_len = ql;
    CHECK(nv_provision(&t, 0x01400001, hcl, sizeof hcl) == 0, "provision the TDX report");
    p = NULL;
    CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0, "azure-tdx: %s", err);
    ev = NULL;
    CHECK(p && sh_attest_provider_evidence(p, D3, NULL, 0, NULL, 0, AT, &ev, &el, err,
                                           sizeof err) == 0,
          "azure-tdx evidence: %s", err);
    CHECK(atomic_load(&f.quote_calls) == 1 && !strcmp(f.method, "POST") &&
              !strcmp(f.path, "/acc/tdquote") && f.metadata_header && f.json_type,
          "POST /acc/tdquote with Metadata and JSON (%s %s)", f.method, f.path);
    CHECK(f.report_matches, "{\"report\": base64url(the HCL report's TDREPORT)}");
    m = ev ? cbor_load(ev, el, &lr) : NULL;
    sh_iovec tq;
    bundle_get(m, "hcl_report", &hv);
    bundle_get(m, "td_quote", &tq);
    CHECK(m && cbor_map_size(m) == 2 && hv.len == sizeof hcl && !memcmp(hv.ptr, hcl, sizeof hcl) &&
              tq.len == ql && !memcmp(tq.ptr, q, ql),
          "{\"hcl_report\", \"td_quote\"}");
    if (m) cbor_decref(&m);
    sh_attest_options to = tdx_options(&e, n3);
    r = NULL;
    rs = ev ? run(ev, el, SH_TEE_AZURE_TDX, &to, &r) : SH_ATTEST_MISSING;
    CHECK(rs == SH_ATTEST_OK, "azure-tdx verifies, bound to n3: %s", r ? r->message : "");
    sh_attest_result_free(r);
    free(ev);
    /* a quote that is not of this TDREPORT is never handed out */
    uint8_t *other = malloc(ql);
    memcpy(other, q, ql);
    other[48 + 520] ^= 1;
    f.quote = other;
    ev = NULL;
    CHECK(p &&
              sh_attest_provider_evidence(p, D3, NULL, 0, NULL, 0, AT, &ev, &el, err, sizeof err) <
                  0 &&
              !ev,
          "another quote handed out");
    CHECK(contains(err, "REPORT_DATA"), "message: %s", err);
    sh_attest_provider_free(p);
    free(other);
    free(q);
    tdx_env_free(&e);
  }
  imds_stop(&f);
  tpm_close(&t);
  swtpm_stop(&s);
}

/* ---------------- simulated, auto, absent TEEs ---------------- */

static void test_simulated(const char *sim_dir, sh_iovec *sim_root) {
  char err[512] = "";
  sh_attest_provider_config cfg = {.tee = SH_TEE_SIMULATED, .simulated_dir = sim_dir, .now = AT};
  sh_attest_provider *p = NULL;
  sh_attest_provider_config no_clock = cfg;
  no_clock.now = 0; /* the library never reads the clock: the caller must say what time it is */
  CHECK(sh_attest_provider_open(&no_clock, &p, err, sizeof err) == -1 && !p && strstr(err, "now"),
        "simulated without `now` refused: %s", err);
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) == 0, "simulated: %s", err);
  CHECK(p && sh_attest_provider_tee(p) == SH_TEE_SIMULATED, "tee");
  uint8_t n[32], D[64], k[44], *ev = NULL;
  size_t el = 0;
  RAND_bytes(k, sizeof k);
  rand_D(n, k, sizeof k, D);
  CHECK(p && sh_attest_provider_evidence(p, D, n, 32, k, sizeof k, AT, &ev, &el, err, sizeof err) ==
                 0,
        "simulated evidence: %s", err);
  sh_attest_options o = simulated_options(sim_root, n, k, sizeof k);
  sh_attest_result *r = NULL;
  CHECK(ev && run(ev, el, SH_TEE_SIMULATED, &o, &r) == SH_ATTEST_OK, "our verifier accepts it");
  CHECK(r && r->tee == SH_TEE_SIMULATED && r->user_data_len == 64 && !memcmp(r->user_data, D, 64),
        "user_data = D");
  sh_attest_result_free(r);
  o.trust_simulated = 0;
  CHECK(ev && run(ev, el, SH_TEE_SIMULATED, &o, NULL) == SH_ATTEST_ROOT_UNTRUSTED,
        "untrusted without trust_simulated");
  free(ev);
  D[5] ^= 1;
  ev = NULL;
  CHECK(p &&
            sh_attest_provider_evidence(p, D, n, 32, k, sizeof k, AT, &ev, &el, err, sizeof err) <
                0 &&
            !ev,
        "D that is not D(n, k)");
  CHECK(contains(err, "binding digest"), "message: %s", err);
  sh_attest_provider_free(p);
}

static void absent(sh_tee tee, const char *root, const char *want, const char *want2) {
  char err[1024] = "";
  char qgs[700];
  snprintf(qgs, sizeof qgs, "unix:%s/no-qgs.sock", root); /* not the host's vsock QGS */
  sh_attest_provider_config cfg = {.tee = tee, .root = root, .tdx_qgs = qgs};
  sh_attest_provider *p = NULL;
  int rc = sh_attest_provider_open(&cfg, &p, err, sizeof err);
  CHECK(rc < 0 && !p, "%s absent opened", sh_tee_name(tee));
  CHECK(contains(err, want) && (!want2 || contains(err, want2)), "%s: %s (want %s)",
        sh_tee_name(tee), err, want);
  sh_attest_provider_free(p);
}

static void test_absent_and_auto(const char *sim_dir) {
  char root[512], path[700], err[1024] = "";
  tree("empty", root, sizeof root);
  /* auto on a machine with no TEE: refused, and a dev root present changes nothing */
  sh_attest_provider_config cfg = {
      .tee = SH_ATTEST_TEE_AUTO, .root = root, .simulated_dir = sim_dir};
  sh_attest_provider *p = NULL;
  CHECK(sh_attest_provider_open(&cfg, &p, err, sizeof err) < 0 && !p, "auto never picks simulated");
  CHECK(contains(err, "no TEE found") && contains(err, "never chosen"), "message: %s", err);
  /* a TEE named but absent: the message names the device */
  snprintf(path, sizeof path, "%s/dev/nsm", root);
  absent(SH_TEE_NITRO, root, path, NULL);
  snprintf(path, sizeof path, "%s/dev/sev-guest", root);
  absent(SH_TEE_SEV_SNP, root, path, "/sys/kernel/config/tsm/report");
  snprintf(path, sizeof path, "%s/dev/tdx_guest", root);
  absent(SH_TEE_TDX, root, path, "/sys/kernel/config/tsm/report");
  snprintf(path, sizeof path, "%s/dev/attestation/attestation_type", root);
  absent(SH_TEE_SGX, root, path, NULL);
  snprintf(path, sizeof path, "%s/run/container_launcher/teeserver.sock", root);
  absent(SH_TEE_GCP, root, path, NULL);
  snprintf(path, sizeof path, "%s/dev/tpmrm0", root);
  absent(SH_TEE_AZURE_SNP, root, path, "No such file");
  absent(SH_TEE_AZURE_TDX, root, path, "not an Azure confidential VM");
  /* /dev/tdx_guest without configfs-tsm: a TDREPORT is not a quote */
  snprintf(path, sizeof path, "%s/dev", root);
  mkdirs(path);
  snprintf(path, sizeof path, "%s/dev/tdx_guest", root);
  put_file(path, "", 0);
  absent(SH_TEE_TDX, root, "needs configfs-tsm", "6.7");
  absent(SH_ATTEST_TEE_AUTO, root, "needs configfs-tsm", "/dev/tdx_guest");
  unlink(path);
}

int main(void) {
  char why[512];
  vectors_init(why, sizeof why);
  snprintf(ROOT, sizeof ROOT, "/tmp/shield-provider-XXXXXX");
  if (!mkdtemp(ROOT)) return 1;
  char sim_dir[600], err[256];
  snprintf(sim_dir, sizeof sim_dir, "%s/sim", ROOT);
  uint8_t *sim_der = NULL;
  size_t sim_len = 0;
  CHECK(sh_attest_simulated_root(sim_dir, 1, AT, &sim_der, &sim_len, err, sizeof err) == 0, "%s",
        err);
  sh_iovec sim_root = {.ptr = sim_der, .len = sim_len};
  pki_init();
  test_simulated(sim_dir, &sim_root);
  test_absent_and_auto(sim_dir);
  test_tsm_snp();
  test_tsm_tdx();
  test_sev_guest();
  test_nsm(sim_dir, &sim_root);
  test_gramine();
  test_gcp();
  test_tdx_guest_qgs();
  test_azure_vtpm();
  pki_free();
  free(sim_der);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", ROOT);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", ROOT);
  return vdir ? test_summary() : test_summary_skip(why);
}
