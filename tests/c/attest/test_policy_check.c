/* tests/c/attest/test_policy_check.c — sh_attest_policy_check: a policy applied to a result
 * verified earlier must decide exactly what sh_attest_verify decides with that policy.  Each case
 * verifies a real vector twice: once with the policy (the reference verdict), once with a
 * permissive set-up (debug allowed, any TCB status) and then re-checks the permissive result
 * with the policy.  Both reasons must be equal, for policies that pass and policies that fail
 * on every kind of fact (measurements, debug, TCB status, advisories, SNP guest policy, VMPL,
 * SVN, REPORTED_TCB, token claims).  Also: an unverified result keeps its own reason, and a
 * result lacking a fact the policy constrains is refused. */
#include "testutil.h"
#include "attest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RN(x) (sh_attest_reason_name(x) ? sh_attest_reason_name(x) : "ok")

typedef struct vec {
  const char *name;
  sh_tee tee;
  const char *file, *at;
  const char *cert;       /* SNP: the VCEK (DER) */
  const char *collateral; /* DCAP */
  const char *jwks;       /* MAA */
  int base64;             /* the file holds base64 text */
  const char *permissive; /* a policy under which the vector verifies */
} vec;

static const vec VECS[] = {
    {"nitro", SH_TEE_NITRO, "nitro/valid-attestation-doc-bytes", "2022-10-13T08:58:02Z", NULL, NULL,
     NULL, 0, "{\"allow_debug\": true}"},
    {"nitro-debug", SH_TEE_NITRO, "nitro/debug-mode-attestation-doc-bytes", "2022-10-12T13:50:06Z",
     NULL, NULL, NULL, 0, "{\"allow_debug\": true}"},
    {"sev-snp", SH_TEE_SEV_SNP, "sev-snp/test-report.bin", "2025-06-01T00:00:00Z",
     "sev-snp/test-vcek.der", NULL, NULL, 0, "{\"allow_debug\": true}"},
    {"sev-snp-debug", SH_TEE_SEV_SNP, "sev-snp/attestation.bin", "2025-06-01T00:00:00Z",
     "sev-snp/vcek.testcer", NULL, NULL, 0, "{\"allow_debug\": true}"},
    {"sgx", SH_TEE_SGX, "sgx/sgx_quote", "2025-06-20T00:00:00Z", NULL,
     "sgx/sgx_quote_collateral.json", NULL, 0,
     "{\"allow_debug\": true, \"sgx\": {\"tcb_statuses\": [\"UpToDate\", "
     "\"ConfigurationAndSWHardeningNeeded\"], \"allowed_advisories\": [\"*\"]}}"},
    {"tdx", SH_TEE_TDX, "tdx/tdx_quote", "2025-06-20T00:00:00Z", NULL,
     "tdx/tdx_quote_collateral.json", NULL, 0, "{\"allow_debug\": true}"},
    {"maa", SH_TEE_MAA, "maa/simpleattest-sgx.jwt", "2022-05-31T23:00:00Z", NULL, NULL,
     "maa/sharedwus-certs-2022-05-31.json", 0, "{\"allow_debug\": true}"},
    {"gcp", SH_TEE_GCP, "gcp/valid.jwt", "2025-06-23T14:30:00Z", NULL, NULL, NULL, 0,
     "{\"allow_debug\": true}"},
};

typedef struct loaded {
  uint8_t *ev, *cert, *col, *jwks;
  size_t ev_len, cert_len, col_len, jwks_len;
  sh_iovec certb;
} loaded;

static int load(const vec *v, loaded *l) {
  memset(l, 0, sizeof *l);
  l->ev = slurp(v->file, &l->ev_len);
  if (v->tee == SH_TEE_MAA || v->tee == SH_TEE_GCP) {
    while (l->ev && l->ev_len && (l->ev[l->ev_len - 1] == '\n' || l->ev[l->ev_len - 1] == '\r'))
      l->ev_len--;
  }
  if (v->cert) l->cert = slurp(v->cert, &l->cert_len);
  if (v->collateral) l->col = slurp(v->collateral, &l->col_len);
  if (v->jwks) l->jwks = slurp(v->jwks, &l->jwks_len);
  l->certb = (sh_iovec){.ptr = l->cert, .len = l->cert_len};
  return l->ev && (!v->cert || l->cert) && (!v->collateral || l->col) && (!v->jwks || l->jwks);
}

static void unload(loaded *l) {
  free(l->ev);
  free(l->cert);
  free(l->col);
  free(l->jwks);
}

static sh_attest_policy *policy(const char *text) {
  sh_attest_policy *p = NULL;
  char eb[256] = "";
  if (sh_attest_policy_load(text, strlen(text), &p, eb, sizeof eb) < 0) {
    fprintf(stderr, "policy %s: %s\n", text, eb);
    return NULL;
  }
  return p;
}

