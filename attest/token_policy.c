/* attest/token_policy.c — the "maa" and "gcp" sections of the policy document (policy.c).
 *
 *   "maa": {
 *     "allow_debug": false,                  // x-ms-sgx-is-debuggable /
 * x-ms-sevsnpvm-is-debuggable "algorithms": ["RS256"],               // JWS algs accepted: RS256,
 * PS256, ES256, ES384 "attestation_type": ["sgx", "sevsnpvm"],   // x-ms-attestation-type (azurevm:
 * its isolation TEE) "mrenclave": ["<hex 32>"], "mrsigner": ["<hex 32>"],     // SGX "product_id":
 * [1], "min_svn": 0,                           // SGX "measurement": ["<hex 48>"], "host_data":
 * ["<hex 32>"],  // SEV-SNP CVM "compliance_status": ["azure-compliant-cvm"]             //
 * x-ms-compliance-status
 *   },
 *   "gcp": {
 *     "allow_debug": false,                  // dbgstat must be "disabled-since-boot" unless true
 *     "algorithms": ["RS256"],
 *     "swname": ["CONFIDENTIAL_SPACE"],      // default
 *     "hwmodel": ["GCP_AMD_SEV", "GCP_INTEL_TDX"],   // default: any
 *     "require_secboot": true,               // default
 *     "support_attributes": ["STABLE"],      // every one listed must be in the token
 *     "image_digest": ["sha256:<hex 64>"]    // submods.container.image_digest allow-list
 *   }
 *
 * Empty or absent lists mean "any value" (except the defaults noted).  Unknown keys are errors.
 * A hex allow-list may also be one string instead of a list (policy.c's one loader).
 */
#include "token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct sh_token_policy MAA_DEFAULT = {.allow_debug = -1, .algorithms = SH_JWT_RS256};
static char *const CS_SWNAME[] = {"CONFIDENTIAL_SPACE"};
static const struct sh_token_policy GCP_DEFAULT = {.allow_debug = -1,
                                                   .algorithms = SH_JWT_RS256,
                                                   .swname = (char **)CS_SWNAME,
                                                   .n_swname = 1,
                                                   .require_secboot = 1};

static void strlist_free(char **l, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(l[i]);
  free(l);
}

void sh_attest__token_policy_free(struct sh_token_policy *t) {
  if (!t) return;
  strlist_free(t->attestation_type, t->n_attestation_type);
  strlist_free(t->compliance_status, t->n_compliance_status);
  strlist_free(t->hwmodel, t->n_hwmodel);
  strlist_free(t->image_digest, t->n_image_digest);
  strlist_free(t->support_attributes, t->n_support_attributes);
  if (t->swname != (char **)CS_SWNAME) strlist_free(t->swname, t->n_swname);
  for (sh_hexlist *h = &t->mrenclave; h <= &t->host_data; h++)
    sh_attest__hexlist_free(h);
  free(t->product_id);
  free(t);
}

static int strlist(json_t *v, char ***out, size_t *n, char *eb, size_t en, const char *k) {
  if (!json_is_array(v)) return sh_attest__policy_err(eb, en, "expected a list of strings", k);
  *out = calloc(json_array_size(v) + 1, sizeof **out);
  if (!*out) return sh_attest__policy_err(eb, en, "out of memory", NULL);
  size_t i;
  json_t *e;
  json_array_foreach(v, i, e) {
    if (!json_is_string(e) || !((*out)[i] = strdup(json_string_value(e))))
      return sh_attest__policy_err(eb, en, "expected a list of strings", k);
    *n = i + 1;
  }
  return 0;
}

