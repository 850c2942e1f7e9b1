/* attest/nitro.c — AWS Nitro Enclaves attestation documents.
 *
 * Format: COSE_Sign1 (RFC 9052 §4.2), tagged (18) or untagged; protected header {1: -35}
 * (ES384) only; unprotected header empty; payload = the attestation document map of the AWS
 * Nitro Enclaves NSM API ("Verifying the root of trust"): module_id, digest, timestamp (ms),
 * pcrs, certificate, cabundle, public_key?, user_data?, nonce? (optional fields may be CBOR
 * null, which means absent).  Strict: definite lengths only (cbor_scan.c), exact types and
 * sizes, no duplicate or unknown keys, no trailing bytes.
 * Chain: certificate <- cabundle[n-1] <- ... <- cabundle[0], cabundle[0] = the pinned AWS Nitro
 * root G1; the signature is ECDSA P-384/SHA-384 over Sig_structure ["Signature1", protected
 * bytes as received, h'', payload], raw r‖s (48 + 48 bytes).
 */
#include "internal.h"

#include <cbor.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <string.h>

/* SHA-256 of the DER of CN=aws.nitro-enclaves (AWS Nitro Enclaves Root G1, P-384). */
static const uint8_t aws_nitro_root_g1[1][32] = {{0x64, 0x1a, 0x03, 0x21, 0xa3, 0xe2, 0x44, 0xef,
                                                  0xe4, 0x56, 0x46, 0x31, 0x95, 0xd6, 0x06, 0x31,
                                                  0x7e, 0xd7, 0xcd, 0xcc, 0x3c, 0x17, 0x56, 0xe0,
                                                  0x98, 0x93, 0xf3, 0xc6, 0x8f, 0x79, 0xbb, 0x5b}};

#define NITRO_SIG_LEN 96
#define NITRO_PCR_LEN 48
#define NITRO_MAX_CERT 4096
#define NITRO_MAX_CABUNDLE 8

/* Sig_structure pieces: hdr1 ‖ protected ‖ hdr2 ‖ payload.  Returns 0 or -1 (not COSE). */
typedef struct nitro_parts {
  uint8_t hdr1[1 + 11 + 9], hdr2[1 + 9];
  size_t hdr1_len, hdr2_len;
  sh_iovec prot, payload, sig;
} nitro_parts;

/* COSE_Sign1 tag 18 (RFC 9052 §4.2) is the single byte 0xD2.  libcbor 0.8's decoders refuse
 * tags 6-20 ("unassigned" when it was written), so the tag is taken off here and the array
 * decoded on its own.  Any other tag, or a non-minimal encoding of 18, stays and is refused. */
static void untag(const uint8_t **ev, size_t *len) {
  if (*len > 1 && (*ev)[0] == 0xD2) {
    (*ev)++;
    (*len)--;
  }
}

static int nitro_locate(const uint8_t *ev, size_t len, nitro_parts *np) {
  sh_cbor_top top;
  untag(&ev, &len);
  if (len > SH_NITRO_MAX_EVIDENCE || sh_attest__cbor_scan(ev, len, &top) < 0) return -1;
  if (top.tagged || top.nitems != 4 || !top.is_bstr[0] || !top.is_bstr[2] || !top.is_bstr[3])
    return -1;
  np->prot = top.bstr[0];
  np->payload = top.bstr[2];
  np->sig = top.bstr[3];
  static const uint8_t ctx[] = {0x84, 0x6a, 'S', 'i', 'g', 'n', 'a', 't', 'u', 'r', 'e', '1'};
  memcpy(np->hdr1, ctx, sizeof ctx);
  size_t n = cbor_encode_bytestring_start(np->prot.len, np->hdr1 + sizeof ctx,
                                          sizeof np->hdr1 - sizeof ctx);
  np->hdr1_len = sizeof ctx + n;
  np->hdr2[0] = 0x40; /* external_aad = h'' */
  size_t m = cbor_encode_bytestring_start(np->payload.len, np->hdr2 + 1, sizeof np->hdr2 - 1);
  np->hdr2_len = 1 + m;
  return (n && m) ? 0 : -1;
}

static int feed_sig_structure(EVP_MD_CTX *md, const nitro_parts *np, int verify) {
  int (*upd)(EVP_MD_CTX *, const void *, size_t) =
      verify ? EVP_DigestVerifyUpdate : EVP_DigestUpdate;
  return upd(md, np->hdr1, np->hdr1_len) && upd(md, np->prot.ptr, np->prot.len) &&
         upd(md, np->hdr2, np->hdr2_len) && upd(md, np->payload.ptr, np->payload.len);
}

