/* attest/collateral.c — Intel DCAP collateral: parsing, signatures, CRLs, freshness.
 *
 * Input (sh_attest_options.collateral): the JSON form of the shared vectors —
 *   {"tcb_info": "<exact JSON text>", "tcb_info_signature": "<hex r‖s>",
 *    "tcb_info_issuer_chain": "<PEM>", "qe_identity": "<exact JSON text>",
 *    "qe_identity_signature": "<hex>", "qe_identity_issuer_chain": "<PEM>",
 *    "root_ca_crl": "<hex DER>", "pck_crl": "<hex DER>", "pck_crl_issuer_chain": "<PEM>"}
 * — or a directory of raw Intel PCS v4 responses turned into that form by
 * sh_attest_collateral_read() (below).  The TCB info and QE identity signatures (ECDSA P-256,
 * SHA-256, raw r‖s) cover the exact bytes Intel signed: the string fields' bytes, never a
 * re-serialisation.  Chains are checked by x509.c's one verifier (OpenSSL's X509_verify_cert at
 * the verification time, through the verified-chain cache; depth 4; every given certificate
 * part of the chain), then every certificate of the chain, the root included, against the
 * collateral's CRLs (check_revocation: a CRL of its issuer, signed by the issuer's key,
 * thisUpdate <= at < nextUpdate, serial not listed).  A CRL's signature is verified once per
 * collateral object and issuer certificate; validity and revocation are checked at every
 * verification.  Only plain complete CRLs are accepted (no critical, delta or
 * issuing-distribution-point extensions).  Without collateral (dcap.c's debug check before it
 * is known) the same chain check runs without the CRLs.
 */
#include "dcap.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define NCRL 2        /* root_ca_crl, pck_crl */
#define CRL_SIGNERS 4 /* issuers remembered per CRL (Platform and Processor CA, root, ...) */

struct sh_dcap_collateral {
  int refs; /* atomic; shared read-only through sh_attest_cache */
  json_t *tcb_info, *qe_identity;
  STACK_OF(X509_CRL) * crls;              /* NCRL, in crl_keys order */
  STACK_OF(X509) * pck_crl_chain;         /* optional pck_crl_issuer_chain, NULL when absent */
  int64_t crl_this[NCRL], crl_next[NCRL]; /* thisUpdate, nextUpdate */
  /* Issuer certificates whose key verified CRL i's signature (up-referenced): a CRL's
   * signature is checked once per collateral and issuer, its validity at the verification
   * time and the revocation of every certificate every time (check_revocation). */
  pthread_mutex_t mu;
  X509 *crl_signer[NCRL][CRL_SIGNERS];
};

