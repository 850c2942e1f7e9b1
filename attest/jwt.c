/* attest/jwt.c — compact JWS / JWT verification (RFC 7515, RFC 7518, RFC 7519).
 *
 * Parsing is strict: exactly three segments of canonical base64url without padding (RFC 7515
 * §2, RFC 4648 §5), header and payload JSON objects without duplicate member names (RFC 7515
 * §5.2 lets a parser reject them; we do, so two parsers can never disagree on a claim), no
 * "crit" header (we implement no extension, RFC 7515 §4.1.11), "typ" absent or "JWT".
 * Segments are decoded by common.h's sh_b64_decode (SH_B64_PROTOCOL: base64url, no padding,
 * canonical, no whitespace), which is OpenSSL's EVP_DecodeBlock with those checks on top.
 */
#include "token.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

unsigned sh_attest__jwt_alg_from_name(const char *s) {
  if (!s) return 0;
  if (!strcmp(s, "RS256")) return SH_JWT_RS256;
  if (!strcmp(s, "PS256")) return SH_JWT_PS256;
  if (!strcmp(s, "ES256")) return SH_JWT_ES256;
  if (!strcmp(s, "ES384")) return SH_JWT_ES384;
  return 0;
}

void sh_attest__jwt_free(sh_jwt *j) {
  json_decref(j->header);
  json_decref(j->payload);
  free(j->sig);
  memset(j, 0, sizeof *j);
}

static json_t *segment_json(const char *s, size_t n) {
  size_t l = 0;
  uint8_t *b = sh_b64_decode_alloc(s, n, SH_B64_PROTOCOL, &l);
  if (!b) return NULL;
  json_error_t e;
  json_t *j = json_loadb((const char *)b, l, JSON_REJECT_DUPLICATES, &e);
  free(b);
  if (!json_is_object(j)) {
    json_decref(j);
    return NULL;
  }
  return j;
}

int sh_attest__jwt_parse(sh_attest_result *r, const uint8_t *tok, size_t len, sh_jwt *j) {
  memset(j, 0, sizeof *j);
  if (len > SH_JWT_MAX_TOKEN)
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "token larger than %u bytes", SH_JWT_MAX_TOKEN);
  const char *s = (const char *)tok;
  const char *d1 = memchr(s, '.', len);
  const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - s)) : NULL;
  if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - s)))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "not a compact JWS (three segments)");
  j->signing_input = (sh_iovec){.ptr = tok, .len = (size_t)(d2 - s)};
  if (!(j->header = segment_json(s, (size_t)(d1 - s))))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "JWS header is not base64url of a JSON object");
  if (!(j->payload = segment_json(d1 + 1, (size_t)(d2 - d1 - 1))))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "JWT payload is not base64url of a JSON object");
  size_t sl = len - (size_t)(d2 + 1 - s);
  if (!sl || !(j->sig = sh_b64_decode_alloc(d2 + 1, sl, SH_B64_PROTOCOL, &j->sig_len)))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "JWS signature is empty or not base64url");
  json_t *alg = json_object_get(j->header, "alg"), *kid = json_object_get(j->header, "kid");
  json_t *typ = json_object_get(j->header, "typ");
  if (!json_is_string(alg)) return sh_attest__fail(r, SH_ATTEST_MALFORMED, "JWS header has no alg");
  if (json_object_get(j->header, "crit"))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED,
                           "JWS header has crit (no extension is supported)");
  if (typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT")))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "JWS typ is not JWT");
  if (kid && !json_is_string(kid))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "JWS kid is not a string");
  j->alg_name = json_string_value(alg);
  j->alg = sh_attest__jwt_alg_from_name(j->alg_name);
  j->kid = kid ? json_string_value(kid) : NULL;
  /* jku, x5u: never fetched, never trusted (keys come from configuration only). */
  return 0;
}

/* Key confusion (RFC 8725 §2.1, §3.1): the key type must be the one the algorithm names. */
static int key_fits(unsigned alg, EVP_PKEY *pk) {
  char grp[32] = "";
  size_t gl = 0;
  switch (alg) {
    case SH_JWT_RS256:
    case SH_JWT_PS256:
      return EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA && EVP_PKEY_get_bits(pk) >= 2048;
    case SH_JWT_ES256:
    case SH_JWT_ES384:
      if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC ||
          !EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, grp, sizeof grp, &gl))
        return 0;
      return !strcmp(grp, alg == SH_JWT_ES256 ? "prime256v1" : "secp384r1");
    default:
      return 0;
  }
}

