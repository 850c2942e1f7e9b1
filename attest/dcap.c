/* attest/dcap.c — Intel TDX and SGX DCAP quotes: verification order and policy.
 *
 * Order (docs/protocol.md §1.6): size and structure (dcap_quote.c), binding (REPORT_DATA = D),
 * root fingerprint (the PCK chain's self-signed certificate must be the pinned Intel SGX Root
 * CA), the quote signature by the attestation key, the QE report signature by the PCK key,
 * QE REPORT_DATA = SHA-256(attestation key ‖ QE auth data) ‖ 32 zero bytes, the PCK chain;
 * then the collateral (collateral.c: signatures, CRLs, freshness), the PCK chain again with
 * the root CA and PCK CRLs, FMSPC/PCE-ID of the PCK certificate against the TCB info, TCB
 * level and QE identity matching (tcb.c), and the policy.  A debug TD/enclave is refused
 * as soon as the signatures and chain are known good, before the collateral: it is refused
 * whatever the collateral says.
 *
 * azure-tdx (azure.c) runs the same verification on its TD quote with its own binding check
 * (the HCL runtime data, sh_attest__dcap_verify_td) and its own policy key, "azure-tdx" (tdx keys).
 *
 * Policy keys "tdx" / "sgx" / "azure-tdx" (policy.c delegates here):
 *   {"allow_debug": false,
 *    "tcb_statuses": ["UpToDate"],            // default; e.g. add "SWHardeningNeeded"
 *    "allowed_advisories": ["INTEL-SA-00615"], // every advisory of an accepted non-UpToDate
 *                                              // level must be listed ("*": any)
 *    tdx: "mrtd", "rtmr0".."rtmr3", "mrconfigid", "mrowner": [hex 48]
 *    sgx: "mrenclave", "mrsigner": [hex 32], "isvprodid": [int], "min_isvsvn": int}
 */
#include "dcap.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SHA-256 of the DER of the Intel SGX Root CA (P-256, 2018-05-21 -> 2049-12-31). */
static const uint8_t intel_sgx_root[1][32] = {{0x44, 0xa0, 0x19, 0x6b, 0x2b, 0x99, 0xf8, 0x89,
                                               0xb8, 0xe1, 0x49, 0xe9, 0x5b, 0x80, 0x7a, 0x35,
                                               0x0e, 0x74, 0x24, 0x96, 0x43, 0x99, 0xe8, 0x85,
                                               0xa7, 0xcb, 0xb8, 0xcc, 0xfa, 0xb6, 0x74, 0xd3}};

struct sh_dcap_policy {
  int allow_debug;
  unsigned statuses;
  json_t *advisories; /* array of strings */
  int any_advisory;
  sh_hexlist m[8]; /* tdx: mrtd, rtmr0-3, mrconfigid, mrowner; sgx: mrenclave, mrsigner */
  json_t *isvprodid;
  long min_isvsvn;
};

static const char *const tdx_keys[] = {"mrtd",  "rtmr0",      "rtmr1",   "rtmr2",
                                       "rtmr3", "mrconfigid", "mrowner", NULL};
static const char *const sgx_keys[] = {"mrenclave", "mrsigner", NULL};

void sh_attest__dcap_policy_free(struct sh_dcap_policy *p) {
  if (!p) return;
  for (int i = 0; i < 8; i++)
    sh_attest__hexlist_free(&p->m[i]);
  json_decref(p->advisories);
  json_decref(p->isvprodid);
  free(p);
}

