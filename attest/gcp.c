/* attest/gcp.c — Google Confidential Space attestation tokens (type gcp).
 *
 * Two flavours (Confidential Space "Attestation token claims" and "PKI tokens"):
 *  - PKI: the header carries x5c = [leaf, intermediate(s), root]; the chain must end at the
 *    pinned Confidential Space Root CA (by SHA-256 of its DER) — never at x5c's last
 *    certificate merely because it is there —, every certificate valid at the verification
 *    time; the token is signed by the leaf's key.
 *  - OIDC: no x5c; the key comes from the configured JWKS of the issuer (kid required).
 * Claims: iss is always https://confidentialcomputing.googleapis.com; aud (when configured);
 * exp/nbf/iat; eat_nonce (string or array; docs/protocol.md §1.2: an element = base64url(D));
 * dbgstat must be "disabled-since-boot" unless debug is allowed; swname, hwmodel, secboot,
 * support_attributes, submods.container.image_digest against the policy (token_policy.c).
 */
#include "token.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#define GCP_ISSUER "https://confidentialcomputing.googleapis.com"
#define GCP_MAX_X5C 5

/* SHA-256 of the DER of CN=Confidential Space Root CA (RSA-4096, 2024-01-19 -> 2034-01-16). */
static const uint8_t gcp_cs_root[1][32] = {{0x14, 0x8b, 0x29, 0x38, 0x21, 0xbb, 0x0c, 0x6a,
                                            0x31, 0x7f, 0x41, 0x3c, 0x8b, 0xa4, 0x75, 0x81,
                                            0x40, 0x91, 0xcb, 0x22, 0xd4, 0x9b, 0x9e, 0x3c,
                                            0x94, 0x19, 0x8d, 0xb8, 0xe8, 0xf8, 0x6c, 0x39}};

/* The token's claims checked for type (the policy reads them from the result:
 * sh_attest__gcp_policy), debug state and the image digest measurement. */
static int claims(sh_vctx *v, const sh_jwt *j) {
  json_t *p = j->payload;
  json_t *sb = json_object_get(p, "secboot"), *sa = json_object_get(p, "support_attributes");
  json_t *hw = json_object_get(p, "hwmodel"), *sw = json_object_get(p, "swname");
  json_t *dbg = json_object_get(p, "dbgstat");
  json_t *dig =
      json_object_get(json_object_get(json_object_get(p, "submods"), "container"), "image_digest");
  if (!json_is_string(dbg) || !json_is_string(sw) || (hw && !json_is_string(hw)) ||
      (sb && !json_is_boolean(sb)) || (sa && !json_is_array(sa)) || (dig && !json_is_string(dig)))
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED,
                           "Confidential Space claims missing or mistyped");
  /* Only "disabled-since-boot" is a production state ("enabled", "disabled", anything new:
   * debug).  Confidential Space: a debug image can be inspected by the operator. */
  v->r->debug = strcmp(json_string_value(dbg), "disabled-since-boot") != 0;
  const char *image_digest = json_string_value(dig);
  if (image_digest) {
    json_t *hx = json_string(image_digest + (strncmp(image_digest, "sha256:", 7) ? 0 : 7));
    int bad = strncmp(image_digest, "sha256:", 7) ||
              sh_attest__jwt_hex_claim(v->r->measurements, "image_digest", hx, 32, NULL) < 0;
    json_decref(hx);
    if (bad)
      return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "image_digest is not sha256:<64 hex>");
  }
  return 0;
}

static int check_nonce(sh_vctx *v, const sh_jwt *j) {
  char *want = sh_attest__jwt_expected_nonce(v);
  json_t *n = json_object_get(j->payload, "eat_nonce");
  int ok = 0;
  if (want && json_is_string(n)) {
    ok = !strcmp(json_string_value(n), want);
  } else if (want && json_is_array(n)) {
    size_t i;
    json_t *e;
    json_array_foreach(n, i, e) ok |= json_is_string(e) && !strcmp(json_string_value(e), want);
  }
  free(want);
  return ok ? 0
            : sh_attest__fail(v->r, SH_ATTEST_BINDING_MISMATCH,
                              "eat_nonce does not contain the binding digest");
}

static int is_anchor(sh_vctx *v, X509 *x) {
  return sh_attest__x509_is_pinned(x, gcp_cs_root, 1) || sh_attest__x509_is_extra_root(x, v->o);
}

