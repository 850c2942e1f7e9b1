/* tests/c/attest/test_verify_fetch.c — sh_attest_verify_fetching (attest/verify_fetch.c) without a
 * network: an offline fetcher whose cache dir this test fills with the shared vectors' own
 * VCEKs, DCAP collateral (as Intel PCS responses) and MAA JWKS under fetch.c's file names, so
 * every per-type path (sev-snp, azure-snp, tdx, sgx, maa) is driven end to end; plus no
 * fetcher (= sh_attest_verify), an empty cache (collateral_missing, "offline lookup failed"),
 * evidence that fails before collateral matters (nothing looked up), the options left
 * untouched, and key rotation (a JWKS that lacks the token's kid re-read once per issuer per
 * 60 s of the fetch clock); and the fetcher's URL rule (sh_attest_url_ok), without vectors.
 * The HTTPS side is tests/py/attest/test_attest_verify_fetch.py and
 * tests/py/gate/test_gate_fetch.py. */
#include <attest.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static char dir[] = "/tmp/shield-verify-fetch-XXXXXX";

static void put(const char *name, const void *p, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  CHECK(f && fwrite(p, 1, n, f) == n, "write %s", name);
  if (f) fclose(f);
}

/* fetch.c's VCEK file name for a report (Milan/Genoa layout: the full 64-byte chip id). */
static void put_vcek(const char *product, const uint8_t *rep, const uint8_t *der, size_t dl) {
  char hw[129], name[300];
  uint64_t tcb = 0;
  for (int i = 7; i >= 0; i--)
    tcb = tcb << 8 | rep[0x180 + i];
  sh_hex_encode(rep + 0x1A0, 64, hw);
  snprintf(name, sizeof name, "amd-vcek-%s-%s-%016llx.der", product, hw, (unsigned long long)tcb);
  put(name, der, dl);
}

/* A PEM certificate's DER (base64 body; no X.509 parse: vcek-genoa.pem has a zero serial). */
static uint8_t *pem_body(const uint8_t *pem, size_t *len) {
  const char *b = strstr((const char *)pem, "-----\n"),
             *e = strstr((const char *)pem, "\n-----END");
  if (!b || !e) return NULL;
  b += 6; /* the body: standard base64 in lines */
  return sh_b64_decode_alloc(b, (size_t)(e - b), SH_B64_STD | SH_B64_PAD | SH_B64_WS, len);
}

/* The JSON-form DCAP collateral -> the PCS responses fetch.c would have cached. */
static void put_dcap(const char *tee, const char *rel) {
  size_t n;
  char *doc = (char *)slurp(rel, &n);
  json_error_t je;
  json_t *c = doc ? json_loadb(doc, n, 0, &je) : NULL;
  CHECK(c != NULL, "%s", rel);
  if (!c) return;
  const char *ti = json_string_value(json_object_get(c, "tcb_info"));
  json_t *tij = json_loads(ti, 0, &je);
  char fm[13] = "", name[128], *body;
  snprintf(fm, sizeof fm, "%s", json_string_value(json_object_get(tij, "fmspc")));
  for (int i = 0; fm[i]; i++)
    fm[i] |= 0x20;
  json_decref(tij);
  struct {
    const char *field, *key, *file;
  } docs[2] = {{"tcb_info", "tcbInfo", NULL}, {"qe_identity", "enclaveIdentity", NULL}};
  for (int d = 0; d < 2; d++) {
    char k[64];
    snprintf(k, sizeof k, "%s_signature", docs[d].field);
    const char *sig = json_string_value(json_object_get(c, k));
    const char *val = json_string_value(json_object_get(c, docs[d].field));
    size_t bl = strlen(val) + strlen(sig) + 64;
    body = malloc(bl);
    snprintf(body, bl, "{\"%s\":%s,\"signature\":\"%s\"}", docs[d].key, val, sig);
    if (d == 0)
      snprintf(name, sizeof name, "intel-%s-tcb-%s.json", tee, fm);
    else
      snprintf(name, sizeof name, "intel-%s-qe.json", tee);
    put(name, body, strlen(body));
    free(body);
    snprintf(k, sizeof k, "%s_issuer_chain", docs[d].field);
    const char *ch = json_string_value(json_object_get(c, k));
    strcat(name, ".chain.pem");
    put(name, ch, strlen(ch));
  }
  const char *crls[2][2] = {{"pck_crl", NULL}, {"root_ca_crl", "intel-rootcacrl.der"}};
  for (int i = 0; i < 2; i++) {
    const char *hx = json_string_value(json_object_get(c, crls[i][0]));
    size_t hl = strlen(hx);
    uint8_t *der = malloc(hl / 2);
    for (size_t j = 0; j < hl / 2; j++)
      sscanf(hx + 2 * j, "%2hhx", &der[j]);
    if (crls[i][1]) {
      put(crls[i][1], der, hl / 2);
    } else { /* whichever CA issued the quote's PCK */
      const char *ch = json_string_value(json_object_get(c, "pck_crl_issuer_chain"));
      put("intel-pckcrl-processor.der", der, hl / 2);
      put("intel-pckcrl-platform.der", der, hl / 2);
      put("intel-pckcrl-processor.der.chain.pem", ch, strlen(ch));
      put("intel-pckcrl-platform.der.chain.pem", ch, strlen(ch));
    }
    free(der);
  }
  json_decref(c);
  free(doc);
}

