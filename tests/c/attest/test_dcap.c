/* tests/c/attest/test_dcap.c — attest/ Intel TDX and SGX DCAP: the shared vectors at their times
 * and today, the PCS directory collateral form, decoded-byte mutations of quotes and collateral,
 * and negatives built at test time with a test Intel-like PKI (root CA, PCK Platform CA, PCK
 * certificate carrying the real SGX extensions, TCB signing certificate, CRLs, quotes signed
 * with test keys).  Prints "N passed, N failed"; exits non-zero on failure, 77 (skip) without
 * the shared vectors folder. */
#include "testutil.h"
#include "attest_util.h" /* run(), add_ext() */

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RN(x) (sh_attest_reason_name(x) ? sh_attest_reason_name(x) : "ok")

static int64_t NOW;

static sh_attest_policy *policy(const char *text) {
  sh_attest_policy *p = NULL;
  char eb[256];
  if (sh_attest_policy_load(text, strlen(text), &p, eb, sizeof eb) < 0)
    fprintf(stderr, "policy: %s\n", eb);
  return p;
}

static const char SGX_OPT_IN[] =
    "{\"version\": 1, \"sgx\": {\"tcb_statuses\": [\"UpToDate\", \"SWHardeningNeeded\", "
    "\"ConfigurationAndSWHardeningNeeded\"], \"allowed_advisories\": [\"INTEL-SA-00289\", "
    "\"INTEL-SA-00615\"]}}";

/* ---------- the shared vectors ---------- */
typedef struct dvec {
  const char *quote, *col, *at;
  sh_tee tee;
  sh_attest_reason want;
  const char *status;
  const char *pol;
} dvec;

