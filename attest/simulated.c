/* attest/simulated.c — the simulated TEE (docs/protocol.md §1.7): a local dev root and
 * Nitro-format evidence signed under it, for development and tests.
 *
 * Why Nitro's format: the verifier, the policy keys (PCRs) and the client libraries already
 * speak it, so a simulated client exercises the same parsing and binding code as a real one.
 * What makes it distinguishable: the protected header carries kid (label 4) =
 * h'shield-simulated', which the Nitro verifier recognises and refuses with root_untrusted
 * unless the caller trusts simulated TEEs explicitly (sh_attest_options.trust_simulated), and
 * the chain must end at this machine's dev root, never at the AWS root.
 *
 * Storage: one PEM file (private key then certificate), dir/simulated-root.pem, 0600 in a
 * 0700 directory.  Creation writes a temporary file in the same directory and link()s it to
 * the final name: link fails with EEXIST when another process won the race, and then that
 * process's root is used (no torn or mixed files, no overwrite).
 */
#include "internal.h"

#include <cbor.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SIM_KID "shield-simulated"
#define SIM_ROOT_FILE "simulated-root.pem"
#define SIM_ROOT_DAYS 3650

static int errf(char *err, size_t errlen, const char *fmt, const char *what) {
  if (err && errlen) snprintf(err, errlen, fmt, what ? what : "");
  return -1;
}

/* mkdir -p with mode 0700 for the components we create. */
static int mkdirs(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf) return -1;
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] == '/' || buf[i] == 0) {
      char c = buf[i];
      buf[i] = 0;
      if (mkdir(buf, 0700) < 0 && errno != EEXIST) return -1;
      buf[i] = c;
    }
  }
  return 0;
}

static int default_dir(char *out, size_t n) {
  const char *x = getenv("XDG_DATA_HOME");
  const char *h = getenv("HOME");
  int w;
  if (x && x[0] == '/')
    w = snprintf(out, n, "%s/shield", x);
  else if (h && h[0])
    w = snprintf(out, n, "%s/.local/share/shield", h);
  else
    return -1;
  return (w > 0 && (size_t)w < n) ? 0 : -1;
}

static X509_NAME *cn_name(const char *cn) {
  X509_NAME *nm = X509_NAME_new();
  if (nm &&
      !X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0)) {
    X509_NAME_free(nm);
    return NULL;
  }
  return nm;
}

static EVP_PKEY *p384_key(void) {
  return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  int ok = e && X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
  return ok;
}

/* A certificate for `key` issued by (issuer, ikey); issuer NULL: self-signed CA. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *ikey,
                       int64_t not_before, int64_t not_after, int ca) {
  X509 *x = X509_new();
  X509_NAME *nm = cn_name(cn);
  uint8_t serial[16];
  BIGNUM *bn = NULL;
  ASN1_INTEGER *sn = NULL;
  int ok = x && nm && RAND_bytes(serial, sizeof serial) == 1;
  if (ok) {
    serial[0] &= 0x7f;
    ok = (bn = BN_bin2bn(serial, sizeof serial, NULL)) && (sn = BN_to_ASN1_INTEGER(bn, NULL)) &&
         X509_set_version(x, 2) && X509_set_serialNumber(x, sn) && X509_set_subject_name(x, nm) &&
         X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : nm) &&
         ASN1_TIME_set(X509_getm_notBefore(x), (time_t)not_before) &&
         ASN1_TIME_set(X509_getm_notAfter(x), (time_t)not_after) && X509_set_pubkey(x, key) &&
         add_ext(x, issuer ? issuer : x, NID_basic_constraints,
                 ca ? "critical,CA:TRUE" : "critical,CA:FALSE") &&
         add_ext(x, issuer ? issuer : x, NID_key_usage,
                 ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature") &&
         add_ext(x, issuer ? issuer : x, NID_subject_key_identifier, "hash") &&
         (!issuer || add_ext(x, issuer, NID_authority_key_identifier, "keyid:always")) &&
         X509_sign(x, ikey ? ikey : key, EVP_sha384()) > 0;
  }
  BN_free(bn);
  ASN1_INTEGER_free(sn);
  X509_NAME_free(nm);
  if (!ok) {
    X509_free(x);
    return NULL;
  }
  return x;
}

/* Reads dir/simulated-root.pem: key and cert.  Returns 0, 1 when absent, -1 when unusable. */
static int read_root(const char *path, EVP_PKEY **key, X509 **cert) {
  FILE *f = fopen(path, "rb");
  if (!f) return errno == ENOENT ? 1 : -1;
  *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  *cert = *key ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  fclose(f);
  if (!*key || !*cert) {
    EVP_PKEY_free(*key);
    X509_free(*cert);
    *key = NULL;
    *cert = NULL;
    return -1;
  }
  return 0;
}

