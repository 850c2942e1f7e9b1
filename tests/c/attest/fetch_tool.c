/* tests/c/attest/fetch_tool.c — test-only driver of attest/fetch.c for
 * tests/py/attest/test_attest_fetch.py.
 *
 *   fetch-tool [--ca FILE] [--cache DIR] [--offline] [--kds-url URL] [--pcs-url URL]
 *              [--issuer ISS[=JWKS_URL]]... [--timeout-ms N] [--max-bytes N] [--ttl S]
 *              [--negative-ttl S] [--per-minute N] [--product P]... OP...
 *   OP: at:UNIX | openid:ISS | jwks:ISS | vcek:PRODUCT:CHIPHEX:TCBHEX | chain:SIGNER:PRODUCT |
 *       crl:SIGNER:PRODUCT | tcb:TEE:FMSPC | qe:TEE | pckcrl:CA
 * One fetcher serves every OP in order (so the memory cache, negative cache and rate limit are
 * exercised); one JSON line per OP: {"ok", "len", "sha256", "from_cache", "stale", "chain"} or
 * {"ok": false, "reason", "message"}.
 */
#include "attest.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXI 8

int main(int argc, char **argv) {
  sh_attest_fetch_config c;
  sh_attest_fetch_issuer iss[MAXI];
  const char *prod[MAXI];
  size_t ni = 0, np = 0;
  int64_t now = 1800000000;
  memset(&c, 0, sizeof c);
  int i = 1;
  for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--offline")) {
      c.offline = 1;
      continue;
    }
    if (!v) {
      fprintf(stderr, "missing value for %s\n", a);
      return 2;
    }
    i++;
    if (!strcmp(a, "--ca"))
      c.ca_file = v;
    else if (!strcmp(a, "--cache"))
      c.cache_dir = v;
    else if (!strcmp(a, "--kds-url"))
      c.amd_kds_url = v;
    else if (!strcmp(a, "--pcs-url"))
      c.intel_pcs_url = v;
    else if (!strcmp(a, "--timeout-ms"))
      c.timeout_ms = atol(v);
    else if (!strcmp(a, "--max-bytes"))
      c.max_bytes = (size_t)atol(v);
    else if (!strcmp(a, "--ttl"))
      c.ttl = atol(v);
    else if (!strcmp(a, "--negative-ttl"))
      c.negative_ttl = atol(v);
    else if (!strcmp(a, "--per-minute"))
      c.max_per_minute = (unsigned)atol(v);
    else if (!strcmp(a, "--product") && np < MAXI)
      prod[np++] = v;
    else if (!strcmp(a, "--issuer") && ni < MAXI) {
      char *d = strdup(v), *eq = strstr(d, "=http");
      if (eq) *eq++ = 0;
      iss[ni] = (sh_attest_fetch_issuer){.issuer = d, .jwks_url = eq};
      ni++;
    } else {
      fprintf(stderr, "unknown option %s\n", a);
      return 2;
    }
  }
  c.issuers = iss;
  c.nissuers = ni;
  if (np) {
    c.amd_products = prod;
    c.namd_products = np;
  }
  char err[256];
  sh_attest_fetcher *f = sh_attest_fetcher_new(&c, err, sizeof err);
  if (!f) {
    fprintf(stderr, "%s\n", err);
    return 2;
  }
  for (; i < argc; i++) {
    char *op = strdup(argv[i]), *save = NULL;
    char *k = strtok_r(op, ":", &save);
    char *rest = save; /* the remainder, may contain ':' (URLs) */
    sh_attest_fetched out;
    sh_attest_fetch_error e;
    memset(&out, 0, sizeof out);
    memset(&e, 0, sizeof e);
    int rc = -2;
    if (!strcmp(k, "at")) {
      now = atoll(rest);
      free(op);
      continue;
    }
    if (!strcmp(k, "openid"))
      rc = sh_attest_fetch_openid_config(f, rest, now, &out, &e);
    else if (!strcmp(k, "jwks"))
      rc = sh_attest_fetch_jwks(f, rest, now, &out, &e);
    else if (!strcmp(k, "qe"))
      rc = sh_attest_fetch_intel_qe_identity(f, rest, now, &out, &e);
    else if (!strcmp(k, "pckcrl"))
      rc = sh_attest_fetch_intel_pck_crl(f, rest, now, &out, &e);
    else {
      char *a = strtok_r(NULL, ":", &save), *b = strtok_r(NULL, ":", &save),
           *d = strtok_r(NULL, ":", &save);
      if (!strcmp(k, "chain"))
        rc = sh_attest_fetch_amd_chain(f, b, a, now, &out, &e);
      else if (!strcmp(k, "crl"))
        rc = sh_attest_fetch_amd_crl(f, b, a, now, &out, &e);
      else if (!strcmp(k, "tcb"))
        rc = sh_attest_fetch_intel_tcb(f, a, b, now, &out, &e);
      else if (!strcmp(k, "vcek") && b && d) {
        uint8_t chip[64] = {0};
        long n = 0;
        unsigned char *h = OPENSSL_hexstr2buf(b, &n);
        if (h) memcpy(chip, h, n > 64 ? 64 : (size_t)n);
        OPENSSL_free(h);
        rc = sh_attest_fetch_amd_vcek(f, a, chip, strtoull(d, NULL, 16), now, &out, &e);
      }
    }
    if (rc == -2) {
      fprintf(stderr, "bad op %s\n", argv[i]);
      return 2;
    }
    if (rc == 0) {
      uint8_t h[32];
      char hx[65];
      EVP_Digest(out.data, out.len, h, NULL, EVP_sha256(), NULL);
      for (int j = 0; j < 32; j++)
        sprintf(hx + 2 * j, "%02x", h[j]);
      json_t *j = json_pack("{s:b, s:I, s:s, s:i, s:b}", "ok", 1, "len", (json_int_t)out.len,
                            "sha256", hx, "from_cache", out.from_cache, "stale", out.stale);
      json_object_set_new(j, "chain",
                          out.issuer_chain ? json_string(out.issuer_chain) : json_null());
      char *s = json_dumps(j, JSON_COMPACT);
      printf("%s\n", s);
      free(s);
      json_decref(j);
    } else {
      json_t *j = json_pack("{s:b, s:s, s:s}", "ok", 0, "reason", sh_attest_reason_name(e.reason),
                            "message", e.message);
      char *s = json_dumps(j, JSON_COMPACT);
      printf("%s\n", s);
      free(s);
      json_decref(j);
    }
    fflush(stdout);
    sh_attest_fetched_free(&out);
    free(op);
  }
  sh_attest_fetcher_free(f);
  for (size_t j = 0; j < ni; j++)
    free((char *)iss[j].issuer);
  return 0;
}