static const dvec vecs[] = {
    {"tdx/tdx_quote", "tdx/tdx_quote_collateral.json", "2025-06-20T00:00:00Z", SH_TEE_TDX,
     SH_ATTEST_OK, "UpToDate", NULL},
    {"tdx/tdx_quote", "tdx/tdx_quote_collateral.json", "2025-06-19T10:32:27Z", SH_TEE_TDX,
     SH_ATTEST_OK, "UpToDate", NULL},
    {"tdx/tdx_quote", "tdx/tdx_quote_collateral.json", "2025-07-19T10:00:34Z", SH_TEE_TDX,
     SH_ATTEST_OK, "UpToDate", NULL},
    {"tdx/tdx_quote", "tdx/tdx_quote_collateral.json", "2025-06-19T10:32:26Z", SH_TEE_TDX,
     SH_ATTEST_COLLATERAL_STALE, NULL, NULL},
    {"tdx/tdx_quote", "tdx/tdx_quote_collateral.json", "2025-07-19T10:16:03Z", SH_TEE_TDX,
     SH_ATTEST_COLLATERAL_STALE, NULL, NULL},
    {"tdx/tdx_quote", "tdx/tdx_quote_collateral.json", NULL, SH_TEE_TDX, SH_ATTEST_COLLATERAL_STALE,
     NULL, NULL},
    {"tdx/tdx_quote", NULL, "2025-06-20T00:00:00Z", SH_TEE_TDX, SH_ATTEST_COLLATERAL_MISSING, NULL,
     NULL},
    {"tdx/tdx_quote", "sgx/sgx_quote_collateral.json", "2025-06-20T00:00:00Z", SH_TEE_TDX,
     SH_ATTEST_COLLATERAL_MISSING, NULL, NULL},
    {"tdx/tdx_quote", "tdx/tdx_quote_collateral.json", "2025-06-20T00:00:00Z", SH_TEE_SGX,
     SH_ATTEST_MALFORMED, NULL, NULL},
    {"sgx/sgx_quote", "sgx/sgx_quote_collateral.json", "2025-06-20T00:00:00Z", SH_TEE_SGX,
     SH_ATTEST_OK, "ConfigurationAndSWHardeningNeeded", SGX_OPT_IN},
    {"sgx/sgx_quote", "sgx/sgx_quote_collateral.json", "2025-06-20T00:00:00Z", SH_TEE_SGX,
     SH_ATTEST_TCB_OUT_OF_DATE, "ConfigurationAndSWHardeningNeeded", NULL},
    {"sgx/sgx_quote", "sgx/sgx_quote_collateral.json", "2025-06-20T00:00:00Z", SH_TEE_SGX,
     SH_ATTEST_TCB_OUT_OF_DATE, "ConfigurationAndSWHardeningNeeded",
     "{\"version\": 1, \"sgx\": {\"tcb_statuses\": [\"UpToDate\", "
     "\"ConfigurationAndSWHardeningNeeded\"], \"allowed_advisories\": [\"INTEL-SA-00615\"]}}"},
    {"sgx/sgx_quote", "sgx/sgx_quote_collateral.json", "2025-06-20T00:00:00Z", SH_TEE_SGX,
     SH_ATTEST_MEASUREMENT_MISMATCH, "ConfigurationAndSWHardeningNeeded",
     "{\"version\": 1, \"sgx\": {\"tcb_statuses\": [\"ConfigurationAndSWHardeningNeeded\"], "
     "\"allowed_advisories\": [\"*\"], \"mrenclave\": "
     "[\"0000000000000000000000000000000000000000000000000000000000000000\"]}}"},
    {"sgx/sgx_quote", "sgx/sgx_quote_collateral.json", "2025-06-20T00:00:00Z", SH_TEE_SGX,
     SH_ATTEST_OK, "ConfigurationAndSWHardeningNeeded",
     "{\"version\": 1, \"sgx\": {\"tcb_statuses\": [\"ConfigurationAndSWHardeningNeeded\"], "
     "\"allowed_advisories\": [\"*\"], \"mrenclave\": "
     "[\"33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb\"], \"mrsigner\": "
     "\"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"isvprodid\": [0], "
     "\"min_isvsvn\": 0}}"},
    {"sgx/sgx_quote", "sgx/sgx_quote_collateral.json", NULL, SH_TEE_SGX, SH_ATTEST_COLLATERAL_STALE,
     NULL, SGX_OPT_IN},
    {"tdx/tdx_quote_outdated", "tdx/tdx_quote_outdated_collateral.json", "2026-03-01T00:00:00Z",
     SH_TEE_TDX, SH_ATTEST_TCB_UNSUPPORTED, NULL, NULL},
    {"tdx/tdx_quote_outdated", "tdx/tdx_quote_outdated_collateral.json", NULL, SH_TEE_TDX,
     SH_ATTEST_COLLATERAL_STALE, NULL, NULL},
    {"tdx/tdx_quote_4.dat", NULL, "2025-01-01T00:00:00Z", SH_TEE_TDX, SH_ATTEST_DEBUG_NOT_ALLOWED,
     NULL, NULL},
    {"tdx/tdx_quote_4.dat", NULL, NULL, SH_TEE_TDX, SH_ATTEST_DEBUG_NOT_ALLOWED, NULL, NULL},
    {"tdx/tdx_quote_4.dat", "tdx/tdx_quote_collateral.json", "2025-06-20T00:00:00Z", SH_TEE_TDX,
     SH_ATTEST_DEBUG_NOT_ALLOWED, NULL, NULL},
};

/* Preloaded collateral handles, one per file, shared by every vector (in table order, so a
 * handle verified at one time is reused at others: its window must hold). */
static struct {
  const char *name;
  sh_attest_collateral *h;
} handles[8];
static sh_attest_collateral *handle_for(const char *name, const uint8_t *c, size_t cl) {
  size_t i = 0;
  for (; i < 8 && handles[i].name; i++)
    if (!strcmp(handles[i].name, name)) return handles[i].h;
  if (i == 8) return NULL;
  handles[i].name = name;
  handles[i].h = sh_attest_collateral_new(c, cl);
  return handles[i].h;
}