int sh_attest__dcap_policy_load(json_t *o, sh_tee tee, struct sh_dcap_policy **out, char *eb,
                                size_t en) {
  struct sh_dcap_policy *p = calloc(1, sizeof *p);
  int td = tee == SH_TEE_TDX || tee == SH_TEE_AZURE_TDX; /* TD quote keys */
  const char *const *mk = td ? tdx_keys : sgx_keys;
  size_t mlen = td ? 48 : 32;
  const char *k;
  json_t *v;
  *out = NULL;
  if (!p) return sh_attest__policy_err(eb, en, "out of memory", sh_tee_name(tee));
  p->allow_debug = -1;
  p->statuses = 1;
  if (!json_is_object(o)) {
    sh_attest__dcap_policy_free(p);
    return sh_attest__policy_err(eb, en, "expected an object", sh_tee_name(tee));
  }
  json_object_foreach(o, k, v) {
    int rc = 0, mi = -1;
    for (int i = 0; mk[i] && mi < 0; i++)
      if (!strcmp(k, mk[i])) mi = i;
    if (mi >= 0) {
      rc = sh_attest__hexlist_load(v, mlen, &p->m[mi], eb, en, k);
    } else if (!strcmp(k, "allow_debug")) {
      rc = json_is_boolean(v) ? (p->allow_debug = json_is_true(v), 0)
                              : sh_attest__policy_err(eb, en, "expected true or false", k);
    } else if (!strcmp(k, "tcb_statuses")) {
      size_t i;
      json_t *s;
      p->statuses = 0;
      if (!json_is_array(v) || !json_array_size(v))
        rc = sh_attest__policy_err(eb, en, "expected a non-empty list of TCB statuses", k);
      json_array_foreach(v, i, s) {
        int f = sh_attest__tcb_status_index(json_string_value(s)); /* NULL: not a string */
        if (f < 0 || f == SH_DCAP_TCB_REVOKED)
          rc = sh_attest__policy_err(eb, en, "unknown (or never acceptable) TCB status", k);
        else
          p->statuses |= 1u << f;
      }
    } else if (!strcmp(k, "allowed_advisories")) {
      size_t i;
      json_t *s;
      if (!json_is_array(v))
        rc = sh_attest__policy_err(eb, en, "expected a list of advisory IDs", k);
      json_array_foreach(v, i, s) {
        if (!json_is_string(s))
          rc = sh_attest__policy_err(eb, en, "expected a list of advisory IDs", k);
        else if (!strcmp(json_string_value(s), "*"))
          p->any_advisory = 1;
      }
      json_decref(p->advisories);
      p->advisories = json_incref(v);
    } else if (tee == SH_TEE_SGX && !strcmp(k, "isvprodid")) {
      size_t i;
      json_t *s;
      if (!json_is_array(v) || !json_array_size(v))
        rc = sh_attest__policy_err(eb, en, "expected a non-empty list of integers", k);
      json_array_foreach(v, i, s) if (!json_is_integer(s) || json_integer_value(s) < 0 ||
                                      json_integer_value(s) > 65535) rc =
          sh_attest__policy_err(eb, en, "expected integers 0..65535", k);
      json_decref(p->isvprodid);
      p->isvprodid = json_incref(v);
    } else if (tee == SH_TEE_SGX && !strcmp(k, "min_isvsvn")) {
      if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 65535)
        rc = sh_attest__policy_err(eb, en, "expected an integer 0..65535", k);
      else
        p->min_isvsvn = (long)json_integer_value(v);
    } else {
      rc = sh_attest__policy_err(eb, en, "unknown key", k);
    }
    if (rc < 0) {
      sh_attest__dcap_policy_free(p);
      return -1;
    }
  }
  *out = p;
  return 0;
}

static const struct sh_dcap_policy default_policy = {-1, 1, NULL, 0, {{0}}, NULL, 0};

static uint16_t le16(const uint8_t *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}

/* attestation key: 64 bytes x‖y on P-256 */
static EVP_PKEY *p256_key(const uint8_t xy[64]) {
  uint8_t pub[65];
  pub[0] = 0x04;
  memcpy(pub + 1, xy, 64);
  OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
  OSSL_PARAM *params = NULL;
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  EVP_PKEY *pk = NULL;
  if (b && ctx && OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
      OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub) &&
      (params = OSSL_PARAM_BLD_to_param(b)) && EVP_PKEY_fromdata_init(ctx) == 1 &&
      EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
    pk = NULL;
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(b);
  EVP_PKEY_CTX_free(ctx);
  return pk;
}