static sh_attest_fetcher *offline(const char *cache, const sh_attest_fetch_issuer *iss, size_t ni) {
  sh_attest_fetch_config fc;
  memset(&fc, 0, sizeof fc);
  fc.cache_dir = cache;
  fc.offline = 1;
  fc.issuers = iss;
  fc.nissuers = ni;
  char err[256];
  sh_attest_fetcher *f = sh_attest_fetcher_new(&fc, err, sizeof err);
  CHECK(f != NULL, "fetcher: %s", err);
  return f;
}

/* verify the given bytes with fetcher f (its clock at `now`); the reason name or "ok". */
static const char *run_at(sh_attest_fetcher *f, const uint8_t *ev, size_t n, sh_tee tee,
                          const sh_attest_options *o, int64_t now, char *msg, size_t ml) {
  static char why[64];
  sh_attest_result *r = NULL;
  CHECK(sh_attest_verify_fetching(ev, n, tee, o, f, NULL, now, &r) == 0 && r, "verify");
  if (!r) return "none";
  snprintf(why, sizeof why, "%s", r->verified ? "ok" : sh_attest_reason_name(r->reason));
  if (msg) snprintf(msg, ml, "%s", r->message);
  sh_attest_result_free(r);
  return why;
}

/* ... with the fetch clock at the verification time (what a server does) */
static const char *run(sh_attest_fetcher *f, const uint8_t *ev, size_t n, sh_tee tee,
                       const sh_attest_options *o, char *msg, size_t ml) {
  return run_at(f, ev, n, tee, o, o->at, msg, ml);
}

/* CBOR by hand: a text-string key, a byte-string value (< 64 KiB). */
static size_t cbor_kv(uint8_t *o, const char *k, const uint8_t *v, size_t vl) {
  size_t n = 0, kl = strlen(k);
  o[n++] = (uint8_t)(0x60 | kl); /* keys here are < 24 bytes */
  memcpy(o + n, k, kl);
  n += kl;
  o[n++] = 0x59;
  o[n++] = (uint8_t)(vl >> 8);
  o[n++] = (uint8_t)vl;
  memcpy(o + n, v, vl);
  return n + vl;
}

/* The signature the verification cache keys on (verify.c cache_extra) is taken from a
 * bundle's encoding, not from libcbor's decoded copy, which is freed before the cache reads
 * it (a use after free ASan found on the server's path): a bundle verified twice with a
 * cache, the second time a hit. */