static void test_vectors(void) {
  /* every vector also through a handle, with a long-lived chain-only and a result cache */
  sh_attest_cache *shared[2] = {sh_attest_cache_new(0), sh_attest_cache_new(64)};
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < sizeof vecs / sizeof *vecs; i++) {
      const dvec *d = &vecs[i];
      if (!d->col) continue;
      size_t ql = 0, cl = 0;
      uint8_t *q = slurp(d->quote, &ql), *c = slurp(d->col, &cl);
      sh_attest_policy *p = d->pol ? policy(d->pol) : NULL;
      sh_attest_collateral *h = handle_for(d->col, c, cl);
      uint8_t want_sha[32];
      SHA256(c, cl, want_sha);
      CHECK(h && !memcmp(sh_attest_collateral_sha256(h), want_sha, 32), "handle digest");
      sh_attest_options o = {
          .at = d->at ? T(d->at) : NOW, .policy = p, .dcap_collateral = h, .cache = shared[pass]};
      sh_attest_result *r = NULL;
      sh_attest_reason got = run(q, ql, d->tee, &o, &r);
      CHECK(got == d->want, "handle, pass %d: %s at %s (%s): got %s (%s), want %s", pass, d->quote,
            d->at ? d->at : "now", d->col, RN(got), r ? r->message : "", RN(d->want));
      if (r && d->status)
        CHECK(r->tcb_status && !strcmp(r->tcb_status, d->status), "handle: %s: tcb_status %s",
              d->quote, r->tcb_status ? r->tcb_status : "(null)");
      sh_attest_result_free(r);
      /* the bytes path with the same cache says the same (and hits the handle's entries) */
      o.dcap_collateral = NULL;
      o.collateral = c;
      o.collateral_len = cl;
      CHECK(run(q, ql, d->tee, &o, &r) == d->want &&
                (d->want != SH_ATTEST_OK || pass == 0 || r->cache_hit),
            "bytes after handle, pass %d: %s at %s", pass, d->quote, d->at ? d->at : "now");
      sh_attest_result_free(r);
      sh_attest_policy_free(p);
      free(q);
      free(c);
    }
  sh_attest_cache_free(shared[0]);
  sh_attest_cache_free(shared[1]);
  for (size_t i = 0; i < 8 && handles[i].name; i++) {
    sh_attest_collateral_free(handles[i].h);
    handles[i].name = NULL;
  }
  CHECK(sh_attest_collateral_new((const uint8_t *)"{}", 0) == NULL, "empty handle refused");
  for (size_t i = 0; i < sizeof vecs / sizeof *vecs; i++) {
    const dvec *d = &vecs[i];
    size_t ql = 0, cl = 0;
    uint8_t *q = slurp(d->quote, &ql), *c = d->col ? slurp(d->col, &cl) : NULL;
    sh_attest_policy *p = d->pol ? policy(d->pol) : NULL;
    sh_attest_options o = {
        .at = d->at ? T(d->at) : NOW, .policy = p, .collateral = c, .collateral_len = cl};
    sh_attest_result *r = NULL;
    sh_attest_reason got = run(q, ql, d->tee, &o, &r);
    CHECK(got == d->want, "%s at %s (%s): got %s (%s), want %s", d->quote, d->at ? d->at : "now",
          d->col ? d->col : "no collateral", RN(got), r ? r->message : "", RN(d->want));
    if (r && d->status)
      CHECK(r->tcb_status && !strcmp(r->tcb_status, d->status), "%s: tcb_status %s", d->quote,
            r->tcb_status ? r->tcb_status : "(null)");
    if (r && d->status && !strcmp(d->status, "ConfigurationAndSWHardeningNeeded")) {
      char *a = json_dumps(r->advisories, JSON_COMPACT);
      CHECK(a && !strcmp(a, "[\"INTEL-SA-00289\",\"INTEL-SA-00615\"]"), "advisories %s", a);
      free(a);
    }
    if (r && d->want == SH_ATTEST_OK && d->tee == SH_TEE_TDX) {
      const char *mrtd = json_string_value(json_object_get(r->measurements, "MRTD"));
      CHECK(mrtd && !strncmp(mrtd, "91eb2b44d141d4ec", 16) && !r->debug, "MRTD %s", mrtd);
    }
    sh_attest_result_free(r);
    sh_attest_policy_free(p);
    free(q);
    free(c);
  }
  /* debug allowed explicitly: the debug TD then needs its collateral like any other */
  size_t ql;
  uint8_t *q = slurp("tdx/tdx_quote_4.dat", &ql);
  sh_attest_options o = {.at = T("2025-01-01T00:00:00Z"), .allow_debug = 1};
  CHECK(run(q, ql, SH_TEE_TDX, &o, NULL) == SH_ATTEST_COLLATERAL_MISSING, "debug allowed");
  free(q);
  /* binding: a presented nonce the quote does not bind */
  size_t cl;
  uint8_t *c = slurp("tdx/tdx_quote_collateral.json", &cl);
  q = slurp("tdx/tdx_quote", &ql);
  uint8_t nonce[32] = {1};
  sh_attest_options ob = {.at = T("2025-06-20T00:00:00Z"),
                          .collateral = c,
                          .collateral_len = cl,
                          .nonce = nonce,
                          .nonce_len = 32};
  CHECK(run(q, ql, SH_TEE_TDX, &ob, NULL) == SH_ATTEST_BINDING_MISMATCH, "binding");
  /* cache: a second verification is a hit and says the same */
  sh_attest_cache *cache = sh_attest_cache_new(16);
  sh_attest_options oc = {
      .at = T("2025-06-20T00:00:00Z"), .collateral = c, .collateral_len = cl, .cache = cache};
  sh_attest_result *r1 = NULL, *r2 = NULL;
  CHECK(run(q, ql, SH_TEE_TDX, &oc, &r1) == SH_ATTEST_OK &&
            run(q, ql, SH_TEE_TDX, &oc, &r2) == SH_ATTEST_OK && r2->cache_hit && r2->tcb_status &&
            !strcmp(r2->tcb_status, "UpToDate"),
        "cache hit");
  sh_attest_result_free(r1);
  sh_attest_result_free(r2);
  size_t sl;
  uint8_t *sc = slurp("sgx/sgx_quote_collateral.json", &sl);
  sh_attest_options os = oc; /* the same quote with other collateral: never the cached verdict */
  os.collateral = sc;
  os.collateral_len = sl;
  CHECK(run(q, ql, SH_TEE_TDX, &os, NULL) == SH_ATTEST_COLLATERAL_MISSING,
        "cache keyed by collateral");
  free(sc);
  oc.at = NOW; /* past nextUpdate: the cached result must not be served */
  CHECK(run(q, ql, SH_TEE_TDX, &oc, NULL) == SH_ATTEST_COLLATERAL_STALE, "cache window");
  sh_attest_cache_free(cache);
  free(c);
  free(q);
}

