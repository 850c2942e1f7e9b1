/* attest/azure.c — Azure confidential VM HCL reports (azure-snp).
 *
 * Layout (Azure "HCL report", as read by the Azure guest attestation library and trustee's
 * az-snp-vtpm verifier): 0x000 header {u32 "HCLA", version, report_size, request_type,
 * status, 3 × reserved}; 0x020 the 1184-byte SNP report; 0x4C0 IGVM request data {u32
 * data_size, version, report_type (2 = SNP), report_data_hash_type (1 = SHA-256),
 * variable_data_size}; 0x4D4 the runtime data: a JSON object ("keys", "vm-configuration",
 * "user-data").  The SNP report's REPORT_DATA[0:32] is SHA-256 of those runtime bytes and
 * [32:64] is zero: that is what ties the unsigned JSON to the signed report.
 * Evidence: the raw HCL report (VCEK via --cert) or CBOR {"hcl_report", "vcek", "ask"?, "ark"?}
 * (protocol.md §1.5).  Binding: the runtime JSON's "user-data" = lower-case hex of D (§1.2).
 */
#include "internal.h"

#include <cbor.h>
#include <string.h>

#define HCL_REPORT 0x20
#define HCL_IGVM 0x4C0
#define HCL_RUNTIME 0x4D4
#define HCL_MAX_RUNTIME 8192

int sh_snp_check_structure(sh_vctx *v, const uint8_t *rp);

static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

/* Locate the runtime data; 0 or -1 (message in r when v is given). */
static int hcl_layout(const uint8_t *h, size_t len, size_t *rt_len)
{
    if (len < HCL_RUNTIME || len > SH_HCL_MAX_EVIDENCE || memcmp(h, "HCLA", 4))
        return -1;
    uint32_t ver = le32(h + 4), rsize = le32(h + 8);
    uint32_t dsize = le32(h + HCL_IGVM), rtype = le32(h + HCL_IGVM + 8);
    uint32_t htype = le32(h + HCL_IGVM + 12), vsize = le32(h + HCL_IGVM + 16);
    /* Only the layout we can check end to end: HCL header version 2, IGVM request data
     * version 1, SNP hardware report, SHA-256 runtime hash.  Anything else is refused. */
    if (ver != 2 || le32(h + 12) != 2 || le32(h + HCL_IGVM + 4) != 1 || rtype != 2 || htype != 1 ||
        vsize == 0 || vsize > HCL_MAX_RUNTIME || dsize != 20 + vsize ||
        rsize != HCL_IGVM + dsize || rsize > len)
        return -1;
    for (size_t i = 0x10; i < HCL_REPORT; i++) /* status and reserved words */
        if (h[i])
            return -1;
    for (size_t i = rsize; i < len; i++) /* padding after the report */
        if (h[i])
            return -1;
    *rt_len = vsize;
    return 0;
}

static int find_hcl(const uint8_t *ev, size_t len, cbor_item_t **item, sh_attest_bytes *hcl,
                    STACK_OF(X509) *certs)
{
    if (len >= 4 && !memcmp(ev, "HCLA", 4)) {
        hcl->ptr = ev;
        hcl->len = len;
        return 0;
    }
    sh_cbor_top top;
    struct cbor_load_result res;
    if (len > SH_BUNDLE_MAX_EVIDENCE || sh_cbor_scan(ev, len, &top) < 0 || top.tagged ||
        !(*item = cbor_load(ev, len, &res)) || res.read != len || !cbor_isa_map(*item))
        return -1;
    static const char *const names[] = {"hcl_report", "vcek", "ask", "ark"};
    int seen[4] = {0};
    struct cbor_pair *p = cbor_map_handle(*item);
    for (size_t i = 0; i < cbor_map_size(*item); i++) {
        int n = -1;
        for (int q = 0; q < 4 && n < 0; q++)
            if (cbor_isa_string(p[i].key) && cbor_string_is_definite(p[i].key) &&
                cbor_string_length(p[i].key) == strlen(names[q]) &&
                !memcmp(cbor_string_handle(p[i].key), names[q], strlen(names[q])))
                n = q;
        if (n < 0 || seen[n]++ || !cbor_isa_bytestring(p[i].value) ||
            !cbor_bytestring_is_definite(p[i].value))
            return -1;
        const uint8_t *b = cbor_bytestring_handle(p[i].value);
        size_t bl = cbor_bytestring_length(p[i].value);
        if (n == 0) {
            hcl->ptr = b;
            hcl->len = bl;
        } else if (certs && sh_x509_add_blob(certs, b, bl) < 0) {
            return -1;
        }
    }
    return seen[0] ? 0 : -1;
}

