/* tests/c/attest/attest_util.h — helpers shared by the attest suites that verify generated and
 * real evidence (test_attest.c, test_dcap.c and their generators): verify-and-reason, and one
 * X.509v3 extension for the test PKIs.  Header-only, like ../testutil.h. */
#ifndef SHIELD_TEST_ATTEST_UTIL_H
#define SHIELD_TEST_ATTEST_UTIL_H

#include <openssl/x509v3.h>

#include "attest.h"

/* Verify and return the reason: SH_ATTEST_OK when verified, SH_ATTEST_REASON_COUNT_ when the
 * call failed or the result is inconsistent (verified, yet with a reason).  *keep (optional)
 * receives the result, which the caller frees. */
static inline sh_attest_reason run(const uint8_t *ev, size_t len, sh_tee tee, sh_attest_options *o,
                                   sh_attest_result **keep) {
  sh_attest_result *r = NULL;
  if (sh_attest_verify(ev, len, tee, o, &r) < 0 || !r) return SH_ATTEST_REASON_COUNT_;
  sh_attest_reason rs = r->verified ? SH_ATTEST_OK : r->reason;
  if (r->verified && r->reason != SH_ATTEST_OK) rs = SH_ATTEST_REASON_COUNT_; /* inconsistent */
  if (keep)
    *keep = r;
  else
    sh_attest_result_free(r);
  return rs;
}

/* Adds extension nid = val (OpenSSL's config syntax) to x, issued by issuer (NULL: itself). */
static inline void add_ext(X509 *x, X509 *issuer, int nid, const char *val) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, val);
  if (e) {
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
  }
}

#endif
