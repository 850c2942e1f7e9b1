/* attest/azure.c — Azure confidential VM HCL reports: azure-snp and azure-tdx.
 *
 * Layout of the "HCL report" (the vTPM's NV index 0x01400001; OpenHCL's IgvmAttestRequestBase,
 * openhcl_attestation_protocol igvm_attest/get.rs, read the same way by Microsoft's az-cvm-vtpm
 * crate and trustee's az-snp-vtpm / az-tdx-vtpm verifiers):
 *   0x000 header {u32 "HCLA", version, report_size, request_type (2: AK certificate), status,
 *         3 × reserved}
 *   0x020 the hardware report, in an area of 1184 bytes (the SNP report's size, the largest):
 *         report type 2: the SNP report (1184 bytes);
 *         report type 4: the TDREPORT_STRUCT (1024 bytes), then zero bytes
 *   0x4C0 IGVM request data {u32 data_size, version (1), report_type, report_data_hash_type
 *         (1: SHA-256), variable_data_size}
 *   0x4D4 the runtime data: a JSON object ("keys", "vm-configuration", "user-data"); the report
 *         ends there (report_size = 0x4C0 + data_size); zero bytes follow up to the size of the
 *         NV index.
 * Header versions: 1 (trustee's az-snp-vtpm evidence-v0/v1/v2.json and hcl-report.bin, the
 * az-cvm-vtpm crate's hcl-report-snp.bin) and 2 (OpenHCL's IGVM_ATTESTATION_VERSION;
 * evidence-genoa.json, every az-tdx-vtpm report): the same layout.  Request data version 2
 * appends a capability bitmap before the runtime data; it is used between the paravisor and
 * the host only, the vTPM's report is version 1 (OpenHCL's tpm report definition): refused.
 * The hardware report's REPORT_DATA[0:32] is SHA-256 of the runtime bytes and [32:64] is zero:
 * that is what ties the unsigned JSON to the signed report.
 *
 * azure-snp: the raw HCL report (VCEK via --cert) or CBOR {"hcl_report", "vcek", "ask"?, "ark"?}
 *   (docs/protocol.md §1.5); the SNP report is verified as sev-snp (policy key "azure-snp").
 * azure-tdx: CBOR {"hcl_report", "td_quote"}.  A TDREPORT is MAC'd for its own platform only,
 *   so the TD quote the platform's quoting enclave made from it is what is verified, as tdx
 *   (dcap.c: DCAP collateral; policy key "azure-tdx", the tdx keys).  The TDREPORT in the HCL
 *   report must be the quoted one: REPORT_DATA, TD info and TEE TCB info equal to the quote's.
 * Binding (§1.2): the runtime JSON's "user-data" = hex of D.  Hex digits of either case are
 * accepted: the HCL renders the bytes the guest wrote to the vTPM, and the pre-OpenHCL HCL
 * wrote upper case (trustee's evidence-v2.json), OpenHCL writes lower case.
 */
#include "dcap.h"

#include <cbor.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HCL_REPORT 0x20
#define HCL_IGVM 0x4C0
#define HCL_RUNTIME 0x4D4
#define HCL_MAX_RUNTIME 8192
#define HCL_TYPE_SNP 2
#define HCL_TYPE_TDX 4

/* TDREPORT_STRUCT (Intel TDX Module ABI): REPORTMACSTRUCT (256 bytes: REPORTTYPE at 0,
 * REPORTDATA at 0x80), TEE_TCB_INFO (239 bytes at 0x100: VALID 8, TEE_TCB_SVN 16, MRSEAM 48,
 * MRSIGNERSEAM 48, ATTRIBUTES 8, ...), 17 reserved, TDINFO (512 bytes at 0x200: ATTRIBUTES,
 * XFAM, MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR0-3, ...).  A TD quote body (dcap.h)
 * holds TEE_TCB_SVN..SEAM ATTRIBUTES (120 bytes), TDINFO's first 400 bytes and REPORTDATA. */
#define TDR_LEN 1024
#define TDR_REPORTDATA 0x80
#define TDR_TEE_TCB_SVN 0x108
#define TDR_TDINFO 0x200
#define TDR_TYPE_TDX 0x81