int sh_attest__token_policy_load(json_t *o, sh_tee tee, struct sh_token_policy **out, char *eb,
                                 size_t en) {
  int is_maa = tee == SH_TEE_MAA;
  struct sh_token_policy *t = calloc(1, sizeof *t);
  if (!t) return sh_attest__policy_err(eb, en, "out of memory", NULL);
  *t = is_maa ? MAA_DEFAULT : GCP_DEFAULT;
  *out = t;
  if (!json_is_object(o))
    return sh_attest__policy_err(eb, en, "expected an object", sh_tee_name(tee));
  const char *k;
  json_t *v;
  json_object_foreach(o, k, v) {
    int rc = 0;
    if (!strcmp(k, "allow_debug")) {
      rc = json_is_boolean(v) ? (t->allow_debug = json_is_true(v), 0)
                              : sh_attest__policy_err(eb, en, "expected true or false", k);
    } else if (!strcmp(k, "algorithms")) {
      size_t i;
      json_t *e;
      t->algorithms = 0;
      if (!json_is_array(v) || !json_array_size(v))
        return sh_attest__policy_err(eb, en, "expected a non-empty list", k);
      json_array_foreach(v, i, e) {
        unsigned a = sh_attest__jwt_alg_from_name(json_string_value(e));
        if (!a)
          return sh_attest__policy_err(eb, en, "algorithms: only RS256, PS256, ES256, ES384",
                                       json_string_value(e));
        t->algorithms |= a;
      }
    } else if (is_maa && !strcmp(k, "attestation_type")) {
      rc = strlist(v, &t->attestation_type, &t->n_attestation_type, eb, en, k);
    } else if (is_maa && !strcmp(k, "compliance_status")) {
      rc = strlist(v, &t->compliance_status, &t->n_compliance_status, eb, en, k);
    } else if (is_maa && !strcmp(k, "mrenclave")) {
      rc = sh_attest__hexlist_load(v, 32, &t->mrenclave, eb, en, k);
    } else if (is_maa && !strcmp(k, "mrsigner")) {
      rc = sh_attest__hexlist_load(v, 32, &t->mrsigner, eb, en, k);
    } else if (is_maa && !strcmp(k, "measurement")) {
      rc = sh_attest__hexlist_load(v, 48, &t->measurement, eb, en, k);
    } else if (is_maa && !strcmp(k, "host_data")) {
      rc = sh_attest__hexlist_load(v, 32, &t->host_data, eb, en, k);
    } else if (is_maa && !strcmp(k, "product_id")) {
      size_t i;
      json_t *e;
      if (!json_is_array(v) ||
          !(t->product_id = calloc(json_array_size(v) + 1, sizeof *t->product_id)))
        return sh_attest__policy_err(eb, en, "expected a list of integers", k);
      json_array_foreach(v, i, e) {
        if (!json_is_integer(e))
          return sh_attest__policy_err(eb, en, "expected a list of integers", k);
        t->product_id[t->n_product_id++] = json_integer_value(e);
      }
    } else if (is_maa && !strcmp(k, "min_svn")) {
      rc = json_is_integer(v) && json_integer_value(v) >= 0
               ? (t->min_svn = json_integer_value(v), 0)
               : sh_attest__policy_err(eb, en, "expected a non-negative integer", k);
    } else if (!is_maa && !strcmp(k, "swname")) {
      t->swname = NULL;
      t->n_swname = 0;
      rc = strlist(v, &t->swname, &t->n_swname, eb, en, k);
    } else if (!is_maa && !strcmp(k, "hwmodel")) {
      rc = strlist(v, &t->hwmodel, &t->n_hwmodel, eb, en, k);
    } else if (!is_maa && !strcmp(k, "image_digest")) {
      rc = strlist(v, &t->image_digest, &t->n_image_digest, eb, en, k);
    } else if (!is_maa && !strcmp(k, "support_attributes")) {
      rc = strlist(v, &t->support_attributes, &t->n_support_attributes, eb, en, k);
    } else if (!is_maa && !strcmp(k, "require_secboot")) {
      rc = json_is_boolean(v) ? (t->require_secboot = json_is_true(v), 0)
                              : sh_attest__policy_err(eb, en, "expected true or false", k);
    } else {
      rc = sh_attest__policy_err(eb, en, "unknown key", k);
    }
    if (rc < 0) return -1;
  }
  return 0;
}

const struct sh_token_policy *sh_attest__token_policy_for(const sh_attest_policy *p, sh_tee tee) {
  if (tee == SH_TEE_MAA) return p->maa ? p->maa : &MAA_DEFAULT;
  return p->gcp ? p->gcp : &GCP_DEFAULT;
}

int sh_attest__token_strlist_has(char *const *l, size_t n, const char *s) {
  for (size_t i = 0; s && i < n; i++)
    if (!strcmp(l[i], s)) return 1;
  return 0;
}