static int ecdsa_p256_ok(EVP_PKEY *pk, const uint8_t rs[64], const uint8_t *msg, size_t len) {
  uint8_t *der = NULL;
  size_t dl = 0;
  EVP_MD_CTX *md = NULL;
  int ok = sh_attest__ecdsa_raw_to_der(rs, rs + 32, 32, 0, &der, &dl) == 0 &&
           (md = EVP_MD_CTX_new()) && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk) == 1 &&
           EVP_DigestVerify(md, der, dl, msg, len) == 1;
  EVP_MD_CTX_free(md);
  OPENSSL_free(der);
  return ok;
}

int sh_attest__dcap_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_iovec *sig) {
  sh_attest_result tmp;
  sh_dcap_quote q;
  memset(&tmp, 0, sizeof tmp);
  if (sh_attest__dcap_parse_quote(&tmp, ev, len, &q) < 0 ||
      !EVP_DigestUpdate(md, q.signed_part.ptr, q.signed_part.len))
    return -1;
  sig->ptr = q.sig;
  sig->len = 64;
  return 0;
}

static void fill_result(sh_vctx *v, const sh_dcap_quote *q) {
  sh_attest_result *r = v->r;
  json_t *m = r->measurements, *c = r->claims;
  const uint8_t *b = q->body;
  json_object_set_new(c, "version", json_integer(q->version));
  if (q->tee_type == DQ_TEE_TDX) {
    static const char *const rt[4] = {"RTMR0", "RTMR1", "RTMR2", "RTMR3"};
    sh_attest__json_hex(m, "MRTD", b + TD_MRTD, 48);
    for (int i = 0; i < 4; i++)
      sh_attest__json_hex(m, rt[i], b + TD_RTMR0 + 48 * i, 48);
    sh_attest__json_hex(m, "MRCONFIGID", b + TD_MRCONFIGID, 48);
    sh_attest__json_hex(m, "MROWNER", b + TD_MROWNER, 48);
    sh_attest__json_hex(c, "MROWNERCONFIG", b + TD_MROWNERCONFIG, 48);
    sh_attest__json_hex(c, "MRSEAM", b + TD_MRSEAM, 48);
    sh_attest__json_hex(c, "TEE_TCB_SVN", b + TD_TEE_TCB_SVN, 16);
    sh_attest__json_hex(c, "TD_ATTRIBUTES", b + TD_TDATTRIBUTES, 8);
    sh_attest__json_hex(c, "XFAM", b + TD_XFAM, 8);
    sh_attest__json_hex(c, "REPORT_DATA", b + TD_REPORTDATA, 64);
    if (q->body_type == 3) {
      sh_attest__json_hex(c, "TEE_TCB_SVN2", b + TD_TEE_TCB_SVN2, 16);
      sh_attest__json_hex(c, "MRSERVICETD", b + TD_MRSERVICETD, 48);
    }
    r->debug = (b[TD_TDATTRIBUTES] & 1) != 0; /* TD_ATTRIBUTES.DEBUG, bit 0 */
  } else {
    sh_attest__json_hex(m, "MRENCLAVE", b + RB_MRENCLAVE, 32);
    sh_attest__json_hex(m, "MRSIGNER", b + RB_MRSIGNER, 32);
    json_object_set_new(c, "ISVPRODID", json_integer(le16(b + RB_ISVPRODID)));
    json_object_set_new(c, "ISVSVN", json_integer(le16(b + RB_ISVSVN)));
    sh_attest__json_hex(c, "ATTRIBUTES", b + RB_ATTRIBUTES, 16);
    sh_attest__json_hex(c, "MRCONFIGID", b + RB_CONFIGID, 64);
    sh_attest__json_hex(c, "REPORT_DATA", b + RB_REPORTDATA, 64);
    r->debug = (b[RB_ATTRIBUTES] & 2) != 0; /* SECS ATTRIBUTES.DEBUG, bit 1 */
  }
}

static int allow_debug(sh_vctx *v, const struct sh_dcap_policy *p) {
  return sh_attest__allow_debug(v->policy, p->allow_debug, v->o->allow_debug);
}

