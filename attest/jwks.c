/* attest/jwks.c — JSON Web Key Sets (RFC 7517) of configured issuers.
 *
 * Accepted entries: kty "RSA" (n, e), kty "EC" (crv P-256/P-384, x, y), and entries that carry
 * only "x5c" (Azure Attestation's /certs: the key is x5c[0]'s, RFC 7517 §4.7).  When an entry
 * has both x5c and n/e (or x/y) the two keys must be the same.  Symmetric ("oct") and unknown
 * key types are skipped, never used.  "use" must be "sig" when present; a key's "alg", when
 * present, must be the token's (RFC 8725 §3.1).  A token must name its key (kid): we never try
 * every key, and a kid that matches two entries is refused.  The x5c certificate of a key must
 * be valid at the verification time (the JWKS itself is trusted configuration, so its chain is
 * not checked against a root).
 */
#include "token.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define JWKS_MAX_KEYS 64

typedef struct jwk {
  char *kid;
  char *alg; /* NULL when absent */
  EVP_PKEY *pk;
  X509 *cert; /* x5c[0] or NULL */
} jwk;

struct sh_jwks {
  jwk k[JWKS_MAX_KEYS];
  size_t n;
};

void sh_attest__jwks_free(sh_jwks *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) {
    free(s->k[i].kid);
    free(s->k[i].alg);
    EVP_PKEY_free(s->k[i].pk);
    X509_free(s->k[i].cert);
  }
  free(s);
}

static BIGNUM *b64_bn(json_t *v) {
  size_t l = 0;
  const char *s = json_string_value(v);
  uint8_t *b = s ? sh_b64_decode_alloc(s, strlen(s), SH_JWT_B64, &l) : NULL;
  BIGNUM *bn = b && l ? BN_bin2bn(b, (int)l, NULL) : NULL;
  free(b);
  return bn;
}

static EVP_PKEY *rsa_key(json_t *e) {
  BIGNUM *n = b64_bn(json_object_get(e, "n")), *ex = b64_bn(json_object_get(e, "e"));
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM *params = NULL;
  EVP_PKEY_CTX *ctx = NULL;
  EVP_PKEY *pk = NULL;
  if (n && ex && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
      OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, ex) &&
      (params = OSSL_PARAM_BLD_to_param(bld)) &&
      (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) && EVP_PKEY_fromdata_init(ctx) == 1 &&
      EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
    pk = NULL;
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  BN_free(n);
  BN_free(ex);
  return pk;
}

static EVP_PKEY *ec_key(json_t *e) {
  const char *crv = json_string_value(json_object_get(e, "crv"));
  const char *grp = !crv                    ? NULL
                    : !strcmp(crv, "P-256") ? "prime256v1"
                    : !strcmp(crv, "P-384") ? "secp384r1"
                                            : NULL;
  size_t fl = crv && !strcmp(crv, "P-384") ? 48 : 32, xl = 0, yl = 0;
  const char *xs = json_string_value(json_object_get(e, "x"));
  const char *ys = json_string_value(json_object_get(e, "y"));
  uint8_t *x = xs ? sh_b64_decode_alloc(xs, strlen(xs), SH_JWT_B64, &xl) : NULL;
  uint8_t *y = ys ? sh_b64_decode_alloc(ys, strlen(ys), SH_JWT_B64, &yl) : NULL;
  uint8_t pt[1 + 96];
  EVP_PKEY *pk = NULL;
  EVP_PKEY_CTX *ctx = NULL;
  if (grp && x && y && xl == fl && yl == fl) { /* RFC 7518 §6.2.1.2: full-length coordinates */
    pt[0] = 0x04;
    memcpy(pt + 1, x, fl);
    memcpy(pt + 1 + fl, y, fl);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)grp, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * fl),
        OSSL_PARAM_construct_end()};
    if (!(ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
      pk = NULL;
  }
  /* fromdata does not check that the point is on the curve: do it. */
  if (pk) {
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    if (!c || EVP_PKEY_public_check(c) != 1) {
      EVP_PKEY_free(pk);
      pk = NULL;
    }
    EVP_PKEY_CTX_free(c);
  }
  EVP_PKEY_CTX_free(ctx);
  free(x);
  free(y);
  return pk;
}

/* An x5c entry (RFC 7517 §4.7: standard base64 of one DER certificate, padded), or NULL. */
X509 *sh_attest__jwt_x5c_cert(json_t *e) {
  const char *s = json_string_value(e);
  size_t l = 0;
  uint8_t *der = s ? sh_b64_decode_alloc(s, strlen(s), SH_JWT_B64_X5C, &l) : NULL;
  X509 *x = der ? sh_attest__x509_from_der(der, l) : NULL;
  free(der);
  return x;
}

static int err(char *eb, size_t en, const char *m, const char *kid) {
  if (eb && en) snprintf(eb, en, "JWKS: %s%s%.64s", m, kid ? ": " : "", kid ? kid : "");
  return -1;
}