static sh_attest_result *verify(const vec *v, loaded *l, const sh_attest_policy *p) {
  sh_attest_options o = {.at = T(v->at), .policy = p};
  if (l->cert) {
    o.certs = &l->certb;
    o.ncerts = 1;
  }
  o.collateral = l->col;
  o.collateral_len = l->col_len;
  o.jwks = l->jwks;
  o.jwks_len = l->jwks_len;
  sh_attest_result *r = NULL;
  if (sh_attest_verify(l->ev, l->ev_len, v->tee, &o, &r) < 0) return NULL;
  return r;
}

static sh_attest_reason reason_of(const sh_attest_result *r) {
  return r->verified ? SH_ATTEST_OK : r->reason;
}

/* One differential case: verify with `ptext` vs re-check of the permissive result. */
static void same_verdict(const vec *v, loaded *l, const sh_attest_result *base, const char *ptext,
                         sh_attest_reason want) {
  sh_attest_policy *p = policy(ptext);
  CHECK(p != NULL, "%s: policy %s does not load", v->name, ptext);
  if (!p) return;
  sh_attest_result *direct = verify(v, l, p);
  char msg[256];
  sh_attest_reason again = sh_attest_policy_check(p, base, msg, sizeof msg);
  CHECK(direct && reason_of(direct) == again, "%s %s: verify says %s (%s), re-check says %s (%s)",
        v->name, ptext, direct ? RN(reason_of(direct)) : "-", direct ? direct->message : "",
        RN(again), msg);
  CHECK(again == want, "%s %s: %s (%s), want %s", v->name, ptext, RN(again), msg, RN(want));
  CHECK((again == SH_ATTEST_OK) == (msg[0] == '\0'), "%s: a refusal says why", v->name);
  sh_attest_result_free(direct);
  sh_attest_policy_free(p);
}

/* The first measurement of `base` named `key` as a JSON string, or "00". */
static const char *meas(const sh_attest_result *base, const char *key) {
  const char *s = json_string_value(json_object_get(base->measurements, key));
  return s ? s : "00";
}

/* The same measurement with its last hex digit changed (a value the evidence does not have). */
static const char *other(const sh_attest_result *base, const char *key) {
  static char buf[160];
  snprintf(buf, sizeof buf, "%s", meas(base, key));
  size_t n = strlen(buf);
  buf[n - 1] = buf[n - 1] == '0' ? '1' : '0';
  return buf;
}

