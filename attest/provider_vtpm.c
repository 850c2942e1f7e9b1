/* attest/provider_vtpm.c — Azure confidential VMs (SEV-SNP or TDX behind the paravisor): the
 * HCL report from the vTPM, through tpm2-tss (ESYS over a TCTI chosen by the configuration).
 *
 * What Azure's own tooling does (Microsoft's azure-cvm-tooling, az-cvm-vtpm vtpm/mod.rs
 * get_report_with_report_data), and so what we do:
 *   1. write the 64-byte report data D to NV index 0x01400002 with owner authorization,
 *      defining the index first when it is absent (owner read/write, SHA-256 name, 64 bytes),
 *      or again when it has another size;
 *   2. read NV index 0x01400001 (owner authorization) in full: the HCL report
 *      (layout in azure.c), which the paravisor regenerates from D: its runtime JSON's
 *      "user-data" is hex(D) and the hardware report's REPORT_DATA is SHA-256 of that JSON.
 * Azure's tooling sleeps 3 s between the two; we read at once and re-read every 100 ms until the
 * report carries D (at most azure_report_wait_ms, default 3 s): a report that does not bind D is
 * never handed out.  Should another process overwrite 0x01400002 in between (two Shield
 * workers, another agent), the re-read sees the index no longer holds D and writes it again.
 * NV reads are bounded by TPM2_PT_NV_BUFFER_MAX (1024 on most TPMs) per command: the report
 * (2600 bytes on Azure) is read in chunks of that size.
 *
 * The evidence (docs/protocol.md §1.5, what azure.c verifies):
 *   azure-snp  CBOR {"hcl_report", "vcek", "ask", "ark"}: the VCEK and AMD chain come from the
 *              Azure IMDS THIM endpoint (GET {imds}/metadata/THIM/amd/certification with
 *              "Metadata: true": {"vcekCert": PEM, "certificateChain": PEM ASK then ARK}), as
 *              az-snp-vtpm's imds.rs fetches them; kept while the SNP report's CHIP_ID and
 *              REPORTED_TCB stay the same (the VCEK is derived from exactly those);
 *   azure-tdx  CBOR {"hcl_report", "td_quote"}: the TDREPORT inside the HCL report is turned
 *              into a TD quote by the platform's quote service through IMDS (POST
 *              {imds}/acc/tdquote, {"report": base64url(TDREPORT)} -> {"quote": base64url}),
 *              as az-tdx-vtpm's imds.rs does; the quote's REPORT_DATA must be the TDREPORT's.
 * IMDS is link-local (169.254.169.254) and must never be reached through a proxy: libcurl is
 * told so (CURLOPT_NOPROXY "*").  The MAA token exchange is not done here: the evidence is the
 * HCL report itself, which sh_attest_verify checks natively.
 *
 * The vTPM's AK quote is not part of the evidence: azure.c does not use it (the HCL report's
 * hardware signature covers the runtime JSON, D included). */
#include "provider.h"

#include <cbor.h>
#include <curl/curl.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#define NV_HCL_REPORT 0x01400001u  /* the paravisor's HCL report */
#define NV_REPORT_DATA 0x01400002u /* the guest's 64 bytes of report data */
#define HCL_MAX 8192u              /* a report is 2600 bytes on Azure */
#define HCL_REPORT 0x20            /* azure.c: the hardware report */
#define HCL_IGVM 0x4C0             /* azure.c: IGVM request data */
#define HCL_RUNTIME 0x4D4          /* azure.c: runtime JSON */
#define HCL_TYPE_SNP 2
#define HCL_TYPE_TDX 4
#define TDREPORT_LEN 1024
#define POLL_MS 100
#define HTTP_MAX (256u * 1024u) /* a THIM answer is ~5 KB, a quote ~8 KB in base64 */

