/* attest/internal.h — private to attest/: shared helpers between the .c files. */
#ifndef SHIELD_ATTEST_INTERNAL_H
#define SHIELD_ATTEST_INTERNAL_H

#include "attest.h"
#include <openssl/evp.h>
#include <openssl/x509.h>

#define SH_NITRO_MAX_EVIDENCE   (32u * 1024u)
#define SH_SNP_REPORT_SIZE      1184u
#define SH_SNP_SIGNED_LEN       0x2A0u
#define SH_BUNDLE_MAX_EVIDENCE  (32u * 1024u)
#define SH_HCL_MAX_EVIDENCE     (16u * 1024u)
#define SH_NITRO_CLOCK_SKEW     60

/* Resolved policy for one TEE type (see policy.c). */
typedef struct sh_hexlist {
    uint8_t (*v)[64];
    size_t *lens;
    size_t n;
} sh_hexlist;

typedef struct sh_policy_tee {
    int allow_debug;            /* -1: inherit top level */
    sh_hexlist pcrs[32];        /* nitro: allowed values per PCR index (n == 0: any) */
    sh_hexlist measurement, host_data, id_key_digest;
    int has_min_tcb;
    uint8_t min_tcb_fmc, min_tcb_bl, min_tcb_tee, min_tcb_snp, min_tcb_ucode;
    uint32_t min_guest_svn;
    uint32_t max_vmpl;
    int allow_migrate_ma, allow_smt, require_single_socket;
} sh_policy_tee;

struct sh_attest_policy {
    uint8_t sha256[32];
    char name[64];
    int allow_debug;
    int freshness;              /* 0 nonce, 1 timestamp, 2 none */
    int64_t max_age;
    sh_policy_tee nitro, snp, azure;
    struct sh_token_policy *maa, *gcp; /* token_policy.c; NULL: built-in defaults */
    struct sh_dcap_policy *tdx, *sgx, *azure_tdx; /* dcap.c; NULL: built-in defaults */
};

enum { SH_FRESH_NONCE = 0, SH_FRESH_TIMESTAMP = 1, SH_FRESH_NONE = 2 };

/* Verification context handed to the per-type verifiers. */
typedef struct sh_vctx {
    const sh_attest_options *o;
    const sh_attest_policy *policy;
    sh_attest_result *r;
    int64_t valid_from, valid_until; /* window in which the cached result stays valid */
} sh_vctx;

/* result.c */
int sh_fail(sh_attest_result *r, sh_attest_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
sh_attest_result *sh_result_new(void);
sh_attest_result *sh_result_clone(const sh_attest_result *r);
int sh_set_bytes(uint8_t **dst, size_t *dlen, const uint8_t *src, size_t len);
void sh_hex(const uint8_t *in, size_t len, char *out); /* out: 2*len + 1 */
int sh_json_hex(json_t *obj, const char *key, const uint8_t *in, size_t len);

/* x509.c */
STACK_OF(X509) *sh_x509_parse_many(const sh_attest_bytes *blobs, size_t n);
int sh_x509_add_blob(STACK_OF(X509) *sk, const uint8_t *p, size_t len);
void sh_x509_sha256(X509 *x, uint8_t out[32]);
int sh_x509_is_pinned(X509 *x, const uint8_t (*pins)[32], size_t npins);
int sh_x509_is_extra_root(X509 *x, const sh_attest_options *o);
/* Verify leaf -> untrusted... -> one of `anchors` at time `at`.  Returns 0 or fails r with
 * expired / not_yet_valid / chain_invalid / root_untrusted.  On success *chain_out (optional)
 * receives the verified chain (caller frees with sk_X509_pop_free(chain, X509_free)). */
int sh_x509_verify_chain(sh_vctx *v, X509 *leaf, STACK_OF(X509) *untrusted,
                         STACK_OF(X509) *anchors, STACK_OF(X509) **chain_out);
int sh_ecdsa_raw_to_der(const uint8_t *r, const uint8_t *s, size_t n, int little_endian,
                        uint8_t **der, size_t *der_len);

/* policy.c */
const sh_policy_tee *sh_policy_for(const sh_attest_policy *p, sh_attest_tee tee);
int sh_policy_allow_debug(const sh_attest_policy *p, const sh_policy_tee *t, int allow_debug);
int sh_hexlist_allows(const sh_hexlist *l, const uint8_t *v, size_t len);
/* The lower-case hex string obj[key] is allowed by l (n == 0: any value, even none). */
int sh_hexlist_allows_json(const sh_hexlist *l, json_t *obj, const char *key);

/* The policy step of each type, on the result's facts only (measurements, claims, debug, TCB
 * status, advisories): the verifiers call them last, and sh_attest_policy_check calls them on
 * a result verified elsewhere, so one evaluator decides both.  0, or -1 with r failed. */
int sh_nitro_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug);
int sh_snp_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug);
int sh_dcap_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug);
int sh_maa_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug);
int sh_gcp_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug);

