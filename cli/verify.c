/* cli/verify.c — `shield verify`: verify one piece of evidence from files (attest.h).
 *
 *   shield verify --type nitro|sev-snp|azure-snp FILE [--at RFC3339] [--cert FILE]...
 *                 [--policy FILE] [--nonce HEX] [--public-key FILE] [--allow-debug] [--json]
 *   shield verify --type maa|gcp TOKEN [--jwks FILE] [--issuer URL] [--audience VALUE] ...
 *   shield verify --type tdx|sgx QUOTE --collateral FILE|DIR ...   (attest/collateral.c)
 *   shield verify --type azure-tdx BUNDLE --collateral FILE|DIR ... (CBOR {"hcl_report",
 *                 "td_quote"}, attest/azure.c; the collateral is the TD quote's)
 *
 * maa/gcp: --jwks is the issuer's JWKS document (MAA: the instance's /certs; GCP: OIDC tokens
 * only, PKI tokens chain to the pinned root).  --issuer and --audience are optional here: when
 * absent iss and aud are reported in the claims, not checked (GCP's fixed issuer is always
 * checked).  The server always requires configured ones.
 *
 * FILE: raw bytes, base64 or hex text, at most 4 MiB (larger evidence is rejected, exit 1,
 * saying its size).  --cert: PEM or DER, bundles too.  --at defaults to the current time (the
 * CLI is where the clock is read; attest/ never reads it).
 *
 * Fetching (attest's fetcher; off by default, so verification stays offline and deterministic):
 *   --fetch      when the first verification says collateral_missing, fetch what was missing
 *                and verify again: sev-snp without a VCEK (by CHIP_ID and REPORTED_TCB from
 *                the AMD KDS, product from the report's CPUID or tried Milan, Genoa, Turin,
 *                plus the product's cert_chain); tdx/sgx/azure-tdx without --collateral (TCB
 *                info by the PCK certificate's FMSPC, QE identity, PCK CRL, root CA CRL from
 *                Intel PCS or a PCCS); maa/gcp without --jwks (from --jwks-url, else
 *                --issuer's OpenID configuration; gcp's fixed issuer by default), and once
 *                more past the cache when the token's kid is not in the cached JWKS (key
 *                rotation).  Only the configured bases are contacted, never a URL from the
 *                evidence.
 *   --offline    the same, from --cache-dir files only (never the network).
 *   --kds-url URL, --pcs-url URL, --jwks-url URL, --fetch-ca FILE (extra TLS anchors, e.g. a
 *   PCCS with a private CA), --cache-dir DIR (default $XDG_CACHE_HOME/shield/collateral).
 *   A failed fetch keeps collateral_missing (exit 1) with the fetcher's message.  The
 *   fetch-then-verify logic is sh_attest_verify_fetching (attest.h), shared with the server.
 * Exit: 0 verified, 1 rejected (anything wrong with the evidence), 2 usage error.
 */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "attest.h"
#include "common.h"
#include "opts.h"

#define CLI_MAX_CERTS 16

typedef struct verify_args {
  const char *type_name, *file, *policy_path, *nonce_hex, *pk_path, *jwks_path, *issuer, *audience,
      *collateral_path, *kds_url, *pcs_url, *jwks_url, *cache_dir, *fetch_ca;
  sh_tee tee;
  int64_t at; /* --at, 0: now */
  const char *cert_paths[CLI_MAX_CERTS];
  size_t ncert;
  int as_json, allow_debug, trust_simulated, do_fetch, offline;
} verify_args;

static int set_type(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  (void)name;
  verify_args *a = t;
  if (a->type_name) return sh_cli__fail(err, "--type given twice");
  if ((a->tee = sh_tee_from_name(v)) == SH_TEE_UNKNOWN)
    return sh_cli__fail(err,
                        "--type: '%s' is not one of nitro, sev-snp, azure-snp, azure-tdx, tdx, "
                        "sgx, maa, gcp, simulated",
                        v);
  a->type_name = v;
  return 0;
}