static uint32_t le32(const uint8_t *p) {
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---------------- the vTPM ---------------- */

typedef struct vtpm {
  TSS2_TCTI_CONTEXT *tcti;
  ESYS_CONTEXT *esys;
} vtpm;

static int tss_err(char *err, size_t errlen, const char *tee, const char *what, TSS2_RC rc) {
  return sh_attest__prov_err(err, errlen, "%s: %s: %s (TPM rc 0x%x)", tee, what, Tss2_RC_Decode(rc),
                             (unsigned)rc);
}

/* TPM2_RC_HANDLE of a format-1 code (handle, parameter or session number added): the index
 * does not exist (TPM 2.0 Part 2 §6.6.3). */
static int is_no_handle(TSS2_RC rc) {
  return (rc & 0xFFFF0000u) == 0 && (rc & TPM2_RC_FMT1) && (rc & 0xBFu) == TPM2_RC_HANDLE;
}

static void vtpm_close(vtpm *t) {
  if (t->esys) Esys_Finalize(&t->esys);
  if (t->tcti) Tss2_TctiLdr_Finalize(&t->tcti);
}

static int vtpm_open(sh_attest_provider *p, vtpm *t, char *err, size_t errlen) {
  memset(t, 0, sizeof *t);
  /* a device TCTI whose device is absent: said plainly, before tpm2-tss logs its own errors */
  struct stat st;
  if (!strncmp(p->tpm_tcti, "device:", 7) && p->tpm_tcti[7] && stat(p->tpm_tcti + 7, &st) < 0)
    return sh_attest__prov_err(err, errlen,
                               "%s: %s: %s (no TPM: not an Azure confidential VM, or its TPM "
                               "driver is not loaded)",
                               sh_tee_name(p->tee), p->tpm_tcti + 7, strerror(errno));
  TSS2_RC rc = Tss2_TctiLdr_Initialize(p->tpm_tcti, &t->tcti);
  if (rc == TSS2_RC_SUCCESS) rc = Esys_Initialize(&t->esys, t->tcti, NULL);
  if (rc != TSS2_RC_SUCCESS) {
    vtpm_close(t);
    return sh_attest__prov_err(err, errlen,
                               "%s: cannot reach the vTPM through TCTI \"%s\": %s (TPM rc 0x%x)",
                               sh_tee_name(p->tee), p->tpm_tcti, Tss2_RC_Decode(rc), (unsigned)rc);
  }
  return 0;
}

/* The ESYS handle of NV index `index` and its data size.  0; 1 when the index does not exist;
 * -1 with err. */
static int nv_find(vtpm *t, const char *tee, uint32_t index, ESYS_TR *h, uint16_t *size, char *err,
                   size_t errlen) {
  TPM2B_NV_PUBLIC *pub = NULL;
  TPMS_CAPABILITY_DATA *cap = NULL;
  TPMI_YES_NO more = 0;
  *h = ESYS_TR_NONE;
  /* present?  Asked as a capability (the first NV handle >= index) rather than by
   * TR_FromTPMPublic failing, which tpm2-tss logs as an error: on any TPM but Azure's vTPM the
   * index is absent, and auto-detection asks every TPM it finds */
  TSS2_RC rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                  TPM2_CAP_HANDLES, index, 1, &more, &cap);
  int present =
      rc == TSS2_RC_SUCCESS && cap->data.handles.count == 1 && cap->data.handles.handle[0] == index;
  Esys_Free(cap);
  if (rc == TSS2_RC_SUCCESS && !present) return 1;
  rc = Esys_TR_FromTPMPublic(t->esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, h);
  if (is_no_handle(rc)) return 1;
  if (rc == TSS2_RC_SUCCESS)
    rc = Esys_NV_ReadPublic(t->esys, *h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL);
  if (rc != TSS2_RC_SUCCESS) {
    if (*h != ESYS_TR_NONE) Esys_TR_Close(t->esys, h);
    char what[64];
    snprintf(what, sizeof what, "NV index 0x%08x", index);
    return tss_err(err, errlen, tee, what, rc);
  }
  *size = pub->nvPublic.dataSize;
  Esys_Free(pub);
  return 0;
}

