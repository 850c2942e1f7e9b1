/* attest/maa.c — Microsoft Azure Attestation tokens (type maa).
 *
 * A JWT signed by the attestation instance; its keys come from the instance's JWKS (its /certs
 * endpoint, entries that carry only x5c), configured or fetched (fetch.c), never from the
 * token's jku.  Claims (Azure Attestation "Claim sets"):
 *   x-ms-attestation-type "sgx": x-ms-sgx-is-debuggable, -mrenclave, -mrsigner, -product-id,
 *     -svn, -report-data, -ehd (enclave held data; REPORT_DATA[0:32] = SHA-256(ehd));
 *   "sevsnpvm" (claims at the top level) or "azurevm" (claims in x-ms-isolation-tee):
 *     x-ms-sevsnpvm-is-debuggable, -launchmeasurement, -hostdata, -idkeydigest, -reportdata,
 *     x-ms-compliance-status.
 * Binding (docs/protocol.md §1.2): the "nonce" claim is base64url(D).  Checks run cheapest first:
 * structure, binding, times, iss/aud, key lookup, signature, policy.
 */
#include "token.h"

#include <stdlib.h>
#include <string.h>

typedef struct maa_info {
  const char *type; /* the TEE's attestation type: sgx or sevsnpvm */
  json_t *tee;      /* object holding the TEE claims (payload or x-ms-isolation-tee) */
} maa_info;

static int sgx_claims(sh_vctx *v, maa_info *m) {
  json_t *p = m->tee, *meas = v->r->measurements;
  json_t *dbg = json_object_get(p, "x-ms-sgx-is-debuggable");
  json_t *pid = json_object_get(p, "x-ms-sgx-product-id"),
         *svn = json_object_get(p, "x-ms-sgx-svn");
  json_t *rd = json_object_get(p, "x-ms-sgx-report-data"),
         *ehd = json_object_get(p, "x-ms-sgx-ehd");
  uint8_t report_data[64];
  if (!json_is_boolean(dbg) || (pid && !json_is_integer(pid)) || (svn && !json_is_integer(svn)))
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED,
                           "SGX claims: is-debuggable, product-id or svn missing or mistyped");
  if (sh_attest__jwt_hex_claim(meas, "MRENCLAVE", json_object_get(p, "x-ms-sgx-mrenclave"), 32,
                               NULL) < 0 ||
      sh_attest__jwt_hex_claim(meas, "MRSIGNER", json_object_get(p, "x-ms-sgx-mrsigner"), 32,
                               NULL) < 0)
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED,
                           "SGX claims: mrenclave/mrsigner are not 32-byte hex");
  v->r->debug = json_is_true(dbg);
  if (rd && sh_attest__jwt_hex_claim(meas, "report_data", rd, 64, report_data) < 0)
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "x-ms-sgx-report-data is not 64-byte hex");
  if (ehd) {
    /* The enclave held data is what the enclave put in REPORT_DATA (hashed): a token whose
     * ehd does not hash to REPORT_DATA[0:32] does not bind that data to the enclave. */
    const char *s = json_string_value(ehd);
    size_t n = 0;
    uint8_t *b = s ? sh_b64_decode_alloc(s, strlen(s), SH_JWT_B64, &n) : NULL, h[32];
    int ok = b && rd && EVP_Digest(b, n, h, NULL, EVP_sha256(), NULL) &&
             !CRYPTO_memcmp(h, report_data, 32);
    free(b);
    if (!ok)
      return sh_attest__fail(v->r, SH_ATTEST_BINDING_MISMATCH,
                             "x-ms-sgx-ehd does not hash to REPORT_DATA[0:32]");
  }
  return 0;
}

static int snp_claims(sh_vctx *v, maa_info *m) {
  json_t *p = m->tee, *meas = v->r->measurements, *x;
  json_t *dbg = json_object_get(p, "x-ms-sevsnpvm-is-debuggable");
  if (!json_is_boolean(dbg))
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED,
                           "SNP claims: x-ms-sevsnpvm-is-debuggable missing");
  v->r->debug = json_is_true(dbg);
  if (sh_attest__jwt_hex_claim(meas, "measurement",
                               json_object_get(p, "x-ms-sevsnpvm-launchmeasurement"), 48, NULL) < 0)
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED,
                           "x-ms-sevsnpvm-launchmeasurement is not 48-byte hex");
  if ((x = json_object_get(p, "x-ms-sevsnpvm-hostdata"))) {
    if (sh_attest__jwt_hex_claim(meas, "host_data", x, 32, NULL) < 0)
      return sh_attest__fail(v->r, SH_ATTEST_MALFORMED,
                             "x-ms-sevsnpvm-hostdata is not 32-byte hex");
  }
  if ((x = json_object_get(p, "x-ms-sevsnpvm-idkeydigest")) &&
      sh_attest__jwt_hex_claim(meas, "id_key_digest", x, 48, NULL) < 0)
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED,
                           "x-ms-sevsnpvm-idkeydigest is not 48-byte hex");
  if ((x = json_object_get(p, "x-ms-sevsnpvm-reportdata")) &&
      sh_attest__jwt_hex_claim(meas, "report_data", x, 64, NULL) < 0)
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED,
                           "x-ms-sevsnpvm-reportdata is not 64-byte hex");
  x = json_object_get(p, "x-ms-compliance-status");
  if (x && !json_is_string(x))
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "x-ms-compliance-status is not a string");
  return 0;
}