static void cases_for(const vec *v, loaded *l, const sh_attest_result *base) {
  char pol[2048];
  sh_attest_reason debug_want = base->debug ? SH_ATTEST_DEBUG_NOT_ALLOWED : SH_ATTEST_OK;
  switch (v->tee) {
    case SH_TEE_NITRO:
      same_verdict(v, l, base, "{\"version\": 1}", debug_want);
      snprintf(pol, sizeof pol, "{\"allow_debug\": true, \"nitro\": {\"pcrs\": {\"0\": [\"%s\"]}}}",
               meas(base, "PCR0"));
      same_verdict(v, l, base, pol, SH_ATTEST_OK);
      same_verdict(v, l, base,
                   "{\"allow_debug\": true, \"nitro\": {\"pcrs\": {\"0\": [\""
                   "000000000000000000000000000000000000000000000000000000000000000000000000000000"
                   "000000000000000001\"]}}}",
                   SH_ATTEST_MEASUREMENT_MISMATCH);
      /* a PCR the document does not carry cannot satisfy an allow-list */
      same_verdict(v, l, base,
                   "{\"allow_debug\": true, \"nitro\": {\"pcrs\": {\"31\": [\""
                   "000000000000000000000000000000000000000000000000000000000000000000000000000000"
                   "000000000000000000\"]}}}",
                   json_object_get(base->measurements, "PCR31") ? SH_ATTEST_OK
                                                                : SH_ATTEST_MEASUREMENT_MISMATCH);
      break;
    case SH_TEE_SEV_SNP:
      same_verdict(v, l, base, "{\"version\": 1}", debug_want);
      snprintf(pol, sizeof pol,
               "{\"allow_debug\": true, \"sev-snp\": {\"measurement\": [\"%s\"], \"host_data\": "
               "[\"%s\"], \"allow_smt\": true, \"max_vmpl\": 3}}",
               meas(base, "measurement"), meas(base, "host_data"));
      same_verdict(v, l, base, pol, SH_ATTEST_OK);
      snprintf(pol, sizeof pol, "{\"allow_debug\": true, \"sev-snp\": {\"measurement\": [\"%s\"]}}",
               other(base, "measurement"));
      same_verdict(v, l, base, pol, SH_ATTEST_MEASUREMENT_MISMATCH);
      same_verdict(v, l, base, "{\"allow_debug\": true, \"sev-snp\": {\"min_guest_svn\": 4000}}",
                   SH_ATTEST_POLICY_DENIED);
      same_verdict(v, l, base,
                   "{\"allow_debug\": true, \"sev-snp\": {\"min_tcb\": {\"bl\": 255, \"tee\": 0, "
                   "\"snp\": 0, \"ucode\": 0}}}",
                   SH_ATTEST_TCB_OUT_OF_DATE);
      same_verdict(v, l, base,
                   "{\"allow_debug\": true, \"sev-snp\": {\"min_tcb\": {\"bl\": 0, \"tee\": 0, "
                   "\"snp\": 0, \"ucode\": 0}}}",
                   SH_ATTEST_OK);
      break;
    case SH_TEE_SGX:
      /* production: ConfigurationAndSWHardeningNeeded is not UpToDate */
      same_verdict(v, l, base, "{\"version\": 1}", SH_ATTEST_TCB_OUT_OF_DATE);
      same_verdict(v, l, base, v->permissive, SH_ATTEST_OK);
      same_verdict(v, l, base,
                   "{\"sgx\": {\"tcb_statuses\": [\"ConfigurationAndSWHardeningNeeded\"], "
                   "\"allowed_advisories\": [\"INTEL-SA-00289\"]}}",
                   SH_ATTEST_TCB_OUT_OF_DATE);
      snprintf(pol, sizeof pol,
               "{\"sgx\": {\"tcb_statuses\": [\"ConfigurationAndSWHardeningNeeded\"], "
               "\"allowed_advisories\": [\"*\"], \"mrenclave\": [\"%s\"], \"mrsigner\": [\"%s\"]}}",
               meas(base, "MRENCLAVE"), meas(base, "MRSIGNER"));
      same_verdict(v, l, base, pol, SH_ATTEST_OK);
      same_verdict(v, l, base,
                   "{\"sgx\": {\"tcb_statuses\": [\"ConfigurationAndSWHardeningNeeded\"], "
                   "\"allowed_advisories\": [\"*\"], \"min_isvsvn\": 65535}}",
                   SH_ATTEST_POLICY_DENIED);
      same_verdict(v, l, base,
                   "{\"sgx\": {\"tcb_statuses\": [\"ConfigurationAndSWHardeningNeeded\"], "
                   "\"allowed_advisories\": [\"*\"], \"isvprodid\": [65535]}}",
                   SH_ATTEST_MEASUREMENT_MISMATCH);
      break;
    case SH_TEE_TDX:
      same_verdict(v, l, base, "{\"version\": 1}", SH_ATTEST_OK);
      snprintf(pol, sizeof pol, "{\"tdx\": {\"mrtd\": [\"%s\"], \"rtmr0\": [\"%s\"]}}",
               meas(base, "MRTD"), meas(base, "RTMR0"));
      same_verdict(v, l, base, pol, SH_ATTEST_OK);
      snprintf(pol, sizeof pol, "{\"tdx\": {\"mrtd\": [\"%s\"]}}", other(base, "MRTD"));
      same_verdict(v, l, base, pol, SH_ATTEST_MEASUREMENT_MISMATCH);
      break;
    case SH_TEE_MAA:
      same_verdict(v, l, base, "{\"version\": 1}", SH_ATTEST_DEBUG_NOT_ALLOWED);
      same_verdict(v, l, base,
                   "{\"maa\": {\"allow_debug\": true, \"attestation_type\": [\"sgx\"]}}",
                   SH_ATTEST_OK);
      same_verdict(v, l, base,
                   "{\"maa\": {\"allow_debug\": true, \"attestation_type\": [\"sevsnpvm\"]}}",
                   SH_ATTEST_POLICY_DENIED);
      snprintf(pol, sizeof pol, "{\"maa\": {\"allow_debug\": true, \"mrenclave\": [\"%s\"]}}",
               meas(base, "MRENCLAVE"));
      same_verdict(v, l, base, pol, SH_ATTEST_OK);
      same_verdict(v, l, base,
                   "{\"maa\": {\"allow_debug\": true, \"mrenclave\": [\"00000000000000000000000000"
                   "00000000000000000000000000000000000001\"]}}",
                   SH_ATTEST_MEASUREMENT_MISMATCH);
      same_verdict(v, l, base, "{\"maa\": {\"allow_debug\": true, \"min_svn\": 65535}}",
                   SH_ATTEST_POLICY_DENIED);
      break;
    case SH_TEE_GCP:
      same_verdict(v, l, base, "{\"version\": 1}", SH_ATTEST_DEBUG_NOT_ALLOWED);
      same_verdict(v, l, base, "{\"gcp\": {\"allow_debug\": true, \"require_secboot\": false}}",
                   SH_ATTEST_OK);
      same_verdict(v, l, base,
                   "{\"gcp\": {\"allow_debug\": true, \"require_secboot\": false, "
                   "\"hwmodel\": [\"GCP_INTEL_TDX\"]}}",
                   SH_ATTEST_POLICY_DENIED);
      same_verdict(v, l, base,
                   "{\"gcp\": {\"allow_debug\": true, \"require_secboot\": false, "
                   "\"support_attributes\": [\"NO_SUCH_ATTRIBUTE\"]}}",
                   SH_ATTEST_POLICY_DENIED);
      break;
    default:
      break;
  }
}

