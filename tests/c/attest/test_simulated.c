/* tests/c/attest/test_simulated.c — attest/simulated.c and attest/nonce.c: the dev root (created
 * once, modes), simulated evidence accepted only with trust_simulated and only under the local
 * root, tampering, debug, expiry, binding; nonces (MAC, age, tampering) and the proof MAC. Prints
 * "N passed, N failed"; exits non-zero on failure. */
#include "testutil.h"
#include "attest.h"

#include <openssl/rand.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const int64_t AT = 1750000000; /* 2025-06-15 */

static sh_attest_reason verify(const uint8_t *ev, size_t n, const char *type, int trust,
                               sh_iovec *root, const uint8_t *nonce, const uint8_t *pk, size_t pkl,
                               int64_t at, const char *policy, sh_tee *tee) {
  sh_attest_options o;
  sh_attest_policy *pol = NULL;
  sh_attest_result *r = NULL;
  char eb[128];
  memset(&o, 0, sizeof o);
  o.at = at;
  o.trust_simulated = trust;
  o.simulated_root = root;
  o.nonce = nonce;
  o.nonce_len = nonce ? 32 : 0;
  o.public_key = pk;
  o.public_key_len = pkl;
  if (policy && sh_attest_policy_load(policy, strlen(policy), &pol, eb, sizeof eb) < 0)
    return SH_ATTEST_REASON_COUNT_;
  o.policy = pol;
  if (sh_attest_verify(ev, n, sh_tee_from_name(type), &o, &r) < 0) return SH_ATTEST_REASON_COUNT_;
  sh_attest_reason rc = r->verified ? SH_ATTEST_OK : r->reason;
  if (tee) *tee = r->tee;
  sh_attest_result_free(r);
  sh_attest_policy_free(pol);
  return rc;
}