/* The "tdx" / "sgx" policy sections on the result: debug, TCB status and advisories, then
 * the measurement allow-lists (TDX: MRTD, RTMR0-3, MRCONFIGID, MROWNER; SGX: MRENCLAVE,
 * MRSIGNER) and claims ISVPRODID / ISVSVN. */
int sh_attest__dcap_policy(const sh_attest_policy *pol, sh_attest_result *r, int allow_debug) {
  int tdx = r->tee != SH_TEE_SGX;
  const struct sh_dcap_policy *p = r->tee == SH_TEE_SGX         ? pol->sgx
                                   : r->tee == SH_TEE_AZURE_TDX ? pol->azure_tdx
                                                                : pol->tdx;
  if (!p) p = &default_policy;
  if (r->debug && !sh_attest__allow_debug(pol, p->allow_debug, allow_debug))
    return sh_attest__fail(r, SH_ATTEST_DEBUG_NOT_ALLOWED, "debug %s", tdx ? "TD" : "enclave");
  int f = sh_attest__tcb_status_index(r->tcb_status);
  if (f == SH_DCAP_TCB_REVOKED) return sh_attest__fail(r, SH_ATTEST_REVOKED, "TCB status Revoked");
  if (f < 0 || !(p->statuses & (1u << f)))
    return sh_attest__fail(r, SH_ATTEST_TCB_OUT_OF_DATE, "TCB status %s not allowed by policy",
                           r->tcb_status ? r->tcb_status : "(none)");
  if (f != 0 && !p->any_advisory) {
    size_t i, j;
    json_t *a, *x;
    json_array_foreach(r->advisories, i, a) {
      int ok = 0;
      json_array_foreach(p->advisories, j, x) ok |= json_equal(a, x);
      if (!ok)
        return sh_attest__fail(r, SH_ATTEST_TCB_OUT_OF_DATE, "advisory %s not allowed by policy",
                               json_string_value(a));
    }
  }
  if (tdx) {
    static const char *const names[7] = {"MRTD",  "RTMR0",      "RTMR1",  "RTMR2",
                                         "RTMR3", "MRCONFIGID", "MROWNER"};
    for (int i = 0; i < 7; i++)
      if (!sh_attest__hexlist_allows_json(&p->m[i], r->measurements, names[i]))
        return sh_attest__fail(r, SH_ATTEST_MEASUREMENT_MISMATCH, "%s not allowed by policy",
                               tdx_keys[i]);
    return 0;
  }
  if (!sh_attest__hexlist_allows_json(&p->m[0], r->measurements, "MRENCLAVE"))
    return sh_attest__fail(r, SH_ATTEST_MEASUREMENT_MISMATCH, "MRENCLAVE not allowed by policy");
  if (!sh_attest__hexlist_allows_json(&p->m[1], r->measurements, "MRSIGNER"))
    return sh_attest__fail(r, SH_ATTEST_MEASUREMENT_MISMATCH, "MRSIGNER not allowed by policy");
  json_t *prodid = json_object_get(r->claims, "ISVPRODID"),
         *svn = json_object_get(r->claims, "ISVSVN");
  if (!json_is_integer(prodid) || !json_is_integer(svn))
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "the result lacks ISVPRODID or ISVSVN");
  if (p->isvprodid) {
    size_t i;
    json_t *x;
    int ok = 0;
    json_array_foreach(p->isvprodid, i, x) ok |=
        json_integer_value(x) == json_integer_value(prodid);
    if (!ok)
      return sh_attest__fail(r, SH_ATTEST_MEASUREMENT_MISMATCH, "ISVPRODID not allowed by policy");
  }
  if (json_integer_value(svn) < p->min_isvsvn)
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "ISVSVN below the policy's minimum");
  return 0;
}