/* TPM2_PT_NV_BUFFER_MAX: the most one NV_Read or NV_Write moves. */
static uint16_t nv_buffer_max(vtpm *t) {
  TPMS_CAPABILITY_DATA *cap = NULL;
  TPMI_YES_NO more = 0;
  uint16_t n = 512; /* the TCG PC Client minimum, when the TPM does not say */
  if (Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_TPM_PROPERTIES,
                         TPM2_PT_NV_BUFFER_MAX, 1, &more, &cap) == TSS2_RC_SUCCESS &&
      cap->data.tpmProperties.count == 1 &&
      cap->data.tpmProperties.tpmProperty[0].property == TPM2_PT_NV_BUFFER_MAX &&
      cap->data.tpmProperties.tpmProperty[0].value > 0)
    n = (uint16_t)(cap->data.tpmProperties.tpmProperty[0].value > TPM2_MAX_NV_BUFFER_SIZE
                       ? TPM2_MAX_NV_BUFFER_SIZE
                       : cap->data.tpmProperties.tpmProperty[0].value);
  Esys_Free(cap);
  return n;
}

/* The whole of NV index `index` (owner authorization), read in chunks of NV_BUFFER_MAX.
 * 0 with *out (malloc'd) and *len; 1 when the index does not exist; -1 with err. */
static int nv_read_all(vtpm *t, const char *tee, uint32_t index, size_t cap, uint8_t **out,
                       size_t *len, char *err, size_t errlen) {
  ESYS_TR h;
  uint16_t size = 0;
  *out = NULL;
  *len = 0;
  int rc = nv_find(t, tee, index, &h, &size, err, errlen);
  if (rc != 0) return rc;
  if (size == 0 || size > cap) {
    Esys_TR_Close(t->esys, &h);
    return sh_attest__prov_err(err, errlen,
                               "%s: NV index 0x%08x holds %u bytes (1 to %zu expected)", tee, index,
                               size, cap);
  }
  uint8_t *b = malloc(size);
  uint16_t chunk = nv_buffer_max(t), off = 0;
  if (!b) {
    Esys_TR_Close(t->esys, &h);
    return sh_attest__prov_err(err, errlen, "out of memory");
  }
  while (off < size) {
    uint16_t n = (uint16_t)(size - off < chunk ? size - off : chunk);
    TPM2B_MAX_NV_BUFFER *d = NULL;
    TSS2_RC r = Esys_NV_Read(t->esys, ESYS_TR_RH_OWNER, h, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                             ESYS_TR_NONE, n, off, &d);
    if (r != TSS2_RC_SUCCESS || d->size != n) {
      Esys_Free(d);
      free(b);
      Esys_TR_Close(t->esys, &h);
      char what[96];
      snprintf(what, sizeof what, "reading NV index 0x%08x at offset %u", index, off);
      return r != TSS2_RC_SUCCESS
                 ? tss_err(err, errlen, tee, what, r)
                 : sh_attest__prov_err(err, errlen, "%s: %s: short read", tee, what);
    }
    memcpy(b + off, d->buffer, n);
    Esys_Free(d);
    off = (uint16_t)(off + n);
  }
  Esys_TR_Close(t->esys, &h);
  *out = b;
  *len = size;
  return 0;
}

/* Defines NV_REPORT_DATA as Azure's tooling does: owner read and write, 64 bytes. */
static int nv_define_report_data(vtpm *t, const char *tee, ESYS_TR *h, char *err, size_t errlen) {
  TPM2B_AUTH auth = {.size = 0};
  TPM2B_NV_PUBLIC pub = {.nvPublic = {.nvIndex = NV_REPORT_DATA,
                                      .nameAlg = TPM2_ALG_SHA256,
                                      .attributes = TPMA_NV_OWNERWRITE | TPMA_NV_OWNERREAD,
                                      .dataSize = 64}};
  TSS2_RC rc = Esys_NV_DefineSpace(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                   ESYS_TR_NONE, &auth, &pub, h);
  return rc == TSS2_RC_SUCCESS ? 0 : tss_err(err, errlen, tee, "defining NV index 0x01400002", rc);
}

