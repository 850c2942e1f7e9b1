/* tests/c/attest/test_jwt.c — attest/ JWT types: the maa and gcp vectors (read in
 * place from $SHIELD_VECTORS), PKI tokens chained to a test CA given as an extra root (valid,
 * expired leaf, unpinned root, leaf as its own root), and a mutation sweep over the vectors.
 * Its strict base64 checks are common/'s now (tests/c/common/test_common.c).
 * Prints "N passed, N failed"; exits non-zero on failure. */
#include "testutil.h"

/* Token files end with a newline that is not part of the JWT. */
static uint8_t *slurp_trimmed(const char *rel, size_t *len) {
  uint8_t *b = slurp(rel, len);
  while (b != NULL && *len > 0 && (b[*len - 1] == '\n' || b[*len - 1] == '\r'))
    b[--*len] = 0;
  return b;
}
#include "attest.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static sh_attest_reason run(const void *ev, size_t len, sh_tee tee, sh_attest_options *o) {
  sh_attest_result *r = NULL;
  if (sh_attest_verify(ev, len, tee, o, &r) < 0 || !r) return SH_ATTEST_REASON_COUNT_;
  sh_attest_reason rs = r->reason;
  sh_attest_result_free(r);
  return rs;
}

static void test_vectors(void) {
  size_t ml, jl, gl;
  uint8_t *maa = slurp_trimmed("maa/simpleattest-sgx.jwt", &ml);
  uint8_t *jwks = slurp_trimmed("maa/sharedwus-certs-2022-05-31.json", &jl);
  uint8_t *gcp = slurp_trimmed("gcp/valid.jwt", &gl);
  if (!maa || !jwks || !gcp) { /* slurp counted the missing file as a failure */
    free(maa), free(jwks), free(gcp);
    return;
  }
  sh_attest_options o;
  memset(&o, 0, sizeof o);
  o.at = T("2022-05-31T23:00:00Z");
  o.jwks = jwks;
  o.jwks_len = jl;
  CHECK(run(maa, ml, SH_TEE_MAA, &o) == SH_ATTEST_DEBUG_NOT_ALLOWED, "maa production");
  o.allow_debug = 1;
  o.issuer = "https://sharedwus.wus.attest.azure.net";
  sh_attest_result *r = NULL;
  CHECK(sh_attest_verify(maa, ml, SH_TEE_MAA, &o, &r) == 0 && r && r->verified && r->debug &&
            r->has_evidence_sha256,
        "maa valid: %s", r ? r->message : "");
  if (r) {
    uint8_t h[32];
    const uint8_t *dot = memchr(maa, '.', ml);
    dot = memchr(dot + 1, '.', ml - (size_t)(dot + 1 - maa));
    EVP_Digest(maa, (size_t)(dot - maa), h, NULL, EVP_sha256(), NULL);
    CHECK(!memcmp(h, r->evidence_sha256, 32), "evidence_sha256 is SHA-256 of the signing input");
    CHECK(!strcmp(json_string_value(json_object_get(r->measurements, "MRENCLAVE")),
                  "292a1f4b519e46627eb2478a3d9851405653c5b4b0a6925de843834d9216850e"),
          "mrenclave");
  }
  sh_attest_result_free(r);
  o.at = T("2026-11-24T12:00:00Z");
  CHECK(run(maa, ml, SH_TEE_MAA, &o) == SH_ATTEST_EXPIRED, "maa today");
  o.at = T("2022-05-31T23:00:00Z");
  CHECK(run(maa, ml, SH_TEE_GCP, &o) == SH_ATTEST_MALFORMED, "maa token as gcp");
  o.jwks = NULL;
  CHECK(run(maa, ml, SH_TEE_MAA, &o) == SH_ATTEST_COLLATERAL_MISSING, "maa without jwks");
  o.jwks = (const uint8_t *)"{\"keys\": 1}";
  o.jwks_len = strlen((const char *)o.jwks);
  CHECK(run(maa, ml, SH_TEE_MAA, &o) == SH_ATTEST_COLLATERAL_MISSING, "maa bad jwks");

  memset(&o, 0, sizeof o);
  o.at = T("2025-06-23T14:30:00Z");
  CHECK(run(gcp, gl, SH_TEE_GCP, &o) == SH_ATTEST_DEBUG_NOT_ALLOWED, "gcp production");
  o.allow_debug = 1;
  o.audience = "https://echo.oak.dev";
  CHECK(run(gcp, gl, SH_TEE_GCP, &o) == SH_ATTEST_OK, "gcp valid");
  o.at = T("2026-11-24T12:00:00Z");
  CHECK(run(gcp, gl, SH_TEE_GCP, &o) == SH_ATTEST_EXPIRED, "gcp today");

  /* mutation sweep: nothing but the original verifies, nothing crashes (ASan/UBSan) */
  uint64_t rng = 0x9E3779B97F4A7C15ull;
  int bad = 0;
  for (int pass = 0; pass < 2; pass++) {
    const uint8_t *src = pass ? gcp : maa;
    size_t n = pass ? gl : ml;
    memset(&o, 0, sizeof o);
    o.allow_debug = 1;
    o.at = pass ? T("2025-06-23T14:30:00Z") : T("2022-05-31T23:00:00Z");
    if (!pass) {
      o.jwks = jwks;
      o.jwks_len = jl;
    }
    uint8_t *m = malloc(n);
    for (int i = 0; i < 400; i++) {
      memcpy(m, src, n);
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      size_t at = (size_t)(rng % n);
      uint8_t c = (uint8_t)(rng >> 32);
      if (c == m[at]) c ^= 1;
      m[at] = c;
      size_t len = (rng >> 40) % 8 == 0 ? at + 1 : n; /* sometimes truncate too */
      sh_attest_reason rs = run(m, len, pass ? SH_TEE_GCP : SH_TEE_MAA, &o);
      if (rs == SH_ATTEST_OK || rs == SH_ATTEST_REASON_COUNT_) bad++;
    }
    free(m);
  }
  CHECK(bad == 0, "%d mutated tokens verified", bad);
  free(maa);
  free(jwks);
  free(gcp);
}