static uint32_t le32(const uint8_t *p) {
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct hcl_view {
  const uint8_t *hw; /* the hardware report (HCL offset 0x20) */
  const uint8_t *rt; /* the runtime data */
  size_t rt_len;
} hcl_view;

static int zero(const uint8_t *p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++)
    acc |= p[i];
  return acc == 0;
}

static const char *type_name(uint32_t t) {
  return t == HCL_TYPE_SNP   ? "SEV-SNP (azure-snp)"
         : t == HCL_TYPE_TDX ? "TDX (azure-tdx)"
                             : "unknown";
}

/* Check the layout (every header word, every size, the zero padding) and locate the parts.
 * 0, or -1 with the reason in why. */
static int hcl_layout(const uint8_t *h, size_t len, uint32_t want, hcl_view *out, char *why,
                      size_t wl) {
  if (len < HCL_RUNTIME || memcmp(h, "HCLA", 4))
    return snprintf(why, wl, "not an HCL report (no \"HCLA\" header, or shorter than %u bytes)",
                    HCL_RUNTIME),
           -1;
  if (len > SH_HCL_MAX_EVIDENCE)
    return snprintf(why, wl, "HCL report larger than %u bytes", SH_HCL_MAX_EVIDENCE), -1;
  uint32_t ver = le32(h + 4), rsize = le32(h + 8), req = le32(h + 12);
  uint32_t dsize = le32(h + HCL_IGVM), dver = le32(h + HCL_IGVM + 4);
  uint32_t rtype = le32(h + HCL_IGVM + 8), htype = le32(h + HCL_IGVM + 12);
  uint32_t vsize = le32(h + HCL_IGVM + 16);
  if (ver != 1 && ver != 2)
    return snprintf(why, wl, "HCL report header version %u (1 and 2 are known)", ver), -1;
  if (req != 2) return snprintf(why, wl, "HCL report request type %u, not the vTPM's (2)", req), -1;
  if (!zero(h + 0x10, HCL_REPORT - 0x10)) /* status and reserved words */
    return snprintf(why, wl, "HCL report: non-zero status or reserved header words"), -1;
  if (dver != 1)
    return snprintf(why, wl, "HCL request data version %u (1 is the vTPM's)", dver), -1;
  if (rtype != want)
    return snprintf(why, wl, "HCL report holds a %s hardware report (type %u), not %s",
                    type_name(rtype), rtype, type_name(want)),
           -1;
  if (htype != 1)
    return snprintf(why, wl, "HCL report data hash type %u (1, SHA-256, is known)", htype), -1;
  if (vsize == 0 || vsize > HCL_MAX_RUNTIME || dsize != 20 + vsize || rsize != HCL_IGVM + dsize ||
      rsize > len)
    return snprintf(why, wl,
                    "HCL report sizes are inconsistent (report %u, request data %u, "
                    "runtime data %u, given %zu bytes)",
                    rsize, dsize, vsize, len),
           -1;
  if (!zero(h + rsize, len - rsize))
    return snprintf(why, wl, "non-zero bytes after the HCL report"), -1;
  if (rtype == HCL_TYPE_TDX && !zero(h + HCL_REPORT + TDR_LEN, HCL_IGVM - HCL_REPORT - TDR_LEN))
    return snprintf(why, wl, "non-zero bytes after the TD report in the HCL report"), -1;
  out->hw = h + HCL_REPORT;
  out->rt = h + HCL_RUNTIME;
  out->rt_len = vsize;
  return 0;
}

/* The evidence as a definite CBOR map whose keys are some of `names` (text, each at most once,
 * nothing else) with definite byte string values: out[i] for names[i] ({NULL, 0} when absent).
 * *item (decref'd by the caller) owns the bytes.  0 or -1. */
