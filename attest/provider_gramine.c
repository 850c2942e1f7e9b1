/* attest/provider_gramine.c — SGX evidence inside a Gramine enclave, through the pseudo-files
 * Gramine mounts at /dev/attestation (Gramine docs, "Attestation and Secret Provisioning",
 * /dev/attestation interface):
 *
 *   attestation_type   "none", "epid" or "dcap": only DCAP quotes are verifiable here;
 *   user_report_data   write 64 bytes: the enclave report's REPORT_DATA for the next quote;
 *   quote              read: a quote of an enclave report carrying that REPORT_DATA.
 *
 * Why a lock: the two files are one state per process, so a write and a read from two
 * threads interleaved would give one caller the other's quote.  The quote's REPORT_DATA is
 * compared with D besides. */
#include "provider.h"
#include "dcap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define QUOTE_MAX (64u * 1024u)

int sh_attest__quote_binds(const uint8_t *q, size_t len, int tdx, const uint8_t D[64], char *err,
                           size_t errlen) {
  sh_attest_result *r = sh_attest__result_new();
  sh_dcap_quote dq;
  if (!r) return sh_attest__prov_err(err, errlen, "out of memory");
  int rc = sh_attest__dcap_parse_quote(r, q, len, &dq);
  if (rc < 0)
    sh_attest__prov_err(err, errlen, "%s: the quote does not parse: %s", tdx ? "tdx" : "sgx",
                        r->message);
  else if ((dq.tee_type == DQ_TEE_TDX) != tdx)
    rc = sh_attest__prov_err(err, errlen, "%s: the quote is of another TEE type",
                             tdx ? "tdx" : "sgx");
  else if (memcmp(dq.body + (tdx ? TD_REPORTDATA : RB_REPORTDATA), D, 64) != 0)
    rc = sh_attest__prov_err(err, errlen, "%s: the quote's REPORT_DATA is not D",
                             tdx ? "tdx" : "sgx");
  sh_attest_result_free(r);
  return rc;
}

int sh_attest__gramine_check(sh_attest_provider *p, char *err, size_t errlen) {
  char path[4096];
  uint8_t *t = NULL;
  size_t n = 0;
  if (sh_attest__prov_path(p, SH_PATH_GRAMINE "/attestation_type", path, sizeof path) < 0 ||
      sh_attest__prov_read(path, 64, &t, &n) < 0)
    return sh_attest__prov_err(err, errlen,
                               "sgx: cannot read %s (%s): not a Gramine SGX enclave with remote "
                               "attestation",
                               path, strerror(errno));
  while (n && (t[n - 1] == '\n' || t[n - 1] == ' '))
    t[--n] = 0;
  int dcap = n == 4 && !memcmp(t, "dcap", 4);
  if (!dcap)
    sh_attest__prov_err(err, errlen,
                        "sgx: Gramine's attestation type is \"%s\", not \"dcap\" (set "
                        "sgx.remote_attestation = \"dcap\" in the manifest)",
                        (char *)t);
  free(t);
  return dcap ? 0 : -1;
}

int sh_attest__gramine_evidence(sh_attest_provider *p, const uint8_t D[64], uint8_t **out,
                                size_t *len, char *err, size_t errlen) {
  char urd[4096], qpath[4096];
  uint8_t *q = NULL;
  size_t qn = 0;
  int rc = -1;
  if (sh_attest__prov_path(p, SH_PATH_GRAMINE "/user_report_data", urd, sizeof urd) < 0 ||
      sh_attest__prov_path(p, SH_PATH_GRAMINE "/quote", qpath, sizeof qpath) < 0)
    return sh_attest__prov_err(err, errlen, "sgx: path too long");
  pthread_mutex_lock(&p->mu);
  if (sh_attest__prov_write(urd, D, 64) < 0) {
    sh_attest__prov_err(err, errlen, "sgx: writing %s: %s", urd, strerror(errno));
  } else if (sh_attest__prov_read(qpath, QUOTE_MAX, &q, &qn) < 0) {
    sh_attest__prov_err(err, errlen, "sgx: reading %s: %s", qpath, strerror(errno));
  } else {
    rc = 0;
  }
  pthread_mutex_unlock(&p->mu);
  if (rc == 0 && sh_attest__quote_binds(q, qn, 0, D, err, errlen) < 0) rc = -1;
  if (rc < 0) {
    free(q);
    return -1;
  }
  *out = q;
  *len = qn;
  return 0;
}
