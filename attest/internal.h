/* attest/internal.h — private to attest/: shared helpers between the .c files.
 *
 * Every name declared here is attest's own: sh_attest__* (double underscore), compiled with
 * hidden visibility (attest/meson.build), reachable from no other module (only include/ is on
 * their include path). */
#ifndef SHIELD_ATTEST_INTERNAL_H
#define SHIELD_ATTEST_INTERNAL_H

#include "attest.h"
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <time.h>

#define SH_NITRO_MAX_EVIDENCE (32u * 1024u)
#define SH_SNP_REPORT_SIZE 1184u
#define SH_SNP_SIGNED_LEN 0x2A0u
#define SH_BUNDLE_MAX_EVIDENCE (32u * 1024u)
#define SH_HCL_MAX_EVIDENCE (16u * 1024u)
#define SH_NITRO_CLOCK_SKEW 60

/* Resolved policy for one TEE type (see policy.c). */
typedef struct sh_hexlist {
  uint8_t (*v)[64];
  size_t *lens;
  size_t n;
} sh_hexlist;

typedef struct sh_policy_tee {
  int allow_debug;     /* -1: inherit top level */
  sh_hexlist pcrs[32]; /* nitro: allowed values per PCR index (n == 0: any) */
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
  int freshness; /* 0 nonce, 1 timestamp, 2 none */
  int64_t max_age;
  sh_policy_tee nitro, snp, azure;
  struct sh_token_policy *maa, *gcp;            /* token_policy.c; NULL: built-in defaults */
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
int sh_attest__fail(sh_attest_result *r, sh_attest_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
sh_attest_result *sh_attest__result_new(void);
sh_attest_result *sh_attest__result_clone(const sh_attest_result *r);
int sh_attest__set_bytes(uint8_t **dst, size_t *dlen, const uint8_t *src, size_t len);
/* A JSON string of exactly 2n hex digits (either case) -> n bytes at out; 0 or -1. */
int sh_attest__json_unhex(json_t *v, uint8_t *out, size_t n);
/* obj[key] = lower-case hex of in (a new JSON string); 0 or -1. */
int sh_attest__json_hex(json_t *obj, const char *key, const uint8_t *in, size_t len);

/* x509.c */
STACK_OF(X509) * sh_attest__x509_parse_many(const sh_iovec *blobs, size_t n);
int sh_attest__x509_add_blob(STACK_OF(X509) * sk, const uint8_t *p, size_t len);
void sh_attest__x509_sha256(X509 *x, uint8_t out[32]);
int sh_attest__x509_is_pinned(X509 *x, const uint8_t (*pins)[32], size_t npins);
int sh_attest__x509_is_extra_root(X509 *x, const sh_attest_options *o);
/* What a chain verification checks besides OpenSSL's path validation (NULL: the defaults). */
typedef struct sh_x509_check {
  const char *what; /* prefix of the failure message ("PCK chain"); NULL: none */
  int max_depth;    /* intermediate CAs allowed (OpenSSL's depth); 0: 8 */
  int allow_unused; /* 1: `untrusted` may hold certificates the chain does not use (SNP
                     * offers the embedded ASK/ASVK of every product); 0: refused */
} sh_x509_check;
/* The one chain verifier: leaf -> untrusted... -> one of `anchors` at v->o->at (OpenSSL's
 * X509_verify_cert, or the verified-chain cache), then keyUsage keyCertSign on every issuer,
 * the top one of `anchors`, the length, and every given certificate used (unless allowed).
 * Narrows v's cache window to the chain's validity.  Returns 0, or fails v->r with expired /
 * not_yet_valid / revoked / chain_invalid / root_untrusted.  On success *chain_out (optional)
 * receives the verified chain (caller frees with sk_X509_pop_free(chain, X509_free)).  CRLs
 * are the caller's (collateral.c checks revocation on the returned chain). */
int sh_attest__x509_verify_chain(sh_vctx *v, X509 *leaf, STACK_OF(X509) * untrusted,
                                 STACK_OF(X509) * anchors, const sh_x509_check *chk,
                                 STACK_OF(X509) * *chain_out);
/* DER of exactly one certificate (no trailing bytes) -> X509, or NULL. */
X509 *sh_attest__x509_from_der(const uint8_t *der, size_t len);
/* 1 when pk is an EC key on P-384 (secp384r1). */
int sh_attest__is_p384(EVP_PKEY *pk);
/* An ASN1_TIME as seconds since the epoch (0 when unreadable). */
int64_t sh_attest__asn1_unix(const ASN1_TIME *t);
int sh_attest__ecdsa_raw_to_der(const uint8_t *r, const uint8_t *s, size_t n, int little_endian,
                                uint8_t **der, size_t *der_len);

/* policy.c */
/* "policy: <msg>: <what>" (what may be NULL) into buf (may be NULL); returns -1. */
int sh_attest__policy_err(char *buf, size_t n, const char *msg, const char *what);
/* A policy allow-list of hex values of `want` bytes: a hex string or a non-empty list of them
 * (either case, exactly 2 * want digits each).  0, or -1 with "policy: <why>: <key>" in eb. */
int sh_attest__hexlist_load(json_t *j, size_t want, sh_hexlist *l, char *eb, size_t en,
                            const char *key);
void sh_attest__hexlist_free(sh_hexlist *l);
/* The allow_debug in force: the caller's override, else the type section's (>= 0), else the
 * policy's top level. */
int sh_attest__allow_debug(const sh_attest_policy *p, int section, int allow_debug);
const sh_policy_tee *sh_attest__policy_for(const sh_attest_policy *p, sh_tee tee);
int sh_attest__hexlist_allows(const sh_hexlist *l, const uint8_t *v, size_t len);
/* The lower-case hex string obj[key] is allowed by l (n == 0: any value, even none). */
int sh_attest__hexlist_allows_json(const sh_hexlist *l, json_t *obj, const char *key);

/* The policy step of each type, on the result's facts only (measurements, claims, debug, TCB
 * status, advisories): the verifiers call them last, and sh_attest_policy_check calls them on
 * a result verified elsewhere, so one evaluator decides both.  0, or -1 with r failed. */
int sh_attest__nitro_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug);
int sh_attest__snp_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug);
int sh_attest__dcap_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug);
int sh_attest__maa_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug);
int sh_attest__gcp_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug);