static int nv_write_D(vtpm *t, const char *tee, const uint8_t D[64], char *err, size_t errlen) {
  ESYS_TR h;
  uint16_t size = 0;
  int rc = nv_find(t, tee, NV_REPORT_DATA, &h, &size, err, errlen);
  if (rc < 0) return -1;
  if (rc == 0 && size != 64) { /* another size: Azure's tooling undefines and redefines it */
    TSS2_RC r = Esys_NV_UndefineSpace(t->esys, ESYS_TR_RH_OWNER, h, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                      ESYS_TR_NONE);
    if (r != TSS2_RC_SUCCESS) {
      Esys_TR_Close(t->esys, &h);
      return tss_err(err, errlen, tee, "NV index 0x01400002 is not 64 bytes; undefining it", r);
    }
    rc = 1; /* the handle went with the index */
  }
  if (rc == 1 && nv_define_report_data(t, tee, &h, err, errlen) < 0) return -1;
  TPM2B_MAX_NV_BUFFER d = {.size = 64};
  memcpy(d.buffer, D, 64);
  TSS2_RC r = Esys_NV_Write(t->esys, ESYS_TR_RH_OWNER, h, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                            ESYS_TR_NONE, &d, 0);
  Esys_TR_Close(t->esys, &h);
  return r == TSS2_RC_SUCCESS ? 0 : tss_err(err, errlen, tee, "writing NV index 0x01400002", r);
}

/* ---------------- the HCL report ---------------- */

/* The hardware report type of an HCL report (azure.c's layout), 0 when it is not one. */
static uint32_t hcl_type(const uint8_t *h, size_t len) {
  if (len < HCL_RUNTIME || memcmp(h, "HCLA", 4)) return 0;
  return le32(h + HCL_IGVM + 8);
}

/* 1 when the report's runtime JSON says "user-data": hex(D) (either case: see azure.c) and
 * the hardware report's REPORT_DATA is SHA-256 of that JSON.  The second check is for a read
 * that straddles the paravisor's rewrite of the index (a report is several NV_Read commands):
 * the new runtime JSON beside the old hardware report is read again, not handed out. */
static int hcl_binds(const uint8_t *h, size_t len, uint32_t type, const uint8_t D[64]) {
  uint32_t vsize = le32(h + HCL_IGVM + 16);
  uint8_t dg[32];
  /* REPORT_DATA: SNP ABI Table 23 offset 0x50; TDREPORT REPORTMACSTRUCT offset 0x80 */
  const uint8_t *rd = h + HCL_REPORT + (type == HCL_TYPE_TDX ? 0x80 : 0x50);
  if (len < HCL_RUNTIME || vsize > len - HCL_RUNTIME ||
      !EVP_Digest(h + HCL_RUNTIME, vsize, dg, NULL, sh_attest__md_sha256(), NULL) ||
      memcmp(dg, rd, 32))
    return 0;
  json_t *j = json_loadb((const char *)h + HCL_RUNTIME, vsize, 0, NULL);
  json_t *ud = json_object_get(j, "user-data");
  uint8_t got[64];
  int ok = json_is_string(ud) &&
           sh_hex_decode(json_string_value(ud), json_string_length(ud), got, 64) == 0 &&
           !memcmp(got, D, 64);
  json_decref(j);
  return ok;
}