int sh_attest__jwt_verify_signature(sh_attest_result *r, const sh_jwt *j, unsigned allowed,
                                    EVP_PKEY *pk) {
  if (!j->alg || !(j->alg & allowed))
    return sh_attest__fail(r, SH_ATTEST_SIGNATURE_INVALID,
                           "JWS alg %.32s is not a configured algorithm",
                           j->alg_name ? j->alg_name : "?");
  if (!pk || !key_fits(j->alg, pk))
    return sh_attest__fail(r, SH_ATTEST_SIGNATURE_INVALID, "key type does not fit JWS alg %s",
                           j->alg_name);
  const EVP_MD *md = j->alg == SH_JWT_ES384 ? EVP_sha384() : EVP_sha256();
  const uint8_t *sig = j->sig;
  size_t sig_len = j->sig_len;
  uint8_t *der = NULL;
  if (j->alg == SH_JWT_ES256 || j->alg == SH_JWT_ES384) {
    /* RFC 7518 §3.4: the JWS signature is R ‖ S, each exactly the curve size. */
    size_t half = j->alg == SH_JWT_ES256 ? 32 : 48;
    if (j->sig_len != 2 * half ||
        sh_attest__ecdsa_raw_to_der(j->sig, j->sig + half, half, 0, &der, &sig_len) < 0)
      return sh_attest__fail(r, SH_ATTEST_SIGNATURE_INVALID, "ECDSA signature is not R||S");
    sig = der;
  }
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX *pctx = NULL;
  int ok = ctx && EVP_DigestVerifyInit(ctx, &pctx, md, NULL, pk) == 1;
  if (ok && j->alg == SH_JWT_PS256) /* RFC 7518 §3.5: MGF1 with the same hash, salt = hash size */
    ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) > 0 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0;
  else if (ok && j->alg == SH_JWT_RS256)
    ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0;
  ok = ok && EVP_DigestVerify(ctx, sig, sig_len, j->signing_input.ptr, j->signing_input.len) == 1;
  EVP_MD_CTX_free(ctx);
  OPENSSL_free(der);
  ERR_clear_error();
  if (!ok) return sh_attest__fail(r, SH_ATTEST_SIGNATURE_INVALID, "JWS signature does not verify");
  return 0;
}

/* NumericDate (RFC 7519 §2): integer or real seconds.  0 absent, 1 present, -1 bad. */
static int numeric_date(json_t *p, const char *k, int64_t *out) {
  json_t *v = json_object_get(p, k);
  if (!v) return 0;
  if (json_is_integer(v)) {
    *out = json_integer_value(v);
  } else if (json_is_real(v) && json_real_value(v) > -1e15 && json_real_value(v) < 1e15) {
    *out = (int64_t)json_real_value(v);
  } else {
    return -1;
  }
  return 1;
}

int sh_attest__jwt_check_times(sh_vctx *v, const sh_jwt *j) {
  int64_t exp = 0, nbf = 0, iat = 0, at = v->o->at;
  int he = numeric_date(j->payload, "exp", &exp), hn = numeric_date(j->payload, "nbf", &nbf);
  int hi = numeric_date(j->payload, "iat", &iat);
  if (he < 0 || hn < 0 || hi < 0)
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "exp, nbf or iat is not a NumericDate");
  if (!he) return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "token has no exp claim");
  if (at >= exp + SH_JWT_CLOCK_SKEW)
    return sh_attest__fail(v->r, SH_ATTEST_EXPIRED, "token expired (exp %lld)", (long long)exp);
  if (hn && at + SH_JWT_CLOCK_SKEW < nbf)
    return sh_attest__fail(v->r, SH_ATTEST_NOT_YET_VALID, "token not valid before %lld",
                           (long long)nbf);
  if (hi && at + SH_JWT_CLOCK_SKEW < iat)
    return sh_attest__fail(v->r, SH_ATTEST_NOT_YET_VALID, "token issued in the future (iat %lld)",
                           (long long)iat);
  if (v->policy->freshness == SH_FRESH_TIMESTAMP) { /* docs/protocol.md §1.3 */
    if (!hi)
      return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "timestamp freshness needs an iat claim");
    if (at - iat > v->policy->max_age)
      return sh_attest__fail(v->r, SH_ATTEST_EXPIRED, "token older than the policy's max_age");
    if (iat + v->policy->max_age < v->valid_until) v->valid_until = iat + v->policy->max_age;
  }
  if (exp + SH_JWT_CLOCK_SKEW < v->valid_until) v->valid_until = exp + SH_JWT_CLOCK_SKEW;
  if (hn && nbf - SH_JWT_CLOCK_SKEW > v->valid_from) v->valid_from = nbf - SH_JWT_CLOCK_SKEW;
  return 0;
}

