/* attest/token.h — private to attest/: JWT-based evidence (maa, gcp).
 *
 * jwt.c    compact JWS (RFC 7515 §7.1) parsing with strict base64url, signature checks with
 *          OpenSSL EVP for the algorithms a deployment configures (RS256 by default; PS256,
 *          ES256, ES384 when configured), registered claims (RFC 7519 §4.1).
 * jwks.c   JSON Web Key Sets (RFC 7517) from configured issuers: RSA/EC keys, and entries
 *          that carry only x5c (Azure Attestation's /certs).
 * token_policy.c  the "maa" and "gcp" sections of the policy document.
 * maa.c, gcp.c    the two token types.
 *
 * What is never done: following a token's jku/x5u (keys come only from configuration), "none"
 * or HMAC algorithms (no symmetric key is ever derived from a public key: key confusion), an
 * algorithm that the deployment did not configure, a key whose type does not fit the algorithm.
 */
#ifndef SHIELD_ATTEST_TOKEN_H
#define SHIELD_ATTEST_TOKEN_H

#include "internal.h"

#define SH_JWT_MAX_TOKEN (64u * 1024u) /* Confidential Space tokens are ~11 KB */
#define SH_JWT_MAX_JWKS (256u * 1024u)
#define SH_JWT_CLOCK_SKEW 60 /* seconds of leeway on exp/nbf/iat */

/* Algorithms (bit mask); HS* and none have no entry on purpose. */
enum {
  SH_JWT_RS256 = 1u << 0,
  SH_JWT_PS256 = 1u << 1,
  SH_JWT_ES256 = 1u << 2,
  SH_JWT_ES384 = 1u << 3,
};

typedef struct sh_jwt {
  sh_iovec signing_input;   /* "header.payload" exactly as received (view) */
  json_t *header, *payload; /* objects, owned */
  uint8_t *sig;             /* decoded signature, owned */
  size_t sig_len;
  unsigned alg;         /* one SH_JWT_* bit, 0 when not a known algorithm */
  const char *alg_name; /* borrowed from header */
  const char *kid;      /* borrowed from header, NULL when absent */
} sh_jwt;

/* base64 as JWS/JWK use it (common.h): segments and key members are base64url without padding
 * (RFC 7515 §2, RFC 7518 §6), x5c entries standard base64 with padding (RFC 7517 §4.7). */
#define SH_JWT_B64 SH_B64_PROTOCOL
#define SH_JWT_B64_X5C (SH_B64_STD | SH_B64_PAD)

unsigned sh_attest__jwt_alg_from_name(const char *name);
/* Parse; fails r with malformed.  j is always safe to sh_attest__jwt_free afterwards. */
int sh_attest__jwt_parse(sh_attest_result *r, const uint8_t *tok, size_t len, sh_jwt *j);
void sh_attest__jwt_free(sh_jwt *j);
/* The algorithm must be in `allowed` and fit the key (type, curve, RSA >= 2048 bits). */
int sh_attest__jwt_verify_signature(sh_attest_result *r, const sh_jwt *j, unsigned allowed,
                                    EVP_PKEY *pk);
/* exp required; nbf and iat optional; SH_JWT_CLOCK_SKEW leeway; timestamp freshness. */
int sh_attest__jwt_check_times(sh_vctx *v, const sh_jwt *j);
int sh_attest__jwt_check_issuer(sh_vctx *v, const sh_jwt *j, const char *want);
int sh_attest__jwt_check_audience(sh_vctx *v, const sh_jwt *j, const char *want);
/* Fill the common result fields: claims (the payload), evidence_sha256 (signing input). */
int sh_attest__jwt_fill_result(sh_vctx *v, const sh_jwt *j);
/* The first steps every token type shares, cheapest first: parse (size caps, structure),
 * fill the common result fields, and refuse an algorithm not in `algorithms`. */
int sh_attest__jwt_open(sh_vctx *v, const uint8_t *tok, size_t len, unsigned algorithms, sh_jwt *j);
/* base64url(D) of docs/protocol.md §1.2 for the presented nonce and key; NULL when no nonce given
 */
char *sh_attest__jwt_expected_nonce(sh_vctx *v);
/* Record the verified binding (nonce, key, D) in the result. */
int sh_attest__jwt_record_binding(sh_vctx *v);
/* The last steps every token type shares: the signature by pk (NULL: the key lookup failed
 * and said why) with one of `algorithms`, the type's policy step, the binding recorded. */
int sh_attest__jwt_finish(sh_vctx *v, const sh_jwt *j, unsigned algorithms, EVP_PKEY *pk,
                          int (*policy)(const sh_attest_policy *, sh_attest_result *, int));
/* A JSON string of exactly 2*n hex digits -> measurement `name` (lower case).  -1 if bad. */
int sh_attest__jwt_hex_claim(json_t *meas, const char *name, json_t *v, size_t n, uint8_t *out);

/* jwks.c */
typedef struct sh_jwks sh_jwks;
int sh_attest__jwks_parse(const uint8_t *doc, size_t len, sh_jwks **out, char *eb, size_t en);
void sh_attest__jwks_free(sh_jwks *k);
/* The key for j's kid (kid required), its x5c certificate (if any) valid at the verification
 * time; fails r with root_untrusted / expired / not_yet_valid / collateral_missing. */
EVP_PKEY *sh_attest__jwks_key(sh_vctx *v, const sh_jwks *k, const sh_jwt *j);
/* An x5c entry (RFC 7517 §4.7: standard base64 of exactly one DER certificate), or NULL. */
X509 *sh_attest__jwt_x5c_cert(json_t *e);
/* The configured JWKS (options) parsed into *keys (caller frees), then sh_attest__jwks_key. */
EVP_PKEY *sh_attest__jwks_configured_key(sh_vctx *v, const sh_jwt *j, sh_jwks **keys);

/* token_policy.c */
struct sh_token_policy {
  int allow_debug;     /* -1: inherit top level */
  unsigned algorithms; /* SH_JWT_* mask; default RS256 */
  /* maa */
  char **attestation_type;
  size_t n_attestation_type;
  sh_hexlist mrenclave, mrsigner, measurement, host_data;
  int64_t *product_id;
  size_t n_product_id;
  int64_t min_svn;
  char **compliance_status;
  size_t n_compliance_status;
  /* gcp */
  char **swname;
  size_t n_swname;
  char **hwmodel;
  size_t n_hwmodel;
  char **image_digest;
  size_t n_image_digest;
  char **support_attributes;
  size_t n_support_attributes;
  int require_secboot;
};
/* The policy's section for tee (maa or gcp), or the built-in defaults when it has none. */
const struct sh_token_policy *sh_attest__token_policy_for(const sh_attest_policy *p, sh_tee tee);
int sh_attest__token_strlist_has(char *const *l, size_t n, const char *s);

#endif