static void sleep_ms(long ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* Writes D and reads the HCL report back until it carries D.  0 with *out, or -1 with err. */
static int hcl_report_for(sh_attest_provider *p, vtpm *t, const uint8_t D[64], uint8_t **out,
                          size_t *len, char *err, size_t errlen) {
  const char *tee = sh_tee_name(p->tee);
  if (nv_write_D(t, tee, D, err, errlen) < 0) return -1;
  for (long waited = 0;; waited += POLL_MS) {
    int rc = nv_read_all(t, tee, NV_HCL_REPORT, HCL_MAX, out, len, err, errlen);
    if (rc == 1)
      return sh_attest__prov_err(err, errlen,
                                 "%s: the vTPM has no NV index 0x01400001 (the HCL report): not "
                                 "an Azure confidential VM",
                                 tee);
    if (rc < 0) return -1;
    uint32_t want = p->tee == SH_TEE_AZURE_TDX ? HCL_TYPE_TDX : HCL_TYPE_SNP;
    if (hcl_type(*out, *len) != want) {
      free(*out);
      *out = NULL;
      return sh_attest__prov_err(err, errlen,
                                 "%s: NV index 0x01400001 does not hold an HCL report of a %s "
                                 "hardware report",
                                 tee, want == HCL_TYPE_TDX ? "TDX" : "SEV-SNP");
    }
    if (hcl_binds(*out, *len, want, D)) return 0;
    free(*out);
    *out = NULL;
    if (waited >= p->azure_report_wait_ms)
      return sh_attest__prov_err(err, errlen,
                                 "%s: the HCL report in NV index 0x01400001 does not carry the "
                                 "report data written to 0x01400002 (or its hardware report "
                                 "does not bind its runtime data) after %ld ms: the paravisor "
                                 "did not regenerate it",
                                 tee, waited);
    /* someone else's report data in the index: ours again (see the top of this file) */
    uint8_t *cur = NULL;
    size_t cl = 0;
    rc = nv_read_all(t, tee, NV_REPORT_DATA, 64, &cur, &cl, err, errlen);
    int ours = rc == 0 && cl == 64 && !memcmp(cur, D, 64);
    free(cur);
    if (rc < 0) return -1;
    if (!ours && nv_write_D(t, tee, D, err, errlen) < 0) return -1;
    sleep_ms(POLL_MS);
  }
}

/* ---------------- IMDS over libcurl ---------------- */

/* GET (post NULL) or POST a JSON body to {imds}{path}; the answer as a JSON object.  NULL with
 * err on any failure (the status and the start of the body in the message). */
static json_t *imds_call(sh_attest_provider *p, const char *path, const char *post, char *err,
                         size_t errlen) {
  const char *tee = sh_tee_name(p->tee);
  char url[2048];
  if (snprintf(url, sizeof url, "%s%s", p->azure_imds, path) >= (int)sizeof url) {
    sh_attest__prov_err(err, errlen, "%s: IMDS URL too long", tee);
    return NULL;
  }
  sh_attest__prov_curl_init();
  CURL *c = curl_easy_init();
  struct curl_slist *h = curl_slist_append(NULL, "Metadata: true"), *h2 = NULL, *h3 = NULL;
  if (h && post && (h2 = curl_slist_append(h, "Content-Type: application/json"))) h = h2;
  if (h && (h3 = curl_slist_append(h, "Accept: application/json"))) h = h3;
  sh_attest__prov_body b = {.max = HTTP_MAX};
  long status = 0;
  json_t *j = NULL;
  CURLcode cr = CURLE_OUT_OF_MEMORY;
  if (c && h && (!post || h2) && h3) {
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (post) curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, p->azure_timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*"); /* link-local IMDS: never through a proxy */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sh_attest__prov_on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    cr = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  }
  if (b.over)
    sh_attest__prov_err(err, errlen, "%s: the answer of %s is over %u bytes", tee, url, HTTP_MAX);
  else if (cr != CURLE_OK)
    sh_attest__prov_err(err, errlen, "%s: %s %s: %s", tee, post ? "POST" : "GET", url,
                        curl_easy_strerror(cr));
  else if (status != 200)
    sh_attest__prov_err(err, errlen, "%s: %s answered %ld: %.*s", tee, url, status,
                        b.n > 200 ? 200 : (int)b.n, b.p ? (char *)b.p : "");
  else if (!(j = json_loadb((const char *)b.p, b.n, 0, NULL)) || !json_is_object(j)) {
    json_decref(j);
    j = NULL;
    sh_attest__prov_err(err, errlen, "%s: the answer of %s is not a JSON object", tee, url);
  }
  free(b.p);
  curl_slist_free_all(h);
  if (c) curl_easy_cleanup(c);
  return j;
}

/* ---------------- azure-snp: the VCEK and the AMD chain from THIM ---------------- */

/* The DER of every certificate of a PEM text, in order, into ders[] (at most max).  Count, or
 * -1. */
static int pem_ders(const char *pem, uint8_t **ders, size_t *lens, int max) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  int n = 0;
  X509 *x;
  while (b && n < max && (x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
    unsigned char *d = NULL;
    int l = i2d_X509(x, &d);
    X509_free(x);
    if (l <= 0) break;
    ders[n] = d;
    lens[n++] = (size_t)l;
  }
  ERR_clear_error(); /* the end of the text reads as "no start line" */
  BIO_free(b);
  return n;
}

static void thim_clear(sh_attest_provider *p) {
  for (int i = 0; i < 3; i++) {
    OPENSSL_free(p->thim_der[i]);
    p->thim_der[i] = NULL;
    p->thim_len[i] = 0;
  }
}

/* The VCEK, ASK and ARK for this report: the ones held when CHIP_ID and REPORTED_TCB are the
 * same, else from THIM.  0, or -1 with err. */
static int thim_certs(sh_attest_provider *p, const uint8_t *snp, char *err, size_t errlen) {
  uint8_t key[72];
  memcpy(key, snp + 0x1A0, 64);     /* CHIP_ID (SNP ABI Table 23) */
  memcpy(key + 64, snp + 0x180, 8); /* REPORTED_TCB */
  if (p->thim_der[0] && !memcmp(key, p->thim_key, sizeof key)) return 0;
  thim_clear(p);
  json_t *j = imds_call(p, "/metadata/THIM/amd/certification", NULL, err, errlen);
  if (!j) return -1;
  const char *vc = json_string_value(json_object_get(j, "vcekCert"));
  const char *ch = json_string_value(json_object_get(j, "certificateChain"));
  int rc = -1;
  if (!vc || !ch) {
    sh_attest__prov_err(err, errlen,
                        "azure-snp: the THIM answer has no \"vcekCert\" or \"certificateChain\"");
  } else if (pem_ders(vc, p->thim_der, p->thim_len, 1) != 1 ||
             pem_ders(ch, p->thim_der + 1, p->thim_len + 1, 2) != 2) {
    sh_attest__prov_err(err, errlen,
                        "azure-snp: THIM's vcekCert is not one PEM certificate, or its "
                        "certificateChain not two (ASK, ARK)");
  } else {
    memcpy(p->thim_key, key, sizeof key);
    rc = 0;
  }
  if (rc < 0) thim_clear(p);
  json_decref(j);
  return rc;
}

static int put_bytes(cbor_item_t *m, const char *k, const uint8_t *v, size_t n) {
  cbor_item_t *key = cbor_build_string(k), *val = cbor_build_bytestring(v, n);
  int ok = key && val && cbor_map_add(m, (struct cbor_pair){.key = key, .value = val});
  if (key) cbor_decref(&key);
  if (val) cbor_decref(&val);
  return ok;
}

/* CBOR map of n (name, bytes) pairs into *out. */
static int bundle(const char *const *names, uint8_t *const *vals, const size_t *lens, int n,
                  uint8_t **out, size_t *len, char *err, size_t errlen) {
  cbor_item_t *m = cbor_new_definite_map((size_t)n);
  int ok = m != NULL;
  for (int i = 0; ok && i < n; i++)
    ok = put_bytes(m, names[i], vals[i], lens[i]);
  unsigned char *buf = NULL;
  size_t sz = 0, bl = ok ? cbor_serialize_alloc(m, &buf, &sz) : 0;
  if (m) cbor_decref(&m);
  if (!bl) {
    free(buf);
    return sh_attest__prov_err(err, errlen, "out of memory");
  }
  *out = buf;
  *len = bl;
  return 0;
}

/* ---------------- azure-tdx: the TD quote through IMDS ---------------- */

static int td_quote(sh_attest_provider *p, const uint8_t *tdreport, uint8_t **q, size_t *ql,
                    char *err, size_t errlen) {
  char *b64 = sh_b64_encode_alloc(tdreport, TDREPORT_LEN, SH_B64_PROTOCOL);
  json_t *req = b64 ? json_pack("{s:s}", "report", b64) : NULL;
  char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
  json_decref(req);
  free(b64);
  if (!text) return sh_attest__prov_err(err, errlen, "out of memory");
  json_t *j = imds_call(p, "/acc/tdquote", text, err, errlen);
  free(text);
  if (!j) return -1;
  json_t *qs = json_object_get(j, "quote");
  /* base64url as az-tdx-vtpm decodes it; padding accepted */
  *q = json_is_string(qs)
           ? sh_b64_decode_alloc(json_string_value(qs), json_string_length(qs), SH_B64_URL, ql)
           : NULL;
  json_decref(j);
  if (!*q)
    return sh_attest__prov_err(err, errlen,
                               "azure-tdx: the IMDS tdquote answer has no base64url \"quote\"");
  /* the quote is of this TDREPORT: its REPORT_DATA is the TDREPORT's (REPORTMACSTRUCT 0x80) */
  if (sh_attest__quote_binds(*q, *ql, 1, tdreport + 0x80, err, errlen) < 0) {
    free(*q);
    *q = NULL;
    return -1;
  }
  return 0;
}

/* ---------------- entry points ---------------- */

int sh_attest__vtpm_probe(sh_attest_provider *p, sh_tee *tee, char *err, size_t errlen) {
  vtpm t;
  uint8_t *h = NULL;
  size_t hl = 0;
  sh_tee saved = p->tee;
  if (p->tee == SH_ATTEST_TEE_AUTO) p->tee = SH_TEE_AZURE_SNP; /* names the messages */
  int rc = vtpm_open(p, &t, err, errlen);
  if (rc == 0) {
    rc = nv_read_all(&t, sh_tee_name(p->tee), NV_HCL_REPORT, HCL_MAX, &h, &hl, err, errlen);
    vtpm_close(&t);
  }
  p->tee = saved;
  if (rc == 1) {
    sh_attest__prov_err(err, errlen,
                        "%s: the vTPM (TCTI \"%s\") has no NV index 0x01400001 (the HCL report): "
                        "not an Azure confidential VM",
                        *tee == SH_ATTEST_TEE_AUTO ? "auto" : sh_tee_name(*tee), p->tpm_tcti);
    return 1;
  }
  if (rc < 0) return -1;
  uint32_t type = hcl_type(h, hl);
  free(h);
  if (type != HCL_TYPE_SNP && type != HCL_TYPE_TDX)
    return sh_attest__prov_err(err, errlen,
                               "%s: NV index 0x01400001 does not hold an HCL report of an "
                               "SEV-SNP or TDX hardware report",
                               sh_tee_name(*tee));
  sh_tee found = type == HCL_TYPE_TDX ? SH_TEE_AZURE_TDX : SH_TEE_AZURE_SNP;
  if (*tee != SH_ATTEST_TEE_AUTO && *tee != found)
    return sh_attest__prov_err(
        err, errlen, "%s: the vTPM's HCL report holds a %s hardware report: this is %s",
        sh_tee_name(*tee), found == SH_TEE_AZURE_TDX ? "TDX" : "SEV-SNP", sh_tee_name(found));
  *tee = found;
  return 0;
}

int sh_attest__vtpm_evidence(sh_attest_provider *p, const uint8_t D[64], uint8_t **out, size_t *len,
                             char *err, size_t errlen) {
  vtpm t;
  uint8_t *h = NULL;
  size_t hl = 0;
  int rc = -1;
  /* one request at a time on this provider: each writes the one NV index the report is made
   * from */
  pthread_mutex_lock(&p->mu);
  if (vtpm_open(p, &t, err, errlen) < 0) goto out;
  rc = hcl_report_for(p, &t, D, &h, &hl, err, errlen);
  vtpm_close(&t);
  if (rc < 0) goto out;
  rc = -1;
  if (p->tee == SH_TEE_AZURE_SNP) {
    if (thim_certs(p, h + HCL_REPORT, err, errlen) < 0) goto out;
    static const char *const names[] = {"hcl_report", "vcek", "ask", "ark"};
    uint8_t *vals[] = {h, p->thim_der[0], p->thim_der[1], p->thim_der[2]};
    size_t lens[] = {hl, p->thim_len[0], p->thim_len[1], p->thim_len[2]};
    rc = bundle(names, vals, lens, 4, out, len, err, errlen);
  } else {
    uint8_t *q = NULL;
    size_t ql = 0;
    if (td_quote(p, h + HCL_REPORT, &q, &ql, err, errlen) < 0) goto out;
    static const char *const names[] = {"hcl_report", "td_quote"};
    uint8_t *vals[] = {h, q};
    size_t lens[] = {hl, ql};
    rc = bundle(names, vals, lens, 2, out, len, err, errlen);
    free(q);
  }
out:
  pthread_mutex_unlock(&p->mu);
  free(h);
  return rc;
}

void sh_attest__vtpm_free(sh_attest_provider *p) {
  thim_clear(p);
}