/* ---------- the PCS directory form ---------- */
static void write_file(const char *dir, const char *name, const char *data, size_t len) {
  char p[1024];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "wb");
  fwrite(data, 1, len, f);
  fclose(f);
}

static void write_hex_der(const char *dir, const char *name, const char *hex) {
  size_t n = strlen(hex) / 2;
  uint8_t *b = malloc(n + 1);
  CHECK(b && sh_hex_decode(hex, strlen(hex), b, n) == 0, "hex of %s", name);
  write_file(dir, name, (const char *)b, n);
  free(b);
}

static void test_pcs_dir(void) {
  size_t cl, ql;
  uint8_t *c = slurp("tdx/tdx_quote_collateral.json", &cl), *q = slurp("tdx/tdx_quote", &ql);
  json_t *j = json_loadb((const char *)c, cl, 0, NULL);
  char dir[] = "/tmp/shield-pcs-XXXXXX";
  if (!j || !mkdtemp(dir)) {
    CHECK(0, "setup");
    return;
  }
  char *buf = malloc(cl + 256);
  /* PCS v4 bodies: {"tcbInfo":<exact>,"signature":"<hex>"} with some whitespace */
  int n = snprintf(buf, cl + 256, "{\n  \"tcbInfo\" : %s,\n  \"signature\": \"%s\"\n}\n",
                   json_string_value(json_object_get(j, "tcb_info")),
                   json_string_value(json_object_get(j, "tcb_info_signature")));
  write_file(dir, "tcbinfo.json", buf, (size_t)n);
  n = snprintf(buf, cl + 256, "{\"enclaveIdentity\":%s,\"signature\":\"%s\"}",
               json_string_value(json_object_get(j, "qe_identity")),
               json_string_value(json_object_get(j, "qe_identity_signature")));
  write_file(dir, "qeidentity.json", buf, (size_t)n);
  const char *s = json_string_value(json_object_get(j, "tcb_info_issuer_chain"));
  write_file(dir, "tcbinfo-issuer-chain.pem", s, strlen(s));
  s = json_string_value(json_object_get(j, "qe_identity_issuer_chain"));
  write_file(dir, "qeidentity-issuer-chain.pem", s, strlen(s));
  write_hex_der(dir, "rootcrl.der", json_string_value(json_object_get(j, "root_ca_crl")));
  write_hex_der(dir, "pckcrl.der", json_string_value(json_object_get(j, "pck_crl")));
  uint8_t *col = NULL;
  size_t coll = 0;
  char eb[256] = "";
  int rc = sh_attest_collateral_read(dir, &col, &coll, eb, sizeof eb);
  CHECK(rc == 0, "collateral_read(dir): %s", eb);
  sh_attest_options o = {
      .at = T("2025-06-20T00:00:00Z"), .collateral = col, .collateral_len = coll};
  sh_attest_reason got = rc == 0 ? run(q, ql, SH_TEE_TDX, &o, NULL) : SH_ATTEST_MALFORMED;
  CHECK(got == SH_ATTEST_OK, "PCS directory form: %s", RN(got));
  free(col);
  /* a tcbInfo whose signature no longer matches (one byte of the signed span changed) */
  n = snprintf(buf, cl + 256, "{\"tcbInfo\":%s,\"signature\":\"%s\"}",
               json_string_value(json_object_get(j, "tcb_info")),
               json_string_value(json_object_get(j, "tcb_info_signature")));
  char *e = strstr(buf, "\"version\":3");
  if (e) e[10] = '4';
  write_file(dir, "tcbinfo.json", buf, (size_t)n);
  rc = sh_attest_collateral_read(dir, &col, &coll, eb, sizeof eb);
  o.collateral = col;
  o.collateral_len = coll;
  got = rc == 0 ? run(q, ql, SH_TEE_TDX, &o, NULL) : SH_ATTEST_MALFORMED;
  CHECK(got != SH_ATTEST_OK, "PCS form, altered tcbInfo accepted");
  free(col);
  unlink(dir); /* files first */
  static const char *const names[] = {
      "tcbinfo.json", "qeidentity.json", "tcbinfo-issuer-chain.pem", "qeidentity-issuer-chain.pem",
      "rootcrl.der",  "pckcrl.der"};
  for (size_t i = 0; i < 6; i++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, names[i]);
    unlink(p);
  }
  rmdir(dir);
  rc = sh_attest_collateral_read(dir, &col, &coll, eb, sizeof eb);
  CHECK(rc < 0, "missing directory");
  free(buf);
  json_decref(j);
  free(c);
  free(q);
}

