/* tests/c/attest/test_attest.c — attest/: real vectors (read in place from $SHIELD_VECTORS), a test
 * CA with generated Nitro documents, SNP reports and Azure HCL reports for what the vectors lack,
 * mutations, cache, policy.  Prints "N passed, N failed"; exits non-zero on failure, 77 (skip)
 * when the vectors folder is absent and the generated cases passed. */
#include "testutil.h"
#include "attest_util.h" /* run(), add_ext() */

#include <cbor.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t NOW;

#define RN(x) (sh_attest_reason_name(x) ? sh_attest_reason_name(x) : "ok")

/* ---------- real Nitro vectors ---------- */
typedef struct nvec {
  const char *file, *at;
  int debug;
} nvec;
static const nvec nitro_vecs[] = {
    {"nitro/valid-attestation-doc-bytes", "2022-10-13T08:58:02Z", 0},
    {"nitro/debug-mode-attestation-doc-bytes", "2022-10-12T13:50:06Z", 1},
    {"nitro/valid-attestation-doc-base64", "2023-09-18T15:03:30Z", 1},
    {"nitro/attestdoc-sample_prod_doc.bin", "2021-03-17T22:02:00Z", 0},
    {"nitro/attester-sample_attestation_doc_full.bin", "2024-01-24T18:14:25Z", 1},
};

static uint8_t *load_nitro(const char *file, size_t *len) {
  size_t n;
  uint8_t *raw = slurp(file, &n); /* never NULL: a missing vector ends the suite */
  uint8_t *d = sh_attest_decode_input(raw, n, len);
  free(raw);
  return d;
}