static int set_at(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  (void)name;
  verify_args *a = t;
  /* RFC 3339 (fractions, Z or a numeric offset) or Unix seconds, after 1970 */
  if (sh_rfc3339_parse(v, strlen(v), SH_RFC3339_UNIX, &a->at) < 0 || a->at <= 0)
    return sh_cli__fail(err, "--at: not an RFC 3339 time: %s", v);
  return 0;
}

static int add_cert(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  verify_args *a = t;
  if (!*v) return sh_cli__fail(err, "%s: the value must not be empty", name);
  if (a->ncert == CLI_MAX_CERTS)
    return sh_cli__fail(err, "--cert: at most %d files", CLI_MAX_CERTS);
  a->cert_paths[a->ncert++] = v;
  return 0;
}

#define A(f) .off = offsetof(verify_args, f), .size = sizeof(((verify_args *)0)->f)
#define ONCE(f) .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, A(f)
static const sh_cli_opt opts[] = {
    {"--type", .metavar = "TYPE",
     .help = "nitro|sev-snp|azure-snp|azure-tdx|tdx|sgx|maa|gcp|simulated\n(required)",
     .kind = SH_CLI_CUSTOM, .apply = set_type},
    {"--at", .metavar = "RFC3339",
     .help = "verification time, RFC 3339 or Unix seconds (default now)", .kind = SH_CLI_CUSTOM,
     .apply = set_at},
    {"--cert", .metavar = "FILE",
     .help = "certificates, PEM or DER, bundles too (repeatable:\nsev-snp VCEK/VLEK, ASK, ARK)",
     .kind = SH_CLI_CUSTOM, .apply = add_cert},
    {"--policy", .metavar = "FILE", .help = "verification policy (JSON; default: production)",
     ONCE(policy_path)},
    {"--nonce", .metavar = "HEX", .help = "the nonce the evidence must be bound to",
     ONCE(nonce_hex)},
    {"--public-key", .metavar = "FILE",
     .help = "the public key bound with --nonce (PEM or DER SPKI)", ONCE(pk_path)},
    {"--allow-debug", .help = "accept debug TEEs whatever the policy says", .kind = SH_CLI_SET,
     .ival = 1, A(allow_debug)},
    {"--json", .help = "print the result as one JSON object", .kind = SH_CLI_SET, .ival = 1,
     A(as_json)},
    {"--trust-simulated", .help = "simulated: accept the local dev root (docs/protocol.md §1.7)",
     .kind = SH_CLI_SET, .ival = 1, A(trust_simulated)},
    {.kind = SH_CLI_SECTION, .help = "Tokens (maa, gcp):"},
    {"--jwks", .metavar = "FILE", .help = "the issuer's JWKS document", ONCE(jwks_path)},
    {"--issuer", .metavar = "URL", .help = "expected iss (default: reported, not checked)",
     ONCE(issuer)},
    {"--audience", .metavar = "VALUE", .help = "expected aud (default: reported, not checked)",
     ONCE(audience)},
    {.kind = SH_CLI_SECTION, .help = "DCAP quotes (tdx, sgx, azure-tdx):"},
    {"--collateral", .metavar = "FILE|DIR",
     .help = "TCB info, QE identity, CRLs (JSON or PCS responses)", ONCE(collateral_path)},
    {.kind = SH_CLI_SECTION, .help = "Fetching what is missing (never the network otherwise):"},
    {"--fetch", .help = "fetch missing collateral and keys, then verify again", .kind = SH_CLI_SET,
     .ival = 1, A(do_fetch)},
    {"--offline", .help = "the same from --cache-dir files only", .kind = SH_CLI_SET, .ival = 1,
     A(offline)},
    {"--cache-dir", .metavar = "DIR",
     .help = "fetch cache (default $XDG_CACHE_HOME/shield/collateral)", ONCE(cache_dir)},
    {"--fetch-ca", .metavar = "FILE", .help = "extra TLS anchors (a PCCS with a private CA)",
     ONCE(fetch_ca)},
    {"--kds-url", .metavar = "URL", .help = "AMD KDS base (default https://kdsintf.amd.com)",
     ONCE(kds_url)},
    {"--pcs-url", .metavar = "URL", .help = "Intel PCS or PCCS base", ONCE(pcs_url)},
    {"--jwks-url", .metavar = "URL",
     .help = "JWKS location (default: --issuer's OpenID configuration)", ONCE(jwks_url)},
    {.kind = SH_CLI_SECTION, .help = "Other:"},
    {"--help", .alias = "-h", .help = "show this message and exit", .kind = SH_CLI_HELP},
};
#undef ONCE
#undef A