int sh_attest__jwks_parse(const uint8_t *doc, size_t len, sh_jwks **out, char *eb, size_t en) {
  *out = NULL;
  if (len > SH_JWT_MAX_JWKS) return err(eb, en, "document too large", NULL);
  json_error_t je;
  json_t *root = json_loadb((const char *)doc, len, JSON_REJECT_DUPLICATES, &je);
  json_t *keys = json_object_get(root, "keys");
  sh_jwks *s = calloc(1, sizeof *s);
  int rc = -1;
  if (!s) {
    err(eb, en, "out of memory", NULL);
    goto done;
  }
  if (!json_is_array(keys)) {
    err(eb, en, "not a JSON object with a \"keys\" array", NULL);
    goto done;
  }
  size_t i;
  json_t *e;
  json_array_foreach(keys, i, e) {
    const char *kty = json_string_value(json_object_get(e, "kty"));
    const char *kid = json_string_value(json_object_get(e, "kid"));
    const char *use = json_string_value(json_object_get(e, "use"));
    json_t *alg = json_object_get(e, "alg"), *x5c = json_object_get(e, "x5c");
    if (!json_is_object(e) || !kid || (alg && !json_is_string(alg)) ||
        (x5c && (!json_is_array(x5c) || !json_array_size(x5c)))) {
      err(eb, en, "an entry lacks kid or has a bad alg/x5c", kid);
      goto done;
    }
    if ((use && strcmp(use, "sig")) || (kty && strcmp(kty, "RSA") && strcmp(kty, "EC")))
      continue; /* encryption keys, symmetric keys, unknown types: never used */
    if (s->n == JWKS_MAX_KEYS) {
      err(eb, en, "too many keys", NULL);
      goto done;
    }
    jwk *k = &s->k[s->n];
    int has_raw = kty && (json_object_get(e, "n") || json_object_get(e, "x"));
    EVP_PKEY *raw = NULL;
    if (has_raw && !(raw = !strcmp(kty, "RSA") ? rsa_key(e) : ec_key(e))) {
      err(eb, en, "bad RSA/EC key parameters", kid);
      goto done;
    }
    if (x5c) {
      if (!(k->cert = sh_attest__jwt_x5c_cert(json_array_get(x5c, 0)))) {
        EVP_PKEY_free(raw);
        err(eb, en, "x5c[0] is not a base64 DER certificate", kid);
        goto done;
      }
      k->pk = X509_get_pubkey(k->cert);
      if (!k->pk || (raw && EVP_PKEY_eq(raw, k->pk) != 1)) {
        EVP_PKEY_free(raw);
        X509_free(k->cert);
        EVP_PKEY_free(k->pk);
        k->cert = NULL;
        k->pk = NULL;
        err(eb, en, "x5c[0] and the key parameters differ", kid);
        goto done;
      }
      EVP_PKEY_free(raw);
    } else if (raw) {
      k->pk = raw;
    } else {
      err(eb, en, "entry has neither key parameters nor x5c", kid);
      goto done;
    }
    k->kid = strdup(kid);
    k->alg = alg ? strdup(json_string_value(alg)) : NULL;
    s->n++;
    if (!k->kid || (alg && !k->alg)) {
      err(eb, en, "out of memory", NULL);
      goto done;
    }
  }
  rc = 0;
done:
  json_decref(root);
  ERR_clear_error();
  if (rc < 0)
    sh_attest__jwks_free(s);
  else
    *out = s;
  return rc;
}

EVP_PKEY *sh_attest__jwks_key(sh_vctx *v, const sh_jwks *s, const sh_jwt *j) {
  if (!s) {
    sh_attest__fail(v->r, SH_ATTEST_COLLATERAL_MISSING, "no JWKS configured for this issuer");
    return NULL;
  }
  if (!j->kid) {
    sh_attest__fail(v->r, SH_ATTEST_ROOT_UNTRUSTED, "token names no key (kid)");
    return NULL;
  }
  const jwk *found = NULL;
  for (size_t i = 0; i < s->n; i++) {
    if (strcmp(s->k[i].kid, j->kid)) continue;
    if (found) {
      sh_attest__fail(v->r, SH_ATTEST_ROOT_UNTRUSTED, "kid matches several JWKS entries");
      return NULL;
    }
    found = &s->k[i];
  }
  if (!found) {
    sh_attest__fail(v->r, SH_ATTEST_ROOT_UNTRUSTED, "kid %.64s is not in the configured JWKS",
                    j->kid);
    return NULL;
  }
  if (found->alg && (!j->alg_name || strcmp(found->alg, j->alg_name))) {
    sh_attest__fail(v->r, SH_ATTEST_SIGNATURE_INVALID,
                    "JWKS key is for alg %.16s, token says %.16s", found->alg,
                    j->alg_name ? j->alg_name : "?");
    return NULL;
  }
  if (found->cert) {
    int64_t nb = sh_attest__asn1_unix(X509_get0_notBefore(found->cert));
    int64_t na = sh_attest__asn1_unix(X509_get0_notAfter(found->cert));
    if (v->o->at < nb) {
      sh_attest__fail(v->r, SH_ATTEST_NOT_YET_VALID, "signing certificate not yet valid");
      return NULL;
    }
    if (v->o->at > na) {
      sh_attest__fail(v->r, SH_ATTEST_EXPIRED, "signing certificate expired");
      return NULL;
    }
    if (nb > v->valid_from) v->valid_from = nb;
    if (na < v->valid_until) v->valid_until = na;
  }
  return found->pk; /* borrowed */
}

EVP_PKEY *sh_attest__jwks_configured_key(sh_vctx *v, const sh_jwt *j, sh_jwks **keys) {
  char eb[160];
  if (v->o->jwks && sh_attest__jwks_parse(v->o->jwks, v->o->jwks_len, keys, eb, sizeof eb) < 0) {
    sh_attest__fail(v->r, SH_ATTEST_COLLATERAL_MISSING, "%s", eb);
    return NULL;
  }
  return sh_attest__jwks_key(v, *keys, j);
}