/* REPORT_DATA = D(n, k) (docs/protocol.md §1.2) when a nonce is presented. */
static int check_binding(sh_vctx *v, const uint8_t *report_data) {
  const sh_attest_options *o = v->o;
  uint8_t D[64];
  if (!o->nonce) return 0;
  if (sh_attest__binding_of(o, D) < 0 || CRYPTO_memcmp(report_data, D, 64))
    return sh_attest__fail(v->r, SH_ATTEST_BINDING_MISMATCH,
                           "REPORT_DATA is not the binding digest");
  return 0;
}

/* The certification data must be exactly PEM_write_bio_X509 of leaf, intermediate(s), root
 * (as Intel's PCS and QE produce it), optionally NUL-terminated: PEM readers skip text
 * around and inside the armour, and nothing unauthenticated may vary in an accepted quote. */
static int canonical_pem(STACK_OF(X509) * anchors, STACK_OF(X509) * mid, X509 *leaf,
                         const sh_iovec *given) {
  BIO *b = BIO_new(BIO_s_mem());
  int ok = b && leaf && sk_X509_num(anchors) == 1 && PEM_write_bio_X509(b, leaf);
  for (int i = 0; ok && i < sk_X509_num(mid); i++)
    ok = PEM_write_bio_X509(b, sk_X509_value(mid, i));
  ok = ok && PEM_write_bio_X509(b, sk_X509_value(anchors, 0));
  char *p = NULL;
  long n = ok ? BIO_get_mem_data(b, &p) : 0;
  size_t len = given->len;
  if (len && given->ptr[len - 1] == 0) len--;
  ok = ok && n > 0 && (size_t)n == len && !memcmp(p, given->ptr, len);
  BIO_free(b);
  return ok ? 0 : -1;
}

static void *x509_ref(void *p) {
  return X509_up_ref(p) ? p : NULL;
}
static void x509_unref(void *p) {
  X509_free(p);
}

/* The quote's PEM certificates.  With a cache (not with extra roots), CA certificates (the
 * Platform/Processor CA, the root: the same in every quote) are parsed once: found by the
 * SHA-256 of their exact PEM block text (domain-separated), immutable and shared.  The leaf
 * (the platform's PCK certificate) is always parsed.  canonical_pem() still compares the
 * re-encoding of every certificate with the given text.  Anything unusual (text outside the
 * blocks, a block that does not parse): the plain parse of the whole text, as without cache.
 * Certificates not found are stored only once the PCK chain verified (remember_pck_chain):
 * an unverified quote cannot evict verified collateral from the cache. */
#define PCK_BLOCKS 8
typedef struct pck_parse {
  int n; /* blocks hashed (0: plain parse, nothing to remember) */
  uint8_t key[PCK_BLOCKS][32];
  int miss[PCK_BLOCKS];
  STACK_OF(X509) * order; /* the certificates in block order (borrowed references) */
} pck_parse;

static void remember_pck_chain(sh_vctx *v, pck_parse *pp) {
  for (int i = 1; i < pp->n && i < sk_X509_num(pp->order); i++) {
    X509 *x = sk_X509_value(pp->order, i);
    if (pp->miss[i] && X509_check_ca(x) != 0)
      sh_attest__cache_obj_put(v->o->cache, pp->key[i], x, x509_ref, x509_unref, INT64_MIN,
                               INT64_MAX);
  }
}

