/*
 * gate/config.c — sh_gate_config: its defaults, and the start-up validation that refuses a
 * configuration which is malformed, inconsistent, or could never verify an accepted type
 * (naming the flag to add: issue #5, "the server always requires configured ones").
 *
 * The command line runs it once, before any worker forks (cli/serve.c: exit 2 with the
 * message); sh_gate_new runs it again for a program that fills the config itself.  So it
 * changes nothing in the config: what depends on several settings (the JWKS URL of a token
 * type, the fetch timeout in ms) is derived where it is used, by the functions below.  The
 * checks of form (URLs, readable files, JSON) are here; the contents are loaded by
 * verifier.c, which fails sh_gate_new on what only reading can find.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "gate_internal.h"

void sh_gate_config_init(sh_gate_config *gc) {
  memset(gc, 0, sizeof *gc);
  gc->state_table_size = 65536;
  gc->pool_threads = 4;
  gc->max_pending = 64;
  gc->max_per_client = 16;
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

/* ---- types */

int sh_gate__parse_types(const char *list, unsigned *bits, char *bad, size_t badlen) {
  sh_iovec b = {NULL, 0};
  if (sh_tee_parse_list(list, strlen(list), bits, &b) == 0) return 0;
  if (b.len == 0)
    snprintf(bad, badlen, "(empty)");
  else
    snprintf(bad, badlen, "%.*s", (int)(b.len > 40 ? 40 : b.len), b.base);
  return -1;
}

/* The message naming the accepted names, in docs/protocol.md §0's order (the names are attest's).
 */
static int types_error(const char *bad, sh_error *err) {
  static const sh_tee order[] = {SH_TEE_NITRO,     SH_TEE_SEV_SNP, SH_TEE_AZURE_SNP,
                                 SH_TEE_AZURE_TDX, SH_TEE_TDX,     SH_TEE_SGX,
                                 SH_TEE_MAA,       SH_TEE_GCP,     SH_TEE_SIMULATED};
  char names[160] = "";
  size_t off = 0;
  for (size_t i = 0; i < sizeof order / sizeof *order && off < sizeof names; i++)
    off += (size_t)snprintf(names + off, sizeof names - off, "%s%s", i ? ", " : "",
                            sh_tee_name(order[i]));
  return fail(err, "--attest-types: '%s' is not a TEE type (%s)", bad, names);
}

int sh_gate__check_types(const char *list, unsigned *bits, sh_error *err) {
  char bad[48];
  if (sh_gate__parse_types(list, bits, bad, sizeof bad) < 0) return types_error(bad, err);
  return 0;
}

int sh_gate_check_types(const char *list, sh_error *err) {
  unsigned bits;
  return sh_gate__check_types(list, &bits, err);
}

/* ---- settings derived from several flags (used by verifier.c) */

static int on(unsigned types, sh_tee t) {
  return (types & 1u << t) != 0;
}

const char *sh_gate__maa_jwks_url(const sh_gate_config *gc, unsigned types) {
  if (gc->maa_jwks_url) return gc->maa_jwks_url;
  return gc->jwks_url && on(types, SH_TEE_MAA) ? gc->jwks_url : NULL;
}

const char *sh_gate__gcp_jwks_url(const sh_gate_config *gc, unsigned types) {
  if (gc->gcp_jwks_url) return gc->gcp_jwks_url;
  return gc->jwks_url && on(types, SH_TEE_GCP) && !on(types, SH_TEE_MAA) ? gc->jwks_url : NULL;
}

/* --attest-fetch-timeout: seconds in [0.1, 120] -> ms; 0 when absent; -1 when malformed. */
static long timeout_ms(const char *s) {
  if (!s) return 0;
  char *end;
  double v = strtod(s, &end);
  if (*end || !(v >= 0.1 && v <= 120)) return -1;
  return (long)(v * 1000);
}