/* cache.c: key = SHA-256 of the signed content; extra = the rest of the verdict's inputs */
int sh_attest__cache_get(sh_attest_cache *c, const uint8_t key[32], const uint8_t *extra,
                         size_t extra_len, int64_t at, sh_attest_result **out);
void sh_attest__cache_put(sh_attest_cache *c, const uint8_t key[32], const uint8_t *extra,
                          size_t extra_len, const sh_attest_result *r, int64_t valid_from,
                          int64_t valid_until);
STACK_OF(X509) * sh_attest__cache_chain_get(sh_attest_cache *c, const uint8_t key[32],
                                            int64_t *not_before, int64_t *not_after);
void sh_attest__cache_chain_put(sh_attest_cache *c, const uint8_t key[32], STACK_OF(X509) * upper,
                                int64_t not_before, int64_t not_after);
void *sh_attest__cache_obj_get(sh_attest_cache *c, const uint8_t key[32], int64_t at,
                               int64_t *not_before, int64_t *not_after);
void sh_attest__cache_obj_put(sh_attest_cache *c, const uint8_t key[32], void *obj,
                              void *(*ref)(void *), void (*unref)(void *), int64_t not_before,
                              int64_t not_after);
/* x509.c: digests fetched once per process (implicit fetches cost more than small hashes) */
const EVP_MD *sh_attest__md_sha256(void);

/* cbor_scan.c: allocation-free pre-scan of CBOR (libcbor streaming decoder) that rejects
 * indefinite lengths, counts larger than the remaining input, nesting deeper than 16 and
 * trailing bytes, so cbor_load never allocates from a forged count. */
