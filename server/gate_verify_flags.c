/*
 * server/gate_verify_flags.c — the flags that give the gate what verification needs at run
 * time (keys, issuers, audiences, collateral, fetching), and the start-up checks that refuse a
 * configuration which could never verify an accepted type.  In the server library (called
 * from config.c through gate_flags.c, before any worker forks), so it has no attest/
 * dependency: it checks forms (URLs, readable files, required combinations); the contents
 * (JWKS JSON, DCAP collateral) are loaded by gate_verify.c at sh_gate_wrap.
 *
 *   --attest-maa-issuer URL        the MAA instance (exact "iss"); required with maa
 *   --attest-maa-audience VALUE    the expected "aud" (optional: MAA tokens carry none; their
 *                                  binding to this server is the nonce claim, §1.2)
 *   --attest-maa-jwks FILE         the instance's JWKS (its /certs document), read at start
 *   --attest-gcp-audience VALUE    the expected "aud" of Confidential Space tokens; required
 *                                  with gcp (the issuer is Google's, fixed, always checked)
 *   --attest-gcp-jwks FILE         Google's JWKS (OIDC tokens only; PKI tokens chain to the
 *                                  pinned Confidential Space root)
 *   --attest-{maa,gcp}-jwks-url URL     fetch the JWKS here instead of by OpenID discovery
 *   --attest-{maa,gcp}-discovery-url URL  OpenID discovery at this base instead of the
 *                                  issuer itself (a forwarder; the document must still name the
 *                                  issuer)
 *   --jwks-url URL                 the one of the two above when exactly one of maa/gcp is on
 *   --attest-collateral FILE|DIR   DCAP collateral (tdx, sgx; format in attest/collateral.c)
 *   --attest-fetch                 fetch what is missing (AMD KDS, Intel PCS/PCCS, JWKS),
 *                                  cached; --attest-offline: only from --attest-cache-dir files
 *   --attest-cache-dir DIR         disk cache of fetched documents (default: memory only)
 *   --attest-fetch-timeout S       per request (default 10 s, at most 120)
 *   --kds-url URL, --pcs-url URL, --fetch-ca FILE   as `shield verify`
 *   --attest-client-vcek           sev-snp/azure-snp without fetching: clients send the VCEK
 *                                  in the evidence bundle (protocol.md §1.5), chained to a
 *                                  pinned AMD root like any other
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "gate.h"
#include "server_internal.h"

enum { V_STR, V_BOOL };

typedef struct vflag {
  const char *name;
  int kind;
  size_t off; /* offsetof the sh_config field (const char * or int) */
} vflag;

#define F(n, k, field) \
  { n, k, offsetof(sh_config, field) }
static const vflag vflags[] = {
    F("--attest-maa-issuer", V_STR, attest_maa_issuer),
    F("--attest-maa-audience", V_STR, attest_maa_audience),
    F("--attest-maa-jwks", V_STR, attest_maa_jwks),
    F("--attest-maa-jwks-url", V_STR, attest_maa_jwks_url),
    F("--attest-maa-discovery-url", V_STR, attest_maa_discovery_url),
    F("--attest-gcp-audience", V_STR, attest_gcp_audience),
    F("--attest-gcp-jwks", V_STR, attest_gcp_jwks),
    F("--attest-gcp-jwks-url", V_STR, attest_gcp_jwks_url),
    F("--attest-gcp-discovery-url", V_STR, attest_gcp_discovery_url),
    F("--jwks-url", V_STR, attest_jwks_url),
    F("--attest-collateral", V_STR, attest_collateral),
    F("--attest-fetch", V_BOOL, attest_fetch),
    F("--attest-offline", V_BOOL, attest_offline),
    F("--attest-cache-dir", V_STR, attest_cache_dir),
    F("--attest-fetch-timeout", V_STR, attest_fetch_timeout),
    F("--kds-url", V_STR, attest_kds_url),
    F("--pcs-url", V_STR, attest_pcs_url),
    F("--fetch-ca", V_STR, attest_fetch_ca),
    F("--attest-client-vcek", V_BOOL, attest_client_vcek),
};
#undef F
#define NVFLAGS (sizeof vflags / sizeof vflags[0])

