/* tests/c/attest/test_azure.c — attest/azure.c on Azure CVM HCL reports as Azure produces them: the
 * real reports of confidential-containers/trustee's verifier test data
 * (deps/verifier/test_data/az-snp-vtpm, az-tdx-vtpm), read in place from a trustee clone given
 * by $SHIELD_TRUSTEE_GIT (its git directory, e.g. a bare clone, read with `git show HEAD:…`;
 * or a checkout), by default /work/.mirror/confidential-containers+trustee/repo when that
 * exists.  Without one the suite exits 77 (meson's SKIP) naming the variable; with one, a file
 * it cannot read fails the suite.
 *   azure-snp: four SNP HCL reports with header version 1 (evidence-v0/v1/v2.json,
 *     hcl-report.bin) verify with their VCEKs, raw and as bundles;
 *   azure-tdx: the az-tdx-vtpm HCL report (header version 2, report type 4) with its TD quote
 *     (hcl-report.bin + td-quote.bin, evidence-v0.json, evidence-v1.json) as CBOR
 *     {"hcl_report", "td_quote"}: the HCL layout, SHA-256(runtime JSON) = the quote's
 *     REPORT_DATA[0:32], the TD report equal to the quoted one, the quote signature, the QE
 *     report and the PCK chain to the Intel root all pass, so without DCAP collateral (Intel's
 *     for that platform is not in the data, and the test is offline) the verdict is
 *     collateral_missing; tampered copies then fail each of those checks; binding, claims,
 *     the replay key, the fetch path.
 * Prints "N passed, N failed"; exits non-zero on failure. */
#include "testutil.h"
#include "attest.h"

#include <cbor.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef TRUSTEE_DEFAULT
#define TRUSTEE_DEFAULT "/work/.mirror/confidential-containers+trustee/repo"
#endif
#define TD "deps/verifier/test_data/"
#define RN(x) (sh_attest_reason_name(x) ? sh_attest_reason_name(x) : "ok")

static int64_t NOW;
static const char *tdir; /* the trustee git directory or checkout */
static int tcheckout;    /* 1: tdir is a checkout (files read directly) */

/* ---------- reading the trustee data in place ---------- */

/* `git --git-dir=tdir show SPEC` into a buffer (NUL-terminated), or NULL. */
static uint8_t *git_show(const char *spec, size_t *len) {
  char gd[1100];
  snprintf(gd, sizeof gd, "--git-dir=%s", tdir);
  int fd[2];
  if (pipe(fd) < 0) return NULL;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fd[1], 1);
    close(fd[0]);
    close(fd[1]);
    execlp("git", "git", gd, "show", spec, (char *)NULL);
    _exit(127);
  }
  close(fd[1]);
  size_t cap = 1 << 16, n = 0;
  uint8_t *b = pid > 0 ? malloc(cap + 1) : NULL;
  ssize_t k;
  while (b && (k = read(fd[0], b + n, cap - n)) > 0)
    if ((n += (size_t)k) == cap) {
      uint8_t *nb = realloc(b, 2 * cap + 1);
      if (!nb) {
        free(b);
        b = NULL;
      }
      b = nb;
      cap *= 2;
    }
  close(fd[0]);
  int st = 0;
  if (pid > 0) waitpid(pid, &st, 0);
  if (!b || pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    free(b);
    return NULL;
  }
  b[n] = 0;
  *len = n;
  return b;
}

/* deps/verifier/test_data/<rel>; a file that cannot be read ends the suite as failed. */
static uint8_t *trustee(const char *rel, size_t *len) {
  uint8_t *b = NULL;
  char p[1200];
  if (tcheckout) {
    snprintf(p, sizeof p, "%s/" TD "%s", tdir, rel);
    FILE *f = fopen(p, "rb");
    struct stat st;
    if (f && fstat(fileno(f), &st) == 0 && (b = malloc((size_t)st.st_size + 1)) &&
        fread(b, 1, (size_t)st.st_size, f) == (size_t)st.st_size) {
      b[st.st_size] = 0;
      *len = (size_t)st.st_size;
    } else {
      free(b);
      b = NULL;
    }
    if (f) fclose(f);
  } else {
    snprintf(p, sizeof p, "HEAD:" TD "%s", rel);
    b = git_show(p, len);
  }
  if (!b) {
    failed++;
    fprintf(stderr, "FAIL: trustee file %s" TD "%s cannot be read from %s; stopping\n",
            tcheckout ? "" : "HEAD:", rel, tdir);
    exit(test_summary());
  }
  return b;
}

