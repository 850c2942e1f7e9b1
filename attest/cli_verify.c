/* attest/cli_verify.c — `shield verify`: verify one piece of evidence from files.
 *
 *   shield verify --type nitro|sev-snp|azure-snp FILE [--at RFC3339] [--cert FILE]...
 *                 [--policy FILE] [--nonce HEX] [--public-key FILE] [--allow-debug] [--json]
 *   shield verify --type maa|gcp TOKEN [--jwks FILE] [--issuer URL] [--audience VALUE] ...
 *   shield verify --type tdx|sgx QUOTE --collateral FILE|DIR ...   (see collateral.c)
 *   shield verify --type azure-tdx BUNDLE --collateral FILE|DIR ... (CBOR {"hcl_report",
 *                 "td_quote"}, azure.c; the collateral is the TD quote's)
 *
 * maa/gcp: --jwks is the issuer's JWKS document (MAA: the instance's /certs; GCP: OIDC tokens
 * only, PKI tokens chain to the pinned root).  --issuer and --audience are optional here: when
 * absent iss and aud are reported in the claims, not checked (GCP's fixed issuer is always
 * checked).  The server always requires configured ones.
 *
 * FILE: raw bytes, base64 or hex text, at most 4 MiB (larger evidence is rejected, exit 1,
 * saying its size).  --cert: PEM or DER, bundles too.  --at defaults to the current time (the
 * CLI is where the clock is read; the library never reads it).
 *
 * Fetching (fetch.c; off by default, so verification stays offline and deterministic):
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
 *   fetch-then-verify logic is sh_attest_verify_fetching (verify_fetch.c), shared with the server.
 * Exit: 0 verified, 1 rejected (anything wrong with the evidence), 2 usage error.
 */
#include "internal.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CLI_MAX_FILE (4u << 20)
#define CLI_MAX_CERTS 16

static void usage(void) {
  fprintf(stderr,
          "usage: shield verify --type nitro|sev-snp|azure-snp|azure-tdx|tdx|sgx|maa|gcp|\n"
          "                            simulated FILE\n"
          "                     [--at RFC3339] [--cert FILE]... [--policy FILE] [--nonce HEX]\n"
          "                     [--public-key FILE] [--allow-debug] [--json]\n"
          "                     [--trust-simulated]   (simulated: the local dev root)\n"
          "                     [--jwks FILE] [--issuer URL] [--audience VALUE]   (maa, gcp)\n"
          "                     [--collateral FILE|DIR]   (tdx, sgx, azure-tdx)\n"
          "                     [--fetch | --offline] [--cache-dir DIR] [--fetch-ca FILE]\n"
          "                     [--kds-url URL] [--pcs-url URL] [--jwks-url URL]\n");
}

/* A file ("-": stdin) of at most CLI_MAX_FILE bytes (malloc'd), or NULL: then *over (when
 * given) is the file's size when it is larger than that (0: larger, size unknown, e.g. a pipe),
 * else -1 and errno says why it could not be read. */
static uint8_t *read_file(const char *path, size_t *len, int64_t *over) {
  if (over) *over = -1;
  FILE *f = !strcmp(path, "-") ? stdin : fopen(path, "rb");
  if (!f) return NULL;
  uint8_t *buf = malloc(CLI_MAX_FILE + 1);
  size_t n = buf ? fread(buf, 1, CLI_MAX_FILE + 1, f) : 0;
  int err = !buf ? ENOMEM : ferror(f) ? errno : 0;
  if (!err && n > CLI_MAX_FILE && over) {
    struct stat st;
    *over = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : 0;
  }
  if (f != stdin) fclose(f);
  if (err || n > CLI_MAX_FILE) {
    free(buf);
    errno = err;
    return NULL;
  }
  *len = n;
  return buf;
}