int main(void) {
  char d1[] = "/tmp/shield-sim-XXXXXX", d2[] = "/tmp/shield-sim-XXXXXX", sub[256], path[300];
  if (!mkdtemp(d1) || !mkdtemp(d2)) return 1;
  snprintf(sub, sizeof sub, "%s/a/shield", d1);
  char eb[512] = "";
  uint8_t *root = NULL, *root2 = NULL, *other = NULL, *ev = NULL;
  size_t rl = 0, rl2 = 0, ol = 0, evl = 0;

  /* dev root: absent without create, created with modes 0700/0600, stable afterwards */
  CHECK(sh_attest_simulated_root(sub, 0, 0, &root, &rl, eb, sizeof eb) < 0, "absent root loaded");
  CHECK(sh_attest_simulated_root(sub, 1, AT, &root, &rl, eb, sizeof eb) == 0, "%s", eb);
  CHECK(sh_attest_simulated_root(sub, 0, 0, &root2, &rl2, eb, sizeof eb) == 0, "%s", eb);
  CHECK(rl == rl2 && !memcmp(root, root2, rl), "root changed between loads");
  struct stat st;
  snprintf(path, sizeof path, "%s/simulated-root.pem", sub);
  CHECK(stat(sub, &st) == 0 && (st.st_mode & 0777) == 0700, "dir mode %o", st.st_mode & 0777);
  CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "file mode %o", st.st_mode & 0777);
  CHECK(sh_attest_simulated_root(d2, 1, AT, &other, &ol, eb, sizeof eb) == 0, "%s", eb);
  sh_iovec anchor = {.ptr = root, .len = rl}, wrong = {.ptr = other, .len = ol};

  /* the library never reads the clock: a new dev root is dated from the caller's `now` (10
   * years), and creating one without a time is refused */
  {
    const unsigned char *q = root;
    X509 *x = d2i_X509(NULL, &q, (long)rl);
    int days = -1, secs = -1;
    ASN1_TIME *want = x ? ASN1_TIME_set(NULL, (time_t)(AT + 3650LL * 86400)) : NULL;
    CHECK(want && ASN1_TIME_diff(&days, &secs, X509_get0_notAfter(x), want) && !days && !secs,
          "dev root notAfter is not now + 3650 days (%d days %d s off)", days, secs);
    ASN1_TIME_free(want);
    X509_free(x);
    char d3[] = "/tmp/shield-sim-XXXXXX";
    uint8_t *none = NULL;
    size_t nl = 0;
    CHECK(mkdtemp(d3) && sh_attest_simulated_root(d3, 1, 0, &none, &nl, eb, sizeof eb) < 0 &&
              strstr(eb, "current time"),
          "a dev root created without a time: %s", eb);
    free(none);
    rmdir(d3);
  }
  /* the helpers cli/ uses instead of attest's internals: certificate files checked up front,
   * and a rejected result for evidence refused before verification */
  {
    uint8_t two[8192];
    CHECK(sh_attest_certs_count(root, rl) == 1, "one DER certificate");
    CHECK(rl * 2 <= sizeof two, "root too large");
    memcpy(two, root, rl);
    memcpy(two + rl, other, ol);
    CHECK(sh_attest_certs_count(two, rl + ol) == 2, "two concatenated DER certificates");
    CHECK(sh_attest_certs_count((const uint8_t *)"not a certificate", 17) == -1, "junk");
    CHECK(sh_attest_certs_count(root, rl - 1) == -1, "a truncated certificate");
    CHECK(sh_attest_certs_count(NULL, 0) == -1, "nothing");
    sh_attest_result *r = sh_attest_result_rejected(SH_TEE_NITRO, AT, SH_ATTEST_MALFORMED, "why");
    CHECK(r && !r->verified && r->reason == SH_ATTEST_MALFORMED && r->tee == SH_TEE_NITRO &&
              r->timestamp == (double)AT && !strcmp(r->message, "why"),
          "rejected result");
    json_t *j = r ? sh_attest_result_to_json(r, 0) : NULL;
    CHECK(j && json_is_false(json_object_get(j, "verified")), "rejected result as JSON");
    json_decref(j);
    sh_attest_result_free(r);
    r = sh_attest_result_rejected(SH_TEE_NITRO, AT, SH_ATTEST_OK, NULL);
    CHECK(r && !r->verified && r->reason == SH_ATTEST_MALFORMED, "OK is never a rejection");
    sh_attest_result_free(r);
  }

  uint8_t secret[32], nonce[32];
  RAND_bytes(secret, sizeof secret);
  CHECK(sh_attest_nonce_issue(secret, sizeof secret, AT, nonce) == 0, "issue");
  static const uint8_t pk[] = {0x30, 0x03, 0x01, 0x02, 0x03}; /* opaque k for binding */

  sh_attest_sim_params p;
  memset(&p, 0, sizeof p);
  p.dir = sub;
  p.at = AT;
  p.nonce = nonce;
  p.nonce_len = 32;
  p.public_key = pk;
  p.public_key_len = sizeof pk;
  CHECK(sh_attest_simulated_evidence(&p, &ev, &evl, eb, sizeof eb) == 0, "%s", eb);
  sh_tee tee = 0;
  CHECK(verify(ev, evl, "simulated", 1, &anchor, nonce, pk, sizeof pk, AT + 5, NULL, &tee) ==
            SH_ATTEST_OK,
        "valid simulated evidence");
  CHECK(tee == SH_TEE_SIMULATED, "tee %d", tee);
  /* declared nitro: the anchor decides the type, not the header */
  CHECK(verify(ev, evl, "nitro", 1, &anchor, nonce, pk, sizeof pk, AT + 5, NULL, &tee) ==
                SH_ATTEST_OK &&
            tee == SH_TEE_SIMULATED,
        "declared nitro");
  CHECK(verify(ev, evl, "simulated", 0, &anchor, nonce, pk, sizeof pk, AT, NULL, NULL) ==
            SH_ATTEST_ROOT_UNTRUSTED,
        "untrusted without the flag");
  CHECK(verify(ev, evl, "nitro", 0, NULL, nonce, pk, sizeof pk, AT, NULL, NULL) ==
            SH_ATTEST_ROOT_UNTRUSTED,
        "nitro without the flag");
  CHECK(verify(ev, evl, "simulated", 1, &wrong, nonce, pk, sizeof pk, AT, NULL, NULL) ==
            SH_ATTEST_ROOT_UNTRUSTED,
        "another machine's root");
  uint8_t n2[32];
  memcpy(n2, nonce, 32);
  n2[31] ^= 1;
  CHECK(verify(ev, evl, "simulated", 1, &anchor, n2, pk, sizeof pk, AT, NULL, NULL) ==
            SH_ATTEST_BINDING_MISMATCH,
        "other nonce");
  CHECK(verify(ev, evl, "simulated", 1, &anchor, nonce, NULL, 0, AT, NULL, NULL) == SH_ATTEST_OK,
        "nonce only");
  CHECK(verify(ev, evl, "simulated", 1, &anchor, nonce, (const uint8_t *)"", 0, AT, NULL, NULL) ==
            SH_ATTEST_BINDING_MISMATCH,
        "empty k vs bound k");
  CHECK(verify(ev, evl, "simulated", 1, &anchor, nonce, pk, sizeof pk, AT + 4 * 3600, NULL, NULL) ==
            SH_ATTEST_EXPIRED,
        "leaf expired after 3 h");
  CHECK(verify(ev, evl, "simulated", 1, &anchor, nonce, pk, sizeof pk, AT - 3600, NULL, NULL) ==
            SH_ATTEST_NOT_YET_VALID,
        "before issue");
  /* wrong measurement via the nitro section of the policy */
  char pol[256];
  snprintf(pol, sizeof pol, "{\"nitro\": {\"pcrs\": {\"0\": \"%096d\"}}}", 1);
  CHECK(verify(ev, evl, "simulated", 1, &anchor, nonce, pk, sizeof pk, AT, pol, NULL) ==
            SH_ATTEST_MEASUREMENT_MISMATCH,
        "pcr policy");
  /* tampering: every byte of the payload region flipped in turn must fail */
  int bad = 0;
  for (size_t i = 1; i < evl; i += 7) {
    uint8_t *m = malloc(evl);
    memcpy(m, ev, evl);
    m[i] ^= 0x01;
    if (verify(m, evl, "simulated", 1, &anchor, nonce, pk, sizeof pk, AT, NULL, NULL) ==
        SH_ATTEST_OK)
      bad++;
    free(m);
  }
  CHECK(bad == 0, "%d tampered documents verified", bad);
  free(ev);
  /* debug: PCR0 zero */
  p.debug = 1;
  CHECK(sh_attest_simulated_evidence(&p, &ev, &evl, eb, sizeof eb) == 0, "%s", eb);
  CHECK(verify(ev, evl, "simulated", 1, &anchor, nonce, pk, sizeof pk, AT, NULL, NULL) ==
            SH_ATTEST_DEBUG_NOT_ALLOWED,
        "debug");
  free(ev);

  /* nonces */
  int64_t ia = 0;
  CHECK(sh_attest_nonce_check(secret, 32, nonce, 32, AT + 10, 0, &ia) == SH_ATTEST_OK && ia == AT,
        "fresh nonce");
  CHECK(sh_attest_nonce_check(secret, 32, nonce, 32, AT + 61, 0, NULL) == SH_ATTEST_NONCE_EXPIRED,
        "expired nonce");
  CHECK(sh_attest_nonce_check(secret, 32, nonce, 32, AT - 60, 0, NULL) == SH_ATTEST_NONCE_INVALID,
        "future nonce");
  CHECK(sh_attest_nonce_check(secret, 32, n2, 32, AT, 0, NULL) == SH_ATTEST_NONCE_INVALID,
        "bad MAC");
  CHECK(sh_attest_nonce_check(secret, 32, nonce, 31, AT, 0, NULL) == SH_ATTEST_NONCE_INVALID,
        "short");
  uint8_t s2[32];
  memcpy(s2, secret, 32);
  s2[0] ^= 1;
  CHECK(sh_attest_nonce_check(s2, 32, nonce, 32, AT, 0, NULL) == SH_ATTEST_NONCE_INVALID,
        "other secret");
  CHECK(sh_attest_nonce_issue(secret, 16, AT, n2) < 0, "short secret accepted");
  /* proof MAC: changes with every input */
  uint8_t key[32] = {1}, m1[32], m2[32];
  CHECK(sh_attest_proof_mac(key, 1700000000123, "GET", 3, "/a?b", 4, "", 0, m1) == 0, "mac");
  CHECK(sh_attest_proof_mac(key, 1700000000124, "GET", 3, "/a?b", 4, "", 0, m2) == 0 &&
            memcmp(m1, m2, 32),
        "t bound");
  CHECK(sh_attest_proof_mac(key, 1700000000123, "GET", 3, "/a?c", 4, "", 0, m2) == 0 &&
            memcmp(m1, m2, 32),
        "target bound");

  /* the default dev root ($XDG_DATA_HOME/shield) is read once and again only when the file
   * changes: a replaced root is trusted at once, the old one no longer, a removed one never */
  char d3[] = "/tmp/shield-sim-XXXXXX", def[300];
  uint8_t *ev2 = NULL, *droot = NULL;
  size_t ev2l = 0, drl = 0;
  CHECK(mkdtemp(d3) != NULL, "mkdtemp");
  setenv("XDG_DATA_HOME", d3, 1);
  snprintf(def, sizeof def, "%s/shield/simulated-root.pem", d3);
  CHECK(sh_attest_simulated_root(NULL, 1, AT, &droot, &drl, eb, sizeof eb) == 0, "%s", eb);
  p.dir = NULL;
  p.debug = 0;
  CHECK(sh_attest_simulated_evidence(&p, &ev, &evl, eb, sizeof eb) == 0, "%s", eb);
  for (int i = 0; i < 2; i++)
    CHECK(
        verify(ev, evl, "simulated", 1, NULL, nonce, pk, sizeof pk, AT, NULL, NULL) == SH_ATTEST_OK,
        "default root, verification %d", i + 1);
  CHECK(unlink(def) == 0, "unlink the default root");
  CHECK(verify(ev, evl, "simulated", 1, NULL, nonce, pk, sizeof pk, AT, NULL, NULL) ==
            SH_ATTEST_ROOT_UNTRUSTED,
        "a removed default root still trusted");
  free(droot);
  CHECK(sh_attest_simulated_root(NULL, 1, AT, &droot, &drl, eb, sizeof eb) == 0, "%s", eb);
  CHECK(sh_attest_simulated_evidence(&p, &ev2, &ev2l, eb, sizeof eb) == 0, "%s", eb);
  CHECK(
      verify(ev2, ev2l, "simulated", 1, NULL, nonce, pk, sizeof pk, AT, NULL, NULL) == SH_ATTEST_OK,
      "the replacing root is not trusted");
  CHECK(verify(ev, evl, "simulated", 1, NULL, nonce, pk, sizeof pk, AT, NULL, NULL) ==
            SH_ATTEST_ROOT_UNTRUSTED,
        "the replaced root is still trusted");
  free(ev);
  free(ev2);
  free(droot);

  free(root);
  free(root2);
  free(other);
  char rm[128];
  snprintf(rm, sizeof rm, "rm -rf '%s' '%s' '%s'", d1, d2, d3); /* test-owned temp dirs */
  if (system(rm) != 0) fprintf(stderr, "warning: could not remove %s, %s\n", d1, d2);
  return test_summary();
}