/* The trustee clone: 1 when usable; 0 (skip, reason in why) when none is there. */
static int trustee_init(char *why, size_t wl) {
  const char *d = getenv("SHIELD_TRUSTEE_GIT");
  int given = d && *d;
  struct stat st;
  char p[1200];
  tdir = given ? d : TRUSTEE_DEFAULT;
  if (stat(tdir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    if (given) { /* asked for and not there: a failure, not a skip */
      failed++;
      fprintf(stderr, "FAIL: SHIELD_TRUSTEE_GIT=%s is not a directory\n", tdir);
      exit(test_summary());
    }
    snprintf(why, wl,
             "no trustee clone: set SHIELD_TRUSTEE_GIT to the git directory (or a "
             "checkout) of github.com/confidential-containers/trustee (default %s, absent)",
             TRUSTEE_DEFAULT);
    return 0;
  }
  snprintf(p, sizeof p, "%s/" TD "az-tdx-vtpm", tdir);
  tcheckout = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
  printf("trustee data from %s (%s)\n", tdir, tcheckout ? "checkout" : "git HEAD");
  return 1;
}

/* ---------- small decoders for the trustee JSON files ---------- */

/* base64url (or standard) text, padding optional -> bytes (malloc'd), or NULL */
static uint8_t *b64(const char *s, size_t *len) {
  return sh_b64_decode_alloc(s, strlen(s), SH_B64_STD | SH_B64_URL, len);
}

/* A JSON member that is a base64url string or an array of byte values -> bytes (malloc'd). */
static uint8_t *json_bytes(json_t *v, size_t *len) {
  if (json_is_string(v)) return b64(json_string_value(v), len);
  if (!json_is_array(v)) return NULL;
  uint8_t *b = malloc(json_array_size(v) + 1);
  for (size_t i = 0; i < json_array_size(v); i++)
    b[i] = (uint8_t)json_integer_value(json_array_get(v, i));
  *len = json_array_size(v);
  return b;
}

/* One member of a trustee evidence JSON file as bytes; the suite fails when absent. */
static uint8_t *member(const char *rel, const char *key, size_t *len) {
  size_t n;
  uint8_t *doc = trustee(rel, &n);
  json_t *j = json_loadb((const char *)doc, n, 0, NULL);
  uint8_t *b = json_bytes(json_object_get(j, key), len);
  free(doc);
  json_decref(j);
  if (!b) {
    failed++;
    fprintf(stderr, "FAIL: %s has no \"%s\" as base64url or a byte array; stopping\n", rel, key);
    exit(test_summary());
  }
  return b;
}

/* CBOR map of text keys to byte strings (docs/protocol.md §1.5 bundles; duplicates as given). */
static uint8_t *bundle(const char *const *keys, const uint8_t *const *vals, const size_t *lens,
                       int n, size_t *out_len) {
  cbor_item_t *m = cbor_new_definite_map((size_t)n);
  for (int i = 0; i < n; i++)
    cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string(keys[i])),
                                       cbor_move(cbor_build_bytestring(vals[i], lens[i]))});
  unsigned char *buf = NULL;
  size_t sz = 0;
  *out_len = cbor_serialize_alloc(m, &buf, &sz);
  cbor_decref(&m);
  return buf;
}

static uint8_t *tdx_bundle(const uint8_t *hcl, size_t hl, const uint8_t *q, size_t ql,
                           size_t *len) {
  static const char *const k[2] = {"hcl_report", "td_quote"};
  const uint8_t *v[2] = {hcl, q};
  size_t l[2] = {hl, ql};
  return bundle(k, v, l, 2, len);
}