static int find_bundle(const uint8_t *ev, size_t len, const char *const *names, int n,
                       cbor_item_t **item, sh_iovec *out) {
  sh_cbor_top top;
  struct cbor_load_result res;
  for (int q = 0; q < n; q++)
    out[q] = (sh_iovec){NULL, 0};
  if (len > SH_BUNDLE_MAX_EVIDENCE || sh_attest__cbor_scan(ev, len, &top) < 0 || top.tagged ||
      !(*item = cbor_load(ev, len, &res)) || res.read != len || !cbor_isa_map(*item))
    return -1;
  struct cbor_pair *p = cbor_map_handle(*item);
  for (size_t i = 0; i < cbor_map_size(*item); i++) {
    int k = -1;
    for (int q = 0; q < n && k < 0; q++)
      if (cbor_isa_string(p[i].key) && cbor_string_is_definite(p[i].key) &&
          cbor_string_length(p[i].key) == strlen(names[q]) &&
          !memcmp(cbor_string_handle(p[i].key), names[q], strlen(names[q])))
        k = q;
    if (k < 0 || out[k].ptr || !cbor_isa_bytestring(p[i].value) ||
        !cbor_bytestring_is_definite(p[i].value))
      return -1;
    out[k].ptr = cbor_bytestring_handle(p[i].value);
    out[k].len = cbor_bytestring_length(p[i].value);
    if (!out[k].ptr) /* an empty byte string: nothing to verify */
      return -1;
  }
  return 0;
}

static const char *const snp_names[] = {"hcl_report", "vcek", "ask", "ark"};
static const char *const tdx_names[] = {"hcl_report", "td_quote"};

/* azure-snp: the raw HCL report, or the bundle (its certificates added to certs when given). */
static int find_hcl(const uint8_t *ev, size_t len, cbor_item_t **item, sh_iovec *hcl,
                    STACK_OF(X509) * certs) {
  if (len >= 4 && !memcmp(ev, "HCLA", 4)) {
    hcl->ptr = ev;
    hcl->len = len;
    return 0;
  }
  sh_iovec b[4];
  if (find_bundle(ev, len, snp_names, 4, item, b) < 0 || !b[0].ptr) return -1;
  for (int i = 1; i < 4 && certs; i++)
    if (b[i].ptr && sh_attest__x509_add_blob(certs, b[i].ptr, b[i].len) < 0) return -1;
  *hcl = b[0];
  return 0;
}

static int hexval(char c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

/* The runtime JSON: claims "runtime" (the whole object: keys, vm-configuration, user-data),
 * user_data (the "user-data" hex decoded, when it is hex), and the binding when a nonce is
 * presented: user-data = hex of D (§1.2).  0, or fails v->r. */
static int runtime_claims(sh_vctx *v, const uint8_t *rt, size_t rt_len) {
  sh_attest_result *r = v->r;
  json_error_t jerr;
  json_t *j = json_loadb((const char *)rt, rt_len, JSON_REJECT_DUPLICATES, &jerr);
  json_t *ud = j ? json_object_get(j, "user-data") : NULL;
  int rc = -1;
  if (!json_is_object(j) || (ud && !json_is_string(ud))) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "runtime data is not a JSON object");
    goto out;
  }
  json_object_set(r->claims, "runtime", j);
  free(r->user_data);
  r->user_data = NULL;
  r->user_data_len = 0;
  const char *hx = ud ? json_string_value(ud) : NULL;
  size_t hl = ud ? json_string_length(ud) : 0;
  int is_hex = hx && hl % 2 == 0;
  for (size_t i = 0; is_hex && i < hl; i++)
    is_hex = hexval(hx[i]) >= 0;
  if (is_hex && hl && !(r->user_data = malloc(hl / 2))) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "out of memory");
    goto out;
  }
  if (is_hex && hl) {
    for (size_t i = 0; i < hl / 2; i++)
      r->user_data[i] = (uint8_t)(hexval(hx[2 * i]) << 4 | hexval(hx[2 * i + 1]));
    r->user_data_len = hl / 2;
  }
  if (v->o->nonce) {
    uint8_t D[64];
    if (sh_attest__binding_of(v->o, D) < 0) {
      sh_attest__fail(r, SH_ATTEST_BINDING_MISMATCH, "nonce or public key longer than 65535 bytes");
      goto out;
    }
    if (!ud) {
      sh_attest__fail(r, SH_ATTEST_BINDING_MISMATCH, "runtime data has no user-data");
      goto out;
    }
    if (r->user_data_len != 64 || CRYPTO_memcmp(r->user_data, D, 64)) {
      sh_attest__fail(r, SH_ATTEST_BINDING_MISMATCH, "user-data is not the binding digest");
      goto out;
    }
  }
  rc = 0;