static int create_root(const char *dir, const char *path, int64_t now) {
  char tmp[4200];
  EVP_PKEY *k = p384_key();
  /* `now` (the caller's clock: the library never reads it) only dates a new dev root.
   * notBefore is 2000-01-01 so evidence made for a pinned past clock (--at) still chains. */
  X509 *c = k ? make_cert(k, "Shield simulated TEE dev root", NULL, NULL, 946684800,
                          now + (int64_t)SIM_ROOT_DAYS * 86400, 1)
              : NULL;
  int rc = -1, fd = -1;
  FILE *f = NULL;
  if (!c || snprintf(tmp, sizeof tmp, "%s/.simulated-root.XXXXXX", dir) >= (int)sizeof tmp)
    goto out;
  if ((fd = mkstemp(tmp)) < 0) goto out;
  if (fchmod(fd, 0600) < 0 || !(f = fdopen(fd, "wb"))) {
    close(fd);
    unlink(tmp);
    goto out;
  }
  int ok = PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) && PEM_write_X509(f, c) &&
           fflush(f) == 0 && fsync(fileno(f)) == 0;
  if (fclose(f) != 0) ok = 0;
  if (ok && link(tmp, path) < 0 && errno != EEXIST) ok = 0;
  unlink(tmp);
  rc = ok ? 0 : -1;
out:
  X509_free(c);
  EVP_PKEY_free(k);
  return rc;
}

static int load_root(const char *dir_in, int create, int64_t now, EVP_PKEY **key, X509 **cert,
                     char path[SH_SIM_ROOT_PATH_MAX], char *err, size_t errlen) {
  char dir[4096];
  *key = NULL;
  *cert = NULL;
  if (dir_in) {
    if (snprintf(dir, sizeof dir, "%s", dir_in) >= (int)sizeof dir)
      return errf(err, errlen, "dev root: directory name too long%s", NULL);
  } else if (default_dir(dir, sizeof dir) < 0) {
    return errf(err, errlen, "dev root: neither XDG_DATA_HOME nor HOME is set%s", NULL);
  }
  snprintf(path, SH_SIM_ROOT_PATH_MAX, "%s/" SIM_ROOT_FILE, dir);
  int rc = read_root(path, key, cert);
  if (rc == 0) return 0;
  if (rc < 0)
    return errf(err, errlen, "dev root: %s is unreadable or not a key + certificate", path);
  if (!create)
    return errf(err, errlen, "dev root: %s does not exist (run `shield dev-root`)", path);
  if (mkdirs(dir) < 0 || create_root(dir, path, now) < 0)
    return errf(err, errlen, "dev root: cannot create %s", path);
  if (read_root(path, key, cert) != 0)
    return errf(err, errlen, "dev root: %s is unreadable after creation", path);
  return 0;
}

int sh_attest_simulated_root(const char *dir, int create, int64_t now, uint8_t **der,
                             size_t *der_len, char *err, size_t errlen) {
  EVP_PKEY *k;
  X509 *c;
  *der = NULL;
  *der_len = 0;
  if (create && now <= 0)
    return errf(err, errlen, "dev root: creating one needs the current time%s", NULL);
  char path[SH_SIM_ROOT_PATH_MAX];
  if (load_root(dir, create, now, &k, &c, path, err, errlen) < 0) return -1;
  unsigned char *p = NULL;
  int n = i2d_X509(c, &p);
  EVP_PKEY_free(k);
  X509_free(c);
  if (n <= 0) return errf(err, errlen, "dev root: cannot encode%s", NULL);
  *der = malloc((size_t)n);
  if (*der) memcpy(*der, p, (size_t)n);
  OPENSSL_free(p);
  if (!*der) return errf(err, errlen, "out of memory%s", NULL);
  *der_len = (size_t)n;
  return 0;
}

/* ---- COSE_Sign1 encoding ---- */

static int map_add(cbor_item_t *m, cbor_item_t *k, cbor_item_t *v) {
  int ok = k && v && cbor_map_add(m, (struct cbor_pair){.key = k, .value = v});
  if (k) cbor_decref(&k);
  if (v) cbor_decref(&v);
  return ok;
}