void sh_attest__dcap_collateral_free(sh_dcap_collateral *c) {
  if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
  json_decref(c->tcb_info);
  json_decref(c->qe_identity);
  sk_X509_CRL_pop_free(c->crls, X509_CRL_free);
  sk_X509_pop_free(c->pck_crl_chain, X509_free);
  for (int i = 0; i < NCRL; i++)
    for (int j = 0; j < CRL_SIGNERS; j++)
      X509_free(c->crl_signer[i][j]);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static void *col_ref(void *p) {
  __atomic_add_fetch(&((sh_dcap_collateral *)p)->refs, 1, __ATOMIC_RELAXED);
  return p;
}
static void col_unref(void *p) {
  sh_attest__dcap_collateral_free(p);
}

json_t *sh_attest__dcap_tcb_info(const sh_dcap_collateral *c) {
  return c->tcb_info;
}
json_t *sh_attest__dcap_qe_identity(const sh_dcap_collateral *c) {
  return c->qe_identity;
}
STACK_OF(X509_CRL) * sh_attest__dcap_crls(const sh_dcap_collateral *c) {
  return c->crls;
}
STACK_OF(X509) * sh_attest__dcap_pck_crl_chain(const sh_dcap_collateral *c) {
  return c->pck_crl_chain;
}

static int in_stack(X509 *x, STACK_OF(X509) * sk) {
  for (int i = 0; i < sk_X509_num(sk); i++)
    if (!X509_cmp(x, sk_X509_value(sk, i))) return 1;
  return 0;
}

int sh_attest__dcap_hex(json_t *o, const char *key, uint8_t *out, size_t n) {
  return sh_attest__json_unhex(json_object_get(o, key), out, n);
}

/* An RFC 3339 field ("2025-06-19T10:16:03Z": Intel writes UTC with Z, sometimes fractions) */
static int dcap_time(json_t *o, const char *key, int64_t *out) {
  json_t *v = json_object_get(o, key);
  const char *s = json_string_value(v);
  return s ? sh_rfc3339_parse(s, json_string_length(v), 0, out) : -1;
}

/* Hex of the DER of exactly one CRL (no trailing bytes), or NULL. */
static X509_CRL *crl_from_hex(json_t *v) {
  const char *hex = json_string_value(v);
  size_t hl = json_string_length(v), n = hl / 2;
  uint8_t *der = hex && hl && n <= LONG_MAX ? malloc(n) : NULL;
  const unsigned char *p = der;
  X509_CRL *c = der && sh_hex_decode(hex, hl, der, n) == 0 ? d2i_X509_CRL(NULL, &p, (long)n) : NULL;
  if (c && p != der + n) {
    X509_CRL_free(c);
    c = NULL;
  }
  free(der);
  return c;
}

/* PEM certificates, strictly: the text must be exactly what PEM_write_bio_X509 writes for
 * the certificates it holds (trailing whitespace or NULs aside).  PEM readers skip text around
 * the armour and stop quietly at a certificate they cannot parse; nothing may vary unseen. */
STACK_OF(X509) * sh_attest__dcap_pem_strict(const char *pem, size_t len) {
  sh_iovec b = {pem, len};
  STACK_OF(X509) *sk = sh_attest__x509_parse_many(&b, 1);
  BIO *out = sk ? BIO_new(BIO_s_mem()) : NULL;
  int ok = out != NULL;
  for (int i = 0; ok && i < sk_X509_num(sk); i++)
    ok = PEM_write_bio_X509(out, sk_X509_value(sk, i));
  char *p = NULL;
  long n = ok ? BIO_get_mem_data(out, &p) : 0;
  while (len &&
         (pem[len - 1] == 0 || pem[len - 1] == '\n' || pem[len - 1] == ' ' || pem[len - 1] == '\r'))
    len--;
  while (n && p[n - 1] == '\n')
    n--;
  ok = ok && n > 0 && (size_t)n == len && !memcmp(p, pem, len);
  BIO_free(out);
  if (!ok) {
    sk_X509_pop_free(sk, X509_free);
    sk = NULL;
  }
  ERR_clear_error();
  return sk;
}

/* CRL k of the collateral signed by `iss`: verified once per (collateral, issuer). */
static int crl_signed_by(sh_dcap_collateral *c, int k, X509 *iss) {
  int known = 0;
  pthread_mutex_lock(&c->mu);
  for (int j = 0; j < CRL_SIGNERS && !known; j++)
    known = c->crl_signer[k][j] && !X509_cmp(c->crl_signer[k][j], iss);
  pthread_mutex_unlock(&c->mu);
  if (known) return 0;
  EVP_PKEY *pk = X509_get0_pubkey(iss);
  if (!pk || X509_CRL_verify(sk_X509_CRL_value(c->crls, k), pk) != 1) {
    ERR_clear_error();
    return -1;
  }
  X509 *old = NULL;
  if (X509_up_ref(iss)) {
    pthread_mutex_lock(&c->mu);
    int slot = CRL_SIGNERS - 1;
    for (int j = 0; j < CRL_SIGNERS; j++)
      if (!c->crl_signer[k][j]) {
        slot = j;
        break;
      }
    old = c->crl_signer[k][slot];
    c->crl_signer[k][slot] = iss;
    pthread_mutex_unlock(&c->mu);
  }
  X509_free(old);
  return 0;
}

/* Revocation of every certificate of a verified chain (leaf first, self-signed anchor last,
 * which is checked too, like X509_V_FLAG_CRL_CHECK_ALL) against the collateral's CRLs at
 * v->o->at: each certificate needs a CRL of its issuer, and every CRL of that issuer must be
 * signed by the issuer's key (cRLSign when keyUsage is present), be current
 * (thisUpdate <= at < nextUpdate) and not list the certificate.  The CRLs have no critical,
 * delta or issuing-distribution-point extensions (refused when parsed). */
static int check_revocation(sh_vctx *v, sh_dcap_collateral *c, STACK_OF(X509) * chain,
                            const char *what) {
  int n = sk_X509_num(chain);
  for (int i = 0; i < n; i++) {
    X509 *x = sk_X509_value(chain, i), *iss = sk_X509_value(chain, i + 1 < n ? i + 1 : i);
    int found = 0;
    for (int k = 0; k < sk_X509_CRL_num(c->crls) && k < NCRL; k++) {
      X509_CRL *crl = sk_X509_CRL_value(c->crls, k);
      if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(x)) ||
          X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(iss)))
        continue;
      found = 1;
      if ((X509_get_extension_flags(iss) & EXFLAG_KUSAGE) &&
          !(X509_get_key_usage(iss) & KU_CRL_SIGN))
        return sh_attest__fail(v->r, SH_ATTEST_CHAIN_INVALID,
                               "%s: CRL issuer lacks cRLSign (depth %d)", what, i);
      if (v->o->at < c->crl_this[k])
        return sh_attest__fail(v->r, SH_ATTEST_COLLATERAL_STALE,
                               "%s: CRL is not yet valid (depth %d)", what, i);
      if (v->o->at >= c->crl_next[k])
        return sh_attest__fail(v->r, SH_ATTEST_COLLATERAL_STALE, "%s: CRL has expired (depth %d)",
                               what, i);
      if (crl_signed_by(c, k, iss) < 0)
        return sh_attest__fail(v->r, SH_ATTEST_CHAIN_INVALID,
                               "%s: CRL signature failure (depth %d)", what, i);
      X509_REVOKED *rv = NULL;
      if (X509_CRL_get0_by_cert(crl, &rv, x))
        return sh_attest__fail(v->r, SH_ATTEST_REVOKED, "%s: certificate revoked (depth %d)", what,
                               i);
    }
    if (!found)
      return sh_attest__fail(v->r, SH_ATTEST_COLLATERAL_MISSING,
                             "%s: unable to get certificate CRL (depth %d)", what, i);
  }
  return 0;
}