/* cache.c: key = SHA-256 of the signed content; extra = the rest of the verdict's inputs */
int sh_cache_get(sh_attest_cache *c, const uint8_t key[32], const uint8_t *extra,
                 size_t extra_len, int64_t at, sh_attest_result **out);
void sh_cache_put(sh_attest_cache *c, const uint8_t key[32], const uint8_t *extra,
                  size_t extra_len, const sh_attest_result *r, int64_t valid_from,
                  int64_t valid_until);
STACK_OF(X509) *sh_cache_chain_get(sh_attest_cache *c, const uint8_t key[32], int64_t *not_before,
                                   int64_t *not_after);
void sh_cache_chain_put(sh_attest_cache *c, const uint8_t key[32], STACK_OF(X509) *upper,
                        int64_t not_before, int64_t not_after);
void *sh_cache_obj_get(sh_attest_cache *c, const uint8_t key[32], int64_t at, int64_t *not_before,
                       int64_t *not_after);
void sh_cache_obj_put(sh_attest_cache *c, const uint8_t key[32], void *obj, void *(*ref)(void *),
                      void (*unref)(void *), int64_t not_before, int64_t not_after);
/* x509.c: digests fetched once per process (implicit fetches cost more than small hashes) */
const EVP_MD *sh_md_sha256(void);

/* cbor_scan.c: allocation-free pre-scan of CBOR (libcbor streaming decoder) that rejects
 * indefinite lengths, counts larger than the remaining input, nesting deeper than 16 and
 * trailing bytes, so cbor_load never allocates from a forged count. */
typedef struct sh_cbor_top {
    int tagged;                 /* top-level tag (value in tag) */
    uint64_t tag;
    size_t nitems;              /* top-level array length, 0 if not an array */
    sh_attest_bytes bstr[4];    /* byte strings at indices 0..3 of the top array */
    int is_bstr[4];
} sh_cbor_top;
int sh_cbor_scan(const uint8_t *p, size_t len, sh_cbor_top *top);

/* simulated.c: the simulated TEE's kid and trust anchor (protocol.md §1.7) */
extern const char sh_simulated_kid[];
X509 *sh_simulated_anchor(const sh_attest_options *o);

/* per type */
int sh_nitro_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_nitro_cache_key(const uint8_t *ev, size_t len, uint8_t content_sha[32], uint8_t key_extra[32]);
int sh_snp_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_snp_verify_report(sh_vctx *v, const uint8_t *report, STACK_OF(X509) *certs);
int sh_azure_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_azure_tdx_verify(sh_vctx *v, const uint8_t *ev, size_t len);
/* JWT types (token.h, jwt.c, jwks.c, token_policy.c) */
int sh_maa_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_gcp_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_token_policy_load(json_t *o, sh_attest_tee tee, struct sh_token_policy **out, char *eb,
                         size_t en);
void sh_token_policy_free(struct sh_token_policy *t);
/* DCAP types (dcap.h, dcap.c, dcap_quote.c, collateral.c, tcb.c) */
int sh_tdx_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_sgx_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_dcap_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_attest_bytes *sig);
int sh_dcap_policy_load(json_t *o, sh_attest_tee tee, struct sh_dcap_policy **out, char *eb,
                        size_t en);
void sh_dcap_policy_free(struct sh_dcap_policy *p);

/* fetch.c: 1 when the fetcher never uses the network (offline mode) */
int sh_fetch_is_offline(const sh_attest_fetcher *f);

/* Shared by the command lines (cli_verify.c, cli_attest.c). */
/* RFC 3339 time (fractions, Z or numeric offset) or Unix seconds -> *out; 0 or -1. */
int sh_cli_parse_time(const char *s, int64_t *out);
/* A PEM PUBLIC KEY or DER SubjectPublicKeyInfo file -> DER SPKI (malloc'd), or NULL. */
uint8_t *sh_cli_load_spki(const char *path, size_t *len);

#endif