/* ---------- mutations ---------- */

static uint8_t *mutate(const uint8_t *in, size_t len, size_t *out_len) {
  uint8_t *m = malloc(len + 8);
  memcpy(m, in, len);
  *out_len = len;
  size_t pos = rnd() % len;
  switch (rnd() % 8) {
    case 0:
    case 1:
    case 2:
      m[pos] ^= (uint8_t)(1u << (rnd() % 8));
      break;
    case 3:
    case 4:
      m[pos] = (uint8_t)rnd();
      if (m[pos] == in[pos]) m[pos] ^= 0x80;
      break;
    case 5:
      *out_len = pos;
      break;
    case 6:
      memmove(m + pos + 1, m + pos, len - pos);
      m[pos] = (uint8_t)rnd();
      *out_len = len + 1;
      break;
    default:
      m[pos] ^= 0xFF;
      m[(pos + 1) % len] ^= 0x01;
      break;
  }
  return m;
}

static char *hex_of(const uint8_t *b, size_t n) {
  char *h = malloc(2 * n + 1);
  sh_hex_encode(b, n, h);
  return h;
}

static const char *last_field;
/* one decoded-byte mutation of one collateral field; returns the new document or NULL */
static char *mutate_collateral(json_t *j) {
  static const char *const fields[] = {"tcb_info",
                                       "qe_identity",
                                       "tcb_info_signature",
                                       "qe_identity_signature",
                                       "root_ca_crl",
                                       "pck_crl",
                                       "tcb_info_issuer_chain",
                                       "qe_identity_issuer_chain",
                                       "pck_crl_issuer_chain"};
  const char *f = fields[rnd() % 9];
  last_field = f;
  json_t *v = json_object_get(j, f);
  if (!v) return NULL;
  json_t *copy = json_deep_copy(j);
  size_t ml = 0;
  if (!strcmp(f, "tcb_info") || !strcmp(f, "qe_identity")) {
    uint8_t *m = mutate((const uint8_t *)json_string_value(v), json_string_length(v), &ml);
    json_t *s = json_stringn((const char *)m, ml); /* NULL when not UTF-8: skipped */
    free(m);
    if (!s) {
      json_decref(copy);
      return NULL;
    }
    json_object_set_new(copy, f, s);
  } else if (strstr(f, "chain")) {
    BIO *b = BIO_new_mem_buf(json_string_value(v), -1), *out = BIO_new(BIO_s_mem());
    X509 *x;
    int k = 0, count = 0;
    for (const char *t = json_string_value(v); (t = strstr(t, "-----BEGIN CERTIFICATE")); t++)
      count++;
    int which = count ? (int)(rnd() % (unsigned)count) : 0;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
      unsigned char *der = NULL;
      int dl = i2d_X509(x, &der);
      if (k++ == which) {
        uint8_t *m = mutate(der, (size_t)dl, &ml);
        PEM_write_bio(out, "CERTIFICATE", "", m, (long)ml);
        free(m);
      } else {
        PEM_write_bio_X509(out, x);
      }
      OPENSSL_free(der);
      X509_free(x);
    }
    ERR_clear_error();
    char *p = NULL;
    long n = BIO_get_mem_data(out, &p);
    json_object_set_new(copy, f, json_stringn(p, (size_t)n));
    BIO_free(b);
    BIO_free(out);
  } else {
    long n = 0;
    unsigned char *d = OPENSSL_hexstr2buf(json_string_value(v), &n);
    uint8_t *m = mutate(d, (size_t)n, &ml);
    char *h = hex_of(m, ml);
    json_object_set_new(copy, f, json_string(h));
    free(h);
    free(m);
    OPENSSL_free(d);
  }
  char *s = json_dumps(copy, JSON_COMPACT);
  json_decref(copy);
  return s;
}