int sh_attest__dcap_verify_chain(sh_vctx *v, sh_dcap_collateral *c, X509 *leaf,
                                 STACK_OF(X509) * untrusted, STACK_OF(X509) * anchors,
                                 const char *what) {
  /* depth 4 (PCK: leaf, Platform/Processor CA, root), and every certificate given used */
  const sh_x509_check chk = {what, 4, 0};
  STACK_OF(X509) *chain = NULL;
  int rc = sh_attest__x509_verify_chain(v, leaf, untrusted, anchors, &chk, &chain);
  if (rc == 0 && c) rc = check_revocation(v, c, chain, what);
  sk_X509_pop_free(chain, X509_free);
  ERR_clear_error();
  return rc;
}

/* ECDSA P-256/SHA-256 over `msg` by `key`, signature raw r‖s given as 128 hex digits */
static int verify_json_sig(EVP_PKEY *key, const char *msg, size_t len, const char *sighex) {
  uint8_t rs[64], *der = NULL;
  size_t der_len = 0;
  int ok = 0;
  if (!sighex || sh_hex_decode(sighex, strlen(sighex), rs, 64) < 0 ||
      sh_attest__ecdsa_raw_to_der(rs, rs + 32, 32, 0, &der, &der_len) < 0)
    return 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
       EVP_DigestVerify(md, der, der_len, (const unsigned char *)msg, len) == 1;
  EVP_MD_CTX_free(md);
  OPENSSL_free(der);
  return ok;
}

static int is_p256(EVP_PKEY *pk) {
  char grp[32] = "";
  size_t glen = 0;
  return pk && EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC &&
         EVP_PKEY_get_utf8_string_param(pk, "group", grp, sizeof grp, &glen) &&
         !strcmp(grp, "prime256v1");
}

/* One signed JSON document: issuer chain -> root (with the root CA CRL), signature over the
 * exact string bytes, id/version, issueDate <= at < nextUpdate.  Returns the parsed object. */
/* An issuer chain already parsed and verified for this collateral (the TCB info and the QE
 * identity are signed by the same TCB Signing certificate: the same text, the same anchors,
 * CRLs and time give the same verdict). */
typedef struct chain_memo {
  const char *pem;        /* borrowed from the collateral JSON */
  STACK_OF(X509) * chain; /* as parsed, leaf first (own references) */
} chain_memo;