int sh_attest__nitro_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_iovec *sig) {
  nitro_parts np;
  if (nitro_locate(ev, len, &np) < 0 || !feed_sig_structure(md, &np, 0)) return -1;
  *sig = np.sig;
  return 0;
}

static cbor_item_t *load_strict(const uint8_t *p, size_t len) {
  sh_cbor_top top;
  struct cbor_load_result res;
  if (sh_attest__cbor_scan(p, len, &top) < 0) return NULL;
  cbor_item_t *it = cbor_load(p, len, &res);
  if (it && (res.error.code != CBOR_ERR_NONE || res.read != len)) {
    cbor_decref(&it);
    return NULL;
  }
  return it;
}

static int is_bstr(const cbor_item_t *i) {
  return cbor_isa_bytestring(i) && cbor_bytestring_is_definite(i);
}

static int text_eq(const cbor_item_t *i, const char *s) {
  size_t n = strlen(s);
  return cbor_isa_string(i) && cbor_string_is_definite(i) && cbor_string_length(i) == n &&
         !memcmp(cbor_string_handle(i), s, n);
}

/* Protected header: exactly {1: -35} (alg ES384), or {1: -35, 4: h'shield-simulated'} for
 * the simulated TEE (docs/protocol.md §1.7, *sim set); anything else is refused. */
static int check_protected(sh_vctx *v, const sh_iovec *prot, int *sim) {
  cbor_item_t *h = load_strict(prot->ptr, prot->len);
  *sim = 0;
  if (h && cbor_isa_map(h) && cbor_map_size(h) == 2) {
    struct cbor_pair *pr = cbor_map_handle(h);
    size_t kl = strlen(sh_attest__simulated_kid);
    int kid = cbor_isa_uint(pr[1].key) && cbor_get_int(pr[1].key) == 4 && is_bstr(pr[1].value) &&
              cbor_bytestring_length(pr[1].value) == kl &&
              !memcmp(cbor_bytestring_handle(pr[1].value), sh_attest__simulated_kid, kl);
    int alg = cbor_isa_uint(pr[0].key) && cbor_get_int(pr[0].key) == 1 &&
              cbor_isa_negint(pr[0].value) && cbor_get_int(pr[0].value) == 34;
    cbor_decref(&h);
    if (!kid || !alg)
      return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "COSE protected header is not {1: -35}");
    *sim = 1;
    return 0;
  }
  int ok = h && cbor_isa_map(h) && cbor_map_size(h) == 1;
  if (ok) {
    struct cbor_pair *pr = cbor_map_handle(h);
    ok = cbor_isa_uint(pr[0].key) && cbor_get_int(pr[0].key) == 1 && cbor_isa_negint(pr[0].value) &&
         cbor_get_int(pr[0].value) == 34; /* -1 - 34 */
    if (!ok && cbor_isa_uint(pr[0].key) && cbor_get_int(pr[0].key) == 1) {
      cbor_decref(&h);
      return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "COSE alg is not ES384");
    }
  }
  if (h) cbor_decref(&h);
  return ok ? 0
            : sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "COSE protected header is not {1: -35}");
}

enum { K_MODULE, K_DIGEST, K_TS, K_PCRS, K_CERT, K_CAB, K_PK, K_UD, K_NONCE, K_N };
static const char *const keys[K_N] = {"module_id", "digest",     "timestamp", "pcrs", "certificate",
                                      "cabundle",  "public_key", "user_data", "nonce"};

typedef struct nitro_doc {
  const cbor_item_t *f[K_N];
  const uint8_t *pcr[32];
  int npcr;
  uint64_t ts_ms;
} nitro_doc;