static void cached_twice(const uint8_t *ev, size_t n, sh_tee tee, const char *what) {
  sh_attest_cache *c = sh_attest_cache_new(8);
  sh_attest_options o = {0};
  o.at = T("2025-06-01T00:00:00Z");
  o.cache = c;
  for (int i = 0; i < 2; i++) {
    sh_attest_result *r = NULL;
    CHECK(sh_attest_verify_fetching(ev, n, tee, &o, NULL, NULL, o.at, &r) == 0 && r &&
              r->verified && r->cache_hit == i,
          "%s bundle, cached, pass %d: %s", what, i + 1, r ? r->message : "none");
    sh_attest_result_free(r);
  }
  CHECK(sh_attest_cache_size(c) == 1, "%s: one cache entry", what);
  sh_attest_cache_free(c);
}

static void test_snp(sh_attest_fetcher *f, sh_attest_fetcher *empty) {
  size_t rl, vl, pl, jl, hl = 0;
  uint8_t *rep = slurp("sev-snp/test-report.bin", &rl), *vcek = slurp("sev-snp/test-vcek.der", &vl);
  uint8_t *gpem = slurp("sev-snp/vcek-genoa.pem", &pl),
          *ejs = slurp("sev-snp/evidence-genoa.json", &jl);
  json_error_t je;
  json_t *ev = json_loadb((const char *)ejs, jl, 0, &je), *arr = json_object_get(ev, "report");
  uint8_t *hcl = malloc(json_array_size(arr) + 1);
  for (size_t i = 0; i < json_array_size(arr); i++)
    hcl[hl++] = (uint8_t)json_integer_value(json_array_get(arr, i));
  size_t gl = 0;
  uint8_t *gder = pem_body(gpem, &gl);
  put_vcek("Milan", rep, vcek, vl);
  put_vcek("Genoa", hcl + 0x20, gder, gl);
  sh_attest_options o = {0};
  o.at = T("2025-06-01T00:00:00Z");
  char msg[256];
  CHECK(!strcmp(run(NULL, rep, rl, SH_TEE_SEV_SNP, &o, NULL, 0), "collateral_missing"),
        "no fetcher");
  CHECK(!strcmp(run(f, rep, rl, SH_TEE_SEV_SNP, &o, NULL, 0), "ok"),
        "sev-snp, VCEK from the cache");
  CHECK(!strcmp(run(f, hcl, hl, SH_TEE_AZURE_SNP, &o, NULL, 0), "ok"),
        "azure-snp, VCEK from the cache");
  CHECK(o.certs == NULL && o.ncerts == 0, "the options are not modified");
  CHECK(!strcmp(run(empty, rep, rl, SH_TEE_SEV_SNP, &o, msg, sizeof msg), "collateral_missing") &&
            strstr(msg, "offline lookup failed") && strstr(msg, "Milan"),
        "empty cache: %s", msg);
  /* the report is bound to a nonce it does not carry: refused before any lookup */
  uint8_t nonce[32] = {1};
  o.nonce = nonce;
  o.nonce_len = 32;
  CHECK(!strcmp(run(empty, rep, rl, SH_TEE_SEV_SNP, &o, NULL, 0), "binding_mismatch"),
        "binding first");
  /* bundles through the cache: {"report", "certs": {"vcek"}}, {"hcl_report", "vcek"} */
  uint8_t *b = malloc(rl + vl + hl + gl + 64);
  size_t bn = 0;
  b[bn++] = 0xA2;
  bn += cbor_kv(b + bn, "report", rep, rl);
  b[bn++] = 0x65;
  memcpy(b + bn, "certs", 5);
  bn += 5;
  b[bn++] = 0xA1;
  bn += cbor_kv(b + bn, "vcek", vcek, vl);
  cached_twice(b, bn, SH_TEE_SEV_SNP, "sev-snp");
  bn = 0;
  b[bn++] = 0xA2;
  bn += cbor_kv(b + bn, "hcl_report", hcl, hl);
  bn += cbor_kv(b + bn, "vcek", gder, gl);
  cached_twice(b, bn, SH_TEE_AZURE_SNP, "azure-snp");
  free(b);
  json_decref(ev);
  free(rep);
  free(vcek);
  free(gpem);
  free(gder);
  free(ejs);
  free(hcl);
}