static cbor_item_t *bstr(const uint8_t *p, size_t n) {
  return cbor_build_bytestring(p ? p : (const uint8_t *)"", n);
}

static cbor_item_t *bstr_or_null(const uint8_t *p, size_t n) {
  return p ? bstr(p, n) : cbor_new_null();
}

static int der_of(X509 *x, unsigned char **p, int *n) {
  *p = NULL;
  *n = i2d_X509(x, p);
  return *n > 0;
}

/* Serialises item into a fresh buffer.  Returns the length, 0 on failure. */
static size_t serialize(cbor_item_t *it, unsigned char **buf) {
  size_t cap = 0;
  *buf = NULL;
  return it ? cbor_serialize_alloc(it, buf, &cap) : 0;
}

/* The dev root held by a provider (internal.h): read once at open, because parsing its P-384
 * private key costs about as much as one signature, a fifth of making evidence. */
int sh_attest__sim_root_load(const char *dir, int64_t now, sh_attest__sim_root *r, char *err,
                             size_t errlen) {
  memset(r, 0, sizeof *r);
  if (load_root(dir, 1, now, &r->key, &r->cert, r->path, err, errlen) < 0) return -1;
  struct stat st;
  if (stat(r->path, &st) == 0) {
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    r->size = st.st_size;
    r->mtime = st.st_mtim;
  }
  int n = 0;
  if (!der_of(r->cert, &r->der, &n)) {
    sh_attest__sim_root_free(r);
    return errf(err, errlen, "dev root: cannot encode%s", NULL);
  }
  r->der_len = (size_t)n;
  return 0;
}

/* One stat(2) (~1 µs): a dev root regenerated or damaged since it was loaded is read again by
 * the caller, so the file stays the truth as when every evidence read it. */
int sh_attest__sim_root_current(const sh_attest__sim_root *r) {
  struct stat st;
  return r->key && stat(r->path, &st) == 0 && st.st_dev == r->dev && st.st_ino == r->ino &&
         st.st_size == r->size && st.st_mtim.tv_sec == r->mtime.tv_sec &&
         st.st_mtim.tv_nsec == r->mtime.tv_nsec;
}

void sh_attest__sim_root_free(sh_attest__sim_root *r) {
  EVP_PKEY_free(r->key);
  X509_free(r->cert);
  OPENSSL_free(r->der);
  memset(r, 0, sizeof *r);
}

int sh_attest_simulated_evidence(const sh_attest_sim_params *p, uint8_t **out, size_t *out_len,
                                 char *err, size_t errlen) {
  sh_attest__sim_root r;
  *out = NULL;
  *out_len = 0;
  if (!p || p->at <= 0) return errf(err, errlen, "simulated: an explicit time is required%s", NULL);
  if (sh_attest__sim_root_load(p->dir, p->now > 0 ? p->now : p->at, &r, err, errlen) < 0) return -1;
  int rc = sh_attest__simulated_evidence_with(p, &r, out, out_len, err, errlen);
  sh_attest__sim_root_free(&r);
  return rc;
}