static void test_nitro_vectors(void) {
  for (size_t i = 0; i < sizeof nitro_vecs / sizeof *nitro_vecs; i++) {
    const nvec *v = &nitro_vecs[i];
    size_t len;
    uint8_t *d = load_nitro(v->file, &len);
    CHECK(d != NULL, "%s: out of memory", v->file);
    if (!d) continue;
    sh_attest_options o = {.at = T(v->at)};
    sh_attest_result *r = NULL;
    sh_attest_reason rs = run(d, len, SH_TEE_NITRO, &o, &r);
    CHECK(rs == (v->debug ? SH_ATTEST_DEBUG_NOT_ALLOWED : SH_ATTEST_OK), "%s: %s", v->file, RN(rs));
    CHECK(r && r->debug == v->debug && json_object_get(r->measurements, "PCR0"), "%s fields",
          v->file);
    CHECK(r && r->has_evidence_sha256, "evidence_sha256");
    sh_attest_result_free(r);
    o.allow_debug = 1;
    rs = run(d, len, SH_TEE_NITRO, &o, NULL);
    CHECK(rs == SH_ATTEST_OK, "%s allow_debug: %s", v->file, RN(rs));
    o.at = NOW;
    rs = run(d, len, SH_TEE_NITRO, &o, NULL);
    CHECK(rs == SH_ATTEST_EXPIRED, "%s now: %s", v->file, RN(rs));
    /* tagged COSE (tag 18) is the same document; tag 17 is not COSE_Sign1 */
    uint8_t *t = malloc(len + 1);
    memcpy(t + 1, d, len);
    t[0] = 0xD2;
    o.at = T(v->at);
    rs = run(t, len + 1, SH_TEE_NITRO, &o, NULL);
    CHECK(rs == SH_ATTEST_OK, "%s tagged: %s", v->file, RN(rs));
    t[0] = 0xD1;
    rs = run(t, len + 1, SH_TEE_NITRO, &o, NULL);
    CHECK(rs == SH_ATTEST_MALFORMED, "%s tag 17: %s", v->file, RN(rs));
    free(t);
    /* 60 s of clock skew allowed for the document timestamp, not more */
    sh_attest_result *r2 = NULL;
    run(d, len, SH_TEE_NITRO, &o, &r2);
    int64_t ts = json_integer_value(json_object_get(r2->claims, "timestamp")) / 1000;
    sh_attest_result_free(r2);
    o.at = ts - 59;
    rs = run(d, len, SH_TEE_NITRO, &o, NULL);
    CHECK(rs == SH_ATTEST_OK || rs == SH_ATTEST_NOT_YET_VALID, "%s skew 59: %s", v->file, RN(rs));
    o.at = ts - 61;
    rs = run(d, len, SH_TEE_NITRO, &o, NULL);
    CHECK(rs == SH_ATTEST_NOT_YET_VALID, "%s skew 61: %s", v->file, RN(rs));
    free(d);
  }
  /* nonce check (nonce "Nonce\n") and binding digest with a key */
  size_t len;
  uint8_t *d = load_nitro("nitro/attester-sample_attestation_doc_full.bin", &len);
  if (d) {
    sh_attest_options o = {.at = T("2024-01-24T18:14:25Z"), .allow_debug = 1};
    o.nonce = (const uint8_t *)"Nonce\n";
    o.nonce_len = 6;
    CHECK(run(d, len, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_OK, "nonce ok");
    o.nonce = (const uint8_t *)"Nonce!";
    CHECK(run(d, len, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_BINDING_MISMATCH, "wrong nonce");
    o.nonce = (const uint8_t *)"Nonce\n";
    o.public_key = (const uint8_t *)"k";
    o.public_key_len = 1;
    CHECK(run(d, len, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_BINDING_MISMATCH, "user_data not D");
    free(d);
  }
}

/* ---------- real SNP / Azure vectors ---------- */
typedef struct svec {
  const char *report, *cert, *extra, *at;
  sh_attest_reason want, want_now;
} svec;
static const svec snp_vecs[] = {
    {"sev-snp/attestation.bin", "sev-snp/vcek.testcer", NULL, "2025-06-01T00:00:00Z",
     SH_ATTEST_DEBUG_NOT_ALLOWED, SH_ATTEST_DEBUG_NOT_ALLOWED},
    {"sev-snp/test-report.bin", "sev-snp/test-vcek.der", NULL, "2025-06-01T00:00:00Z", SH_ATTEST_OK,
     SH_ATTEST_OK},
    {"sev-snp/test-vlek-report.bin", "sev-snp/test-vlek.der", "roots/amd-milan-asvk-ark.pem",
     "2025-06-01T00:00:00Z", SH_ATTEST_OK, SH_ATTEST_EXPIRED},
    {"sev-snp/azure-genoa-snp-report.bin", "sev-snp/vcek-genoa.pem", NULL, "2025-06-01T00:00:00Z",
     SH_ATTEST_OK, SH_ATTEST_OK},
    {"sev-snp/oak-genoa-report.bin", "sev-snp/oak-genoa-vcek.der", NULL, "2026-01-01T00:00:00Z",
     SH_ATTEST_OK, SH_ATTEST_OK},
};

static uint8_t *azure_hcl(size_t *len) {
  size_t n;
  uint8_t *j = slurp("sev-snp/evidence-genoa.json", &n);
  json_t *root = json_loadb((char *)j, n, 0, NULL);
  free(j);
  json_t *arr = json_object_get(root, "report");
  *len = json_array_size(arr);
  uint8_t *b = malloc(*len);
  for (size_t i = 0; i < *len; i++)
    b[i] = (uint8_t)json_integer_value(json_array_get(arr, i));
  json_decref(root);
  return b;
}

static uint8_t *cbor_bundle(const char **keys, const uint8_t **vals, const size_t *lens, int n,
                            const char *wrap, size_t *out_len) {
  cbor_item_t *m = cbor_new_definite_map((size_t)n);
  for (int i = 0; i < n; i++)
    cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string(keys[i])),
                                       cbor_move(cbor_build_bytestring(vals[i], lens[i]))});
  cbor_item_t *top = m;
  if (wrap) { /* {"report": ..., wrap: {certs}} is built by the caller as two maps */
    (void)wrap;
  }
  unsigned char *buf = NULL;
  size_t sz = 0;
  *out_len = cbor_serialize_alloc(top, &buf, &sz);
  cbor_decref(&top);
  return buf;
}