int sh_gate_verify_parse_flag(sh_config *cfg, const char *name, const char *value, int argc,
                              char **argv, int *i, sh_error *err) {
  const vflag *f = NULL;
  for (size_t k = 0; k < NVFLAGS && !f; k++)
    if (strcmp(name, vflags[k].name) == 0) f = &vflags[k];
  if (!f) return 0;
  char *field = (char *)cfg + f->off;
  if (f->kind == V_BOOL) {
    if (sh_gate_flag_bool(name, value, err) < 0) return SH_EINVAL;
    *(int *)(void *)field = 1;
    return 1;
  }
  if (sh_gate_flag_value(name, &value, argc, argv, i, err) < 0) return SH_EINVAL;
  const char **dst = (const char **)(void *)field;
  if (*dst) {
    SH_ERR(err, SH_EINVAL, "%s given twice", name);
    return SH_EINVAL;
  }
  *dst = value;
  return 1;
}

/* ---- start-up checks ---- */

/* Which TEE types --attest-types names (protocol.md §0 names and aliases). */
typedef struct types_on {
  int maa, gcp, dcap, snp;
  char dcap_name[12], snp_name[12];
} types_on;

static int listed(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; p && *p;) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n && strncmp(p, name, n) == 0) return 1;
    p = e ? e + 1 : NULL;
  }
  return 0;
}

static void types_of(const char *list, types_on *t) {
  memset(t, 0, sizeof *t);
  t->maa = listed(list, "maa") || listed(list, "azure_maa");
  t->gcp = listed(list, "gcp");
  if (listed(list, "tdx"))
    snprintf(t->dcap_name, sizeof t->dcap_name, "tdx");
  else if (listed(list, "azure-tdx"))
    snprintf(t->dcap_name, sizeof t->dcap_name, "azure-tdx");
  else if (listed(list, "sgx") || listed(list, "intel_sgx"))
    snprintf(t->dcap_name, sizeof t->dcap_name, "sgx");
  t->dcap = t->dcap_name[0] != 0;
  if (listed(list, "sev-snp") || listed(list, "sev") || listed(list, "gcp_sev"))
    snprintf(t->snp_name, sizeof t->snp_name, "sev-snp");
  else if (listed(list, "azure-snp"))
    snprintf(t->snp_name, sizeof t->snp_name, "azure-snp");
  t->snp = t->snp_name[0] != 0;
}

/* https://, or http:// towards a loopback host (attest/fetch.c allows nothing else); no
 * spaces or control bytes; bounded. */
static int url_ok(const char *u) {
  size_t n = strlen(u);
  if (n > 1800 || n <= 8) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)u[i] <= 0x20 || u[i] == 0x7f) return 0;
  if (strncasecmp(u, "https://", 8) == 0) return 1;
  if (strncasecmp(u, "http://", 7) != 0) return 0;
  const char *h = u + 7;
  return strncasecmp(h, "localhost", 9) == 0 || strncmp(h, "127.", 4) == 0 ||
         strncmp(h, "[::1]", 5) == 0;
}

static int file_ok(const char *path, int dir_ok) {
  struct stat st;
  if (stat(path, &st) < 0 || access(path, R_OK) < 0) return 0;
  return S_ISREG(st.st_mode) || (dir_ok && S_ISDIR(st.st_mode));
}

/* A JSON file's content: an object, with a "keys" array when `jwks`.  So that a JWKS or a
 * collateral file that is not what it should be stops start-up here (exit 2), before any
 * worker forks; gate_verify.c reads it again for use. */
static int json_file_ok(const char *path, int jwks) {
  json_error_t je;
  json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
  int ok = json_is_object(doc) && (!jwks || json_is_array(json_object_get(doc, "keys")));
  json_decref(doc);
  return ok;
}

/* --fetch-ca: at least one PEM certificate (what libcurl's CURLOPT_CAINFO reads). */
static int pem_certs_ok(const char *path) {
  FILE *f = fopen(path, "r");
  X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  int ok = x != NULL;
  X509_free(x);
  if (f) fclose(f);
  ERR_clear_error();
  return ok;
}

static int fail(sh_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(sh_error *err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    err->code = SH_EINVAL;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
  }
  return SH_EINVAL;
}