long sh_gate__fetch_timeout_ms(const sh_gate_config *gc) {
  long ms = timeout_ms(gc->fetch_timeout);
  return ms < 0 ? 0 : ms;
}

/* ---- checks of form: every URL, every file, the cache dir and the timeout */

static int file_ok(const char *path, int dir_ok) {
  struct stat st;
  if (stat(path, &st) < 0 || access(path, R_OK) < 0) return 0;
  return S_ISREG(st.st_mode) || (dir_ok && S_ISDIR(st.st_mode));
}

/* A JSON file's content: an object, with a "keys" array when `jwks`.  So that a JWKS or a
 * collateral file that is not what it should be stops start-up here (exit 2), before any
 * worker forks; verifier.c reads it again for use. */
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

static int check_values(const sh_gate_config *gc, sh_error *err) {
  const char *urls[][2] = {{"--attest-maa-issuer", gc->maa_issuer},
                           {"--attest-maa-jwks-url", gc->maa_jwks_url},
                           {"--attest-maa-discovery-url", gc->maa_discovery_url},
                           {"--attest-gcp-jwks-url", gc->gcp_jwks_url},
                           {"--attest-gcp-discovery-url", gc->gcp_discovery_url},
                           {"--jwks-url", gc->jwks_url},
                           {"--kds-url", gc->kds_url},
                           {"--pcs-url", gc->pcs_url}};
  for (size_t k = 0; k < sizeof urls / sizeof urls[0]; k++)
    if (urls[k][1] && !sh_attest_url_ok(urls[k][1], 1))
      return fail(err,
                  "%s: '%.200s' is not an https:// URL (http:// only towards 127.0.0.1 "
                  "or localhost)",
                  urls[k][0], urls[k][1]);
  if (gc->maa_issuer && strncasecmp(gc->maa_issuer, "https://", 8) != 0)
    return fail(err, "%s: '%.200s': an issuer is an https:// URL", "--attest-maa-issuer",
                gc->maa_issuer);
  const char *files[][2] = {{"--attest-maa-jwks", gc->maa_jwks},
                            {"--attest-gcp-jwks", gc->gcp_jwks},
                            {"--fetch-ca", gc->fetch_ca}};
  for (size_t k = 0; k < sizeof files / sizeof files[0]; k++)
    if (files[k][1] && !file_ok(files[k][1], 0))
      return fail(err, "%s: cannot read the file '%.200s'", files[k][0], files[k][1]);
  for (size_t k = 0; k < 2; k++)
    if (files[k][1] && !json_file_ok(files[k][1], 1))
      return fail(err, "%s: '%.200s' is not a JWKS (a JSON object with a \"keys\" array)",
                  files[k][0], files[k][1]);
  if (gc->fetch_ca && !pem_certs_ok(gc->fetch_ca))
    return fail(err, "--fetch-ca: '%.200s' holds no PEM certificate", gc->fetch_ca);
  if (gc->collateral && !file_ok(gc->collateral, 1))
    return fail(err,
                "%s: cannot read '%.200s' (a JSON collateral file or a directory of Intel "
                "PCS responses)",
                "--attest-collateral", gc->collateral);
  if (gc->collateral && file_ok(gc->collateral, 0) && !json_file_ok(gc->collateral, 0))
    return fail(err,
                "--attest-collateral: '%.200s' is neither JSON collateral (the format of "
                "attest/collateral.c) nor a directory of Intel PCS responses",
                gc->collateral);
  if (gc->cache_dir) {
    struct stat st;
    if (stat(gc->cache_dir, &st) < 0 && mkdir(gc->cache_dir, 0700) < 0)
      return fail(err, "%s: cannot create the directory '%.200s'", "--attest-cache-dir",
                  gc->cache_dir);
    if ((stat(gc->cache_dir, &st) < 0 || !S_ISDIR(st.st_mode) ||
         access(gc->cache_dir, R_OK | W_OK | X_OK) < 0))
      return fail(err, "%s: '%.200s' is not a writable directory", "--attest-cache-dir",
                  gc->cache_dir);
  }
  if (gc->fetch_timeout && timeout_ms(gc->fetch_timeout) < 0)
    return fail(err, "%s: '%.40s' is not a number of seconds between 0.1 and 120",
                "--attest-fetch-timeout", gc->fetch_timeout);
  return 0;
}