static int parse_payload(sh_vctx *v, const cbor_item_t *m, nitro_doc *d) {
  sh_attest_result *r = v->r;
  if (!cbor_isa_map(m) || !cbor_map_is_definite(m))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload is not a map");
  struct cbor_pair *p = cbor_map_handle(m);
  for (size_t i = 0; i < cbor_map_size(m); i++) {
    int k = -1;
    for (int j = 0; j < K_N && k < 0; j++)
      if (text_eq(p[i].key, keys[j])) k = j;
    if (k < 0) return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: unknown or non-text key");
    if (d->f[k])
      return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: duplicate key %s", keys[k]);
    d->f[k] = p[i].value;
  }
  for (int j = 0; j <= K_CAB; j++)
    if (!d->f[j]) return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: missing %s", keys[j]);
  for (int j = K_PK; j < K_N; j++) {
    const cbor_item_t *x = d->f[j];
    size_t max = j == K_PK ? 1024 : 512; /* NSM API limits */
    if (x && cbor_is_null(x))
      d->f[j] = NULL;
    else if (x && (!is_bstr(x) || cbor_bytestring_length(x) > max))
      return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: bad %s", keys[j]);
  }
  const cbor_item_t *mod = d->f[K_MODULE];
  if (!cbor_isa_string(mod) || !cbor_string_is_definite(mod) || !cbor_string_length(mod) ||
      cbor_string_length(mod) > 256)
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: bad module_id");
  if (!text_eq(d->f[K_DIGEST], "SHA384"))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: digest is not SHA384");
  if (!cbor_isa_uint(d->f[K_TS]) || cbor_get_int(d->f[K_TS]) == 0)
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: bad timestamp");
  d->ts_ms = cbor_get_int(d->f[K_TS]);
  const cbor_item_t *pc = d->f[K_PCRS];
  if (!cbor_isa_map(pc) || cbor_map_size(pc) < 1 || cbor_map_size(pc) > 32)
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: bad pcrs");
  struct cbor_pair *pp = cbor_map_handle(pc);
  for (size_t i = 0; i < cbor_map_size(pc); i++) {
    if (!cbor_isa_uint(pp[i].key) || cbor_get_int(pp[i].key) >= 32 || !is_bstr(pp[i].value) ||
        cbor_bytestring_length(pp[i].value) != NITRO_PCR_LEN)
      return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: bad pcr entry");
    unsigned idx = (unsigned)cbor_get_int(pp[i].key);
    if (d->pcr[idx])
      return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: duplicate pcr %u", idx);
    d->pcr[idx] = cbor_bytestring_handle(pp[i].value);
    d->npcr++;
  }
  if (!d->pcr[0]) return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: no PCR0");
  const cbor_item_t *c = d->f[K_CERT], *cab = d->f[K_CAB];
  if (!is_bstr(c) || !cbor_bytestring_length(c) || cbor_bytestring_length(c) > NITRO_MAX_CERT)
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: bad certificate");
  if (!cbor_isa_array(cab) || cbor_array_size(cab) < 1 || cbor_array_size(cab) > NITRO_MAX_CABUNDLE)
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: bad cabundle");
  for (size_t i = 0; i < cbor_array_size(cab); i++) {
    const cbor_item_t *e = cbor_array_handle(cab)[i];
    if (!is_bstr(e) || !cbor_bytestring_length(e) || cbor_bytestring_length(e) > NITRO_MAX_CERT)
      return sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload: bad cabundle entry");
  }
  return 0;
}

static int fill_result(sh_vctx *v, nitro_doc *d) {
  sh_attest_result *r = v->r;
  char name[8];
  for (int i = 0; i < 32; i++) {
    if (!d->pcr[i]) continue;
    snprintf(name, sizeof name, "PCR%d", i);
    sh_attest__json_hex(r->measurements, name, d->pcr[i], NITRO_PCR_LEN);
  }
  static const uint8_t zero[NITRO_PCR_LEN];
  r->debug = !memcmp(d->pcr[0], zero, NITRO_PCR_LEN); /* debug enclaves report PCR0 = 0 */
  const cbor_item_t *mod = d->f[K_MODULE];
  json_object_set_new(r->claims, "module_id",
                      json_stringn((const char *)cbor_string_handle(mod), cbor_string_length(mod)));
  json_object_set_new(r->claims, "digest", json_string("SHA384"));
  json_object_set_new(r->claims, "timestamp", json_integer((json_int_t)d->ts_ms));
  const cbor_item_t *f;
  if ((f = d->f[K_PK]) &&
      sh_attest__set_bytes(&r->public_key, &r->public_key_len, cbor_bytestring_handle(f),
                           cbor_bytestring_length(f)))
    return -1;
  if ((f = d->f[K_UD]) &&
      sh_attest__set_bytes(&r->user_data, &r->user_data_len, cbor_bytestring_handle(f),
                           cbor_bytestring_length(f)))
    return -1;
  if ((f = d->f[K_NONCE]) &&
      sh_attest__set_bytes(&r->nonce, &r->nonce_len, cbor_bytestring_handle(f),
                           cbor_bytestring_length(f)))
    return -1;
  return 0;
}

/* docs/protocol.md §1.2: nonce alone -> the document's nonce equals it; nonce + key -> also
 * user_data = D(n, k). */