static json_t *signed_doc(sh_vctx *v, json_t *col, const char *field, const char *const *ids,
                          STACK_OF(X509) * anchors, sh_dcap_collateral *c, chain_memo *m) {
  char k_sig[64], k_chain[64];
  snprintf(k_sig, sizeof k_sig, "%s_signature", field);
  snprintf(k_chain, sizeof k_chain, "%s_issuer_chain", field);
  json_t *s = json_object_get(col, field);
  const char *chain_pem = json_string_value(json_object_get(col, k_chain));
  const char *sig = json_string_value(json_object_get(col, k_sig));
  json_t *doc = NULL;
  STACK_OF(X509) *chain = NULL;
  if (!json_is_string(s) || !chain_pem || !sig) {
    sh_attest__fail(v->r, SH_ATTEST_COLLATERAL_MISSING,
                    "collateral: %s, its signature or issuer chain missing", field);
    return NULL;
  }
  int verified = m->pem && !strcmp(m->pem, chain_pem);
  if (verified) {
    chain = sk_X509_new_reserve(NULL, sk_X509_num(m->chain));
    for (int i = 0; chain && i < sk_X509_num(m->chain); i++)
      if (X509_up_ref(sk_X509_value(m->chain, i))) sk_X509_push(chain, sk_X509_value(m->chain, i));
  } else {
    chain = sh_attest__dcap_pem_strict(chain_pem, strlen(chain_pem));
  }
  if (!chain || sk_X509_num(chain) < 1 ||
      (verified && sk_X509_num(chain) != sk_X509_num(m->chain))) {
    sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: %s issuer chain is not PEM", field);
    goto fail;
  }
  X509 *signer = sk_X509_value(chain, 0);
  /* a root given in the chain must be one of the anchors (it would be ignored otherwise) */
  for (int i = 1; i < sk_X509_num(chain); i++) {
    X509 *x = sk_X509_value(chain, i);
    if (X509_check_issued(x, x) == X509_V_OK && !in_stack(x, anchors)) {
      sh_attest__fail(v->r, SH_ATTEST_ROOT_UNTRUSTED,
                      "collateral: %s issuer chain has another root", field);
      goto fail;
    }
  }
  if (!is_p256(X509_get0_pubkey(signer))) {
    sh_attest__fail(v->r, SH_ATTEST_CHAIN_INVALID, "collateral: %s signer key is not P-256", field);
    goto fail;
  }
  /* structure and freshness first (cheap), then the signature, then the chain */
  json_error_t je;
  if (!(doc =
            json_loadb(json_string_value(s), json_string_length(s), JSON_REJECT_DUPLICATES, &je)) ||
      !json_is_object(doc)) {
    sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: %s is not a JSON object", field);
    goto fail;
  }
  const char *id = json_string_value(json_object_get(doc, "id"));
  int id_ok = 0;
  for (int i = 0; ids[i] && !id_ok; i++)
    id_ok = id && !strcmp(id, ids[i]);
  json_int_t ver = json_integer_value(json_object_get(doc, "version"));
  int64_t issued, next;
  if (!id_ok || (ver != 2 && ver != 3)) {
    sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: %s has id %s version %lld", field,
                    id ? id : "(none)", (long long)ver);
    goto fail;
  }
  if (dcap_time(doc, "issueDate", &issued) < 0 || dcap_time(doc, "nextUpdate", &next) < 0) {
    sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: %s dates", field);
    goto fail;
  }
  if (!verify_json_sig(X509_get0_pubkey(signer), json_string_value(s), json_string_length(s),
                       sig)) {
    sh_attest__fail(v->r, SH_ATTEST_SIGNATURE_INVALID, "collateral: %s signature does not verify",
                    field);
    goto fail;
  }
  if (v->o->at < issued) {
    sh_attest__fail(v->r, SH_ATTEST_COLLATERAL_STALE,
                    "collateral: %s issued after the verification time", field);
    goto fail;
  }
  if (v->o->at >= next) {
    sh_attest__fail(v->r, SH_ATTEST_COLLATERAL_STALE, "collateral: %s past its nextUpdate", field);
    goto fail;
  }
  if (issued > v->valid_from) v->valid_from = issued;
  if (next < v->valid_until) v->valid_until = next;
  if (verified) {
    sk_X509_pop_free(chain, X509_free);
    return doc;
  }
  int n0 = sk_X509_num(chain);
  if (!m->pem && !m->chain && (m->chain = sk_X509_new_reserve(NULL, n0)) != NULL)
    for (int i = 0; i < n0; i++)
      if (X509_up_ref(sk_X509_value(chain, i))) sk_X509_push(m->chain, sk_X509_value(chain, i));
  X509 *leaf = sk_X509_shift(chain);
  int crc = sh_attest__dcap_verify_chain(v, c, leaf, chain, anchors, field);
  if (crc == 0 && !m->pem && m->chain && sk_X509_num(m->chain) == n0) m->pem = chain_pem;
  X509_free(leaf);
  if (crc < 0) goto fail;
  sk_X509_pop_free(chain, X509_free);
  return doc;