static void test_snp_vectors(void) {
  for (size_t i = 0; i < sizeof snp_vecs / sizeof *snp_vecs; i++) {
    const svec *v = &snp_vecs[i];
    size_t rl, cl, el = 0;
    uint8_t *rep = slurp(v->report, &rl), *cert = slurp(v->cert, &cl);
    uint8_t *extra = v->extra ? slurp(v->extra, &el) : NULL;
    sh_iovec certs[2] = {{.ptr = cert, .len = cl}, {.ptr = extra, .len = el}};
    sh_attest_options o = {.at = T(v->at), .certs = certs, .ncerts = extra ? 2 : 1};
    sh_attest_reason rs = run(rep, rl, SH_TEE_SEV_SNP, &o, NULL);
    CHECK(rs == v->want, "%s: %s", v->report, RN(rs));
    o.at = NOW;
    rs = run(rep, rl, SH_TEE_SEV_SNP, &o, NULL);
    CHECK(rs == v->want_now, "%s now: %s", v->report, RN(rs));
    o.at = T(v->at);
    /* no certificate: collateral missing */
    o.ncerts = 0;
    rs = run(rep, rl, SH_TEE_SEV_SNP, &o, NULL);
    CHECK(rs == SH_ATTEST_COLLATERAL_MISSING, "%s no cert: %s", v->report, RN(rs));
    /* a nonce that the report does not bind */
    o.ncerts = extra ? 2 : 1;
    o.nonce = (const uint8_t *)"0123456789abcdef0123456789abcdef";
    o.nonce_len = 32;
    rs = run(rep, rl, SH_TEE_SEV_SNP, &o, NULL);
    CHECK(rs == SH_ATTEST_BINDING_MISMATCH, "%s nonce: %s", v->report, RN(rs));
    o.nonce = NULL;
    o.nonce_len = 0;
    /* CBOR bundle form {"report", "certs": {"vcek"|"vlek": DER}} */
    if (v->want == SH_ATTEST_OK && cert[0] == 0x30 && !extra) {
      cbor_item_t *cm = cbor_new_definite_map(1);
      cbor_map_add(cm, (struct cbor_pair){cbor_move(cbor_build_string("vcek")),
                                          cbor_move(cbor_build_bytestring(cert, cl))});
      cbor_item_t *m = cbor_new_definite_map(2);
      cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("report")),
                                         cbor_move(cbor_build_bytestring(rep, rl))});
      cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("certs")), cbor_move(cm)});
      unsigned char *b = NULL;
      size_t bsz = 0, bl = cbor_serialize_alloc(m, &b, &bsz);
      cbor_decref(&m);
      o.ncerts = 0;
      rs = run(b, bl, SH_TEE_SEV_SNP, &o, NULL);
      CHECK(rs == SH_ATTEST_OK, "%s bundle: %s", v->report, RN(rs));
      free(b);
    }
    free(rep);
    free(cert);
    free(extra);
  }
  /* Azure HCL: raw + bundle, binding, tampered runtime JSON */
  size_t hl, cl;
  uint8_t *hcl = azure_hcl(&hl), *vcek = slurp("sev-snp/vcek-genoa.pem", &cl);
  CHECK(hl > 0x4D4, "evidence-genoa.json: no HCL report in \"report\"");
  if (hl > 0x4D4) {
    sh_iovec certs[1] = {{.ptr = vcek, .len = cl}};
    sh_attest_options o = {.at = NOW, .certs = certs, .ncerts = 1};
    sh_attest_result *r = NULL;
    sh_attest_reason rs = run(hcl, hl, SH_TEE_AZURE_SNP, &o, &r);
    CHECK(rs == SH_ATTEST_OK, "azure hcl: %s", RN(rs));
    CHECK(r && r->user_data_len == 64 && json_object_get(r->claims, "runtime"), "azure user-data");
    sh_attest_result_free(r);
    o.nonce = (const uint8_t *)"0123456789abcdef0123456789abcdef";
    o.nonce_len = 32;
    CHECK(run(hcl, hl, SH_TEE_AZURE_SNP, &o, NULL) == SH_ATTEST_BINDING_MISMATCH, "azure nonce");
    o.nonce = NULL;
    o.nonce_len = 0;
    hcl[0x4D4 + 10] ^= 1;
    rs = run(hcl, hl, SH_TEE_AZURE_SNP, &o, NULL);
    CHECK(rs == SH_ATTEST_SIGNATURE_INVALID, "azure runtime tampered: %s", RN(rs));
    hcl[0x4D4 + 10] ^= 1;
    /* the SNP report alone (sev-snp) must not be accepted as azure-snp */
    CHECK(run(hcl + 0x20, 1184, SH_TEE_AZURE_SNP, &o, NULL) == SH_ATTEST_MALFORMED, "azure bare");
    /* bundle */
    BIO *b = BIO_new_mem_buf(vcek, (int)cl);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    unsigned char *der = NULL;
    int dl = i2d_X509(x, &der);
    const char *k[] = {"hcl_report", "vcek"};
    const uint8_t *vals[] = {hcl, der};
    size_t lens[] = {hl, (size_t)dl};
    size_t bl;
    uint8_t *bundle = cbor_bundle(k, vals, lens, 2, NULL, &bl);
    o.ncerts = 0;
    rs = run(bundle, bl, SH_TEE_AZURE_SNP, &o, NULL);
    CHECK(rs == SH_ATTEST_OK, "azure bundle: %s", RN(rs));
    free(bundle);
    OPENSSL_free(der);
    X509_free(x);
  }
  free(hcl);
  free(vcek);
}

