/*
 * tests/c/gate/test_attested_tls.c — the --tls-attested certificate builder (gate.h,
 * gate/attested_tls.c), through its public header only.
 *
 * The simulated TEE makes the evidence, with a dev root made for this run in a temporary
 * XDG_DATA_HOME (nothing of the user's data directory is read or written).  Covered: the
 * --tls-attested-ttl checks; --tee required; the certificate (v3, self-signed by the key,
 * validity now .. now + ttl + margin, the extension non-critical under 2.23.133.5.4.9); the
 * extension's CBOR (deterministic bytes for known inputs; for the issued certificate: the
 * media type, tee "simulated", the binding = {1: SHA-256(SPKI), 2: null, 3: 1}, issued_at)
 * and its evidence verifying with attest/ against D(0^32, binding); a re-issue (new serial and
 * evidence, the same key).
 * Prints "N passed, N failed".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cbor.h>
#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "attest.h"
#include "gate.h"
#include "testutil.h"

static char g_dir[] = "/tmp/shield-test-atls-XXXXXX";

static int contains(const char *s, const char *sub) {
  return s && strstr(s, sub) != NULL;
}

static void test_ttl(void) {
  sh_gate_config gc;
  sh_gate_config_init(&gc);
  sh_error err = {0};
  int64_t ttl = 0;
  CHECK(sh_gate_attested_tls_ttl(&gc, &ttl, &err) == 0 && ttl == 3600, "default 3600: %lld",
        (long long)ttl);
  static const char *const good[] = {"1", "2", "3600", "10500"};
  static const int64_t goodv[] = {1, 2, 3600, 10500};
  for (size_t i = 0; i < 4; i++) {
    gc.tls_attested_ttl = good[i];
    CHECK(sh_gate_attested_tls_ttl(&gc, &ttl, &err) == 0 && ttl == goodv[i], "%s accepted",
          good[i]);
  }
  static const char *const bad[] = {
      "0", "-5", "", "abc", "1.5", "10501", "60s", " 60", "99999999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    gc.tls_attested_ttl = bad[i];
    memset(&err, 0, sizeof err);
    CHECK(sh_gate_attested_tls_ttl(&gc, &ttl, &err) == SH_EINVAL &&
              contains(err.message, "--tls-attested-ttl"),
          "'%s' refused naming the flag: %s", bad[i], err.message);
  }
}

/* The extension's CBOR for known inputs: the bytes cbor2's canonical mode gives for
 * ["application/vnd.shield.evidence+cbor", bstr({1: "simulated", 2: h'01', 3: h'02',
 *   4: 1700000000})]. */
static void test_extension_bytes(void) {
  static const char want_hex[] =
      "8278246170706c69636174696f6e2f766e642e736869656c642e65766964656e63652b63626f725818a401"
      "6973696d756c61746564024101034102041a6553f100";
  uint8_t *out = NULL;
  size_t len = 0;
  CHECK(sh_gate_attested_tls_extension("simulated", (const uint8_t *)"\x01", 1,
                                       (const uint8_t *)"\x02", 1, 1700000000, &out, &len) == 0,
        "encodes");
  char hex[256] = "";
  for (size_t i = 0; out && i < len && 2 * i + 2 < sizeof hex; i++)
    snprintf(hex + 2 * i, 3, "%02x", out[i]);
  CHECK(strcmp(hex, want_hex) == 0, "deterministic CBOR:\n got %s\nwant %s", hex, want_hex);
  free(out);
  /* small issued_at: the shortest integer form (RFC 8949 §4.2.1) */
  CHECK(sh_gate_attested_tls_extension("nitro", (const uint8_t *)"", 0, (const uint8_t *)"", 0, 23,
                                       &out, &len) == 0 &&
            len >= 2 && out[len - 2] == 0x04 && out[len - 1] == 23,
        "issued_at 23 is one byte");
  free(out);
}

/* The map inside the extension: its four values (borrowed from `m`). */
typedef struct ext_fields {
  char tee[32];
  cbor_item_t *evidence, *binding;
  uint64_t issued_at;
  int ok;
} ext_fields;

static cbor_item_t *map_get(cbor_item_t *m, uint64_t key) {
  struct cbor_pair *p = cbor_map_handle(m);
  for (size_t i = 0; i < cbor_map_size(m); i++)
    if (cbor_isa_uint(p[i].key) && cbor_get_int(p[i].key) == key) return p[i].value;
  return NULL;
}