/* Form checks: every URL flag, every file flag, the cache dir and the timeout. */
static int check_values(sh_config *cfg, sh_error *err) {
  const char *urls[][2] = {{"--attest-maa-issuer", cfg->attest_maa_issuer},
                           {"--attest-maa-jwks-url", cfg->attest_maa_jwks_url},
                           {"--attest-maa-discovery-url", cfg->attest_maa_discovery_url},
                           {"--attest-gcp-jwks-url", cfg->attest_gcp_jwks_url},
                           {"--attest-gcp-discovery-url", cfg->attest_gcp_discovery_url},
                           {"--jwks-url", cfg->attest_jwks_url},
                           {"--kds-url", cfg->attest_kds_url},
                           {"--pcs-url", cfg->attest_pcs_url}};
  for (size_t k = 0; k < sizeof urls / sizeof urls[0]; k++)
    if (urls[k][1] && !url_ok(urls[k][1]))
      return fail(err,
                  "%s: '%.200s' is not an https:// URL (http:// only towards 127.0.0.1 "
                  "or localhost)",
                  urls[k][0], urls[k][1]);
  if (cfg->attest_maa_issuer && strncasecmp(cfg->attest_maa_issuer, "https://", 8) != 0)
    return fail(err, "%s: '%.200s': an issuer is an https:// URL", "--attest-maa-issuer",
                cfg->attest_maa_issuer);
  const char *files[][2] = {{"--attest-maa-jwks", cfg->attest_maa_jwks},
                            {"--attest-gcp-jwks", cfg->attest_gcp_jwks},
                            {"--fetch-ca", cfg->attest_fetch_ca}};
  for (size_t k = 0; k < sizeof files / sizeof files[0]; k++)
    if (files[k][1] && !file_ok(files[k][1], 0))
      return fail(err, "%s: cannot read the file '%.200s'", files[k][0], files[k][1]);
  for (size_t k = 0; k < 2; k++)
    if (files[k][1] && !json_file_ok(files[k][1], 1))
      return fail(err, "%s: '%.200s' is not a JWKS (a JSON object with a \"keys\" array)",
                  files[k][0], files[k][1]);
  if (cfg->attest_fetch_ca && !pem_certs_ok(cfg->attest_fetch_ca))
    return fail(err, "--fetch-ca: '%.200s' holds no PEM certificate", cfg->attest_fetch_ca);
  if (cfg->attest_collateral && !file_ok(cfg->attest_collateral, 1))
    return fail(err,
                "%s: cannot read '%.200s' (a JSON collateral file or a directory of Intel "
                "PCS responses)",
                "--attest-collateral", cfg->attest_collateral);
  if (cfg->attest_collateral && file_ok(cfg->attest_collateral, 0) &&
      !json_file_ok(cfg->attest_collateral, 0))
    return fail(err,
                "--attest-collateral: '%.200s' is neither JSON collateral (the format of "
                "attest/collateral.c) nor a directory of Intel PCS responses",
                cfg->attest_collateral);
  if (cfg->attest_cache_dir) {
    struct stat st;
    if (stat(cfg->attest_cache_dir, &st) < 0 && mkdir(cfg->attest_cache_dir, 0700) < 0)
      return fail(err, "%s: cannot create the directory '%.200s'", "--attest-cache-dir",
                  cfg->attest_cache_dir);
    if ((stat(cfg->attest_cache_dir, &st) < 0 || !S_ISDIR(st.st_mode) ||
         access(cfg->attest_cache_dir, R_OK | W_OK | X_OK) < 0))
      return fail(err, "%s: '%.200s' is not a writable directory", "--attest-cache-dir",
                  cfg->attest_cache_dir);
  }
  if (cfg->attest_fetch_timeout) {
    char *end;
    double s = strtod(cfg->attest_fetch_timeout, &end);
    if (*end || !(s >= 0.1 && s <= 120))
      return fail(err, "%s: '%.40s' is not a number of seconds between 0.1 and 120",
                  "--attest-fetch-timeout", cfg->attest_fetch_timeout);
    cfg->attest_fetch_timeout_ms = (long)(s * 1000);
  }
  return 0;
}