fail:
  json_decref(doc);
  sk_X509_pop_free(chain, X509_free);
  return NULL;
}

static sh_dcap_collateral *collateral_verify(sh_vctx *v, const uint8_t *buf, size_t len,
                                             STACK_OF(X509) * anchors);

/* Verified collateral is kept in the caller's sh_attest_cache (not with extra roots), keyed
 * by the SHA-256 of its bytes, for verification times inside the window of everything it
 * was checked against: issueDate/nextUpdate, the signing chains' validity, both CRLs'
 * thisUpdate/nextUpdate.  The quote's own checks (PCK chain against the CRLs at this time
 * included) run every time. */
/* ---- sh_attest_collateral: preloaded bytes, their SHA-256, the verified form ---- */
struct sh_attest_collateral {
  uint8_t *bytes;
  size_t len;
  uint8_t sha256[32];
  pthread_mutex_t mu;           /* guards verified, nb, na */
  sh_dcap_collateral *verified; /* verified with the pinned anchors (no extra roots) */
  int64_t nb, na;               /* its window */
};

sh_attest_collateral *sh_attest_collateral_new(const uint8_t *json, size_t len) {
  sh_attest_collateral *h =
      json && len && len <= SH_DCAP_MAX_COLLATERAL ? calloc(1, sizeof *h) : NULL;
  if (!h) return NULL;
  if (!(h->bytes = malloc(len)) ||
      !EVP_Digest(json, len, h->sha256, NULL, sh_attest__md_sha256(), NULL) ||
      pthread_mutex_init(&h->mu, NULL)) {
    free(h->bytes);
    free(h);
    return NULL;
  }
  memcpy(h->bytes, json, len);
  h->len = len;
  return h;
}

void sh_attest_collateral_free(sh_attest_collateral *h) {
  if (!h) return;
  sh_attest__dcap_collateral_free(h->verified);
  pthread_mutex_destroy(&h->mu);
  free(h->bytes);
  free(h);
}

const uint8_t *sh_attest_collateral_sha256(const sh_attest_collateral *h) {
  return h->sha256;
}

int sh_attest__dcap_collateral_given(const sh_attest_options *o) {
  return o->dcap_collateral ? 1 : o->collateral && o->collateral_len;
}

static void narrow(sh_vctx *v, int64_t nb, int64_t na) {
  if (nb > v->valid_from) v->valid_from = nb;
  if (na < v->valid_until) v->valid_until = na;
}

sh_dcap_collateral *sh_attest__dcap_collateral_verify(sh_vctx *v, const uint8_t *buf, size_t len,
                                                      STACK_OF(X509) * anchors) {
  /* a preloaded handle keeps its own verified form (options borrow it const; its memo is
   * internal, under its lock) */
  sh_attest_collateral *h = (sh_attest_collateral *)v->o->dcap_collateral;
  if (h) {
    sh_dcap_collateral *hit = NULL, *old = NULL;
    int64_t nb = 0, na = 0;
    if (!v->o->nextra_roots) {
      pthread_mutex_lock(&h->mu);
      if (h->verified && v->o->at >= h->nb && v->o->at < h->na) {
        hit = col_ref(h->verified);
        nb = h->nb;
        na = h->na;
      }
      pthread_mutex_unlock(&h->mu);
    }
    if (hit) {
      narrow(v, nb, na);
      return hit;
    }
    sh_vctx w = *v;
    w.valid_from = INT64_MIN;
    w.valid_until = INT64_MAX;
    sh_dcap_collateral *c = collateral_verify(&w, h->bytes, h->len, anchors);
    narrow(v, w.valid_from, w.valid_until);
    if (c && !v->o->nextra_roots && w.valid_from < w.valid_until) {
      pthread_mutex_lock(&h->mu);
      old = h->verified;
      h->verified = col_ref(c);
      h->nb = w.valid_from;
      h->na = w.valid_until;
      pthread_mutex_unlock(&h->mu);
      sh_attest__dcap_collateral_free(old);
    }
    return c;
  }
  if (!buf || !len) {
    sh_attest__fail(v->r, SH_ATTEST_COLLATERAL_MISSING, "no collateral given");
    return NULL;
  }
  sh_attest_cache *cc = v->o->cache && !v->o->nextra_roots ? v->o->cache : NULL;
  uint8_t key[32];
  int64_t nb = 0, na = 0;
  if (cc && EVP_Digest(buf, len, key, NULL, sh_attest__md_sha256(), NULL)) {
    sh_dcap_collateral *hit = sh_attest__cache_obj_get(cc, key, v->o->at, &nb, &na);
    if (hit) {
      if (nb > v->valid_from) v->valid_from = nb;
      if (na < v->valid_until) v->valid_until = na;
      return hit;
    }
  } else {
    cc = NULL;
  }
  sh_vctx w = *v; /* the collateral's own window */
  w.valid_from = INT64_MIN;
  w.valid_until = INT64_MAX;
  sh_dcap_collateral *c = collateral_verify(&w, buf, len, anchors);
  if (w.valid_from > v->valid_from) v->valid_from = w.valid_from;
  if (w.valid_until < v->valid_until) v->valid_until = w.valid_until;
  if (c && cc)
    sh_attest__cache_obj_put(cc, key, c, col_ref, col_unref, w.valid_from, w.valid_until);
  return c;
}