out:
  json_decref(j);
  return rc;
}

/* REPORT_DATA = SHA-256(runtime data) ‖ 32 zero bytes. */
static int runtime_bound(const hcl_view *h, const uint8_t *report_data) {
  uint8_t d[32];
  return EVP_Digest(h->rt, h->rt_len, d, NULL, sh_attest__md_sha256(), NULL) &&
         !CRYPTO_memcmp(d, report_data, 32) && zero(report_data + 32, 32);
}

/* azure-tdx: the HCL report's TDREPORT is the one the quote was made from, and the runtime data
 * is bound by the quote's REPORT_DATA.  0; -1 (malformed) or -2 (not bound) with why. */
static int td_matches(const hcl_view *h, const uint8_t *body, char *why, size_t wl) {
  const uint8_t *t = h->hw;
  if (t[0] != TDR_TYPE_TDX)
    return snprintf(why, wl, "HCL report: the TD report's type is 0x%02x, not TDX", t[0]), -1;
  if (memcmp(t + TDR_REPORTDATA, body + TD_REPORTDATA, 64) ||
      memcmp(t + TDR_TDINFO, body + TD_TDATTRIBUTES, TD_REPORTDATA - TD_TDATTRIBUTES) ||
      memcmp(t + TDR_TEE_TCB_SVN, body + TD_TEE_TCB_SVN, TD_TDATTRIBUTES - TD_TEE_TCB_SVN))
    return snprintf(why, wl,
                    "the HCL report's TD report is not the one the TD quote was made "
                    "from"),
           -1;
  if (!runtime_bound(h, body + TD_REPORTDATA))
    return snprintf(why, wl, "runtime data does not match the TD quote's REPORT_DATA"), -2;
  return 0;
}

int sh_attest__azure_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_iovec *sig) {
  cbor_item_t *item = NULL;
  sh_iovec hcl;
  hcl_view h;
  char why[192];
  int rc = -1;
  /* `sig` must point into ev (the caller keeps it after this returns), never into libcbor's
   * decoded copy, which dies with `item` below: a definite byte string's content appears
   * verbatim in its encoding, so a bundle's HCL report is found there. */
  if (find_hcl(ev, len, &item, &hcl, NULL) == 0 &&
      (!item || (hcl.ptr = memmem(ev, len, hcl.ptr, hcl.len)) != NULL) &&
      hcl_layout(hcl.ptr, hcl.len, HCL_TYPE_SNP, &h, why, sizeof why) == 0 &&
      EVP_DigestUpdate(md, h.hw, SH_SNP_SIGNED_LEN) && EVP_DigestUpdate(md, h.rt, h.rt_len)) {
    sig->ptr = h.hw + SH_SNP_SIGNED_LEN;
    sig->len = SH_SNP_REPORT_SIZE - SH_SNP_SIGNED_LEN;
    rc = 0;
  }
  if (item) cbor_decref(&item);
  return rc;
}

/* azure-tdx: the quote's signed part ‖ the runtime data, once every byte outside them is known
 * to be checked (the layout, the TDREPORT equal to the quote body): a cache hit then stands for
 * the same verdict. */