/* ---------- mutations ---------- */

static uint8_t *mutate(const uint8_t *in, size_t len, size_t lo, size_t hi, size_t *out_len) {
  uint8_t *m = malloc(len + 8);
  memcpy(m, in, len);
  *out_len = len;
  size_t pos = lo + rnd() % (hi - lo);
  switch (rnd() % 8) {
    case 0:
    case 1:
    case 2:
      m[pos] ^= (uint8_t)(1u << (rnd() % 8));
      break; /* bit flip */
    case 3:
    case 4:
      m[pos] = (uint8_t)rnd();
      if (m[pos] == in[pos]) m[pos] ^= 0x80;
      break;
    case 5:
      *out_len = pos;
      break; /* truncation */
    case 6:
      memmove(m + pos + 1, m + pos, len - pos);
      m[pos] = (uint8_t)rnd();
      *out_len = len + 1;
      break;
    default:
      m[pos] ^= 0xFF;
      m[(pos + 1) % len] ^= 0x01;
      break;
  }
  return m;
}

static void mutate_vector(const char *name, const uint8_t *ev, size_t len, sh_tee tee,
                          sh_attest_options *o, const size_t *bounds, int nregions, int n,
                          uint8_t *certbuf, size_t certlen) {
  int accepted = 0, count = 0;
  sh_attest_reason base = run(ev, len, tee, o, NULL);
  CHECK(base == SH_ATTEST_OK, "%s baseline: %s", name, RN(base));
  for (int i = 0; i < n; i++) {
    int reg = (int)(rnd() % (unsigned)(nregions + (certbuf ? 1 : 0)));
    size_t ml;
    if (reg == nregions) { /* mutate the separately given certificate */
      uint8_t *mc = mutate(certbuf, certlen, 0, certlen, &ml);
      sh_iovec saved = o->certs[0];
      ((sh_iovec *)o->certs)[0] = (sh_iovec){.ptr = mc, .len = ml};
      if (memcmp(mc, certbuf, ml < certlen ? ml : certlen) || ml != certlen) {
        count++;
        accepted += run(ev, len, tee, o, NULL) == SH_ATTEST_OK;
      }
      ((sh_iovec *)o->certs)[0] = saved;
      free(mc);
      continue;
    }
    uint8_t *m = mutate(ev, len, bounds[reg], bounds[reg + 1], &ml);
    if (ml != len || memcmp(m, ev, len)) {
      count++;
      accepted += run(m, ml, tee, o, NULL) == SH_ATTEST_OK;
    }
    free(m);
  }
  CHECK(accepted == 0 && count >= n * 9 / 10, "%s: %d of %d mutations accepted", name, accepted,
        count);
  printf("  mutations %-36s %d tried, %d accepted\n", name, count, accepted);
}