/* PKI flavour: returns the leaf (caller frees) with the chain verified, or NULL (r failed). */
static X509 *pki_leaf(sh_vctx *v, json_t *x5c) {
  X509 *leaf = NULL;
  STACK_OF(X509) *untrusted = sk_X509_new_null(), *anchors = sk_X509_new_null(), *given = NULL;
  size_t n = json_array_size(x5c);
  if (!untrusted || !anchors || !json_is_array(x5c) || n < 2 || n > GCP_MAX_X5C ||
      !(leaf = sh_attest__jwt_x5c_cert(json_array_get(x5c, 0)))) {
    sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "x5c is not a list of 2..%d base64 DER certificates",
                    GCP_MAX_X5C);
    goto fail;
  }
  for (size_t i = 1; i < n; i++) {
    X509 *x = sh_attest__jwt_x5c_cert(json_array_get(x5c, i));
    if (!x || !sk_X509_push(untrusted, x)) {
      X509_free(x);
      sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "x5c[%zu] is not a base64 DER certificate", i);
      goto fail;
    }
    /* a certificate from the token becomes an anchor only when it IS the pinned root */
    if (is_anchor(v, x) && X509_up_ref(x) && !sk_X509_push(anchors, x)) X509_free(x);
  }
  if (v->o->ncerts && (given = sh_attest__x509_parse_many(v->o->certs, v->o->ncerts)))
    for (int i = 0; i < sk_X509_num(given); i++) {
      X509 *x = sk_X509_value(given, i);
      if (is_anchor(v, x) && X509_up_ref(x) && !sk_X509_push(anchors, x)) X509_free(x);
    }
  if (is_anchor(v, leaf) || !sk_X509_num(anchors)) {
    sh_attest__fail(v->r, SH_ATTEST_ROOT_UNTRUSTED,
                    "x5c does not lead to the Confidential Space root");
    goto fail;
  }
  if (sh_attest__x509_verify_chain(v, leaf, untrusted, anchors, NULL, NULL) < 0) goto fail;
  sk_X509_pop_free(untrusted, X509_free);
  sk_X509_pop_free(anchors, X509_free);
  sk_X509_pop_free(given, X509_free);
  return leaf;
fail:
  X509_free(leaf);
  sk_X509_pop_free(untrusted, X509_free);
  sk_X509_pop_free(anchors, X509_free);
  sk_X509_pop_free(given, X509_free);
  ERR_clear_error();
  return NULL;
}

/* The "gcp" policy section on the result's claims (the token payload): dbgstat (r->debug),
 * swname, hwmodel, secboot, support_attributes, submods.container.image_digest. */
int sh_attest__gcp_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug) {
  const struct sh_token_policy *t = sh_attest__token_policy_for(p, SH_TEE_GCP);
  json_t *c = r->claims;
  const char *dbgstat = json_string_value(json_object_get(c, "dbgstat"));
  const char *swname = json_string_value(json_object_get(c, "swname"));
  const char *hwmodel = json_string_value(json_object_get(c, "hwmodel"));
  const char *digest = json_string_value(
      json_object_get(json_object_get(json_object_get(c, "submods"), "container"), "image_digest"));
  json_t *sa = json_object_get(c, "support_attributes");
  if (r->debug && !sh_attest__allow_debug(p, t->allow_debug, allow_debug))
    return sh_attest__fail(r, SH_ATTEST_DEBUG_NOT_ALLOWED,
                           "dbgstat is %.40s, not disabled-since-boot",
                           dbgstat ? dbgstat : "(none)");
  if (t->n_swname && !sh_attest__token_strlist_has(t->swname, t->n_swname, swname))
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "swname %.40s not allowed by policy",
                           swname ? swname : "(none)");
  if (t->n_hwmodel && !sh_attest__token_strlist_has(t->hwmodel, t->n_hwmodel, hwmodel))
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "hwmodel %.40s not allowed by policy",
                           hwmodel ? hwmodel : "(none)");
  if (t->require_secboot && !json_is_true(json_object_get(c, "secboot")))
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "secboot is not true");
  for (size_t i = 0; i < t->n_support_attributes; i++) {
    int found = 0;
    size_t k;
    json_t *e;
    json_array_foreach(sa, k, e) found |=
        json_is_string(e) && !strcmp(json_string_value(e), t->support_attributes[i]);
    if (!found)
      return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "support_attributes lacks %.40s",
                             t->support_attributes[i]);
  }
  if (t->n_image_digest &&
      !sh_attest__token_strlist_has(t->image_digest, t->n_image_digest, digest))
    return sh_attest__fail(r, SH_ATTEST_MEASUREMENT_MISMATCH,
                           "container image digest not allowed by policy");
  return 0;
}

int sh_attest__gcp_verify(sh_vctx *v, const uint8_t *ev, size_t len) {
  const struct sh_token_policy *t = sh_attest__token_policy_for(v->policy, SH_TEE_GCP);
  sh_jwt j;
  sh_jwks *keys = NULL;
  X509 *leaf = NULL;
  int rc = -1;
  if (sh_attest__jwt_open(v, ev, len, t->algorithms, &j) < 0) goto fail;
  if (claims(v, &j) < 0) goto fail;
  if (v->o->nonce && check_nonce(v, &j) < 0) goto fail;
  /* Google's issuer is fixed and always checked; a configured one must be the same. */
  if (sh_attest__jwt_check_times(v, &j) < 0 || sh_attest__jwt_check_issuer(v, &j, GCP_ISSUER) < 0 ||
      sh_attest__jwt_check_issuer(v, &j, v->o->issuer) < 0 ||
      sh_attest__jwt_check_audience(v, &j, v->o->audience) < 0)
    goto fail;
  EVP_PKEY *pk;
  json_t *x5c = json_object_get(j.header, "x5c");
  if (x5c) {
    if (!(leaf = pki_leaf(v, x5c))) goto fail;
    pk = X509_get0_pubkey(leaf);
  } else {
    pk = sh_attest__jwks_configured_key(v, &j, &keys);
  }
  /* signature, policy, binding recorded */
  rc = sh_attest__jwt_finish(v, &j, t->algorithms, pk, sh_attest__gcp_policy);
fail:
  X509_free(leaf);
  sh_attest__jwks_free(keys);
  sh_attest__jwt_free(&j);
  return rc;
}