/* Each per-type flag needs its type in --attest-types; fetch flags need fetching. */
static int check_combinations(sh_config *cfg, const types_on *t, sh_error *err) {
  const char *maa_only[] = {cfg->attest_maa_issuer, cfg->attest_maa_audience, cfg->attest_maa_jwks,
                            cfg->attest_maa_jwks_url, cfg->attest_maa_discovery_url};
  const char *gcp_only[] = {cfg->attest_gcp_audience, cfg->attest_gcp_jwks,
                            cfg->attest_gcp_jwks_url, cfg->attest_gcp_discovery_url};
  for (size_t k = 0; k < 5; k++)
    if (maa_only[k] && !t->maa) return fail(err, "--attest-maa-* flags need maa in --attest-types");
  for (size_t k = 0; k < 4; k++)
    if (gcp_only[k] && !t->gcp) return fail(err, "--attest-gcp-* flags need gcp in --attest-types");
  if (cfg->attest_collateral && !t->dcap)
    return fail(err, "--attest-collateral needs tdx or sgx in --attest-types");
  if (cfg->attest_client_vcek && !t->snp)
    return fail(err, "--attest-client-vcek needs sev-snp or azure-snp in --attest-types");
  if (cfg->attest_fetch && cfg->attest_offline)
    return fail(err, "--attest-fetch and --attest-offline exclude each other");
  int fetching = cfg->attest_fetch || cfg->attest_offline;
  if (!fetching && (cfg->attest_kds_url || cfg->attest_pcs_url || cfg->attest_jwks_url ||
                    cfg->attest_maa_jwks_url || cfg->attest_gcp_jwks_url ||
                    cfg->attest_maa_discovery_url || cfg->attest_gcp_discovery_url ||
                    cfg->attest_cache_dir || cfg->attest_fetch_ca || cfg->attest_fetch_timeout))
    return fail(err,
                "--kds-url, --pcs-url, --jwks-url, --attest-*-jwks-url, "
                "--attest-*-discovery-url, --attest-cache-dir, --attest-fetch-timeout and "
                "--fetch-ca need --attest-fetch (or --attest-offline)");
  if (cfg->attest_offline && !cfg->attest_cache_dir)
    return fail(err, "--attest-offline reads only the files of --attest-cache-dir DIR: add it");
  if (cfg->attest_jwks_url) { /* shorthand for the one token type that is on */
    if (t->maa == t->gcp)
      return fail(err,
                  "--jwks-url is for exactly one of maa or gcp in --attest-types: use "
                  "--attest-maa-jwks-url or --attest-gcp-jwks-url");
    const char **dst = t->maa ? &cfg->attest_maa_jwks_url : &cfg->attest_gcp_jwks_url;
    if (*dst)
      return fail(err, "--jwks-url and %s both given",
                  t->maa ? "--attest-maa-jwks-url" : "--attest-gcp-jwks-url");
    *dst = cfg->attest_jwks_url;
  }
  if (cfg->attest_maa_jwks && cfg->attest_maa_jwks_url)
    return fail(err, "--attest-maa-jwks and a JWKS URL both given: one source of keys");
  if (cfg->attest_gcp_jwks && cfg->attest_gcp_jwks_url)
    return fail(err, "--attest-gcp-jwks and a JWKS URL both given: one source of keys");
  return 0;
}

/* Refuse a configuration that could never verify one of its types, naming the flag to add
 * (issue #5: "the server always requires configured ones"). */
static int check_required(const sh_config *cfg, const types_on *t, sh_error *err) {
  int fetching = cfg->attest_fetch || cfg->attest_offline;
  if (t->maa && !cfg->attest_maa_issuer)
    return fail(err,
                "--attest-types maa: add --attest-maa-issuer URL (the MAA instance whose "
                "tokens are accepted, e.g. https://NAME.REGION.attest.azure.net)");
  if (t->maa && !cfg->attest_maa_jwks && !fetching)
    return fail(err,
                "--attest-types maa: no signing keys: add --attest-maa-jwks FILE (the "
                "instance's /certs JWKS) or --attest-fetch (OpenID discovery at the issuer)");
  if (t->gcp && !cfg->attest_gcp_audience)
    return fail(err,
                "--attest-types gcp: add --attest-gcp-audience VALUE (the audience the "
                "workload requests its Confidential Space token for)");
  if (t->dcap && !cfg->attest_collateral && !fetching)
    return fail(err,
                "--attest-types %s: no DCAP collateral: add --attest-collateral FILE|DIR or "
                "--attest-fetch (Intel PCS; --pcs-url for a PCCS)",
                t->dcap_name);
  if (t->snp && !fetching && !cfg->attest_client_vcek)
    return fail(err,
                "--attest-types %s: nothing supplies the VCEK: add --attest-fetch (AMD KDS; "
                "--kds-url to override), or --attest-client-vcek if clients send it in the "
                "evidence bundle (protocol.md §1.5)",
                t->snp_name);
  return 0;
}

int sh_gate_verify_check_flags(sh_config *cfg, sh_error *err) {
  int any = 0;
  for (size_t k = 0; k < NVFLAGS; k++) {
    const char *field = (const char *)cfg + vflags[k].off;
    any |= vflags[k].kind == V_BOOL ? *(const int *)(const void *)field != 0
                                    : *(const char *const *)(const void *)field != NULL;
  }
  if (!cfg->attest_types) {
    if (any)
      return fail(err,
                  "--attest-maa-*, --attest-gcp-*, --attest-collateral, --attest-fetch and "
                  "the other verification flags need --attest-types");
    return 0;
  }
  types_on t;
  types_of(cfg->attest_types, &t);
  int rc = check_values(cfg, err);
  if (rc == 0) rc = check_combinations(cfg, &t, err);
  if (rc == 0) rc = check_required(cfg, &t, err);
  return rc;
}