static uint32_t le32(const uint8_t *p) {
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static sh_attest_reason run(const uint8_t *ev, size_t len, sh_tee tee, sh_attest_options *o,
                            sh_attest_result **keep) {
  sh_attest_result *r = NULL;
  if (sh_attest_verify(ev, len, tee, o, &r) < 0 || !r) return SH_ATTEST_REASON_COUNT_;
  sh_attest_reason rs = r->verified ? SH_ATTEST_OK : r->reason;
  if (r->verified && r->reason != SH_ATTEST_OK) rs = SH_ATTEST_REASON_COUNT_;
  if (keep)
    *keep = r;
  else
    sh_attest_result_free(r);
  return rs;
}

/* ---------- azure-snp: header version 1 ---------- */

static void test_snp(void) {
  struct {
    const char *name, *file, *hkey, *vkey, *vfile;
  } cases[] = {
      {"evidence-v0.json", "az-snp-vtpm/evidence-v0.json", "report", "vcek", NULL},
      {"evidence-v1.json", "az-snp-vtpm/evidence-v1.json", "hcl_report", "vcek", NULL},
      {"evidence-v2.json", "az-snp-vtpm/evidence-v2.json", "hcl_report", "vcek", NULL},
      {"hcl-report.bin", "az-snp-vtpm/hcl-report.bin", NULL, NULL, "az-snp-vtpm/vcek.pem"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    size_t hl, vl;
    uint8_t *hcl =
        cases[i].hkey ? member(cases[i].file, cases[i].hkey, &hl) : trustee(cases[i].file, &hl);
    uint8_t *vcek;
    if (cases[i].vfile) {
      vcek = trustee(cases[i].vfile, &vl);
    } else { /* v0: PEM text, v1/v2: base64url DER */
      size_t n;
      uint8_t *doc = trustee(cases[i].file, &n);
      json_t *j = json_loadb((const char *)doc, n, 0, NULL);
      const char *s = json_string_value(json_object_get(j, cases[i].vkey));
      vcek = s && !strncmp(s, "-----BEGIN", 10) ? (uint8_t *)strdup(s) : s ? b64(s, &vl) : NULL;
      if (vcek && !strncmp(s, "-----BEGIN", 10)) vl = strlen(s);
      json_decref(j);
      free(doc);
    }
    CHECK(vcek != NULL, "%s: VCEK", cases[i].name);
    if (!vcek) {
      free(hcl);
      continue;
    }
    /* what makes these reports matter here: the header version the verifier used to refuse */
    CHECK(hl > 0x4D4 && !memcmp(hcl, "HCLA", 4) && le32(hcl + 4) == 1 && le32(hcl + 0x4C8) == 2,
          "%s: an HCL report with header version 1 and an SNP report", cases[i].name);
    sh_iovec certs[1] = {{.ptr = vcek, .len = vl}};
    sh_attest_options o = {.at = NOW, .certs = certs, .ncerts = 1};
    sh_attest_result *r = NULL;
    sh_attest_reason rs = run(hcl, hl, SH_TEE_AZURE_SNP, &o, &r);
    CHECK(rs == SH_ATTEST_OK, "%s: azure-snp %s (%s)", cases[i].name, RN(rs), r ? r->message : "");
    CHECK(r && json_object_get(json_object_get(r->claims, "runtime"), "vm-configuration") &&
              json_object_get(r->measurements, "measurement") && r->user_data_len == 64,
          "%s: claims", cases[i].name);
    if (r && !strcmp(cases[i].name, "evidence-v2.json")) /* user-data in upper-case hex */
      CHECK(r->user_data_len == 64 && !memcmp(r->user_data, "\x98\x2f\x5c\x6e", 4),
            "evidence-v2.json: user-data decoded");
    sh_attest_result_free(r);
    /* as a bundle, the VCEK in DER */
    const uint8_t *der = vcek;
    size_t dl = vl;
    uint8_t *pder = NULL;
    if (vl > 10 && !memcmp(vcek, "-----BEGIN", 10)) {
      BIO *b = BIO_new_mem_buf(vcek, (int)vl);
      X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
      int n = x ? i2d_X509(x, &pder) : -1;
      der = pder;
      dl = n > 0 ? (size_t)n : 0;
      X509_free(x);
      BIO_free(b);
    }
    static const char *const k[2] = {"hcl_report", "vcek"};
    const uint8_t *v[2] = {hcl, der};
    size_t l[2] = {hl, dl}, bl;
    uint8_t *bb = bundle(k, v, l, 2, &bl);
    sh_attest_options ob = {.at = NOW};
    rs = run(bb, bl, SH_TEE_AZURE_SNP, &ob, NULL);
    CHECK(rs == SH_ATTEST_OK, "%s: azure-snp bundle %s", cases[i].name, RN(rs));
    /* a presented nonce the report does not bind; the HCL report is not azure-tdx evidence */
    uint8_t nonce[32] = {1};
    o.nonce = nonce;
    o.nonce_len = 32;
    CHECK(run(hcl, hl, SH_TEE_AZURE_SNP, &o, NULL) == SH_ATTEST_BINDING_MISMATCH, "%s: nonce",
          cases[i].name);
    o.nonce = NULL;
    o.nonce_len = 0;
    CHECK(run(hcl, hl, SH_TEE_AZURE_TDX, &o, NULL) == SH_ATTEST_MALFORMED, "%s: as azure-tdx",
          cases[i].name);
    OPENSSL_free(pder);
    free(bb);
    free(hcl);
    free(vcek);
  }
}

/* ---------- azure-tdx ---------- */

typedef struct tdx_pair {
  const char *name;
  uint8_t *hcl, *q;
  size_t hl, ql;
} tdx_pair;

/* runtime data of an HCL report (layout checked by the caller) */
static const uint8_t *runtime(const uint8_t *hcl, size_t *n) {
  *n = le32(hcl + 0x4D0);
  return hcl + 0x4D4;
}

/* verify hcl+q as an azure-tdx bundle at NOW (optionally a nonce), returns the reason */
static sh_attest_reason tdx_run(const uint8_t *hcl, size_t hl, const uint8_t *q, size_t ql,
                                sh_attest_result **keep) {
  size_t bl;
  uint8_t *b = tdx_bundle(hcl, hl, q, ql, &bl);
  sh_attest_options o = {.at = NOW};
  sh_attest_reason rs = run(b, bl, SH_TEE_AZURE_TDX, &o, keep);
  free(b);
  return rs;
}

static void test_tdx_pair(const tdx_pair *p) {
  const uint8_t *h = p->hcl, *q = p->q;
  CHECK(p->hl > 0x4D4 && !memcmp(h, "HCLA", 4) && le32(h + 4) == 2 && le32(h + 0x4C8) == 4 &&
            p->ql > 48 + 584 && q[0] == 4 && le32(q + 4) == 0x81,
        "%s: an HCL report (header version 2, TDX report) and a TD quote v4", p->name);
  size_t rl;
  const uint8_t *rt = runtime(h, &rl);
  uint8_t d[32];
  EVP_Digest(rt, rl, d, NULL, EVP_sha256(), NULL);
  /* the binding this whole type rests on, computed here independently of attest/ */
  CHECK(!memcmp(q + 48 + 520, d, 32),
        "%s: SHA-256(runtime JSON) == the TD quote's REPORT_DATA[0:32]", p->name);
  sh_attest_result *r = NULL;
  sh_attest_reason rs = tdx_run(h, p->hl, q, p->ql, &r);
  /* everything up to the collateral passed: layout, runtime binding, TD report, quote
   * signature, QE report, PCK chain to the pinned Intel root (dcap.c's order) */
  CHECK(rs == SH_ATTEST_COLLATERAL_MISSING && r && strstr(r->message, "no collateral"),
        "%s: azure-tdx without collateral: %s (%s)", p->name, RN(rs), r ? r->message : "");
  if (r) {
    char mrtd[97], rd[129];
    sh_hex_encode(q + 48 + 136, 48, mrtd);
    sh_hex_encode(q + 48 + 520, 64, rd);
    const char *m = json_string_value(json_object_get(r->measurements, "MRTD"));
    json_t *vm = json_object_get(json_object_get(r->claims, "runtime"), "vm-configuration");
    CHECK(r->tee == SH_TEE_AZURE_TDX && m && !strcmp(m, mrtd) &&
              json_object_get(r->measurements, "RTMR3") && !r->debug,
          "%s: measurements", p->name);
    CHECK(json_is_object(vm) && json_is_string(json_object_get(vm, "vmUniqueId")) &&
              json_is_true(json_object_get(vm, "secure-boot")),
          "%s: claims.runtime.vm-configuration", p->name);
    const char *crd = json_string_value(json_object_get(r->claims, "REPORT_DATA"));
    CHECK(crd && !strcmp(crd, rd), "%s: claims.REPORT_DATA", p->name);
    CHECK(r->user_data_len == 64, "%s: user_data (user-data decoded)", p->name);
    /* evidence_sha256 (the replay key) = SHA-256(quote header ‖ body ‖ runtime data) */
    uint8_t e[32];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, q, 48 + 584);
    EVP_DigestUpdate(md, rt, rl);
    EVP_DigestFinal_ex(md, e, NULL);
    EVP_MD_CTX_free(md);
    CHECK(r->has_evidence_sha256 && !memcmp(r->evidence_sha256, e, 32), "%s: evidence_sha256",
          p->name);
    sh_attest_result_free(r);
  }
  /* the same quote alone, as tdx, says the same */
  sh_attest_options o = {.at = NOW};
  CHECK(run(q, p->ql, SH_TEE_TDX, &o, NULL) == SH_ATTEST_COLLATERAL_MISSING, "%s: quote as tdx",
        p->name);
}

/* one changed byte (xor x) in hcl (which = 0) or quote (1) -> the verdict */
static sh_attest_reason tampered(const tdx_pair *p, int which, size_t off, uint8_t x) {
  uint8_t *h = malloc(p->hl), *q = malloc(p->ql);
  memcpy(h, p->hcl, p->hl);
  memcpy(q, p->q, p->ql);
  (which ? q : h)[off] ^= x;
  sh_attest_reason rs = tdx_run(h, p->hl, q, p->ql, NULL);
  free(h);
  free(q);
  return rs;
}

static void test_tdx_negative(const tdx_pair *p) {
  size_t rl;
  runtime(p->hcl, &rl);
  size_t rsize = le32(p->hcl + 8);
  const struct {
    const char *what;
    int which;
    size_t off;
    uint8_t x;
    sh_attest_reason want;
  } t[] = {
      {"runtime JSON", 0, 0x4D4 + rl / 2, 0x01, SH_ATTEST_SIGNATURE_INVALID},
      {"header version 3", 0, 4, 0x01, SH_ATTEST_MALFORMED},
      {"request type", 0, 12, 0x01, SH_ATTEST_MALFORMED},
      {"status word", 0, 0x10, 0x01, SH_ATTEST_MALFORMED},
      {"report_size", 0, 8, 0x01, SH_ATTEST_MALFORMED},
      {"request data version 2", 0, 0x4C4, 0x03, SH_ATTEST_MALFORMED},
      {"report type 2 (SNP)", 0, 0x4C8, 0x06, SH_ATTEST_MALFORMED},
      {"hash type 2 (SHA-384)", 0, 0x4CC, 0x03, SH_ATTEST_MALFORMED},
      {"padding after the report", 0, rsize, 0x01, SH_ATTEST_MALFORMED},
      {"TD report type", 0, 0x20, 0x01, SH_ATTEST_MALFORMED},
      {"TD report REPORTDATA", 0, 0x20 + 0x80, 0x01, SH_ATTEST_MALFORMED},
      {"TD report MRTD", 0, 0x20 + 0x200 + 16, 0x01, SH_ATTEST_MALFORMED},
      {"TD report RTMR3", 0, 0x20 + 0x200 + 16 + 4 * 48 + 3 * 48, 0x80, SH_ATTEST_MALFORMED},
      {"TD report MRSEAM", 0, 0x20 + 0x108 + 16, 0x01, SH_ATTEST_MALFORMED},
      {"TD report padding", 0, 0x20 + 1024, 0x01, SH_ATTEST_MALFORMED},
      {"quote header (PCE SVN)", 1, 10, 0x01, SH_ATTEST_SIGNATURE_INVALID},
      {"quote signature", 1, 48 + 584 + 4 + 5, 0x01, SH_ATTEST_SIGNATURE_INVALID},
      {"quote attestation key", 1, 48 + 584 + 4 + 64 + 5, 0x01, SH_ATTEST_SIGNATURE_INVALID},
      {"QE report", 1, 48 + 584 + 4 + 128 + 6 + 100, 0x01, SH_ATTEST_SIGNATURE_INVALID},
  };
  for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
    sh_attest_reason rs = tampered(p, t[i].which, t[i].off, t[i].x);
    CHECK(rs == t[i].want, "%s: tampered %s: %s, want %s", p->name, t[i].what, RN(rs),
          RN(t[i].want));
  }
  /* the quote body changed in step with the HCL's TD report: the quote signature catches it */
  uint8_t *h = malloc(p->hl), *q = malloc(p->ql);
  memcpy(h, p->hcl, p->hl);
  memcpy(q, p->q, p->ql);
  h[0x20 + 0x200 + 16] ^= 1; /* MRTD */
  q[48 + 136] ^= 1;
  CHECK(tdx_run(h, p->hl, q, p->ql, NULL) == SH_ATTEST_SIGNATURE_INVALID, "%s: MRTD in both",
        p->name);
  memcpy(h, p->hcl, p->hl);
  memcpy(q, p->q, p->ql);
  /* another runtime JSON with a consistent REPORT_DATA everywhere: the quote signature again */
  h[0x4D4 + rl / 2] ^= 1;
  uint8_t d[32];
  EVP_Digest(h + 0x4D4, rl, d, NULL, EVP_sha256(), NULL);
  memcpy(h + 0x20 + 0x80, d, 32);
  memcpy(q + 48 + 520, d, 32);
  CHECK(tdx_run(h, p->hl, q, p->ql, NULL) == SH_ATTEST_SIGNATURE_INVALID,
        "%s: swapped runtime JSON", p->name);
  free(h);
  free(q);
  /* the PCK chain: a character of its PEM */
  const uint8_t *pem = memmem(p->q, p->ql, "-----BEGIN CERTIFICATE-----\n", 28);
  CHECK(pem != NULL, "%s: PCK chain PEM", p->name);
  if (pem) {
    sh_attest_reason rs = tampered(p, 1, (size_t)(pem - p->q) + 28 + 200, 0x01);
    CHECK(rs != SH_ATTEST_OK && rs != SH_ATTEST_COLLATERAL_MISSING, "%s: tampered PCK chain: %s",
          p->name, RN(rs));
  }
  /* bundle shape */
  static const char *const k3[3] = {"hcl_report", "td_quote", "vcek"};
  static const char *const k1[1] = {"hcl_report"};
  static const char *const kd[2] = {"td_quote", "td_quote"};
  const uint8_t *v3[3] = {p->hcl, p->q, p->q};
  size_t l3[3] = {p->hl, p->ql, 16}, bl;
  sh_attest_options o = {.at = NOW};
  uint8_t *b = bundle(k3, v3, l3, 3, &bl);
  CHECK(run(b, bl, SH_TEE_AZURE_TDX, &o, NULL) == SH_ATTEST_MALFORMED, "%s: extra key", p->name);
  free(b);
  b = bundle(k1, v3, l3, 1, &bl);
  CHECK(run(b, bl, SH_TEE_AZURE_TDX, &o, NULL) == SH_ATTEST_MALFORMED, "%s: no td_quote", p->name);
  free(b);
  const uint8_t *vd[2] = {p->q, p->q};
  size_t ld[2] = {p->ql, p->ql};
  b = bundle(kd, vd, ld, 2, &bl);
  CHECK(run(b, bl, SH_TEE_AZURE_TDX, &o, NULL) == SH_ATTEST_MALFORMED, "%s: duplicate key",
        p->name);
  free(b);
  CHECK(run(p->hcl, p->hl, SH_TEE_AZURE_TDX, &o, NULL) == SH_ATTEST_MALFORMED, "%s: raw HCL",
        p->name);
  b = tdx_bundle(p->hcl, p->hl, p->q, p->ql, &bl);
  sh_attest_result *r = NULL;
  /* the HCL report as azure-snp: the report type says which type it is */
  CHECK(run(p->hcl, p->hl, SH_TEE_AZURE_SNP, &o, &r) == SH_ATTEST_MALFORMED &&
            strstr(r->message, "TDX (azure-tdx)"),
        "%s: as azure-snp: %s", p->name, r ? r->message : "");
  sh_attest_result_free(r);
  /* the key order of the bundle is not part of what is verified */
  static const char *const kr[2] = {"td_quote", "hcl_report"};
  const uint8_t *vr[2] = {p->q, p->hcl};
  size_t lr[2] = {p->ql, p->hl}, rbl;
  uint8_t *rb = bundle(kr, vr, lr, 2, &rbl);
  sh_attest_result *r1 = NULL, *r2 = NULL;
  run(b, bl, SH_TEE_AZURE_TDX, &o, &r1);
  run(rb, rbl, SH_TEE_AZURE_TDX, &o, &r2);
  CHECK(r1 && r2 && r2->reason == SH_ATTEST_COLLATERAL_MISSING && r1->has_evidence_sha256 &&
            r2->has_evidence_sha256 && !memcmp(r1->evidence_sha256, r2->evidence_sha256, 32),
        "%s: key order", p->name);
  sh_attest_result_free(r1);
  sh_attest_result_free(r2);
  free(rb);
  /* binding: the runtime JSON's user-data is zero here, not D of any nonce */
  uint8_t nonce[32] = {7};
  o.nonce = nonce;
  o.nonce_len = 32;
  CHECK(run(b, bl, SH_TEE_AZURE_TDX, &o, NULL) == SH_ATTEST_BINDING_MISMATCH, "%s: nonce", p->name);
  free(b);
}