static void test_dcap(sh_attest_fetcher *f) {
  put_dcap("tdx", "tdx/tdx_quote_collateral.json");
  size_t ql;
  uint8_t *q = slurp("tdx/tdx_quote", &ql);
  sh_attest_options o = {0};
  o.at = T("2025-06-20T00:00:00Z");
  char msg[256];
  const char *why = run(f, q, ql, SH_TEE_TDX, &o, msg, sizeof msg);
  CHECK(!strcmp(why, "ok"), "tdx, collateral from the cache: %s %s", why, msg);
  /* a caller's own collateral is never replaced by a fetch */
  o.collateral = (const uint8_t *)"{}";
  o.collateral_len = 2;
  why = run(f, q, ql, SH_TEE_TDX, &o, msg, sizeof msg);
  CHECK(strcmp(why, "ok") && !strstr(msg, "offline"), "given collateral kept: %s %s", why, msg);
  free(q);
}

/* The MAA vector: its issuer's JWKS (*jl bytes, returned) and the token (*tok, trailing
 * newline cut), with options that verify it at the vector's time. */
#define MAA_ISSUER "https://sharedwus.wus.attest.azure.net"
#define MAA_JWKS_FILE "jwks-https___sharedwus.wus.attest.azure.net.json"
static uint8_t *maa_vector(size_t *jl, uint8_t **tok, size_t *tl, sh_attest_options *o) {
  uint8_t *jw = slurp("maa/sharedwus-certs-2022-05-31.json", jl);
  *tok = slurp("maa/simpleattest-sgx.jwt", tl);
  while (*tl && ((*tok)[*tl - 1] == '\n' || (*tok)[*tl - 1] == '\r'))
    (*tl)--;
  memset(o, 0, sizeof *o);
  o->at = T("2022-05-31T23:00:00Z");
  o->issuer = MAA_ISSUER;
  o->allow_debug = 1;
  return jw;
}

static void test_maa(void) {
  static const char *iss = MAA_ISSUER;
  size_t jl, tl;
  uint8_t *tok;
  sh_attest_options o;
  uint8_t *jw = maa_vector(&jl, &tok, &tl, &o);
  put(MAA_JWKS_FILE, jw, jl);
  static const char oc[] =
      "{\"issuer\": \"https://sharedwus.wus.attest.azure.net\", "
      "\"jwks_uri\": \"https://sharedwus.wus.attest.azure.net/certs\"}";
  put("openid-https___sharedwus.wus.attest.azure.net.json", oc, strlen(oc));
  sh_attest_fetch_issuer fi = {.issuer = iss};
  sh_attest_fetcher *f = offline(dir, &fi, 1);
  char msg[256];
  const char *why = run(f, tok, tl, SH_TEE_MAA, &o, msg, sizeof msg);
  CHECK(!strcmp(why, "ok"), "maa, JWKS from the cache: %s %s", why, msg);
  o.issuer = "https://other.example"; /* not a configured issuer: nothing looked up */
  why = run(f, tok, tl, SH_TEE_MAA, &o, msg, sizeof msg);
  CHECK(strcmp(why, "ok"), "another issuer: %s %s", why, msg);
  sh_attest_fetcher_free(f);
  free(jw);
  free(tok);
}

/* Key rotation (verify_fetch.c retry_rotated, fetch.c sh_attest_fetch_jwks_refresh), offline:
 * the cache dir's JWKS first lacks the token's kid (the issuer has not published it yet), then
 * the operator drops in the new one.  One re-read per issuer per 60 s of the fetch clock. */