/* ---- consistency: each per-type flag needs its type, fetch flags need fetching */

typedef struct types_on {
  int maa, gcp, dcap, snp;
  const char *dcap_name, *snp_name;
} types_on;

static void types_of(unsigned bits, types_on *t) {
  memset(t, 0, sizeof *t);
  t->maa = on(bits, SH_TEE_MAA);
  t->gcp = on(bits, SH_TEE_GCP);
  t->dcap_name = on(bits, SH_TEE_TDX)         ? "tdx"
                 : on(bits, SH_TEE_AZURE_TDX) ? "azure-tdx"
                 : on(bits, SH_TEE_SGX)       ? "sgx"
                                              : NULL;
  t->dcap = t->dcap_name != NULL;
  t->snp_name = on(bits, SH_TEE_SEV_SNP)     ? "sev-snp"
                : on(bits, SH_TEE_AZURE_SNP) ? "azure-snp"
                                             : NULL;
  t->snp = t->snp_name != NULL;
}

static int check_combinations(const sh_gate_config *gc, const types_on *t, sh_error *err) {
  const char *maa_only[] = {gc->maa_issuer, gc->maa_audience, gc->maa_jwks, gc->maa_jwks_url,
                            gc->maa_discovery_url};
  const char *gcp_only[] = {gc->gcp_audience, gc->gcp_jwks, gc->gcp_jwks_url,
                            gc->gcp_discovery_url};
  for (size_t k = 0; k < 5; k++)
    if (maa_only[k] && !t->maa) return fail(err, "--attest-maa-* flags need maa in --attest-types");
  for (size_t k = 0; k < 4; k++)
    if (gcp_only[k] && !t->gcp) return fail(err, "--attest-gcp-* flags need gcp in --attest-types");
  if (gc->collateral && !t->dcap)
    return fail(err, "--attest-collateral needs tdx or sgx in --attest-types");
  if (gc->client_vcek && !t->snp)
    return fail(err, "--attest-client-vcek needs sev-snp or azure-snp in --attest-types");
  if (gc->fetch && gc->offline)
    return fail(err, "--attest-fetch and --attest-offline exclude each other");
  int fetching = gc->fetch || gc->offline;
  if (!fetching && (gc->kds_url || gc->pcs_url || gc->jwks_url || gc->maa_jwks_url ||
                    gc->gcp_jwks_url || gc->maa_discovery_url || gc->gcp_discovery_url ||
                    gc->cache_dir || gc->fetch_ca || gc->fetch_timeout))
    return fail(err,
                "--kds-url, --pcs-url, --jwks-url, --attest-*-jwks-url, "
                "--attest-*-discovery-url, --attest-cache-dir, --attest-fetch-timeout and "
                "--fetch-ca need --attest-fetch (or --attest-offline)");
  if (gc->offline && !gc->cache_dir)
    return fail(err, "--attest-offline reads only the files of --attest-cache-dir DIR: add it");
  const char *maa_url = gc->maa_jwks_url, *gcp_url = gc->gcp_jwks_url;
  if (gc->jwks_url) { /* shorthand for the one token type that is on */
    if (t->maa == t->gcp)
      return fail(err,
                  "--jwks-url is for exactly one of maa or gcp in --attest-types: use "
                  "--attest-maa-jwks-url or --attest-gcp-jwks-url");
    if (t->maa ? maa_url : gcp_url)
      return fail(err, "--jwks-url and %s both given",
                  t->maa ? "--attest-maa-jwks-url" : "--attest-gcp-jwks-url");
    if (t->maa)
      maa_url = gc->jwks_url;
    else
      gcp_url = gc->jwks_url;
  }
  if (gc->maa_jwks && maa_url)
    return fail(err, "--attest-maa-jwks and a JWKS URL both given: one source of keys");
  if (gc->gcp_jwks && gcp_url)
    return fail(err, "--attest-gcp-jwks and a JWKS URL both given: one source of keys");
  return 0;
}