static cbor_item_t *parse_extension(X509 *x, ext_fields *f) {
  memset(f, 0, sizeof *f);
  ASN1_OBJECT *oid = OBJ_txt2obj(SH_GATE_TLS_EVIDENCE_OID, 1);
  int at = X509_get_ext_by_OBJ(x, oid, -1);
  ASN1_OBJECT_free(oid);
  CHECK(at >= 0, "the certificate has extension %s", SH_GATE_TLS_EVIDENCE_OID);
  if (at < 0) return NULL;
  X509_EXTENSION *e = X509_get_ext(x, at);
  CHECK(X509_EXTENSION_get_critical(e) == 0, "the extension is non-critical");
  ASN1_OCTET_STRING *os = X509_EXTENSION_get_data(e);
  struct cbor_load_result r;
  cbor_item_t *outer = cbor_load(ASN1_STRING_get0_data(os), (size_t)ASN1_STRING_length(os), &r);
  int ok = outer && r.error.code == CBOR_ERR_NONE && r.read == (size_t)ASN1_STRING_length(os) &&
           cbor_isa_array(outer) && cbor_array_size(outer) == 2;
  CHECK(ok, "extnValue is a CBOR array of 2");
  if (!ok) {
    if (outer) cbor_decref(&outer);
    return NULL;
  }
  cbor_item_t *mt = cbor_array_handle(outer)[0], *bs = cbor_array_handle(outer)[1];
  static const char media[] = "application/vnd.shield.evidence+cbor";
  CHECK(cbor_isa_string(mt) && cbor_string_length(mt) == sizeof media - 1 &&
            memcmp(cbor_string_handle(mt), media, sizeof media - 1) == 0,
        "media type");
  CHECK(cbor_isa_bytestring(bs), "bstr of the map");
  if (!cbor_isa_bytestring(bs)) {
    cbor_decref(&outer);
    return NULL;
  }
  cbor_item_t *m = cbor_load(cbor_bytestring_handle(bs), cbor_bytestring_length(bs), &r);
  cbor_decref(&outer);
  ok = m && cbor_isa_map(m) && cbor_map_size(m) == 4;
  CHECK(ok, "a map of 4");
  if (!ok) {
    if (m) cbor_decref(&m);
    return NULL;
  }
  cbor_item_t *tee = map_get(m, 1), *ia = map_get(m, 4);
  f->evidence = map_get(m, 2);
  f->binding = map_get(m, 3);
  f->ok = tee && cbor_isa_string(tee) && cbor_string_length(tee) < sizeof f->tee && f->evidence &&
          cbor_isa_bytestring(f->evidence) && f->binding && cbor_isa_bytestring(f->binding) && ia &&
          cbor_isa_uint(ia);
  CHECK(f->ok, "keys 1..4 with their types");
  if (f->ok) {
    memcpy(f->tee, cbor_string_handle(tee), cbor_string_length(tee));
    f->issued_at = cbor_get_int(ia);
  }
  return m;
}

static X509 *load_pem(const char *pem, size_t len) {
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  return x;
}