static sh_dcap_collateral *collateral_verify(sh_vctx *v, const uint8_t *buf, size_t len,
                                             STACK_OF(X509) * anchors) {
  sh_dcap_collateral *c = NULL;
  json_t *col = NULL;
  json_error_t je;
  if (len > SH_DCAP_MAX_COLLATERAL ||
      !(col = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &je)) ||
      !json_is_object(col)) {
    sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral is not a JSON object");
    goto fail;
  }
  if ((c = calloc(1, sizeof *c)) != NULL) {
    c->refs = 1;
    if (pthread_mutex_init(&c->mu, NULL)) {
      free(c);
      c = NULL;
    }
  }
  if (!c || !(c->crls = sk_X509_CRL_new_null())) {
    sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "out of memory");
    goto fail;
  }
  static const char *const crl_keys[] = {"root_ca_crl", "pck_crl"};
  for (int i = 0; i < 2; i++) {
    json_t *h = json_object_get(col, crl_keys[i]);
    if (!h) {
      sh_attest__fail(v->r, SH_ATTEST_COLLATERAL_MISSING, "collateral: no %s", crl_keys[i]);
      goto fail;
    }
    X509_CRL *crl = crl_from_hex(h);
    if (!crl || !sk_X509_CRL_push(c->crls, crl)) {
      X509_CRL_free(crl);
      sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: %s is not hex DER of a CRL",
                      crl_keys[i]);
      goto fail;
    }
    /* a result or cached collateral never outlives a CRL (OpenSSL checks it at `at`) */
    const ASN1_TIME *lu = X509_CRL_get0_lastUpdate(crl), *nu = X509_CRL_get0_nextUpdate(crl);
    if (!nu) {
      sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: %s without nextUpdate", crl_keys[i]);
      goto fail;
    }
    if (!lu || !(c->crl_this[i] = sh_attest__asn1_unix(lu))) {
      sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: %s thisUpdate", crl_keys[i]);
      goto fail;
    }
    if (!(c->crl_next[i] = sh_attest__asn1_unix(nu))) {
      sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: %s nextUpdate", crl_keys[i]);
      goto fail;
    }
    if (c->crl_this[i] > v->valid_from) v->valid_from = c->crl_this[i];
    if (c->crl_next[i] < v->valid_until) v->valid_until = c->crl_next[i];
    /* check_revocation handles plain complete CRLs only: no critical extension (CRL or
     * entry), no delta CRL, no issuing distribution point (scope) */
    int plain = X509_CRL_get_ext_by_critical(crl, 1, -1) < 0 &&
                X509_CRL_get_ext_by_NID(crl, NID_issuing_distribution_point, -1) < 0 &&
                X509_CRL_get_ext_by_NID(crl, NID_delta_crl, -1) < 0 &&
                X509_CRL_get_ext_by_NID(crl, NID_freshest_crl, -1) < 0;
    STACK_OF(X509_REVOKED) *rvk = X509_CRL_get_REVOKED(crl);
    for (int j = 0; plain && j < sk_X509_REVOKED_num(rvk); j++)
      plain = X509_REVOKED_get_ext_by_critical(sk_X509_REVOKED_value(rvk, j), 1, -1) < 0;
    if (!plain) {
      sh_attest__fail(v->r, SH_ATTEST_MALFORMED,
                      "collateral: %s has critical, delta or scope extensions", crl_keys[i]);
      goto fail;
    }
  }
  json_t *pc = json_object_get(col, "pck_crl_issuer_chain");
  if (pc) {
    if (!json_is_string(pc) || !(c->pck_crl_chain = sh_attest__dcap_pem_strict(
                                     json_string_value(pc), json_string_length(pc)))) {
      sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: pck_crl_issuer_chain is not PEM");
      goto fail;
    }
  }
  static const char *const tcb_ids[] = {"TDX", "SGX", NULL};
  static const char *const qe_ids[] = {"TD_QE", "QE", NULL};
  chain_memo memo = {NULL, NULL};
  if (!(c->tcb_info = signed_doc(v, col, "tcb_info", tcb_ids, anchors, c, &memo)) ||
      !(c->qe_identity = signed_doc(v, col, "qe_identity", qe_ids, anchors, c, &memo))) {
    sk_X509_pop_free(memo.chain, X509_free);
    goto fail;
  }
  sk_X509_pop_free(memo.chain, X509_free);
  json_decref(col);
  return c;