int sh_azure_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_attest_bytes *sig)
{
    cbor_item_t *item = NULL;
    sh_attest_bytes hcl;
    size_t rt_len;
    int rc = -1;
    /* `sig` must point into ev (the caller keeps it after this returns), never into libcbor's
     * decoded copy, which dies with `item` below: a definite byte string's content appears
     * verbatim in its encoding, so a bundle's HCL report is found there. */
    if (find_hcl(ev, len, &item, &hcl, NULL) == 0 &&
        (!item || (hcl.ptr = memmem(ev, len, hcl.ptr, hcl.len)) != NULL) &&
        hcl_layout(hcl.ptr, hcl.len, &rt_len) == 0 &&
        EVP_DigestUpdate(md, hcl.ptr + HCL_REPORT, SH_SNP_SIGNED_LEN) &&
        EVP_DigestUpdate(md, hcl.ptr + HCL_RUNTIME, rt_len)) {
        sig->ptr = hcl.ptr + HCL_REPORT + SH_SNP_SIGNED_LEN;
        sig->len = SH_SNP_REPORT_SIZE - SH_SNP_SIGNED_LEN;
        rc = 0;
    }
    if (item)
        cbor_decref(&item);
    return rc;
}

int sh_azure_verify(sh_vctx *v, const uint8_t *ev, size_t len)
{
    sh_attest_result *r = v->r;
    cbor_item_t *item = NULL;
    json_t *rt = NULL;
    sh_attest_bytes hcl;
    size_t rt_len = 0;
    int rc = -1;
    STACK_OF(X509) *certs = sk_X509_new_null();
    if (!certs) {
        sh_fail(r, SH_ATTEST_MALFORMED, "out of memory");
        goto fail;
    }
    if (find_hcl(ev, len, &item, &hcl, certs) < 0 || hcl_layout(hcl.ptr, hcl.len, &rt_len) < 0) {
        sh_fail(r, SH_ATTEST_MALFORMED, "not an HCL report or an azure-snp CBOR bundle");
        goto fail;
    }
    for (size_t i = 0; i < v->o->ncerts; i++)
        if (sh_x509_add_blob(certs, v->o->certs[i].ptr, v->o->certs[i].len) < 0) {
            sh_fail(r, SH_ATTEST_MALFORMED, "a given certificate cannot be parsed");
            goto fail;
        }
    const uint8_t *rp = hcl.ptr + HCL_REPORT, *rtp = hcl.ptr + HCL_RUNTIME;
    if (sh_snp_check_structure(v, rp) < 0)
        goto fail;
    /* the runtime JSON is tied to the signed report by REPORT_DATA = SHA-256(runtime) ‖ 0*32 */
    uint8_t h[32];
    static const uint8_t zero[32];
    if (!EVP_Digest(rtp, rt_len, h, NULL, EVP_sha256(), NULL) ||
        CRYPTO_memcmp(h, rp + 0x50, 32) || memcmp(rp + 0x70, zero, 32)) {
        sh_fail(r, SH_ATTEST_SIGNATURE_INVALID, "runtime data does not match REPORT_DATA");
        goto fail;
    }
    json_error_t jerr;
    rt = json_loadb((const char *)rtp, rt_len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *ud = rt ? json_object_get(rt, "user-data") : NULL;
    if (!json_is_object(rt) || (ud && !json_is_string(ud))) {
        sh_fail(r, SH_ATTEST_MALFORMED, "runtime data is not a JSON object");
        goto fail;
    }
    json_object_set(r->claims, "runtime", rt);
    free(r->user_data);
    r->user_data = NULL;
    r->user_data_len = 0;
    if (ud) {
        size_t n = 0;
        const char *hx = json_string_value(ud);
        uint8_t *b = OPENSSL_hexstr2buf(hx, (long *)&n);
        if (b) {
            sh_set_bytes(&r->user_data, &r->user_data_len, b, n);
            OPENSSL_free(b);
        }
    }
    if (v->o->nonce) {
        uint8_t D[64];
        char hex[129];
        if (sh_attest_binding_digest(v->o->nonce, v->o->nonce_len, v->o->public_key,
                                     v->o->public_key ? v->o->public_key_len : 0, D) < 0 || !ud) {
            sh_fail(r, SH_ATTEST_BINDING_MISMATCH, "runtime data has no user-data");
            goto fail;
        }
        sh_hex(D, 64, hex);
        if (strcmp(json_string_value(ud), hex)) {
            sh_fail(r, SH_ATTEST_BINDING_MISMATCH, "user-data is not the binding digest");
            goto fail;
        }
    }
    if (sh_snp_verify_report(v, rp, certs) < 0)
        goto fail;
    rc = 0;
fail:
    json_decref(rt);
    sk_X509_pop_free(certs, X509_free);
    if (item)
        cbor_decref(&item);
    return rc;
}