static int check_binding(sh_vctx *v) {
  const sh_attest_options *o = v->o;
  sh_attest_result *r = v->r;
  if (!o->nonce) return 0;
  if (!r->nonce || r->nonce_len != o->nonce_len || CRYPTO_memcmp(r->nonce, o->nonce, o->nonce_len))
    return sh_attest__fail(r, SH_ATTEST_BINDING_MISMATCH,
                           "document nonce differs from the presented nonce");
  if (o->public_key) {
    uint8_t D[64];
    if (sh_attest__binding_of(o, D) < 0)
      return sh_attest__fail(r, SH_ATTEST_BINDING_MISMATCH, "nonce or key too long");
    if (!r->user_data || r->user_data_len != 64 || CRYPTO_memcmp(r->user_data, D, 64))
      return sh_attest__fail(r, SH_ATTEST_BINDING_MISMATCH, "user_data is not the binding digest");
  }
  return 0;
}

static X509 *der_cert(const cbor_item_t *b) {
  return sh_attest__x509_from_der(cbor_bytestring_handle(b), cbor_bytestring_length(b));
}

/* The "nitro" policy section (also the simulated TEE's) on the result: debug, PCR allow-lists
 * against measurements["PCR<i>"]. */
int sh_attest__nitro_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug) {
  const sh_policy_tee *t = sh_attest__policy_for(p, SH_TEE_NITRO);
  if (r->debug && !sh_attest__allow_debug(p, t->allow_debug, allow_debug))
    return sh_attest__fail(r, SH_ATTEST_DEBUG_NOT_ALLOWED, "debug enclave (PCR0 is zero)");
  char name[8];
  for (int i = 0; i < 32; i++) {
    if (!t->pcrs[i].n) continue;
    snprintf(name, sizeof name, "PCR%d", i);
    if (!sh_attest__hexlist_allows_json(&t->pcrs[i], r->measurements, name))
      return sh_attest__fail(r, SH_ATTEST_MEASUREMENT_MISMATCH, "PCR%d not allowed by policy", i);
  }
  return 0;
}

static int check_policy(sh_vctx *v, const nitro_doc *d) {
  if (sh_attest__nitro_policy(v->policy, v->r, v->o->allow_debug) < 0) return -1;
  if (v->policy->freshness == SH_FRESH_TIMESTAMP) {
    int64_t ts = (int64_t)(d->ts_ms / 1000);
    if (v->o->at - ts > v->policy->max_age)
      return sh_attest__fail(v->r, SH_ATTEST_EXPIRED, "document older than the policy's max_age");
    if (ts + v->policy->max_age < v->valid_until) v->valid_until = ts + v->policy->max_age;
  }
  return 0;
}