/* Random one-byte changes of every byte azure-tdx checks (all of the quote; of the HCL report
 * the header, the TD report fields compared with the quote, its padding, the request data and
 * the runtime data): none may come through to the collateral step. */
static void test_tdx_mutations(const tdx_pair *p, int n) {
  size_t rsize = le32(p->hcl + 8);
  const size_t hr[][2] = {{0, 0x21},
                          {0x20 + 0x80, 0x20 + 0xC0},
                          {0x20 + 0x108, 0x20 + 0x180},
                          {0x20 + 0x200, 0x20 + 0x390},
                          {0x20 + 0x400, rsize}};
  int tried = 0, through = 0;
  for (int i = 0; i < n; i++) {
    int which = (int)(rnd() % 2);
    size_t off;
    if (which) {
      off = rnd() % p->ql;
    } else {
      int reg = (int)(rnd() % 5);
      off = hr[reg][0] + rnd() % (hr[reg][1] - hr[reg][0]);
    }
    uint8_t x = (uint8_t)(rnd() % 255 + 1);
    sh_attest_reason rs = tampered(p, which, off, x);
    tried++;
    if (rs == SH_ATTEST_OK || rs == SH_ATTEST_COLLATERAL_MISSING) {
      through++;
      fprintf(stderr, "  %s byte 0x%zx ^ 0x%02x: %s\n", which ? "quote" : "hcl", off, x, RN(rs));
    }
  }
  CHECK(through == 0, "%s: %d of %d mutations reached the collateral step", p->name, through,
        tried);
  printf("  mutations azure-tdx %-28s %d tried, %d through\n", p->name, tried, through);
}