/* Why read_file failed, on stderr. */
static void read_error(const char *path, int64_t over) {
  if (over > 0)
    fprintf(stderr, "shield verify: %s is %lld bytes, over the 4 MiB limit\n", path,
            (long long)over);
  else if (over == 0)
    fprintf(stderr, "shield verify: %s is over the 4 MiB limit\n", path);
  else
    fprintf(stderr, "shield verify: cannot read %s: %s\n", path, errno ? strerror(errno) : "error");
}

/* A public key file: PEM (PUBLIC KEY) or DER SubjectPublicKeyInfo -> DER SPKI. */
uint8_t *sh_attest__cli_load_spki(const char *path, size_t *len) {
  size_t n = 0;
  uint8_t *raw = read_file(path, &n, NULL), *der = NULL;
  if (!raw) return NULL;
  BIO *b = BIO_new_mem_buf(raw, (int)n);
  EVP_PKEY *pk = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
  if (!pk) {
    const unsigned char *q = raw;
    pk = d2i_PUBKEY(NULL, &q, (long)n);
  }
  if (pk) {
    unsigned char *out = NULL;
    int l = i2d_PUBKEY(pk, &out);
    if (l > 0) {
      der = malloc((size_t)l);
      if (der) {
        memcpy(der, out, (size_t)l);
        *len = (size_t)l;
      }
    }
    OPENSSL_free(out);
  }
  EVP_PKEY_free(pk);
  BIO_free(b);
  free(raw);
  ERR_clear_error();
  return der;
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

/* ---- --fetch / --offline (fetch.c) ---- */

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

int sh_attest_cli_verify(int argc, char **argv) {
  const char *type = NULL, *file = NULL, *at_s = NULL, *policy_path = NULL, *nonce_hex = NULL,
             *pk_path = NULL, *jwks_path = NULL, *issuer = NULL, *audience = NULL,
             *collateral_path = NULL, *kds_url = NULL, *pcs_url = NULL, *jwks_url = NULL,
             *cache_dir = NULL, *fetch_ca = NULL;
  const char *cert_paths[CLI_MAX_CERTS];
  size_t ncert = 0;
  int as_json = 0, allow_debug = 0, trust_simulated = 0, code = 2, do_fetch = 0, offline = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **dst = NULL;
    if (!strcmp(a, "--json")) {
      as_json = 1;
      continue;
    }
    if (!strcmp(a, "--allow-debug")) {
      allow_debug = 1;
      continue;
    }
    if (!strcmp(a, "--trust-simulated")) {
      trust_simulated = 1;
      continue;
    } /* §1.7 */
    if (!strcmp(a, "--fetch")) {
      do_fetch = 1;
      continue;
    }
    if (!strcmp(a, "--offline")) {
      offline = 1;
      continue;
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage();
      return 2;
    }
    if (!strcmp(a, "--type"))
      dst = &type;
    else if (!strcmp(a, "--at"))
      dst = &at_s;
    else if (!strcmp(a, "--policy"))
      dst = &policy_path;
    else if (!strcmp(a, "--nonce"))
      dst = &nonce_hex;
    else if (!strcmp(a, "--public-key"))
      dst = &pk_path;
    else if (!strcmp(a, "--jwks"))
      dst = &jwks_path;
    else if (!strcmp(a, "--issuer"))
      dst = &issuer;
    else if (!strcmp(a, "--audience"))
      dst = &audience;
    else if (!strcmp(a, "--collateral"))
      dst = &collateral_path;
    else if (!strcmp(a, "--kds-url"))
      dst = &kds_url;
    else if (!strcmp(a, "--pcs-url"))
      dst = &pcs_url;
    else if (!strcmp(a, "--jwks-url"))
      dst = &jwks_url;
    else if (!strcmp(a, "--cache-dir"))
      dst = &cache_dir;
    else if (!strcmp(a, "--fetch-ca"))
      dst = &fetch_ca;
    else if (!strcmp(a, "--cert")) {
      if (i + 1 >= argc || ncert == CLI_MAX_CERTS) {
        usage();
        return 2;
      }
      cert_paths[ncert++] = argv[++i];
      continue;
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "shield verify: unknown option %s\n", a);
      usage();
      return 2;
    } else if (!file) {
      file = a;
      continue;
    } else {
      fprintf(stderr, "shield verify: more than one FILE\n");
      return 2;
    }
    if (i + 1 >= argc || *dst) {
      usage();
      return 2;
    }
    *dst = argv[++i];
  }
  sh_tee tee = sh_tee_from_name(type);
  if (!type || !file) {
    usage();
    return 2;
  }
  if (tee == SH_TEE_UNKNOWN) {
    fprintf(stderr, "shield verify: unsupported --type %s\n", type);
    return 2;
  }
  if (do_fetch && offline) {
    fprintf(stderr, "shield verify: --fetch and --offline exclude each other\n");
    return 2;
  }
  if (!do_fetch && !offline && (kds_url || pcs_url || jwks_url || cache_dir || fetch_ca)) {
    fprintf(stderr,
            "shield verify: --kds-url, --pcs-url, --jwks-url, --cache-dir and --fetch-ca "
            "need --fetch or --offline\n");
    return 2;
  }
  const char *urls[3] = {kds_url, pcs_url, jwks_url},
             *url_flags[3] = {"--kds-url", "--pcs-url", "--jwks-url"};
  for (int i = 0; i < 3; i++)
    if (urls[i] && !sh_attest_url_ok(urls[i], 1)) { /* an override: loopback http:// too */
      fprintf(stderr, "shield verify: %s: not an https:// (or loopback http://) URL: %s\n",
              url_flags[i], urls[i]);
      return 2;
    }
  if (fetch_ca && access(fetch_ca, R_OK) < 0) {
    fprintf(stderr, "shield verify: --fetch-ca: cannot read %s\n", fetch_ca);
    return 2;
  }
  sh_attest_options o;
  memset(&o, 0, sizeof o);
  o.allow_debug = allow_debug;
  if (at_s) {
    /* RFC 3339 (fractions, Z or a numeric offset) or Unix seconds, after 1970 */
    if (sh_rfc3339_parse(at_s, strlen(at_s), SH_RFC3339_UNIX, &o.at) < 0 || o.at <= 0) {
      fprintf(stderr, "shield verify: --at: not an RFC 3339 time: %s\n", at_s);
      return 2;
    }
  } else {
    o.at = (int64_t)time(NULL);
  }
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
  if (!(raw = read_file(file, &rawlen, &ev_over)) && ev_over < 0) {
    read_error(file, ev_over);
    goto out;
  }
  for (size_t i = 0; i < ncert; i++) {
    size_t n = 0;
    int64_t over;
    if (!(certbuf[i] = read_file(cert_paths[i], &n, &over))) {
      read_error(cert_paths[i], over);
      goto out;
    }
    STACK_OF(X509) *sk = sk_X509_new_null();
    int ok = sk && sh_attest__x509_add_blob(sk, certbuf[i], n) == 0;
    sk_X509_pop_free(sk, X509_free);
    if (!ok) {
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
  if (jwks_path && !(jwks = read_file(jwks_path, &o.jwks_len, &jwks_over))) {
    read_error(jwks_path, jwks_over);
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
    if (!(spki = sh_attest__cli_load_spki(pk_path, &o.public_key_len))) {
      fprintf(stderr, "shield verify: %s: not a PEM or DER public key\n", pk_path);
      goto out;
    }
    o.public_key = spki;
  }
  o.trust_simulated = trust_simulated;
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
    if (!(r = sh_attest__result_new())) {
      fprintf(stderr, "shield verify: out of memory\n");
      goto out;
    }
    r->tee = tee;
    r->timestamp = (double)o.at;
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "%s", why);
    if (as_json) /* the JSON result has no message */
      fprintf(stderr, "shield verify: %s\n", why);
  } else if (!(ev = sh_attest_decode_input(raw, rawlen, &evlen)) ||
             sh_attest_verify_fetching(ev, evlen, tee, &o, fetcher, fiss.issuer,
                                       (int64_t)time(NULL), &r) < 0) {
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