static STACK_OF(X509) * parse_pck_chain(sh_vctx *v, const sh_iovec *pem, pck_parse *pp) {
  static const char B[] = "-----BEGIN CERTIFICATE-----\n", E[] = "-----END CERTIFICATE-----\n";
  sh_attest_cache *cc = v->o->cache && !v->o->nextra_roots ? v->o->cache : NULL;
  const char *p = (const char *)pem->ptr, *end = p + pem->len;
  STACK_OF(X509) *sk = cc ? sk_X509_new_null() : NULL;
  while (end > p && end[-1] == 0)
    end--;
  pp->n = 0;
  while (sk && p < end && sk_X509_num(sk) < PCK_BLOCKS) {
    const char *e = (size_t)(end - p) > sizeof B - 1 && !memcmp(p, B, sizeof B - 1)
                        ? memmem(p, (size_t)(end - p), E, sizeof E - 1)
                        : NULL;
    if (!e) /* not a block at p */
      break;
    e += sizeof E - 1;
    uint8_t key[32];
    int64_t nb, na;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int hok = md && EVP_DigestInit_ex(md, sh_attest__md_sha256(), NULL) &&
              EVP_DigestUpdate(md, "shield-dcap-pem-cert", 21) &&
              EVP_DigestUpdate(md, p, (size_t)(e - p)) && EVP_DigestFinal_ex(md, key, NULL);
    EVP_MD_CTX_free(md);
    if (!hok) break;
    int i = sk_X509_num(sk);
    X509 *x = i ? sh_attest__cache_obj_get(cc, key, v->o->at, &nb, &na) : NULL;
    memcpy(pp->key[i], key, 32);
    pp->miss[i] = !x;
    if (!x) {
      BIO *b = BIO_new_mem_buf(p, (int)(e - p));
      x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
      BIO_free(b);
    }
    if (!x || !sk_X509_push(sk, x)) {
      X509_free(x);
      break;
    }
    p = e;
  }
  ERR_clear_error();
  if (sk && p == end && sk_X509_num(sk) && (pp->order = sk_X509_dup(sk)) != NULL) {
    pp->n = sk_X509_num(sk);
    return sk;
  }
  sk_X509_pop_free(sk, X509_free);
  return sh_attest__x509_parse_many(pem, 1);
}