static int claims(sh_vctx *v, const sh_jwt *j, maa_info *m) {
  json_t *p = j->payload;
  const char *type = json_string_value(json_object_get(p, "x-ms-attestation-type"));
  if (!type)
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "token has no x-ms-attestation-type");
  m->tee = p;
  m->type = type;
  if (!strcmp(type, "azurevm")) { /* Azure CVM: the isolation TEE's claims are nested */
    m->tee = json_object_get(p, "x-ms-isolation-tee");
    m->type = json_string_value(json_object_get(m->tee, "x-ms-attestation-type"));
    if (!json_is_object(m->tee) || !m->type)
      return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "azurevm token without x-ms-isolation-tee");
  }
  if (!strcmp(m->type, "sgx")) return sgx_claims(v, m);
  if (!strcmp(m->type, "sevsnpvm")) return snp_claims(v, m);
  return sh_attest__fail(v->r, SH_ATTEST_UNSUPPORTED_TYPE,
                         "Azure Attestation type %.32s is not supported", m->type);
}

/* The "maa" policy section on the result: claims (the token payload; an azurevm token's
 * isolation-TEE claims are nested) and measurements (MRENCLAVE, MRSIGNER, measurement,
 * host_data).  An allow-list whose value the token lacks refuses it. */
int sh_attest__maa_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug) {
  const struct sh_token_policy *t = sh_attest__token_policy_for(p, SH_TEE_MAA);
  json_t *tee = r->claims;
  const char *type = json_string_value(json_object_get(tee, "x-ms-attestation-type"));
  if (type && !strcmp(type, "azurevm")) {
    tee = json_object_get(tee, "x-ms-isolation-tee");
    type = json_string_value(json_object_get(tee, "x-ms-attestation-type"));
  }
  if (!type)
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "the result lacks x-ms-attestation-type");
  if (r->debug && !sh_attest__allow_debug(p, t->allow_debug, allow_debug))
    return sh_attest__fail(r, SH_ATTEST_DEBUG_NOT_ALLOWED, "debuggable %s TEE", type);
  if (t->n_attestation_type &&
      !sh_attest__token_strlist_has(t->attestation_type, t->n_attestation_type, type))
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "attestation type %s not allowed by policy",
                           type);
  json_t *m = r->measurements;
  if (!sh_attest__hexlist_allows_json(&t->mrenclave, m, "MRENCLAVE") ||
      !sh_attest__hexlist_allows_json(&t->mrsigner, m, "MRSIGNER") ||
      !sh_attest__hexlist_allows_json(&t->measurement, m, "measurement") ||
      !sh_attest__hexlist_allows_json(&t->host_data, m, "host_data"))
    return sh_attest__fail(r, SH_ATTEST_MEASUREMENT_MISMATCH, "measurement not allowed by policy");
  json_t *pid = json_object_get(tee, "x-ms-sgx-product-id"),
         *svn = json_object_get(tee, "x-ms-sgx-svn");
  if (t->n_product_id) {
    int ok = 0;
    for (size_t i = 0; i < t->n_product_id && json_is_integer(pid); i++)
      ok |= t->product_id[i] == json_integer_value(pid);
    if (!ok)
      return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "SGX product id not allowed by policy");
  }
  if (t->min_svn && (!json_is_integer(svn) || json_integer_value(svn) < t->min_svn))
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "SGX svn below the policy's min_svn");
  const char *compliance = json_string_value(json_object_get(tee, "x-ms-compliance-status"));
  if (t->n_compliance_status &&
      !sh_attest__token_strlist_has(t->compliance_status, t->n_compliance_status, compliance))
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED,
                           "compliance status %.40s not allowed by policy",
                           compliance ? compliance : "(none)");
  return 0;
}

int sh_attest__maa_verify(sh_vctx *v, const uint8_t *ev, size_t len) {
  sh_attest_result *r = v->r;
  const struct sh_token_policy *t = sh_attest__token_policy_for(v->policy, SH_TEE_MAA);
  sh_jwt j;
  sh_jwks *keys = NULL;
  char *want = NULL;
  maa_info m;
  int rc = -1;
  memset(&m, 0, sizeof m);
  /* 1. size cap and structure */
  if (sh_attest__jwt_open(v, ev, len, t->algorithms, &j) < 0) goto fail;
  if (claims(v, &j, &m) < 0) goto fail;
  /* 2. binding: nonce claim = base64url(D) */
  if (v->o->nonce) {
    const char *n = json_string_value(json_object_get(j.payload, "nonce"));
    if (!(want = sh_attest__jwt_expected_nonce(v)) || !n || strcmp(n, want)) {
      sh_attest__fail(r, SH_ATTEST_BINDING_MISMATCH, "nonce claim is not the binding digest");
      goto fail;
    }
  }
  /* 3. time, issuer, audience */
  if (sh_attest__jwt_check_times(v, &j) < 0 ||
      sh_attest__jwt_check_issuer(v, &j, v->o->issuer) < 0 ||
      sh_attest__jwt_check_audience(v, &j, v->o->audience) < 0)
    goto fail;
  /* 4. key from the configured JWKS, then the signature */
  EVP_PKEY *pk = sh_attest__jwks_configured_key(v, &j, &keys);
  /* 5. policy, and the binding recorded */
  rc = sh_attest__jwt_finish(v, &j, t->algorithms, pk, sh_attest__maa_policy);
fail:
  free(want);
  sh_attest__jwks_free(keys);
  sh_attest__jwt_free(&j);
  return rc;
}