int sh_attest__simulated_evidence_with(const sh_attest_sim_params *p, const sh_attest__sim_root *r,
                                       uint8_t **out, size_t *out_len, char *err, size_t errlen) {
  EVP_PKEY *lk = NULL;
  X509 *leaf = NULL;
  cbor_item_t *doc = NULL, *prot = NULL, *cose = NULL;
  unsigned char *leaf_der = NULL, *payload = NULL, *protb = NULL, *tbs = NULL, *sigder = NULL,
                *outb = NULL;
  size_t payload_len = 0, prot_len = 0, tbs_len = 0, out_n = 0, siglen = 0;
  int leaf_n = 0, rc = -1;
  EVP_MD_CTX *md = NULL;
  ECDSA_SIG *es = NULL;
  *out = NULL;
  *out_len = 0;
  if (!p || p->at <= 0) return errf(err, errlen, "simulated: an explicit time is required%s", NULL);
  if ((p->nonce && p->nonce_len > 512) || (p->public_key && p->public_key_len > 1024))
    return errf(err, errlen, "simulated: nonce or public key too long (NSM limits)%s", NULL);
  int64_t life = p->lifetime > 0 ? p->lifetime : 3 * 3600;
  if (!(lk = p384_key()) ||
      !(leaf = make_cert(lk, "Shield simulated enclave", r->cert, r->key, p->at - 60, p->at + life,
                         0)) ||
      !der_of(leaf, &leaf_der, &leaf_n)) {
    errf(err, errlen, "simulated: cannot make the leaf certificate%s", NULL);
    goto out;
  }
  uint8_t D[64];
  const uint8_t *ud = NULL;
  if (p->nonce) {
    if (sh_attest_binding_digest(p->nonce, p->nonce_len, p->public_key,
                                 p->public_key ? p->public_key_len : 0, D) < 0)
      goto out;
    ud = D;
  }
  /* payload: the Nitro attestation document (NSM API), in the order AWS emits it */
  doc = cbor_new_definite_map(9);
  cbor_item_t *pcrs = cbor_new_definite_map(p->debug ? 4 : 4);
  cbor_item_t *cab = cbor_new_definite_array(1);
  int ok = doc && pcrs && cab;
  for (int i = 0; ok && i < 4; i++) {
    uint8_t v[48];
    /* defaults: PCRi = SHA-384("shield-simulated-pcr" ‖ i), PCR0 zero when debug */
    unsigned char tag[32];
    int tn = snprintf((char *)tag, sizeof tag, "shield-simulated-pcr%d", i);
    ok = EVP_Digest(tag, (size_t)tn, v, NULL, EVP_sha384(), NULL);
    if (p->pcrs[i]) memcpy(v, p->pcrs[i], 48);
    if (i == 0 && p->debug) memset(v, 0, 48);
    ok = ok && map_add(pcrs, cbor_build_uint8((uint8_t)i), bstr(v, 48));
  }
  ok = ok && cbor_array_push(cab, cbor_move(bstr(r->der, r->der_len)));
  ok = ok &&
       map_add(doc, cbor_build_string("module_id"), cbor_build_string("i-shield-simulated-enc0")) &&
       map_add(doc, cbor_build_string("digest"), cbor_build_string("SHA384")) &&
       map_add(doc, cbor_build_string("timestamp"), cbor_build_uint64((uint64_t)p->at * 1000u)) &&
       map_add(doc, cbor_build_string("pcrs"), pcrs) &&
       map_add(doc, cbor_build_string("certificate"), bstr(leaf_der, (size_t)leaf_n)) &&
       map_add(doc, cbor_build_string("cabundle"), cab) &&
       map_add(doc, cbor_build_string("public_key"),
               bstr_or_null(p->public_key, p->public_key_len)) &&
       map_add(doc, cbor_build_string("user_data"), bstr_or_null(ud, 64)) &&
       map_add(doc, cbor_build_string("nonce"), bstr_or_null(p->nonce, p->nonce_len));
  pcrs = cab = NULL; /* owned by doc now (or freed by map_add) */
  if (!ok || !(payload_len = serialize(doc, &payload))) {
    errf(err, errlen, "simulated: cannot encode the document%s", NULL);
    goto out;
  }
  /* protected header {1: -35 (ES384), 4: h'shield-simulated'} (RFC 9052 §3.1: kid is bstr) */
  prot = cbor_new_definite_map(2);
  if (!prot || !map_add(prot, cbor_build_uint8(1), cbor_build_negint8(34)) ||
      !map_add(prot, cbor_build_uint8(4), bstr((const uint8_t *)SIM_KID, strlen(SIM_KID))) ||
      !(prot_len = serialize(prot, &protb)))
    goto out;
  /* Sig_structure ["Signature1", protected, h'', payload] (RFC 9052 §4.4) */
  cbor_item_t *ss = cbor_new_definite_array(4);
  ok = ss && cbor_array_push(ss, cbor_move(cbor_build_string("Signature1"))) &&
       cbor_array_push(ss, cbor_move(bstr(protb, prot_len))) &&
       cbor_array_push(ss, cbor_move(bstr(NULL, 0))) &&
       cbor_array_push(ss, cbor_move(bstr(payload, payload_len)));
  tbs_len = ok ? serialize(ss, &tbs) : 0;
  if (ss) cbor_decref(&ss);
  if (!tbs_len || !(md = EVP_MD_CTX_new()) ||
      EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, lk) != 1 ||
      EVP_DigestSign(md, NULL, &siglen, tbs, tbs_len) != 1 || !(sigder = OPENSSL_malloc(siglen)) ||
      EVP_DigestSign(md, sigder, &siglen, tbs, tbs_len) != 1)
    goto out;
  const unsigned char *sp = sigder;
  uint8_t raw[96];
  const BIGNUM *br, *bs;
  if (!(es = d2i_ECDSA_SIG(NULL, &sp, (long)siglen))) goto out;
  ECDSA_SIG_get0(es, &br, &bs);
  if (BN_bn2binpad(br, raw, 48) != 48 || BN_bn2binpad(bs, raw + 48, 48) != 48) goto out;
  cose = cbor_new_definite_array(4);
  ok = cose && cbor_array_push(cose, cbor_move(bstr(protb, prot_len))) &&
       cbor_array_push(cose, cbor_move(cbor_new_definite_map(0))) &&
       cbor_array_push(cose, cbor_move(bstr(payload, payload_len))) &&
       cbor_array_push(cose, cbor_move(bstr(raw, 96)));
  if (!ok || !(out_n = serialize(cose, &outb))) goto out;
  /* tagged COSE_Sign1 (tag 18 = 0xD2), as the NSM emits it */
  if (!(*out = malloc(out_n + 1))) goto out;
  (*out)[0] = 0xD2;
  memcpy(*out + 1, outb, out_n);
  *out_len = out_n + 1;
  rc = 0;