/* ---- PKI tokens with a test CA ---- */

static X509 *mkcert(EVP_PKEY *key, EVP_PKEY *ca_key, X509 *ca, const char *cn, int is_ca,
                    int64_t nb, int64_t na) {
  X509 *x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(nb & 0xFFFFFF) + is_ca);
  X509_NAME *n = X509_NAME_new();
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_subject_name(x, n);
  X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : n);
  X509_NAME_free(n);
  ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb);
  ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na);
  X509_set_pubkey(x, key);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca ? ca : x, x, NULL, NULL, 0);
  X509_EXTENSION *e1 = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
                                           is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  X509_EXTENSION *e2 =
      X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage,
                          is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
  X509_add_ext(x, e1, -1);
  X509_add_ext(x, e2, -1);
  X509_EXTENSION_free(e1);
  X509_EXTENSION_free(e2);
  X509_sign(x, ca_key, EVP_sha256());
  return x;
}

static char *b64_der(X509 *x) {
  unsigned char *der = NULL;
  int l = i2d_X509(x, &der);
  char *out = sh_b64_encode_alloc(der, (size_t)l, SH_B64_STD | SH_B64_PAD); /* x5c */
  OPENSSL_free(der);
  return out;
}

static char *mktoken(EVP_PKEY *key, X509 **chain, int nchain, int64_t now) {
  json_t *x5c = json_array();
  for (int i = 0; i < nchain; i++) {
    char *s = b64_der(chain[i]);
    json_array_append_new(x5c, json_string(s));
    free(s);
  }
  json_t *h = json_pack("{s:s, s:s, s:o}", "alg", "RS256", "typ", "JWT", "x5c", x5c);
  json_t *p = json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:b, s:s}", "iss",
                        "https://confidentialcomputing.googleapis.com", "aud", "a", "iat",
                        (json_int_t)now, "nbf", (json_int_t)now, "exp", (json_int_t)now + 3600,
                        "dbgstat", "disabled-since-boot", "swname", "CONFIDENTIAL_SPACE", "hwmodel",
                        "GCP_INTEL_TDX", "secboot", 1, "eat_nonce", "abcdefghijkl");
  char *hs = json_dumps(h, JSON_COMPACT), *ps = json_dumps(p, JSON_COMPACT);
  char *he = sh_b64_encode_alloc(hs, strlen(hs), SH_B64_PROTOCOL),
       *pe = sh_b64_encode_alloc(ps, strlen(ps), SH_B64_PROTOCOL);
  size_t sil = strlen(he) + 1 + strlen(pe);
  char *si = malloc(sil + 1);
  snprintf(si, sil + 1, "%s.%s", he, pe);
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  size_t sl = 0;
  unsigned char sig[512];
  EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key);
  sl = sizeof sig;
  EVP_DigestSign(md, sig, &sl, (unsigned char *)si, sil);
  EVP_MD_CTX_free(md);
  char *se = sh_b64_encode_alloc(sig, sl, SH_B64_PROTOCOL);
  char *tok = malloc(sil + strlen(se) + 2);
  sprintf(tok, "%s.%s", si, se);
  free(hs), free(ps), free(he), free(pe), free(si), free(se);
  json_decref(h);
  json_decref(p);
  return tok;
}