int sh_attest__nitro_verify(sh_vctx *v, const uint8_t *ev, size_t len) {
  sh_attest_result *r = v->r;
  nitro_parts np;
  nitro_doc d;
  cbor_item_t *top = NULL, *payload = NULL;
  X509 *leaf = NULL;
  STACK_OF(X509) *untrusted = NULL, *anchors = NULL;
  EVP_MD_CTX *md = NULL;
  uint8_t *der = NULL;
  size_t der_len = 0;
  int rc = -1;
  memset(&d, 0, sizeof d);

  /* 1. size caps and structure */
  if (len > SH_NITRO_MAX_EVIDENCE) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "document larger than %u bytes", SH_NITRO_MAX_EVIDENCE);
    goto fail;
  }
  untag(&ev, &len);
  if (nitro_locate(ev, len, &np) < 0 || !(top = load_strict(ev, len))) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "not a strict COSE_Sign1");
    goto fail;
  }
  const cbor_item_t *arr = top;
  if (!cbor_isa_array(arr) || cbor_array_size(arr) != 4 ||
      !cbor_isa_map(cbor_array_handle(arr)[1]) || cbor_map_size(cbor_array_handle(arr)[1]) != 0) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "COSE_Sign1: unprotected header must be empty");
    goto fail;
  }
  if (np.sig.len != NITRO_SIG_LEN) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "signature is not 96 bytes (ES384 r||s)");
    goto fail;
  }
  int sim = 0;
  if (check_protected(v, &np.prot, &sim) < 0) goto fail;
  /* tee_type comes from the anchor, never from the declared type (docs/protocol.md §1.7) */
  r->tee = sim ? SH_TEE_SIMULATED : SH_TEE_NITRO;
  if (sim && !v->o->trust_simulated) {
    sh_attest__fail(r, SH_ATTEST_ROOT_UNTRUSTED, "simulated evidence (kid %s) is not trusted here",
                    sh_attest__simulated_kid);
    goto fail;
  }
  if (!(payload = load_strict(np.payload.ptr, np.payload.len))) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "payload is not strict CBOR");
    goto fail;
  }
  if (parse_payload(v, payload, &d) < 0) goto fail;
  if (fill_result(v, &d) < 0) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "out of memory");
    goto fail;
  }
  /* 2. binding (cheap, before any signature) */
  if (check_binding(v) < 0) goto fail;
  int64_t ts = (int64_t)(d.ts_ms / 1000);
  if (ts > v->o->at + SH_NITRO_CLOCK_SKEW) {
    sh_attest__fail(r, SH_ATTEST_NOT_YET_VALID,
                    "document timestamp is after the verification time");
    goto fail;
  }
  if (ts - SH_NITRO_CLOCK_SKEW > v->valid_from) v->valid_from = ts - SH_NITRO_CLOCK_SKEW;
  /* 3. root fingerprint: cabundle[0] must be the pinned AWS root */
  const cbor_item_t *cab = d.f[K_CAB];
  anchors = sk_X509_new_null();
  untrusted = sk_X509_new_null();
  X509 *root = der_cert(cbor_array_handle(cab)[0]);
  if (!anchors || !untrusted || !root || !sk_X509_push(anchors, root)) {
    X509_free(root);
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "cabundle[0] is not a certificate");
    goto fail;
  }
  if (sim) {
    /* the simulated kid binds the chain to this machine's dev root, and only to it */
    X509 *dev = sh_attest__simulated_anchor(v->o);
    int same = dev && X509_cmp(dev, root) == 0;
    X509_free(dev);
    if (!same) {
      sh_attest__fail(r, SH_ATTEST_ROOT_UNTRUSTED,
                      "cabundle[0] is not the local simulated dev root");
      goto fail;
    }
  } else if (!sh_attest__x509_is_pinned(root, aws_nitro_root_g1, 1) &&
             !sh_attest__x509_is_extra_root(root, v->o)) {
    sh_attest__fail(r, SH_ATTEST_ROOT_UNTRUSTED, "cabundle[0] is not the AWS Nitro root");
    goto fail;
  }
  for (size_t i = 1; i < cbor_array_size(cab); i++) {
    X509 *x = der_cert(cbor_array_handle(cab)[i]);
    if (!x || !sk_X509_push(untrusted, x)) {
      X509_free(x);
      sh_attest__fail(r, SH_ATTEST_MALFORMED, "cabundle[%zu] is not a certificate", i);
      goto fail;
    }
  }
  if (!(leaf = der_cert(d.f[K_CERT]))) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "certificate is not DER X.509");
    goto fail;
  }
  /* 4. signatures: the document (leaf key, P-384 only), then the chain */
  EVP_PKEY *pk = X509_get0_pubkey(leaf);
  if (!sh_attest__is_p384(pk)) {
    sh_attest__fail(r, SH_ATTEST_CHAIN_INVALID, "leaf key is not P-384");
    goto fail;
  }
  if (!(X509_get_extension_flags(leaf) & EXFLAG_KUSAGE) ||
      !(X509_get_key_usage(leaf) & KU_DIGITAL_SIGNATURE)) {
    sh_attest__fail(r, SH_ATTEST_CHAIN_INVALID, "leaf lacks keyUsage digitalSignature");
    goto fail;
  }
  if (sh_attest__ecdsa_raw_to_der(np.sig.ptr, np.sig.ptr + 48, 48, 0, &der, &der_len) < 0 ||
      !(md = EVP_MD_CTX_new()) || EVP_DigestVerifyInit(md, NULL, EVP_sha384(), NULL, pk) != 1 ||
      !feed_sig_structure(md, &np, 1) || EVP_DigestVerifyFinal(md, der, der_len) != 1) {
    sh_attest__fail(r, SH_ATTEST_SIGNATURE_INVALID, "COSE signature does not verify");
    goto fail;
  }
  if (sh_attest__x509_verify_chain(v, leaf, untrusted, anchors, NULL, NULL) < 0) goto fail;
  /* 5. policy */
  if (check_policy(v, &d) < 0) goto fail;
  rc = 0;
fail:
  OPENSSL_free(der);
  EVP_MD_CTX_free(md);
  X509_free(leaf);
  sk_X509_pop_free(untrusted, X509_free);
  sk_X509_pop_free(anchors, X509_free);
  if (payload) cbor_decref(&payload);
  if (top) cbor_decref(&top);
  ERR_clear_error();
  return rc;
}
