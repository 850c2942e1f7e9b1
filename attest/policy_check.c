/* attest/policy_check.c — the policy step on its own (sh_attest_policy_check, attest.h): a
 * policy applied to a result verified earlier, by the per-type evaluators the verifiers end
 * with (sh_attest__nitro_policy, sh_attest__snp_policy, sh_attest__dcap_policy,
 * sh_attest__maa_policy, sh_attest__gcp_policy). */
#include "internal.h"

#include <stdio.h>

/* One evaluator for both uses: a scratch copy of the result's header (sh_attest__fail writes
 * verdict fields only; the JSON it reads is shared, never modified) goes through the type's policy
 * step, so a re-check can never disagree with what verification would have decided. */
sh_attest_reason sh_attest_policy_check(const sh_attest_policy *policy,
                                        const sh_attest_result *result, char *msg, size_t msglen) {
  sh_attest_result r = *result;
  int rc;
  if (msg && msglen) msg[0] = '\0';
  if (!result->verified) {
    if (msg && msglen) snprintf(msg, msglen, "%s", result->message);
    return result->reason != SH_ATTEST_OK ? result->reason : SH_ATTEST_POLICY_DENIED;
  }
  r.message[0] = '\0';
  switch (r.tee) {
    case SH_TEE_NITRO:
    case SH_TEE_SIMULATED:
      rc = sh_attest__nitro_policy(policy, &r, 0);
      break;
    case SH_TEE_SEV_SNP:
    case SH_TEE_AZURE_SNP:
      rc = sh_attest__snp_policy(policy, &r, 0);
      break;
    case SH_TEE_TDX:
    case SH_TEE_AZURE_TDX:
    case SH_TEE_SGX:
      rc = sh_attest__dcap_policy(policy, &r, 0);
      break;
    case SH_TEE_MAA:
      rc = sh_attest__maa_policy(policy, &r, 0);
      break;
    case SH_TEE_GCP:
      rc = sh_attest__gcp_policy(policy, &r, 0);
      break;
    default:
      rc = sh_attest__fail(&r, SH_ATTEST_POLICY_DENIED, "no policy applies to this TEE type");
  }
  if (rc == 0) return SH_ATTEST_OK;
  if (msg && msglen) snprintf(msg, msglen, "%s", r.message);
  return r.reason;
}