/* azure-tdx through sh_attest_verify_fetching: the TD quote is taken from the bundle and its
 * collateral looked up (an empty offline cache here: nothing found, and it says which file). */
static void test_tdx_fetch(const tdx_pair *p) {
  char dir[] = "/tmp/shield-test-azure-XXXXXX";
  if (!mkdtemp(dir)) {
    CHECK(0, "mkdtemp");
    return;
  }
  sh_attest_fetch_config fc;
  memset(&fc, 0, sizeof fc);
  fc.cache_dir = dir;
  fc.offline = 1;
  char err[256];
  sh_attest_fetcher *f = sh_attest_fetcher_new(&fc, err, sizeof err);
  CHECK(f != NULL, "fetcher: %s", err);
  size_t bl;
  uint8_t *b = tdx_bundle(p->hcl, p->hl, p->q, p->ql, &bl);
  sh_attest_options o = {.at = NOW};
  sh_attest_result *r = NULL;
  CHECK(f && sh_attest_verify_fetching(b, bl, SH_TEE_AZURE_TDX, &o, f, NULL, NOW, &r) == 0 && r &&
            r->reason == SH_ATTEST_COLLATERAL_MISSING &&
            strstr(r->message, "offline lookup failed") && strstr(r->message, "intel-tdx-tcb-"),
        "azure-tdx fetch: %s", r ? r->message : "");
  sh_attest_result_free(r);
  sh_attest_fetcher_free(f);
  free(b);
  rmdir(dir);
}