static void test_pki(void) {
  int64_t now = T("2026-11-24T12:00:00Z");
  EVP_PKEY *rk = EVP_EC_gen("P-256"), *ik = EVP_EC_gen("P-256"), *lk = EVP_RSA_gen(2048);
  X509 *root = mkcert(rk, rk, NULL, "test root", 1, now - 86400, now + 86400 * 365);
  X509 *inter = mkcert(ik, rk, root, "test inter", 1, now - 86400, now + 86400 * 365);
  X509 *leaf = mkcert(lk, ik, inter, "test leaf", 0, now - 3600, now + 86400);
  X509 *old = mkcert(lk, ik, inter, "old leaf", 0, now - 86400 * 30, now - 86400);
  unsigned char *rder = NULL;
  int rl = i2d_X509(root, &rder);
  sh_iovec extra = {.ptr = rder, .len = (size_t)rl};
  sh_attest_options o;
  memset(&o, 0, sizeof o);
  o.at = now;

  X509 *c1[] = {leaf, inter, root};
  char *t = mktoken(lk, c1, 3, now);
  CHECK(run(t, strlen(t), SH_TEE_GCP, &o) == SH_ATTEST_ROOT_UNTRUSTED,
        "x5c's own root is not trusted");
  o.extra_roots = &extra;
  o.nextra_roots = 1;
  sh_attest_result *r = NULL;
  CHECK(sh_attest_verify((const uint8_t *)t, strlen(t), SH_TEE_GCP, &o, &r) == 0 && r->verified,
        "PKI token with the test root: %s", r ? r->message : "");
  sh_attest_result_free(r);
  o.at = now + 86400 * 2; /* leaf expired (and the token too: expired either way) */
  CHECK(run(t, strlen(t), SH_TEE_GCP, &o) == SH_ATTEST_EXPIRED, "expired");
  o.at = now;
  free(t);
  /* the leaf expired but the token times are fine: the leaf's validity decides */
  X509 *c2[] = {old, inter, root};
  t = mktoken(lk, c2, 3, now);
  CHECK(run(t, strlen(t), SH_TEE_GCP, &o) == SH_ATTEST_EXPIRED, "leaf expired");
  free(t);
  /* the root passed only via options.certs-like route is absent from x5c: still anchored */
  X509 *c3[] = {leaf, inter};
  t = mktoken(lk, c3, 2, now);
  CHECK(run(t, strlen(t), SH_TEE_GCP, &o) == SH_ATTEST_ROOT_UNTRUSTED,
        "root absent from x5c and certs");
  o.certs = &extra;
  o.ncerts = 1;
  CHECK(run(t, strlen(t), SH_TEE_GCP, &o) == SH_ATTEST_OK, "root given in certs");
  o.certs = NULL;
  o.ncerts = 0;
  free(t);
  /* signed by a key other than the leaf's */
  X509 *c4[] = {leaf, inter, root};
  EVP_PKEY *other = EVP_RSA_gen(2048);
  t = mktoken(other, c4, 3, now);
  CHECK(run(t, strlen(t), SH_TEE_GCP, &o) == SH_ATTEST_SIGNATURE_INVALID, "wrong signer");
  free(t);
  /* a self-signed leaf that is itself the extra root: refused (a leaf is never an anchor) */
  X509 *self = mkcert(other, other, NULL, "self", 0, now - 3600, now + 3600);
  unsigned char *sder = NULL;
  int sl = i2d_X509(self, &sder);
  sh_iovec ex2[2] = {extra, {.ptr = sder, .len = (size_t)sl}};
  o.extra_roots = ex2;
  o.nextra_roots = 2;
  X509 *c5[] = {self, root};
  t = mktoken(other, c5, 2, now);
  CHECK(run(t, strlen(t), SH_TEE_GCP, &o) == SH_ATTEST_ROOT_UNTRUSTED, "leaf as anchor");
  free(t);
  OPENSSL_free(sder);
  X509_free(self);
  EVP_PKEY_free(other);
  OPENSSL_free(rder);
  X509_free(root), X509_free(inter), X509_free(leaf), X509_free(old);
  EVP_PKEY_free(rk), EVP_PKEY_free(ik), EVP_PKEY_free(lk);
}

int main(void) {
  char why[512];
  if (vectors_init(why, sizeof why)) test_vectors();
  test_pki();
  ERR_clear_error();
  return vdir ? test_summary() : test_summary_skip(why);
}