/* A configuration that could never verify one of its types: name the flag to add. */
static int check_required(const sh_gate_config *gc, const types_on *t, sh_error *err) {
  int fetching = gc->fetch || gc->offline;
  if (t->maa && !gc->maa_issuer)
    return fail(err,
                "--attest-types maa: add --attest-maa-issuer URL (the MAA instance whose "
                "tokens are accepted, e.g. https://NAME.REGION.attest.azure.net)");
  if (t->maa && !gc->maa_jwks && !fetching)
    return fail(err,
                "--attest-types maa: no signing keys: add --attest-maa-jwks FILE (the "
                "instance's /certs JWKS) or --attest-fetch (OpenID discovery at the issuer)");
  if (t->gcp && !gc->gcp_audience)
    return fail(err,
                "--attest-types gcp: add --attest-gcp-audience VALUE (the audience the "
                "workload requests its Confidential Space token for)");
  if (t->dcap && !gc->collateral && !fetching)
    return fail(err,
                "--attest-types %s: no DCAP collateral: add --attest-collateral FILE|DIR or "
                "--attest-fetch (Intel PCS; --pcs-url for a PCCS)",
                t->dcap_name);
  if (t->snp && !fetching && !gc->client_vcek)
    return fail(err,
                "--attest-types %s: nothing supplies the VCEK: add --attest-fetch (AMD KDS; "
                "--kds-url to override), or --attest-client-vcek if clients send it in the "
                "evidence bundle (docs/protocol.md §1.5)",
                t->snp_name);
  return 0;
}

/* Is any of what verification needs set (the flags of "Keys and collateral")? */
static int any_verification_setting(const sh_gate_config *gc) {
  return gc->maa_issuer || gc->maa_audience || gc->maa_jwks || gc->maa_jwks_url ||
         gc->maa_discovery_url || gc->gcp_audience || gc->gcp_jwks || gc->gcp_jwks_url ||
         gc->gcp_discovery_url || gc->jwks_url || gc->collateral || gc->fetch || gc->offline ||
         gc->cache_dir || gc->fetch_timeout || gc->kds_url || gc->pcs_url || gc->fetch_ca ||
         gc->client_vcek;
}

int sh_gate_config_check(const sh_gate_config *gc, sh_error *err) {
  unsigned bits = 0;
  if (gc->types && sh_gate__check_types(gc->types, &bits, err) < 0) return SH_EINVAL;
  if (!gc->types && any_verification_setting(gc))
    return fail(err,
                "--attest-maa-*, --attest-gcp-*, --attest-collateral, --attest-fetch and "
                "the other verification flags need --attest-types");
  if (gc->types) {
    types_on t;
    types_of(bits, &t);
    int rc = check_values(gc, err);
    if (rc == 0) rc = check_combinations(gc, &t, err);
    if (rc == 0) rc = check_required(gc, &t, err);
    if (rc < 0) return rc;
  }
  if (gc->clock && !gc->dev) return fail(err, "--attest-clock is a debugging aid: it needs --dev");
  if (sh_gate__tee_check(gc, err) < 0) return SH_EINVAL; /* --tee: the TEE must be there */
  if (!gc->types && (gc->policy || gc->required || gc->num_exclude || gc->clock || gc->state_url))
    return fail(err,
                "--attest-policy/--attest-required/--attest-exclude/--attest-clock/"
                "--state-url need --attest-types");
  return 0;
}
