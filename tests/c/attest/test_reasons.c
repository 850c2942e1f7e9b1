/* tests/c/attest/test_reasons.c — docs/protocol.md §3 as attest exports it: every reason has a
 * name, one error class and that class's HTTP status (the gate's replies and
 * shield_asgi._native.REASONS read these); values outside the enum read as malformed. */
#include "testutil.h"
#include "attest.h"

#include <string.h>

int main(void) {
  CHECK(sh_attest_reason_name(SH_ATTEST_OK) == NULL &&
            sh_attest_reason_class(SH_ATTEST_OK) == NULL &&
            sh_attest_reason_status(SH_ATTEST_OK) == 0,
        "OK is no refusal: no name, class or status");
  const sh_attest_reason outside[] = {(sh_attest_reason)-1, SH_ATTEST_REASON_COUNT_,
                                      (sh_attest_reason)1000};
  for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++)
    CHECK(!strcmp(sh_attest_reason_name(outside[i]), "malformed") &&
              !strcmp(sh_attest_reason_class(outside[i]), "attestation_invalid") &&
              sh_attest_reason_status(outside[i]) == 401,
          "reason %d outside the enum reads as malformed", (int)outside[i]);
  for (int r = 1; r < SH_ATTEST_REASON_COUNT_; r++) {
    const char *name = sh_attest_reason_name((sh_attest_reason)r);
    const char *cls = sh_attest_reason_class((sh_attest_reason)r);
    CHECK(name && *name && cls, "reason %d has a name and a class", r);
    if (!name || !cls) continue;
    int want = !strcmp(cls, "attestation_policy")        ? 403
               : !strcmp(cls, "attestation_unavailable") ? 503
               : !strcmp(cls, "attestation_required") || !strcmp(cls, "attestation_invalid") ||
                       !strcmp(cls, "attestation_failed")
                   ? 401
                   : -1;
    CHECK(want != -1, "%s: class %s is one of §3's five", name, cls);
    CHECK(sh_attest_reason_status((sh_attest_reason)r) == want, "%s (%s): status %d, want %d", name,
          cls, sh_attest_reason_status((sh_attest_reason)r), want);
  }
  CHECK(!strcmp(sh_attest_reason_class(SH_ATTEST_MISSING), "attestation_required"),
        "missing evidence is attestation_required (§3)");
  CHECK(!strcmp(sh_attest_reason_name(SH_ATTEST_OVERLOADED), "overloaded") &&
            sh_attest_reason_status(SH_ATTEST_OVERLOADED) == 503,
        "overloaded is a 503");
  return test_summary();
}