typedef struct sh_cbor_top {
  int tagged; /* top-level tag (value in tag) */
  uint64_t tag;
  size_t nitems;    /* top-level array length, 0 if not an array */
  sh_iovec bstr[4]; /* byte strings at indices 0..3 of the top array */
  int is_bstr[4];
} sh_cbor_top;
int sh_attest__cbor_scan(const uint8_t *p, size_t len, sh_cbor_top *top);

/* simulated.c: the simulated TEE's kid and trust anchor (docs/protocol.md §1.7) */
extern const char sh_attest__simulated_kid[];
X509 *sh_attest__simulated_anchor(const sh_attest_options *o);
/* The dev root's key, certificate and DER, loaded (created when absent, dated by now) once by
 * a provider and shared by its threads (OpenSSL 3 keys and certificates are safe to read
 * concurrently); sh_attest_simulated_evidence is load + evidence_with + free. */
#define SH_SIM_ROOT_PATH_MAX 4200
typedef struct sh_attest__sim_root {
  EVP_PKEY *key;
  X509 *cert;
  unsigned char *der;
  size_t der_len;
  char path[SH_SIM_ROOT_PATH_MAX]; /* the file, and what stat(2) said when it was read */
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
} sh_attest__sim_root;
int sh_attest__sim_root_load(const char *dir, int64_t now, sh_attest__sim_root *r, char *err,
                             size_t errlen);
void sh_attest__sim_root_free(sh_attest__sim_root *r);
int sh_attest__sim_root_current(const sh_attest__sim_root *r); /* 1: the file is unchanged */
int sh_attest__simulated_evidence_with(const sh_attest_sim_params *p, const sh_attest__sim_root *r,
                                       uint8_t **out, size_t *out_len, char *err, size_t errlen);

/* per type */
int sh_attest__nitro_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_attest__snp_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_attest__snp_verify_report(sh_vctx *v, const uint8_t *report, STACK_OF(X509) * certs);
int sh_attest__snp_check_structure(sh_vctx *v, const uint8_t *rp);
/* The signed content of each type fed to md, and its signature located (verify.c, the cache
 * key); 0, or -1 when the evidence cannot be located (not verified here). */
int sh_attest__nitro_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_iovec *sig);
int sh_attest__snp_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_iovec *sig);
int sh_attest__azure_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_iovec *sig);
int sh_attest__azure_tdx_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md,
                                        sh_iovec *sig);
int sh_attest__azure_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_attest__azure_tdx_verify(sh_vctx *v, const uint8_t *ev, size_t len);
/* JWT types (token.h, jwt.c, jwks.c, token_policy.c) */
int sh_attest__maa_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_attest__gcp_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_attest__token_policy_load(json_t *o, sh_tee tee, struct sh_token_policy **out, char *eb,
                                 size_t en);
void sh_attest__token_policy_free(struct sh_token_policy *t);
/* DCAP types (dcap.h, dcap.c, dcap_quote.c, collateral.c, tcb.c) */
int sh_attest__tdx_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_attest__sgx_verify(sh_vctx *v, const uint8_t *ev, size_t len);
int sh_attest__dcap_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_iovec *sig);
int sh_attest__dcap_policy_load(json_t *o, sh_tee tee, struct sh_dcap_policy **out, char *eb,
                                size_t en);
void sh_attest__dcap_policy_free(struct sh_dcap_policy *p);

/* fetch.c: 1 when the fetcher never uses the network (offline mode) */
int sh_attest__fetch_is_offline(const sh_attest_fetcher *f);

/* binding.c: D of docs/protocol.md §1.2 for the options' nonce and key.  0, or -1 when no nonce
 * was given or a length is over 65535. */
int sh_attest__binding_of(const sh_attest_options *o, uint8_t D[64]);

/* Shared by the command lines (cli_verify.c, cli_attest.c). */
/* A PEM PUBLIC KEY or DER SubjectPublicKeyInfo file -> DER SPKI (malloc'd), or NULL. */
uint8_t *sh_attest__cli_load_spki(const char *path, size_t *len);

#endif