static void test_vectors(void) {
  for (size_t i = 0; i < sizeof VECS / sizeof *VECS; i++) {
    const vec *v = &VECS[i];
    loaded l;
    int ok = load(v, &l);
    CHECK(ok, "%s: a vector file is missing from %s", v->name, vdir);
    if (ok) {
      sh_attest_policy *perm = policy(v->permissive);
      sh_attest_result *base = perm ? verify(v, &l, perm) : NULL;
      CHECK(base && base->verified, "%s: does not verify permissively: %s", v->name,
            base ? base->message : "-");
      if (base && base->verified) cases_for(v, &l, base);
      sh_attest_result_free(base);
      sh_attest_policy_free(perm);
    }
    unload(&l);
  }
}

/* Results that are not what the policy expects are refused, never waved through. */
static void test_fail_closed(void) {
  sh_attest_policy *prod = sh_attest_policy_production();
  sh_attest_result *r = calloc(1, sizeof *r);
  CHECK(prod && r, "setup");
  if (!prod || !r) return;
  r->measurements = json_object();
  r->claims = json_object();
  r->advisories = json_array();

  /* an unverified result keeps its own reason */
  r->verified = 0;
  r->reason = SH_ATTEST_SIGNATURE_INVALID;
  snprintf(r->message, sizeof r->message, "bad signature");
  char msg[256];
  CHECK(sh_attest_policy_check(prod, r, msg, sizeof msg) == SH_ATTEST_SIGNATURE_INVALID &&
            !strcmp(msg, "bad signature"),
        "unverified: %s", msg);

  r->verified = 1;
  r->reason = SH_ATTEST_OK;
  r->message[0] = '\0';
  /* SNP facts missing from the claims */
  r->tee = SH_TEE_SEV_SNP;
  CHECK(sh_attest_policy_check(prod, r, msg, sizeof msg) == SH_ATTEST_POLICY_DENIED, "snp: %s",
        msg);
  /* DCAP without a TCB status */
  r->tee = SH_TEE_TDX;
  CHECK(sh_attest_policy_check(prod, r, msg, sizeof msg) == SH_ATTEST_TCB_OUT_OF_DATE, "tdx: %s",
        msg);
  /* MAA without its attestation type */
  r->tee = SH_TEE_MAA;
  CHECK(sh_attest_policy_check(prod, r, msg, sizeof msg) == SH_ATTEST_POLICY_DENIED, "maa: %s",
        msg);
  /* a debug Nitro result under production */
  r->tee = SH_TEE_SIMULATED;
  r->debug = 1;
  CHECK(sh_attest_policy_check(prod, r, msg, sizeof msg) == SH_ATTEST_DEBUG_NOT_ALLOWED, "sim: %s",
        msg);
  /* a type no policy section covers */
  r->debug = 0;
  r->tee = SH_TEE_UNKNOWN;
  CHECK(sh_attest_policy_check(prod, r, msg, sizeof msg) == SH_ATTEST_POLICY_DENIED, "unknown: %s",
        msg);
  /* the check never writes into the caller's result */
  CHECK(r->verified == 1 && r->reason == SH_ATTEST_OK && r->message[0] == '\0', "result untouched");
  sh_attest_result_free(r);
  sh_attest_policy_free(prod);
}

int main(void) {
  vdir = getenv("SHIELD_VECTORS");
  char probe[1024];
  snprintf(probe, sizeof probe, "%s/attestation/MANIFEST.md", vdir ? vdir : "");
  FILE *f = vdir ? fopen(probe, "r") : NULL;
  test_fail_closed();
  if (!f) {
    printf("SKIP: the real vectors are absent (set SHIELD_VECTORS to ../shared/vectors)\n");
    test_summary();
    return 77;
  }
  fclose(f);
  test_vectors();
  return test_summary();
}