static void test_maa_rotation(void) {
  static const char *iss = MAA_ISSUER, *file = MAA_JWKS_FILE;
  size_t jl, tl;
  uint8_t *tok;
  sh_attest_options o;
  uint8_t *jw = maa_vector(&jl, &tok, &tl, &o);
  json_error_t je;
  json_t *old = json_loadb((const char *)jw, jl, 0, &je);
  json_array_remove(json_object_get(old, "keys"), 0); /* the token's key (kid XxRc2v...) */
  char *olds = json_dumps(old, JSON_COMPACT);
  CHECK(olds && json_array_size(json_object_get(old, "keys")) == 2, "JWKS without the token's key");
  put(file, olds, strlen(olds));
  sh_attest_fetch_issuer fi = {.issuer = iss};
  sh_attest_fetcher *f = offline(dir, &fi, 1);
  int64_t t0 = 1900000000; /* the fetch clock, apart from the verification time */
  char msg[256];
  const char *why = run_at(f, tok, tl, SH_TEE_MAA, &o, t0, msg, sizeof msg);
  CHECK(!strcmp(why, "root_untrusted") && strstr(msg, "is not in the configured JWKS") &&
            strstr(msg, "refetched just now"),
        "unknown kid, refetched, still unknown: %s %s", why, msg);
  put(file, jw, jl); /* the issuer now publishes the key */
  why = run_at(f, tok, tl, SH_TEE_MAA, &o, t0 + 10, msg, sizeof msg);
  CHECK(!strcmp(why, "root_untrusted") && strstr(msg, "refetched 10s ago") &&
            strstr(msg, "at most once per 60s"),
        "within the window: not refetched: %s %s", why, msg);
  why = run_at(f, tok, tl, SH_TEE_MAA, &o, t0 + 60, msg, sizeof msg);
  CHECK(!strcmp(why, "ok"), "after the window: refetched, verified: %s %s", why, msg);
  /* the refreshed copy is the cached one now: no refetch needed */
  put(file, olds, strlen(olds));
  why = run_at(f, tok, tl, SH_TEE_MAA, &o, t0 + 61, msg, sizeof msg);
  CHECK(!strcmp(why, "ok"), "the new keys stay cached: %s %s", why, msg);
  /* the API itself: bounded per issuer, configured issuers only */
  sh_attest_fetched out;
  sh_attest_fetch_error e;
  memset(&e, 0, sizeof e);
  CHECK(sh_attest_fetch_jwks_refresh(f, iss, t0 + 70, &out, &e) == -1 &&
            e.reason == SH_ATTEST_COLLATERAL_MISSING && strstr(e.message, "10s ago") && !out.data,
        "refresh within the window: %s", e.message);
  CHECK(sh_attest_fetch_jwks_refresh(f, "https://other.example", t0 + 500, &out, &e) == -1 &&
            e.reason == SH_ATTEST_POLICY_DENIED,
        "refresh of an issuer not configured: %s", e.message);
  CHECK(sh_attest_fetch_jwks_refresh(f, iss, t0 + 500, &out, &e) == 0 && out.data,
        "refresh after the window");
  sh_attest_fetched_free(&out);
  sh_attest_fetcher_free(f);
  /* a configurable interval */
  sh_attest_fetch_config fc;
  memset(&fc, 0, sizeof fc);
  fc.cache_dir = dir;
  fc.offline = 1;
  fc.issuers = &fi;
  fc.nissuers = 1;
  fc.jwks_refresh_interval = 5;
  char err[256];
  f = sh_attest_fetcher_new(&fc, err, sizeof err);
  CHECK(f && sh_attest_fetch_jwks_refresh(f, iss, t0, &out, &e) == 0, "interval 5: first");
  sh_attest_fetched_free(&out);
  CHECK(f && sh_attest_fetch_jwks_refresh(f, iss, t0 + 4, &out, &e) == -1, "interval 5: 4 s later");
  CHECK(f && sh_attest_fetch_jwks_refresh(f, iss, t0 + 5, &out, &e) == 0, "interval 5: 5 s later");
  sh_attest_fetched_free(&out);
  sh_attest_fetcher_free(f);
  put(file, jw, jl);
  free(olds);
  json_decref(old);
  free(jw);
  free(tok);
}