static void test_tdx(int n) {
  tdx_pair p[3] = {{"hcl-report.bin + td-quote.bin", NULL, NULL, 0, 0},
                   {"evidence-v1.json", NULL, NULL, 0, 0},
                   {"evidence-v0.json", NULL, NULL, 0, 0}};
  p[0].hcl = trustee("az-tdx-vtpm/hcl-report.bin", &p[0].hl);
  p[0].q = trustee("az-tdx-vtpm/td-quote.bin", &p[0].ql);
  p[1].hcl = member("az-tdx-vtpm/evidence-v1.json", "hcl_report", &p[1].hl);
  p[1].q = member("az-tdx-vtpm/evidence-v1.json", "td_quote", &p[1].ql);
  p[2].hcl = member("az-tdx-vtpm/evidence-v0.json", "hcl_report", &p[2].hl);
  p[2].q = member("az-tdx-vtpm/evidence-v0.json", "td_quote", &p[2].ql);
  for (int i = 0; i < 3; i++)
    test_tdx_pair(&p[i]);
  test_tdx_negative(&p[0]);
  test_tdx_mutations(&p[0], n);
  test_tdx_fetch(&p[0]);
  /* a policy for azure-tdx takes the tdx keys */
  sh_attest_policy *pol = NULL;
  char eb[256];
  const char *ok =
      "{\"version\": 1, \"azure-tdx\": {\"mrtd\": [\"" /* 48 zero bytes */
      "000000000000000000000000000000000000000000000000"
      "000000000000000000000000000000000000000000000000\"], \"tcb_statuses\": [\"UpToDate\"]}}";
  CHECK(sh_attest_policy_load(ok, strlen(ok), &pol, eb, sizeof eb) == 0, "azure-tdx policy: %s",
        eb);
  sh_attest_policy_free(pol);
  const char *bad = "{\"azure-tdx\": {\"mrenclave\": []}}";
  CHECK(sh_attest_policy_load(bad, strlen(bad), &pol, eb, sizeof eb) < 0,
        "azure-tdx policy: sgx key");
  for (int i = 0; i < 3; i++) {
    free(p[i].hcl);
    free(p[i].q);
  }
}

int main(void) {
  char why[512];
  NOW = T("2026-11-24T12:00:00Z"); /* within every VCEK's and the PCK's validity */
  CHECK(sh_tee_from_name("azure-tdx") == SH_TEE_AZURE_TDX &&
            !strcmp(sh_tee_name(SH_TEE_AZURE_TDX), "azure-tdx"),
        "azure-tdx name");
  if (!trustee_init(why, sizeof why)) return test_summary_skip(why);
  test_snp();
  const char *nm = getenv("SHIELD_MUTATIONS");
  test_tdx(nm ? atoi(nm) : 600);
  return test_summary();
}