int sh_attest__azure_tdx_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md,
                                        sh_iovec *sig) {
  cbor_item_t *item = NULL;
  sh_iovec b[2];
  sh_attest_result tmp;
  sh_dcap_quote q;
  hcl_view h;
  char why[192];
  const uint8_t *qe;
  int rc = -1;
  memset(&tmp, 0, sizeof tmp);
  if (find_bundle(ev, len, tdx_names, 2, &item, b) == 0 && b[0].ptr && b[1].ptr &&
      hcl_layout(b[0].ptr, b[0].len, HCL_TYPE_TDX, &h, why, sizeof why) == 0 &&
      sh_attest__dcap_parse_quote(&tmp, b[1].ptr, b[1].len, &q) == 0 && q.tee_type == DQ_TEE_TDX &&
      td_matches(&h, q.body, why, sizeof why) == 0 &&
      (qe = memmem(ev, len, b[1].ptr, b[1].len)) !=
          NULL && /* see sh_attest__azure_signed_content */
      EVP_DigestUpdate(md, q.signed_part.ptr, q.signed_part.len) &&
      EVP_DigestUpdate(md, h.rt, h.rt_len)) {
    sig->ptr = qe + (q.sig - b[1].ptr);
    sig->len = 64;
    rc = 0;
  }
  if (item) cbor_decref(&item);
  return rc;
}

int sh_attest__azure_verify(sh_vctx *v, const uint8_t *ev, size_t len) {
  sh_attest_result *r = v->r;
  cbor_item_t *item = NULL;
  sh_iovec hcl;
  hcl_view h;
  char why[192];
  int rc = -1;
  STACK_OF(X509) *certs = sk_X509_new_null();
  if (!certs) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "out of memory");
    goto fail;
  }
  if (find_hcl(ev, len, &item, &hcl, certs) < 0) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "not an HCL report or an azure-snp CBOR bundle");
    goto fail;
  }
  if (hcl_layout(hcl.ptr, hcl.len, HCL_TYPE_SNP, &h, why, sizeof why) < 0) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "%s", why);
    goto fail;
  }
  for (size_t i = 0; i < v->o->ncerts; i++)
    if (sh_attest__x509_add_blob(certs, v->o->certs[i].ptr, v->o->certs[i].len) < 0) {
      sh_attest__fail(r, SH_ATTEST_MALFORMED, "a given certificate cannot be parsed");
      goto fail;
    }
  if (sh_attest__snp_check_structure(v, h.hw) < 0) goto fail;
  if (!runtime_bound(&h, h.hw + 0x50)) { /* SNP REPORT_DATA: SNP ABI table 23, offset 0x50 */
    sh_attest__fail(r, SH_ATTEST_SIGNATURE_INVALID, "runtime data does not match REPORT_DATA");
    goto fail;
  }
  if (runtime_claims(v, h.rt, h.rt_len) < 0 || sh_attest__snp_verify_report(v, h.hw, certs) < 0)
    goto fail;
  rc = 0;
fail:
  sk_X509_pop_free(certs, X509_free);
  if (item) cbor_decref(&item);
  return rc;
}

static int tdx_bind(sh_vctx *v, const sh_dcap_quote *q, void *arg) {
  char why[192];
  int m = td_matches(arg, q->body, why, sizeof why);
  if (m < 0)
    return sh_attest__fail(v->r, m == -1 ? SH_ATTEST_MALFORMED : SH_ATTEST_SIGNATURE_INVALID, "%s",
                           why);
  return runtime_claims(v, ((const hcl_view *)arg)->rt, ((const hcl_view *)arg)->rt_len);
}

int sh_attest__azure_tdx_verify(sh_vctx *v, const uint8_t *ev, size_t len) {
  sh_attest_result *r = v->r;
  cbor_item_t *item = NULL;
  sh_iovec b[2];
  hcl_view h;
  char why[192];
  int rc = -1;
  if (find_bundle(ev, len, tdx_names, 2, &item, b) < 0 || !b[0].ptr || !b[1].ptr)
    sh_attest__fail(r, SH_ATTEST_MALFORMED,
                    "azure-tdx evidence is CBOR {\"hcl_report\": bstr, \"td_quote\": bstr}");
  else if (hcl_layout(b[0].ptr, b[0].len, HCL_TYPE_TDX, &h, why, sizeof why) < 0)
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "%s", why);
  else
    rc = sh_attest__dcap_verify_td(v, b[1].ptr, b[1].len, v->policy->azure_tdx, tdx_bind, &h);
  if (item) cbor_decref(&item);
  return rc;
}