static int positional(void *const *targets, const char *arg, sh_error *err) {
  verify_args *a = targets[0];
  if (a->file) return sh_cli__fail(err, "more than one FILE ('%s')", arg);
  a->file = arg;
  return 0;
}

static const char usage[] =
    "Usage: shield verify --type TYPE FILE [OPTIONS]\n"
    "\n"
    "Verify one piece of TEE evidence (FILE: raw bytes, base64 or hex text, at most 4 MiB;\n"
    "'-': stdin).  Exit status: 0 verified (policy included), 1 rejected, 2 usage error.\n";

static void verify_cmd(sh_cli_cmd *cmd, void *const *targets) {
  *cmd = (sh_cli_cmd){.name = "shield verify",
                      .usage = usage,
                      .opts = opts,
                      .nopts = sizeof opts / sizeof *opts,
                      .targets = targets,
                      .positional = positional};
}

/* A usage error found after parsing: the message, exit 2. */
static int usage_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_fail(const char *fmt, ...) {
  sh_error err = {.code = SH_EINVAL};
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err.message, sizeof err.message, fmt, ap);
  va_end(ap);
  sh_cli_cmd cmd;
  verify_cmd(&cmd, NULL);
  return sh_cli__usage_error(&cmd, &err);
}

static void print_human(const sh_attest_result *r) {
  if (r->verified)
    printf("verified: %s\n", sh_tee_name(r->tee));
  else
    printf("rejected: %s (%s)\n", sh_attest_reason_name(r->reason), r->message);
  const char *k;
  json_t *v;
  json_object_foreach(r->measurements, k, v) printf("  %s: %s\n", k, json_string_value(v));
  printf("  debug: %s\n", r->debug ? "yes" : "no");
}

/* ---- --fetch / --offline (attest.h: sh_attest_fetcher_new) ---- */

#define GCP_ISSUER "https://confidentialcomputing.googleapis.com"

/* $XDG_CACHE_HOME/shield/collateral, else ~/.cache/shield/collateral; parents made 0700. */
static char *default_cache_dir(void) {
  const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  char base[3072], *out = malloc(4096);
  if (!out) return NULL;
  if (x && x[0] == '/')
    snprintf(base, sizeof base, "%s", x);
  else if (home && home[0] == '/')
    snprintf(base, sizeof base, "%s/.cache", home);
  else {
    free(out);
    return NULL;
  }
  mkdir(base, 0700);
  snprintf(out, 4096, "%s/shield", base);
  mkdir(out, 0700);
  snprintf(out, 4096, "%s/shield/collateral", base);
  return out;
}