static void test_certificate(void) {
  sh_gate_config gc;
  sh_gate_config_init(&gc);
  sh_error err = {0};
  sh_gate_attested_tls *a = NULL;
  int64_t now = (int64_t)time(NULL);
  gc.tls_attested = 1;
  CHECK(sh_gate_attested_tls_new(&gc, now, &a, &err) == SH_EINVAL && !a &&
            contains(err.message, "--tee"),
        "without --tee: %s", err.message);
  gc.tee = "simulated";
  gc.tls_attested_ttl = "60";
  CHECK(sh_gate_attested_tls_new(&gc, now, &a, &err) == 0 && a, "opens: %s", err.message);
  if (!a) return;
  CHECK(strcmp(sh_gate_attested_tls_tee(a), "simulated") == 0, "tee name");
  CHECK(sh_gate_attested_tls_every(a) == 60, "every = ttl");

  char *pem = NULL;
  size_t pem_len = 0;
  CHECK(sh_gate_attested_tls_issue_at(a, now, &pem, &pem_len, &err) == 0 && pem, "issues: %s",
        err.message);
  X509 *x = pem ? load_pem(pem, pem_len) : NULL;
  CHECK(x != NULL, "PEM certificate");
  if (!x) goto out;
  EVP_PKEY *key = sh_gate_attested_tls_key(a);
  CHECK(X509_get_version(x) == X509_VERSION_3, "v3");
  CHECK(EVP_PKEY_eq(X509_get0_pubkey(x), key) == 1, "for the key");
  CHECK(X509_verify(x, key) == 1, "self-signed by the key");
  CHECK(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) == 0, "issuer = subject");
  int day = 0, sec = 0;
  ASN1_TIME *t0 = ASN1_TIME_new();
  ASN1_TIME_set(t0, (time_t)now);
  CHECK(ASN1_TIME_diff(&day, &sec, t0, X509_get0_notBefore(x)) && day == 0 && sec == 0,
        "notBefore = now (%d d %d s)", day, sec);
  CHECK(ASN1_TIME_diff(&day, &sec, t0, X509_get0_notAfter(x)) && day == 0 &&
            sec == 60 + SH_GATE_TLS_MARGIN,
        "notAfter = now + ttl + margin (%d d %d s)", day, sec);
  ASN1_TIME_free(t0);

  ext_fields f;
  cbor_item_t *m = parse_extension(x, &f);
  if (m && f.ok) {
    CHECK(strcmp(f.tee, "simulated") == 0, "tee %s", f.tee);
    CHECK(f.issued_at == (uint64_t)now, "issued_at = now");
    /* §4 binding: {1: SHA-256(SPKI), 2: null, 3: 1} exactly */
    unsigned char *spki = NULL;
    int sl = i2d_PUBKEY(key, &spki);
    uint8_t want[43] = {0xa3, 0x01, 0x58, 0x20};
    SHA256(spki, (size_t)sl, want + 4);
    want[36] = 0x02, want[37] = 0xf6, want[38] = 0x03, want[39] = 0x01;
    OPENSSL_free(spki);
    CHECK(cbor_bytestring_length(f.binding) == 40 &&
              memcmp(cbor_bytestring_handle(f.binding), want, 40) == 0,
          "binding CBOR of this certificate's SPKI");
    /* the evidence verifies, bound to D(n = 0^32, k = binding) */
    uint8_t *root = NULL;
    size_t root_len = 0;
    char why[256] = "";
    char dir[300];
    snprintf(dir, sizeof dir, "%s/shield", g_dir);
    CHECK(sh_attest_simulated_root(dir, 0, now, &root, &root_len, why, sizeof why) == 0,
          "the run's dev root: %s", why);
    sh_iovec sim_root = {(const char *)root, root_len};
    static const uint8_t zero[32];
    sh_attest_options o = {.at = now,
                           .trust_simulated = 1,
                           .simulated_root = &sim_root,
                           .nonce = zero,
                           .nonce_len = 32,
                           .public_key = cbor_bytestring_handle(f.binding),
                           .public_key_len = cbor_bytestring_length(f.binding)};
    sh_attest_result *r = NULL;
    CHECK(sh_attest_verify(cbor_bytestring_handle(f.evidence), cbor_bytestring_length(f.evidence),
                           SH_TEE_SIMULATED, &o, &r) == 0 &&
              r && r->verified,
          "evidence verifies: %s", r ? r->message : "(none)");
    sh_attest_result_free(r);
    /* and not with another nonce (the binding is to the zero nonce) */
    uint8_t one[32] = {1};
    o.nonce = one;
    r = NULL;
    CHECK(sh_attest_verify(cbor_bytestring_handle(f.evidence), cbor_bytestring_length(f.evidence),
                           SH_TEE_SIMULATED, &o, &r) == 0 &&
              r && !r->verified && r->reason == SH_ATTEST_BINDING_MISMATCH,
          "another nonce: binding_mismatch");
    sh_attest_result_free(r);
    free(root);
  }
  if (m) cbor_decref(&m);

  /* a re-issue: a new certificate (serial, evidence, time), the same key */
  char *pem2 = NULL;
  size_t pem2_len = 0;
  CHECK(sh_gate_attested_tls_issue_at(a, now + 60, &pem2, &pem2_len, &err) == 0, "re-issues");
  X509 *y = pem2 ? load_pem(pem2, pem2_len) : NULL;
  CHECK(y && ASN1_INTEGER_cmp(X509_get0_serialNumber(x), X509_get0_serialNumber(y)) != 0,
        "new serial");
  CHECK(y && EVP_PKEY_eq(X509_get0_pubkey(y), key) == 1, "same key");
  if (y) {
    ext_fields g;
    cbor_item_t *m2 = parse_extension(y, &g);
    CHECK(m2 && g.ok && g.issued_at == (uint64_t)(now + 60), "issued_at of the re-issue");
    if (m2) cbor_decref(&m2);
  }
  X509_free(y);
  free(pem2);
  X509_free(x);
out:
  free(pem);
  sh_gate_attested_tls_free(a);
}

int main(void) {
  if (!mkdtemp(g_dir)) {
    perror("mkdtemp");
    return 1;
  }
  setenv("XDG_DATA_HOME", g_dir, 1); /* the simulated provider's dev root goes here */
  test_ttl();
  test_extension_bytes();
  test_certificate();
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
  return test_summary();
}