out:
  if (rc < 0 && err && errlen && !err[0])
    errf(err, errlen, "simulated: cannot sign the document%s", NULL);
  if (doc) cbor_decref(&doc);
  if (prot) cbor_decref(&prot);
  if (cose) cbor_decref(&cose);
  ECDSA_SIG_free(es);
  OPENSSL_free(sigder);
  EVP_MD_CTX_free(md);
  free(payload);
  free(protb);
  free(tbs);
  free(outb);
  OPENSSL_free(leaf_der);
  X509_free(leaf);
  EVP_PKEY_free(lk);
  ERR_clear_error();
  return rc;
}

/* ---- verification support (nitro.c) ---- */

/* kid of a simulated document's protected header. */
const char sh_attest__simulated_kid[] = SIM_KID;

/* The anchor for simulated evidence: options.simulated_root, or the local dev root (never
 * created here: verifying must not mint a root).  Returns a new X509 or NULL. */
/*
 * Why a cache: every simulated evidence needs the dev root's certificate, and loading it
 * meant opening the PEM file and decoding its P-384 private key and certificate on every
 * verification: a large share of a header-mode request.  The parsed certificate is kept with
 * the file's identity (device, inode, size, mtime) and read again when the file changes, so a
 * dev root that is replaced is still picked up; a file that is gone or unreadable is no anchor.
 */
static struct {
  pthread_mutex_t mu;
  char path[4200];
  struct stat st;
  X509 *cert; /* owned */
} anchor_cache = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int same_file(const struct stat *a, const struct stat *b) {
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
         a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* The default dev root's certificate (a new reference), or NULL. */
static X509 *default_anchor(void) {
  char dir[4096], path[4200];
  struct stat st;
  if (default_dir(dir, sizeof dir) < 0 ||
      snprintf(path, sizeof path, "%s/" SIM_ROOT_FILE, dir) >= (int)sizeof path ||
      stat(path, &st) < 0)
    return NULL;
  X509 *out = NULL;
  pthread_mutex_lock(&anchor_cache.mu);
  if (!anchor_cache.cert || strcmp(anchor_cache.path, path) != 0 ||
      !same_file(&anchor_cache.st, &st)) {
    EVP_PKEY *k = NULL;
    X509 *c = NULL;
    X509_free(anchor_cache.cert);
    anchor_cache.cert = NULL;
    if (read_root(path, &k, &c) == 0) {
      anchor_cache.cert = c;
      anchor_cache.st = st;
      snprintf(anchor_cache.path, sizeof anchor_cache.path, "%s", path);
    }
    EVP_PKEY_free(k);
  }
  if (anchor_cache.cert && X509_up_ref(anchor_cache.cert)) out = anchor_cache.cert;
  pthread_mutex_unlock(&anchor_cache.mu);
  return out;
}

X509 *sh_attest__simulated_anchor(const sh_attest_options *o) {
  if (o->simulated_root) {
    STACK_OF(X509) *sk = sh_attest__x509_parse_many(o->simulated_root, 1);
    X509 *x = sk && sk_X509_num(sk) == 1 ? sk_X509_shift(sk) : NULL;
    sk_X509_pop_free(sk, X509_free);
    return x;
  }
  return default_anchor();
}