static void test_mutations(int n) {
  for (size_t i = 0; i < sizeof nitro_vecs / sizeof *nitro_vecs; i++) {
    size_t len;
    uint8_t *d = load_nitro(nitro_vecs[i].file, &len);
    sh_attest_options o = {.at = T(nitro_vecs[i].at), .allow_debug = 1};
    /* regions: the signature (last 96 bytes), the certificates (middle), the rest */
    size_t b[4] = {0, len / 5, len - 96, len};
    mutate_vector(nitro_vecs[i].file, d, len, SH_TEE_NITRO, &o, b, 3, n, NULL, 0);
    free(d);
  }
  for (size_t i = 0; i < sizeof snp_vecs / sizeof *snp_vecs; i++) {
    const svec *v = &snp_vecs[i];
    size_t rl, cl, el = 0;
    uint8_t *rep = slurp(v->report, &rl), *cert = slurp(v->cert, &cl);
    uint8_t *extra = v->extra ? slurp(v->extra, &el) : NULL;
    sh_iovec certs[2] = {{.ptr = cert, .len = cl}, {.ptr = extra, .len = el}};
    sh_attest_options o = {
        .at = T(v->at), .certs = certs, .ncerts = extra ? 2 : 1, .allow_debug = 1};
    size_t b[3] = {0, 0x2A0, 1184}; /* signed region, signature area (+ the VCEK) */
    mutate_vector(v->report, rep, rl, SH_TEE_SEV_SNP, &o, b, 2, n, cert, cl);
    free(rep);
    free(cert);
    free(extra);
  }
  size_t hl, cl;
  uint8_t *hcl = azure_hcl(&hl), *vcek = slurp("sev-snp/vcek-genoa.pem", &cl);
  if (hl > 0x4D4) {
    sh_iovec certs[1] = {{.ptr = vcek, .len = cl}};
    sh_attest_options o = {.at = NOW, .certs = certs, .ncerts = 1};
    /* up to report_size (0x984): the zero padding after it is not part of the report
     * (the vTPM NV index is larger), so cutting padding is not a mutation of evidence */
    size_t b[5] = {0, 0x20, 0x2C0, 0x4C0, hl < 0x984 ? hl : 0x984};
    mutate_vector("azure hcl (evidence-genoa.json)", hcl, hl, SH_TEE_AZURE_SNP, &o, b, 4, n, NULL,
                  0);
  }
  free(hcl);
  free(vcek);
}

#include "test_attest_gen.h"

int main(void) {
  char why[512];
  NOW = T("2026-11-24T12:00:00Z");
  if (vectors_init(why, sizeof why)) {
    test_nitro_vectors();
    test_snp_vectors();
    const char *nm = getenv("SHIELD_MUTATIONS");
    test_mutations(nm ? atoi(nm) : 1000);
    test_policy_and_cache();
  }
  test_generated();
  return vdir ? test_summary() : test_summary_skip(why);
}