int sh_attest__jwt_check_issuer(sh_vctx *v, const sh_jwt *j, const char *want) {
  json_t *iss = json_object_get(j->payload, "iss");
  if (!json_is_string(iss))
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "token has no iss claim");
  /* RFC 7519 §4.1.1: StringOrURI, compared as a case-sensitive string (no normalisation). */
  if (want && strcmp(json_string_value(iss), want))
    return sh_attest__fail(v->r, SH_ATTEST_ROOT_UNTRUSTED,
                           "iss %.100s is not the configured issuer", json_string_value(iss));
  return 0;
}

int sh_attest__jwt_check_audience(sh_vctx *v, const sh_jwt *j, const char *want) {
  json_t *aud = json_object_get(j->payload, "aud");
  if (aud && !json_is_string(aud) && !json_is_array(aud))
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "aud is neither a string nor an array");
  if (!want) return 0;
  int found = 0;
  if (json_is_string(aud)) {
    found = !strcmp(json_string_value(aud), want);
  } else if (aud) {
    size_t i;
    json_t *e;
    json_array_foreach(aud, i, e) found |= json_is_string(e) && !strcmp(json_string_value(e), want);
  }
  /* A token minted for another relying party is not bound to us: binding_mismatch (§3). */
  if (!found)
    return sh_attest__fail(v->r, SH_ATTEST_BINDING_MISMATCH,
                           "aud does not include the configured audience");
  return 0;
}

int sh_attest__jwt_open(sh_vctx *v, const uint8_t *tok, size_t len, unsigned algorithms,
                        sh_jwt *j) {
  if (sh_attest__jwt_parse(v->r, tok, len, j) < 0) return -1;
  if (sh_attest__jwt_fill_result(v, j) < 0)
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "out of memory");
  if (!j->alg || !(j->alg & algorithms))
    return sh_attest__fail(v->r, SH_ATTEST_SIGNATURE_INVALID,
                           "JWS alg %.32s is not a configured algorithm", j->alg_name);
  return 0;
}

int sh_attest__jwt_fill_result(sh_vctx *v, const sh_jwt *j) {
  sh_attest_result *r = v->r;
  /* evidence_sha256 is SHA-256 of the JWS signing input (docs/protocol.md §1.3), never of the
   * whole encoding, so a re-encoded signature cannot dodge the replay cache. */
  if (!EVP_Digest(j->signing_input.ptr, j->signing_input.len, r->evidence_sha256, NULL,
                  EVP_sha256(), NULL))
    return -1;
  r->has_evidence_sha256 = 1;
  json_t *c = json_deep_copy(j->payload);
  if (!c) return -1;
  json_decref(r->claims);
  r->claims = c;
  return 0;
}

char *sh_attest__jwt_expected_nonce(sh_vctx *v) {
  const sh_attest_options *o = v->o;
  uint8_t D[64];
  if (sh_attest__binding_of(o, D) < 0) return NULL;
  return sh_b64_encode_alloc(D, 64, SH_B64_PROTOCOL);
}

int sh_attest__jwt_finish(sh_vctx *v, const sh_jwt *j, unsigned algorithms, EVP_PKEY *pk,
                          int (*policy)(const sh_attest_policy *, sh_attest_result *, int)) {
  if (!pk || sh_attest__jwt_verify_signature(v->r, j, algorithms, pk) < 0 ||
      policy(v->policy, v->r, v->o->allow_debug) < 0)
    return -1;
  if (sh_attest__jwt_record_binding(v) < 0)
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "out of memory");
  return 0;
}

int sh_attest__jwt_record_binding(sh_vctx *v) {
  const sh_attest_options *o = v->o;
  uint8_t D[64];
  if (!o->nonce) return 0;
  if (sh_attest__binding_of(o, D) < 0 ||
      sh_attest__set_bytes(&v->r->nonce, &v->r->nonce_len, o->nonce, o->nonce_len) < 0 ||
      sh_attest__set_bytes(&v->r->user_data, &v->r->user_data_len, D, 64) < 0 ||
      (o->public_key && sh_attest__set_bytes(&v->r->public_key, &v->r->public_key_len,
                                             o->public_key, o->public_key_len) < 0))
    return -1;
  return 0;
}

int sh_attest__jwt_hex_claim(json_t *meas, const char *name, json_t *v, size_t n, uint8_t *out) {
  uint8_t buf[128];
  if (n > sizeof buf || sh_attest__json_unhex(v, buf, n) < 0) return -1;
  if (out) memcpy(out, buf, n);
  return meas && name ? sh_attest__json_hex(meas, name, buf, n) : 0;
}