static void test_mutations(int n) {
  const dvec *cases[] = {&vecs[0], &vecs[9], &vecs[15]};
  for (size_t i = 0; i < 3; i++) {
    const dvec *d = cases[i];
    size_t ql, cl;
    uint8_t *q = slurp(d->quote, &ql), *c = slurp(d->col, &cl);
    sh_attest_policy *p = d->pol ? policy(d->pol) : NULL;
    sh_attest_options o = {.at = T(d->at), .policy = p, .collateral = c, .collateral_len = cl};
    sh_attest_reason base = run(q, ql, d->tee, &o, NULL);
    CHECK(base == d->want, "%s baseline %s", d->quote, RN(base));
    /* every other mutation with a warm chain-only cache (verified chains, parsed CA
     * certificates, verified collateral with its CRL-signature memo) */
    sh_attest_cache *warm = sh_attest_cache_new(0);
    sh_attest_options ow = o;
    ow.cache = warm;
    CHECK(run(q, ql, d->tee, &ow, NULL) == d->want, "%s baseline, cache", d->quote);
    int acc = 0, cnt = 0;
    for (int k = 0; k < n; k++) {
      size_t ml;
      uint8_t *m = mutate(q, ql, &ml);
      if (ml != ql || memcmp(m, q, ql)) {
        /* cutting or extending trailing zero padding is not a mutation of the quote */
        int pad_only = ml < ql ? !memcmp(m, q, ml) : ml > ql && !memcmp(m, q, ql);
        for (size_t z = ml < ql ? ml : ql; pad_only && z < (ml < ql ? ql : ml); z++)
          pad_only = (ml < ql ? q[z] : m[z]) == 0;
        if (!pad_only) {
          cnt++;
          acc += run(m, ml, d->tee, k & 1 ? &ow : &o, NULL) == SH_ATTEST_OK;
        }
      }
      free(m);
    }
    CHECK(acc == 0 && cnt >= n * 8 / 10, "%s: %d of %d quote mutations accepted", d->quote, acc,
          cnt);
    printf("  quote mutations      %-26s %d tried, %d accepted\n", d->quote, cnt, acc);
    json_t *j = json_loadb((const char *)c, cl, 0, NULL);
    acc = cnt = 0;
    for (int k = 0; k < n * 2 && cnt < n; k++) {
      char *s = mutate_collateral(j);
      if (!s) continue;
      if (strlen(s) != cl || memcmp(s, c, cl)) {
        sh_attest_options om = k & 1 ? ow : o;
        om.collateral = (const uint8_t *)s;
        om.collateral_len = strlen(s);
        cnt++;
        int ok = run(q, ql, d->tee, &om, NULL) == SH_ATTEST_OK;
        if (k & 2) { /* the same as a preloaded handle, with the warm cache */
          sh_attest_collateral *h = sh_attest_collateral_new((const uint8_t *)s, strlen(s));
          om = ow;
          om.dcap_collateral = h;
          ok |= h && run(q, ql, d->tee, &om, NULL) == SH_ATTEST_OK;
          sh_attest_collateral_free(h);
        }
        acc += ok;
        if (ok && getenv("DCAP_DEBUG")) fprintf(stderr, "accepted mutation of %s\n", last_field);
      }
      free(s);
    }
    CHECK(acc == 0 && cnt >= n, "%s: %d of %d collateral mutations accepted", d->col, acc, cnt);
    printf("  collateral mutations %-26s %d tried, %d accepted\n", d->col, cnt, acc);
    CHECK(run(q, ql, d->tee, &ow, NULL) == d->want, "%s after mutations, cache", d->quote);
    sh_attest_cache_free(warm);
    json_decref(j);
    sh_attest_policy_free(p);
    free(q);
    free(c);
  }
}

#include "test_dcap_gen.h"

int main(void) {
  char why[512];
  NOW = T("2026-11-24T12:00:00Z");
  if (!vectors_init(why, sizeof why)) /* every case here reads a vector */
    return test_summary_skip(why);
  test_vectors();
  test_pcs_dir();
  test_mutations(getenv("SHIELD_MUTATIONS") ? atoi(getenv("SHIELD_MUTATIONS")) : 1000);
  test_generated();
  return test_summary();
}