/* sh_attest_url_ok: the fetcher's URL rule (attest.h), which needs no vectors. */
static void test_url_ok(void) {
  static const char *const https_ok[] = {"https://kdsintf.amd.com",
                                         "https://api.trustedservices.intel.com/",
                                         "HTTPS://Example.COM",
                                         "https://h:443/p?q=1#f",
                                         "https://[2001:db8::1]:8443/p",
                                         "https://a",
                                         "https://h:1",
                                         "https://h:65535"};
  for (size_t i = 0; i < sizeof https_ok / sizeof https_ok[0]; i++) {
    CHECK(sh_attest_url_ok(https_ok[i], 0) == 1, "%s", https_ok[i]);
    CHECK(sh_attest_url_ok(https_ok[i], 1) == 1, "%s (loopback http allowed)", https_ok[i]);
  }
  static const char *const loopback[] = {"http://127.0.0.1:8080/x",
                                         "http://127.0.0.1",
                                         "http://localhost/",
                                         "http://LOCALHOST:1",
                                         "http://127.1.2.3/p",
                                         "http://[::1]:9/p",
                                         "http://[::1]",
                                         "http://127.255.255.255?x"};
  for (size_t i = 0; i < sizeof loopback / sizeof loopback[0]; i++) {
    CHECK(sh_attest_url_ok(loopback[i], 1) == 1, "%s", loopback[i]);
    CHECK(sh_attest_url_ok(loopback[i], 0) == 0, "%s without the override", loopback[i]);
  }
  static const char *const bad[] = {
      "http://localhost.evil.example/", /* server/gate_verify_flags.c's url_ok took these four */
      "http://127.evil.example/",
      "http://localhost@evil.example/",
      "http://127.0.0.1@evil.example",
      "http://192.0.2.1/",
      "http://128.0.0.1/",
      "http://0x7f.0.0.1/",
      "http://127.1/",
      "http://2130706433/",
      "http://127.0.0.1.nip.io/",
      "http://[::2]/",
      "http://[::1",
      "http://[::1]x/",
      "http://localhost:0/",
      "https://user@h/",
      "https://user:pw@h/",
      "https://",
      "http://",
      "https:///path",
      "https://:443/",
      "ftp://h/",
      "file:///etc/passwd",
      "h/path",
      "",
      "https://h:65536/",
      "https://h:80a/",
      "https://h:/",
      "https://h:123456/",
      "https:// h",
      "https://h p",
      "https://h\tp",
      "https://h\x7f",
      "https://h\xc3\xa9",
      "https://h\n"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK(sh_attest_url_ok(bad[i], 1) == 0, "accepted %s", bad[i]);
  CHECK(sh_attest_url_ok(NULL, 1) == 0, "NULL");
  char longu[2100];
  memset(longu, 'a', sizeof longu - 1);
  longu[sizeof longu - 1] = 0;
  memcpy(longu, "https://h/", 10);
  longu[2047] = 0;
  CHECK(sh_attest_url_ok(longu, 0) == 1, "2047 bytes");
  longu[2047] = 'a';
  longu[2048] = 0;
  CHECK(sh_attest_url_ok(longu, 0) == 0, "2048 bytes");
}

int main(void) {
  char why[512];
  test_url_ok();
  if (!vectors_init(why, sizeof why)) return test_summary_skip(why); /* every case reads vectors */
  if (!mkdtemp(dir)) return 1;
  char empty_dir[600];
  snprintf(empty_dir, sizeof empty_dir, "%s/empty", dir);
  mkdir(empty_dir, 0700);
  sh_attest_fetcher *f = offline(dir, NULL, 0), *empty = offline(empty_dir, NULL, 0);
  test_snp(f, empty);
  test_dcap(f);
  test_maa();
  test_maa_rotation();
  sh_attest_fetcher_free(f);
  sh_attest_fetcher_free(empty);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", dir);
  return test_summary();
}