fail:
  json_decref(col);
  sh_attest__dcap_collateral_free(c);
  ERR_clear_error();
  return NULL;
}

/* ---- sh_attest_collateral_read: a JSON-form file, or a directory of PCS v4 responses ---- */

static char *slurp(const char *dir, const char *name, size_t *len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *b = malloc(SH_DCAP_MAX_COLLATERAL + 1);
  size_t n = b ? fread(b, 1, SH_DCAP_MAX_COLLATERAL + 1, f) : 0;
  int bad = !b || ferror(f) || n > SH_DCAP_MAX_COLLATERAL;
  fclose(f);
  if (bad) {
    free(b);
    return NULL;
  }
  b[n] = 0;
  *len = n;
  return b;
}

/* The exact bytes of the value of top-level `key` in a PCS response ({"tcbInfo": {...},
 * "signature": "..."}): jansson cannot return spans, so every '{' that follows `"key"` and
 * ':' is tried as a start, parsed with JSON_DISABLE_EOF_CHECK (error.position = bytes read),
 * and accepted only when it equals the value jansson parsed from the whole document. */
static int value_span(const char *buf, size_t len, json_t *whole, const char *key, size_t *off,
                      size_t *vlen) {
  json_t *want = json_object_get(whole, key);
  char pat[64];
  int pl = snprintf(pat, sizeof pat, "\"%s\"", key);
  if (!json_is_object(want)) return -1;
  const char *p = buf, *end = buf + len;
  while ((p = memmem(p, (size_t)(end - p), pat, (size_t)pl)) != NULL) {
    const char *q = p + pl;
    p++;
    while (q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n'))
      q++;
    if (q >= end || *q != ':') continue;
    for (q++; q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n'); q++)
      ;
    if (q >= end || *q != '{') continue;
    json_error_t je;
    json_t *got =
        json_loadb(q, (size_t)(end - q), JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &je);
    int ok = got && json_equal(got, want);
    json_decref(got);
    if (ok) {
      *off = (size_t)(q - buf);
      *vlen = (size_t)je.position;
      return 0;
    }
  }
  return -1;
}

/* A PCS response (`b`, n bytes, {"<key>": {...}, "signature": "..."}) and its PEM issuer chain
 * -> out[field], out[field_signature], out[field_issuer_chain] (exact signed bytes). */
static int add_signed(json_t *out, const char *b, size_t n, const char *chain, size_t cl,
                      const char *key, const char *field, const char *what, char *eb, size_t en) {
  size_t off = 0, vl = 0;
  json_error_t je;
  json_t *whole = b ? json_loadb(b, n, JSON_REJECT_DUPLICATES, &je) : NULL;
  const char *sig = json_string_value(json_object_get(whole, "signature"));
  int rc = -1;
  char k[64];
  if (!b || !chain)
    snprintf(eb, en, "collateral: %s or its issuer chain missing", what);
  else if (!sig || value_span(b, n, whole, key, &off, &vl) < 0)
    snprintf(eb, en, "collateral: %s is not a PCS response with %s and signature", what, key);
  else {
    json_object_set_new(out, field, json_stringn(b + off, vl));
    snprintf(k, sizeof k, "%s_signature", field);
    json_object_set_new(out, k, json_string(sig));
    snprintf(k, sizeof k, "%s_issuer_chain", field);
    json_object_set_new(out, k, json_stringn(chain, cl));
    rc = 0;
  }
  json_decref(whole);
  return rc;
}

/* A CRL (DER or PEM) -> out[field] as hex of its DER. */
static int add_crl(json_t *out, const uint8_t *b, size_t n, const char *field, const char *what,
                   char *eb, size_t en) {
  X509_CRL *crl = NULL;
  if (b) {
    const unsigned char *p = b;
    crl = d2i_X509_CRL(NULL, &p, (long)n);
    if (!crl) {
      BIO *bio = BIO_new_mem_buf(b, (int)n);
      crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
      BIO_free(bio);
    }
  }
  unsigned char *der = NULL;
  int dl = crl ? i2d_X509_CRL(crl, &der) : -1;
  char *hex = dl > 0 ? malloc(2 * (size_t)dl + 1) : NULL;
  int rc = -1;
  if (hex) {
    sh_hex_encode(der, (size_t)dl, hex);
    json_object_set_new(out, field, json_string(hex));
    rc = 0;
  } else {
    snprintf(eb, en, "collateral: %s missing or not a CRL", what);
  }
  free(hex);
  OPENSSL_free(der);
  X509_CRL_free(crl);
  ERR_clear_error();
  return rc;
}

int sh_attest__dcap_collateral_from_pcs(const sh_dcap_pcs *p, uint8_t **out, size_t *len, char *eb,
                                        size_t en) {
  *out = NULL;
  *len = 0;
  json_t *o = json_object();
  if (!o ||
      add_signed(o, p->tcb, p->tcb_len, p->tcb_chain, p->tcb_chain_len, "tcbInfo", "tcb_info",
                 "tcbinfo.json", eb, en) < 0 ||
      add_signed(o, p->qe, p->qe_len, p->qe_chain, p->qe_chain_len, "enclaveIdentity",
                 "qe_identity", "qeidentity.json", eb, en) < 0 ||
      add_crl(o, p->root_crl, p->root_crl_len, "root_ca_crl", "rootcrl.der", eb, en) < 0 ||
      add_crl(o, p->pck_crl, p->pck_crl_len, "pck_crl", "pckcrl.der", eb, en) < 0 ||
      (p->pck_crl_chain &&
       json_object_set_new(o, "pck_crl_issuer_chain", json_string(p->pck_crl_chain)) < 0)) {
    json_decref(o);
    return -1;
  }
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (!s) {
    snprintf(eb, en, "collateral: out of memory");
    return -1;
  }
  *out = (uint8_t *)s;
  *len = strlen(s);
  return 0;
}

int sh_attest_collateral_read(const char *path, uint8_t **out, size_t *len, char *eb, size_t en) {
  struct stat st;
  *out = NULL;
  *len = 0;
  if (stat(path, &st) < 0) {
    snprintf(eb, en, "collateral: %s: %s", path, strerror(errno));
    return -1;
  }
  if (!S_ISDIR(st.st_mode)) {
    size_t n = 0;
    char *b = slurp(path[0] == '/' ? "" : ".", path, &n);
    if (!b) {
      snprintf(eb, en, "collateral: cannot read %s", path);
      return -1;
    }
    *out = (uint8_t *)b;
    *len = n;
    return 0;
  }
  static const char *const names[6] = {"tcbinfo.json",    "tcbinfo-issuer-chain.pem",
                                       "qeidentity.json", "qeidentity-issuer-chain.pem",
                                       "rootcrl.der",     "pckcrl.der"};
  char *b[6];
  size_t n[6] = {0};
  for (int i = 0; i < 6; i++)
    b[i] = slurp(path, names[i], &n[i]);
  sh_dcap_pcs p = {b[0],
                   n[0],
                   b[1],
                   n[1],
                   b[2],
                   n[2],
                   b[3],
                   n[3],
                   (const uint8_t *)b[4],
                   n[4],
                   (const uint8_t *)b[5],
                   n[5],
                   NULL};
  int rc = sh_attest__dcap_collateral_from_pcs(&p, out, len, eb, en);
  for (int i = 0; i < 6; i++)
    free(b[i]);
  if (rc < 0 && en) { /* name the directory the file was looked for in */
    size_t l = strlen(eb);
    snprintf(eb + l, en - l, " (in %.150s)", path);
  }
  return rc;
}