int sh_cli__verify(int argc, char **argv) {
  verify_args a;
  memset(&a, 0, sizeof a);
  void *const targets[] = {&a};
  sh_cli_cmd cmd;
  verify_cmd(&cmd, targets);
  sh_error perr = {0};
  int prc = sh_cli__parse(&cmd, argc, argv, stdout, &perr);
  if (prc == 1) return 0; /* --help */
  if (prc < 0) return sh_cli__usage_error(&cmd, &perr);
  if (!a.type_name) return usage_fail("missing --type TYPE");
  if (!a.file) return usage_fail("missing the evidence FILE");
  const char *file = a.file, *policy_path = a.policy_path, *nonce_hex = a.nonce_hex,
             *pk_path = a.pk_path, *jwks_path = a.jwks_path, *issuer = a.issuer,
             *audience = a.audience, *collateral_path = a.collateral_path, *kds_url = a.kds_url,
             *pcs_url = a.pcs_url, *jwks_url = a.jwks_url, *cache_dir = a.cache_dir,
             *fetch_ca = a.fetch_ca;
  const char *const *cert_paths = a.cert_paths;
  size_t ncert = a.ncert;
  int as_json = a.as_json, code = 2, do_fetch = a.do_fetch, offline = a.offline;
  sh_tee tee = a.tee;
  if (do_fetch && offline) return usage_fail("--fetch and --offline exclude each other");
  if (!do_fetch && !offline && (kds_url || pcs_url || jwks_url || cache_dir || fetch_ca))
    return usage_fail(
        "--kds-url, --pcs-url, --jwks-url, --cache-dir and --fetch-ca need --fetch or --offline");
  const char *urls[3] = {kds_url, pcs_url, jwks_url},
             *url_flags[3] = {"--kds-url", "--pcs-url", "--jwks-url"};
  for (int i = 0; i < 3; i++)
    if (urls[i] && !sh_attest_url_ok(urls[i], 1)) /* an override: loopback http:// too */
      return usage_fail("%s: not an https:// (or loopback http://) URL: %s", url_flags[i], urls[i]);
  if (fetch_ca && access(fetch_ca, R_OK) < 0)
    return usage_fail("--fetch-ca: cannot read %s", fetch_ca);
  sh_attest_options o;
  memset(&o, 0, sizeof o);
  o.allow_debug = a.allow_debug;
  /* the CLI is where the clock is read: attest/ never reads it */
  int64_t now = (int64_t)time(NULL);
  o.at = a.at ? a.at : now;
  uint8_t *raw = NULL, *ev = NULL, *nonce = NULL, *spki = NULL, *certbuf[CLI_MAX_CERTS] = {0},
          *jwks = NULL, *collateral = NULL;
  sh_iovec certs[CLI_MAX_CERTS];
  sh_attest_fetcher *fetcher = NULL;
  char *cache_owned = NULL;
  sh_attest_policy *pol = NULL;
  sh_attest_result *r = NULL;
  size_t rawlen = 0, evlen = 0;
  char eb[256];
  /* evidence over the size limit is rejected (exit 1) like any evidence that cannot verify;
   * a file that cannot be read at all is a usage error (exit 2) */
  int64_t ev_over = -1;
  if (!(raw = sh_cli__read_file(file, &rawlen, &ev_over)) && ev_over < 0) {
    sh_cli__read_error("shield verify", file, ev_over);
    goto out;
  }
  for (size_t i = 0; i < ncert; i++) {
    size_t n = 0;
    int64_t over;
    if (!(certbuf[i] = sh_cli__read_file(cert_paths[i], &n, &over))) {
      sh_cli__read_error("shield verify", cert_paths[i], over);
      goto out;
    }
    if (sh_attest_certs_count(certbuf[i], n) < 0) {
      fprintf(stderr, "shield verify: %s: not a PEM or DER certificate\n", cert_paths[i]);
      goto out;
    }
    certs[i] = (sh_iovec){.ptr = certbuf[i], .len = n};
  }
  o.certs = certs;
  o.ncerts = ncert;
  if (policy_path && sh_attest_policy_load_file(policy_path, &pol, eb, sizeof eb) < 0) {
    fprintf(stderr, "shield verify: %s\n", eb);
    goto out;
  }
  o.policy = pol;
  o.issuer = issuer;
  o.audience = audience;
  int64_t jwks_over;
  if (jwks_path && !(jwks = sh_cli__read_file(jwks_path, &o.jwks_len, &jwks_over))) {
    sh_cli__read_error("shield verify", jwks_path, jwks_over);
    goto out;
  }
  o.jwks = jwks;
  if (collateral_path && sh_attest_collateral_read(collateral_path, &collateral, &o.collateral_len,
                                                   eb, sizeof eb) < 0) {
    fprintf(stderr, "shield verify: %s\n", eb);
    goto out;
  }
  o.collateral = collateral;
  if (tee == SH_TEE_MAA || tee == SH_TEE_GCP) { /* a token file's final newline */
    while (rawlen && (raw[rawlen - 1] == '\n' || raw[rawlen - 1] == '\r' || raw[rawlen - 1] == ' '))
      rawlen--;
  }
  if (nonce_hex) {
    long n = 0;
    if (!*nonce_hex || !(nonce = OPENSSL_hexstr2buf(nonce_hex, &n)) || n > 0xFFFF) {
      fprintf(stderr, "shield verify: --nonce: not hex\n");
      goto out;
    }
    o.nonce = nonce;
    o.nonce_len = (size_t)n;
  }
  if (pk_path) {
    if (!nonce_hex) {
      fprintf(stderr, "shield verify: --public-key needs --nonce\n");
      goto out;
    }
    if (!(spki = sh_cli__load_spki(pk_path, &o.public_key_len))) {
      fprintf(stderr, "shield verify: %s: not a PEM or DER public key\n", pk_path);
      goto out;
    }
    o.public_key = spki;
  }
  o.trust_simulated = a.trust_simulated;
  sh_attest_fetch_issuer fiss = {NULL, NULL, NULL};
  if (do_fetch || offline) {
    sh_attest_fetch_config fc;
    memset(&fc, 0, sizeof fc);
    if (!cache_dir && !(cache_dir = cache_owned = default_cache_dir())) {
      fprintf(
          stderr,
          "shield verify: no cache directory ($XDG_CACHE_HOME and $HOME unset): use --cache-dir\n");
      goto out;
    }
    fc.cache_dir = cache_dir;
    fc.offline = offline;
    fc.ca_file = fetch_ca;
    fc.amd_kds_url = kds_url;
    fc.intel_pcs_url = pcs_url;
    /* the one issuer whose JWKS may be fetched: --jwks-url (keyed by --issuer when given),
     * else --issuer's OpenID configuration, else (gcp) Google's fixed issuer */
    fiss.issuer = issuer ? issuer : jwks_url ? jwks_url : tee == SH_TEE_GCP ? GCP_ISSUER : NULL;
    fiss.jwks_url = jwks_url;
    fc.issuers = &fiss;
    fc.nissuers = fiss.issuer ? 1 : 0;
    if (!(fetcher = sh_attest_fetcher_new(&fc, eb, sizeof eb))) {
      fprintf(stderr, "shield verify: --cache-dir: %s\n", eb);
      goto out;
    }
  }
  /* --fetch / --offline: verify; what was missing is fetched and verified once more
   * (verify_fetch.c).  The fetch cache's freshness runs on the real clock, not --at. */
  if (!raw) { /* over the evidence size limit: never decoded, rejected */
    char why[sizeof r->message];
    if (ev_over > 0)
      snprintf(why, sizeof why, "%s is %lld bytes, over the 4 MiB evidence limit", file,
               (long long)ev_over);
    else
      snprintf(why, sizeof why, "%s is over the 4 MiB evidence limit", file);
    if (!(r = sh_attest_result_rejected(tee, o.at, SH_ATTEST_MALFORMED, why))) {
      fprintf(stderr, "shield verify: out of memory\n");
      goto out;
    }
    if (as_json) /* the JSON result has no message */
      fprintf(stderr, "shield verify: %s\n", why);
  } else if (!(ev = sh_attest_decode_input(raw, rawlen, &evlen)) ||
             sh_attest_verify_fetching(ev, evlen, tee, &o, fetcher, fiss.issuer, now, &r) < 0) {
    fprintf(stderr, "shield verify: out of memory\n");
    goto out;
  }
  if (as_json) {
    json_t *j = sh_attest_result_to_json(r, 0);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    printf("%s\n", s ? s : "{}");
    free(s);
    json_decref(j);
  } else {
    print_human(r);
  }
  code = r->verified ? 0 : 1;
out:
  sh_attest_result_free(r);
  sh_attest_policy_free(pol);
  for (size_t i = 0; i < ncert; i++)
    free(certbuf[i]);
  free(raw);
  free(jwks);
  free(collateral);
  sh_attest_fetcher_free(fetcher);
  free(cache_owned);
  free(ev);
  OPENSSL_free(nonce);
  free(spki);
  fflush(stdout);
  return code;
}