/* `bind` NULL: REPORT_DATA = D (tdx, sgx); else the caller's check in its place (azure-tdx). */
static int verify_quote(sh_vctx *v, const uint8_t *ev, size_t len, int tdx,
                        const struct sh_dcap_policy *given, sh_dcap_bind_fn bind, void *arg) {
  sh_attest_result *r = v->r;
  sh_dcap_quote q;
  STACK_OF(X509) *certs = NULL, *untrusted = NULL, *anchors = NULL, *extra = NULL;
  X509 *leaf = NULL;
  EVP_PKEY *ak = NULL;
  sh_dcap_collateral *col = NULL;
  const struct sh_dcap_policy *pol = given ? given : &default_policy;
  pck_parse pp = {0, {{0}}, {0}, NULL};
  int rc = -1;
  /* 1. structure */
  if (sh_attest__dcap_parse_quote(r, ev, len, &q) < 0) goto fail;
  if ((q.tee_type == DQ_TEE_TDX) != tdx) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "quote is %s, not %s", tdx ? "SGX" : "TDX",
                    tdx ? "TDX" : "SGX");
    goto fail;
  }
  fill_result(v, &q);
  /* 2. binding */
  const uint8_t *report_data = q.body + (tdx ? TD_REPORTDATA : RB_REPORTDATA);
  if ((bind ? bind(v, &q, arg) : check_binding(v, report_data)) < 0) goto fail;
  /* 3. root fingerprint: the chain's self-signed certificate must be the pinned root */
  if (!(certs = parse_pck_chain(v, &q.pck_chain, &pp)) || !(untrusted = sk_X509_new_null()) ||
      !(anchors = sk_X509_new_null())) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "quote: PCK certificate chain is not PEM");
    goto fail;
  }
  while (sk_X509_num(certs)) {
    X509 *x = sk_X509_shift(certs);
    int ok;
    if (X509_check_issued(x, x) == X509_V_OK) {
      if (!sh_attest__x509_is_pinned(x, intel_sgx_root, 1) &&
          !sh_attest__x509_is_extra_root(x, v->o)) {
        X509_free(x);
        sh_attest__fail(r, SH_ATTEST_ROOT_UNTRUSTED, "PCK chain root is not the Intel SGX Root CA");
        goto fail;
      }
      ok = sk_X509_push(anchors, x) > 0;
    } else if (!leaf && X509_check_ca(x) == 0) {
      leaf = x;
      ok = 1;
    } else {
      ok = sk_X509_push(untrusted, x) > 0;
    }
    if (!ok) {
      X509_free(x);
      goto fail;
    }
  }
  if (canonical_pem(anchors, untrusted, leaf, &q.pck_chain) < 0) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED,
                    "quote: PCK chain is not canonical PEM (leaf, CA, root)");
    goto fail;
  }
  if (!leaf || !sk_X509_num(anchors)) {
    sh_attest__fail(r, SH_ATTEST_CHAIN_INVALID, "quote: PCK chain without %s",
                    leaf ? "root" : "PCK certificate");
    goto fail;
  }
  if (v->o->nextra_roots &&
      (extra = sh_attest__x509_parse_many(v->o->extra_roots, v->o->nextra_roots)))
    while (sk_X509_num(extra))
      sk_X509_push(anchors, sk_X509_shift(extra));
  /* 4. signatures: quote by the attestation key, QE report by the PCK key */
  if (!(ak = p256_key(q.att_key)) ||
      !ecdsa_p256_ok(ak, q.sig, q.signed_part.ptr, q.signed_part.len)) {
    sh_attest__fail(r, SH_ATTEST_SIGNATURE_INVALID, "quote signature does not verify");
    goto fail;
  }
  EVP_PKEY *pck = X509_get0_pubkey(leaf);
  if (!pck || !ecdsa_p256_ok(pck, q.qe_report_sig, q.qe_report, DQ_SGX_BODY_LEN)) {
    sh_attest__fail(r, SH_ATTEST_SIGNATURE_INVALID,
                    "QE report signature does not verify with the PCK key");
    goto fail;
  }
  uint8_t h[32];
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int hok = md && EVP_DigestInit_ex(md, sh_attest__md_sha256(), NULL) &&
            EVP_DigestUpdate(md, q.att_key, 64) &&
            EVP_DigestUpdate(md, q.qe_auth.ptr, q.qe_auth.len) && EVP_DigestFinal_ex(md, h, NULL);
  EVP_MD_CTX_free(md);
  static const uint8_t zero[32];
  if (!hok || CRYPTO_memcmp(h, q.qe_report + RB_REPORTDATA, 32) ||
      CRYPTO_memcmp(zero, q.qe_report + RB_REPORTDATA + 32, 32)) {
    sh_attest__fail(r, SH_ATTEST_SIGNATURE_INVALID,
                    "QE report data does not bind the attestation key");
    goto fail;
  }
  /* 5. without collateral: chain without CRLs, a debug TEE is refused, else collateral_missing */
  if (!sh_attest__dcap_collateral_given(v->o)) {
    if (sh_attest__dcap_verify_chain(v, NULL, leaf, untrusted, anchors, "PCK chain") < 0) goto fail;
  }
  if (r->debug && !allow_debug(v, pol)) {
    sh_attest__fail(r, SH_ATTEST_DEBUG_NOT_ALLOWED,
                    tdx ? "debug TD (TD_ATTRIBUTES.DEBUG)" : "debug enclave (ATTRIBUTES.DEBUG)");
    goto fail;
  }
  /* 6. collateral, the PCK chain with CRLs */
  if (!(col = sh_attest__dcap_collateral_verify(v, v->o->collateral, v->o->collateral_len,
                                                anchors)) ||
      sh_attest__dcap_verify_chain(v, col, leaf, untrusted, anchors, "PCK chain") < 0)
    goto fail;
  remember_pck_chain(v, &pp);
  /* the PCK CRL's issuer is authenticated by the quote's own chain: a given
   * pck_crl_issuer_chain must consist of certificates of that chain */
  STACK_OF(X509) *pcc = sh_attest__dcap_pck_crl_chain(col);
  for (int i = 0; pcc && i < sk_X509_num(pcc); i++) {
    X509 *x = sk_X509_value(pcc, i);
    int found = 0;
    for (int j = 0; j < sk_X509_num(untrusted) && !found; j++)
      found = !X509_cmp(x, sk_X509_value(untrusted, j));
    for (int j = 0; j < sk_X509_num(anchors) && !found; j++)
      found = !X509_cmp(x, sk_X509_value(anchors, j));
    if (!found) {
      sh_attest__fail(r, SH_ATTEST_CHAIN_INVALID,
                      "collateral: pck_crl_issuer_chain differs from the PCK chain");
      goto fail;
    }
  }
  json_t *ti = sh_attest__dcap_tcb_info(col), *qi = sh_attest__dcap_qe_identity(col);
  const char *tid = json_string_value(json_object_get(ti, "id"));
  const char *qid = json_string_value(json_object_get(qi, "id"));
  if (strcmp(tid, tdx ? "TDX" : "SGX") || strcmp(qid, tdx ? "TD_QE" : "QE") ||
      (tdx && json_integer_value(json_object_get(ti, "version")) != 3)) {
    sh_attest__fail(r, SH_ATTEST_COLLATERAL_MISSING, "collateral is for %s/%s, not %s", tid, qid,
                    tdx ? "TDX" : "SGX");
    goto fail;
  }
  sh_pck_ext ext;
  uint8_t fmspc[6], pceid[2];
  if (sh_attest__pck_ext_parse(leaf, &ext) < 0) {
    sh_attest__fail(r, SH_ATTEST_CHAIN_INVALID, "PCK certificate SGX extensions");
    goto fail;
  }
  if (sh_attest__dcap_hex(ti, "fmspc", fmspc, 6) < 0 ||
      sh_attest__dcap_hex(ti, "pceId", pceid, 2) < 0) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "collateral: TCB info fmspc/pceId");
    goto fail;
  }
  sh_attest__json_hex(r->claims, "fmspc", ext.fmspc, 6);
  sh_attest__json_hex(r->claims, "pce_id", ext.pceid, 2);
  if (memcmp(fmspc, ext.fmspc, 6) || memcmp(pceid, ext.pceid, 2)) {
    sh_attest__fail(r, SH_ATTEST_COLLATERAL_MISSING,
                    "TCB info is for another platform (FMSPC/PCE-ID)");
    goto fail;
  }
  const char *st = NULL, *qst = NULL;
  if (sh_attest__dcap_qe_match(v, qi, q.qe_report, &qst) < 0 ||
      sh_attest__dcap_tcb_match(v, ti, &ext, tdx ? q.body + TD_TEE_TCB_SVN : NULL,
                                tdx ? q.body : NULL, &st, r->advisories) < 0)
    goto fail;
  json_object_set_new(r->claims, "qe_tcb_status", json_string(qst));
  if (!strcmp(qst, "Revoked"))
    st = "Revoked";
  else if (!strncmp(qst, "OutOfDate", 9) && strncmp(st, "OutOfDate", 9) && strcmp(st, "Revoked"))
    st = strstr(st, "Configuration") ? "OutOfDateConfigurationNeeded" : "OutOfDate";
  r->tcb_status = st;
  /* 7. policy */
  if (sh_attest__dcap_policy(v->policy, r, v->o->allow_debug) < 0) goto fail;
  rc = 0;
fail:
  sk_X509_free(pp.order);
  sh_attest__dcap_collateral_free(col);
  EVP_PKEY_free(ak);
  X509_free(leaf);
  sk_X509_pop_free(certs, X509_free);
  sk_X509_pop_free(untrusted, X509_free);
  sk_X509_pop_free(anchors, X509_free);
  sk_X509_pop_free(extra, X509_free);
  ERR_clear_error();
  return rc;
}

int sh_attest__tdx_verify(sh_vctx *v, const uint8_t *ev, size_t len) {
  return verify_quote(v, ev, len, 1, v->policy->tdx, NULL, NULL);
}

int sh_attest__sgx_verify(sh_vctx *v, const uint8_t *ev, size_t len) {
  return verify_quote(v, ev, len, 0, v->policy->sgx, NULL, NULL);
}

int sh_attest__dcap_verify_td(sh_vctx *v, const uint8_t *quote, size_t len,
                              const struct sh_dcap_policy *pol, sh_dcap_bind_fn bind, void *arg) {
  return verify_quote(v, quote, len, 1, pol, bind, arg);
}
