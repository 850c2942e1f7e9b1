/* common/tee.c — the TEE type table: canonical names and the aliases of docs/protocol.md §0.
 *
 * One table serves every parser (evidence type headers, --attest-types, the policy's
 * sections, `shield verify --type`, the Python API), so a name is accepted everywhere or
 * nowhere. */
#include "common.h"

#include <string.h>

static const struct {
  const char *name;
  sh_tee tee;
} names[] = {
    /* canonical names first: sh_tee_name returns the first entry of a type */
    {"nitro", SH_TEE_NITRO},
    {"sev-snp", SH_TEE_SEV_SNP},
    {"azure-snp", SH_TEE_AZURE_SNP},
    {"maa", SH_TEE_MAA},
    {"gcp", SH_TEE_GCP},
    {"tdx", SH_TEE_TDX},
    {"sgx", SH_TEE_SGX},
    {"simulated", SH_TEE_SIMULATED},
    {"azure-tdx", SH_TEE_AZURE_TDX},
    /* the Shield library's spellings (docs/protocol.md §0) */
    {"aws_nitro", SH_TEE_NITRO},
    {"sev", SH_TEE_SEV_SNP},
    {"gcp_sev", SH_TEE_SEV_SNP},
    {"azure_maa", SH_TEE_MAA},
    {"intel_sgx", SH_TEE_SGX},
};

sh_tee sh_tee_from_namen(const char *name, size_t len) {
  if (!name) return SH_TEE_UNKNOWN;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strlen(names[i].name) == len && memcmp(names[i].name, name, len) == 0) return names[i].tee;
  return SH_TEE_UNKNOWN;
}

sh_tee sh_tee_from_name(const char *name) {
  return name ? sh_tee_from_namen(name, strlen(name)) : SH_TEE_UNKNOWN;
}

const char *sh_tee_name(sh_tee t) {
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].tee == t) return names[i].name;
  return "unknown";
}

int sh_tee_parse_list(const char *list, size_t len, unsigned *mask, sh_iovec *bad) {
  size_t i = 0;
  *mask = 0;
  if (bad) *bad = (sh_iovec){list, 0};
  if (!list || len == 0) return -1;
  for (;;) {
    const char *item = list + i, *comma = memchr(item, ',', len - i);
    size_t n = comma ? (size_t)(comma - item) : len - i;
    sh_tee t = sh_tee_from_namen(item, n);
    if (t == SH_TEE_UNKNOWN) {
      if (bad) *bad = (sh_iovec){item, n};
      *mask = 0;
      return -1;
    }
    *mask |= SH_TEE_BIT(t);
    if (!comma) return 0;
    i += n + 1; /* past the comma: a trailing comma leaves an empty item, refused above */
  }
}
