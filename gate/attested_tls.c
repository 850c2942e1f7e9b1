/*
 * gate/attested_tls.c — --tls-attested (docs/protocol.md §4): a TLS key made inside the TEE
 * at start-up and a self-signed certificate that carries the TEE's evidence for that key.
 *
 * Why in gate/: the gate owns the server's own attestation (--tee and its settings are
 * sh_gate_config's, the attestation endpoint lives here too); server/ only learns "a key and
 * a certificate from memory, re-issued every S seconds" (sh_config.ssl_key/ssl_issue), and
 * attest/ only produces evidence for a 64-byte D.  cli/serve.c wires the two together.
 *
 * The certificate (X.509 v3, self-signed with the key, ECDSA P-256 / SHA-256):
 *   serial      16 random bytes (positive), so every re-issue is a new certificate;
 *   subject     CN=shield attested TLS (issuer the same);
 *   validity    notBefore = issue time, notAfter = issue time + ttl + SH_GATE_TLS_MARGIN: the
 *               supervisor re-issues every ttl seconds, so a certificate outlives its
 *               successor's arrival by the margin (clients connected just before the swap);
 *   extensions  basicConstraints CA:FALSE, keyUsage digitalSignature, extKeyUsage serverAuth,
 *               subjectKeyIdentifier, and 2.23.133.5.4.9 (the TCG's conceptual message
 *               wrapper), non-critical, whose extnValue OCTET STRING holds the CBOR array
 *                 ["application/vnd.shield.evidence+cbor",
 *                  bstr(CBOR {1: tee_type text, 2: evidence bstr, 3: binding bstr,
 *                             4: issued_at uint})]
 *               with binding = §4's binding CBOR {1: SHA-256 of this certificate's SPKI,
 *               2: null, 3: 1} and the evidence bound to D(n = 32 zero bytes, k = binding)
 *               (§1.2).  All CBOR is deterministic (RFC 8949 §4.2.1: definite lengths,
 *               shortest integers, map keys in order).
 * The evidence is made for the key, not for the certificate (which is signed after it), so
 * one piece of evidence proves the key; issued_at dates it.  A zero nonce means the
 * certificate proves the key, not freshness: a client wanting a fresh proof asks the
 * attestation endpoint over the same connection (§4).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cbor.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "attest.h"
#include "gate.h"

#define MEDIA_TYPE "application/vnd.shield.evidence+cbor"
#define TTL_DEFAULT 3600

struct sh_gate_attested_tls {
  sh_attest_provider *provider;
  EVP_PKEY *key;
  uint8_t binding[64]; /* §4 binding CBOR: 43 bytes */
  size_t binding_len;
  int64_t ttl;
};

static int fail_openssl(sh_error *err, const char *what) {
  unsigned long e = ERR_peek_last_error();
  const char *why = e ? ERR_reason_error_string(e) : NULL;
  ERR_clear_error();
  return sh_error_set(err, SH_EINVAL, "--tls-attested: %s%s%s", what, why ? ": " : "",
                      why ? why : "");
}

int sh_gate_attested_tls_ttl(const sh_gate_config *gc, int64_t *ttl, sh_error *err) {
  const char *v = gc->tls_attested_ttl;
  *ttl = TTL_DEFAULT;
  if (!v) return 0;
  char *end = NULL;
  errno = 0;
  long long n = (*v >= '0' && *v <= '9') ? strtoll(v, &end, 10) : -1;
  /* The evidence inside must outlive the certificate: Nitro's attestation certificates and
   * the simulated TEE's last 3 hours, the certificate ttl + margin. */
  if (n < 1 || errno || *end || n > SH_GATE_TLS_TTL_MAX)
    return sh_error_set(err, SH_EINVAL,
                        "--tls-attested-ttl: '%s' is not a whole number of seconds in 1-%d (the "
                        "certificate lives S + %d s, the evidence in it 3 hours on nitro and "
                        "simulated)",
                        v, SH_GATE_TLS_TTL_MAX, SH_GATE_TLS_MARGIN);
  *ttl = n;
  return 0;
}

/* ---- deterministic CBOR (RFC 8949 §4.2.1) with libcbor ---- */

/* libcbor encodes an item in the width it was built with: pick the shortest for v. */
static cbor_item_t *cbor_uint(uint64_t v) {
  if (v <= UINT8_MAX) return cbor_build_uint8((uint8_t)v);
  if (v <= UINT16_MAX) return cbor_build_uint16((uint16_t)v);
  if (v <= UINT32_MAX) return cbor_build_uint32((uint32_t)v);
  return cbor_build_uint64(v);
}

/* Adds key -> value to map, taking value (NULL: out of memory, reported by the caller). */
static int map_put(cbor_item_t *map, uint64_t key, cbor_item_t *value) {
  cbor_item_t *k = cbor_uint(key);
  int ok = k && value && cbor_map_add(map, (struct cbor_pair){k, value});
  if (k) cbor_decref(&k);
  if (value) cbor_decref(&value);
  return ok ? 0 : -1;
}

/* Serialises item (and frees it); *out malloc'd.  0 or -1 (out of memory). */
static int cbor_take(cbor_item_t *item, uint8_t **out, size_t *len) {
  size_t cap = 0;
  *out = NULL;
  *len = item ? cbor_serialize_alloc(item, out, &cap) : 0;
  if (item) cbor_decref(&item);
  return *len ? 0 : -1;
}

/* §4 binding CBOR {1: spki_sha256, 2: null, 3: 1}. */
static int binding_cbor(const uint8_t spki_sha256[32], uint8_t *out, size_t cap, size_t *len) {
  cbor_item_t *m = cbor_new_definite_map(3);
  uint8_t *buf = NULL;
  if (!m || map_put(m, 1, cbor_build_bytestring(spki_sha256, 32)) < 0 ||
      map_put(m, 2, cbor_new_null()) < 0 || map_put(m, 3, cbor_uint(1)) < 0) {
    if (m) cbor_decref(&m);
    return -1;
  }
  if (cbor_take(m, &buf, len) < 0 || *len > cap) {
    free(buf);
    return -1;
  }
  memcpy(out, buf, *len);
  free(buf);
  return 0;
}

int sh_gate_attested_tls_extension(const char *tee_name, const uint8_t *evidence,
                                   size_t evidence_len, const uint8_t *binding, size_t binding_len,
                                   int64_t issued_at, uint8_t **out, size_t *out_len) {
  *out = NULL;
  *out_len = 0;
  if (issued_at < 0) return -1;
  cbor_item_t *m = cbor_new_definite_map(4);
  uint8_t *inner = NULL;
  size_t inner_len = 0;
  if (!m || map_put(m, 1, cbor_build_string(tee_name)) < 0 ||
      map_put(m, 2, cbor_build_bytestring(evidence, evidence_len)) < 0 ||
      map_put(m, 3, cbor_build_bytestring(binding, binding_len)) < 0 ||
      map_put(m, 4, cbor_uint((uint64_t)issued_at)) < 0) {
    if (m) cbor_decref(&m);
    return -1;
  }
  if (cbor_take(m, &inner, &inner_len) < 0) return -1;
  cbor_item_t *a = cbor_new_definite_array(2);
  cbor_item_t *mt = cbor_build_string(MEDIA_TYPE);
  cbor_item_t *bs = cbor_build_bytestring(inner, inner_len);
  free(inner);
  int ok = a && mt && bs && cbor_array_push(a, mt) && cbor_array_push(a, bs);
  if (mt) cbor_decref(&mt);
  if (bs) cbor_decref(&bs);
  if (!ok) {
    if (a) cbor_decref(&a);
    return -1;
  }
  return cbor_take(a, out, out_len);
}

/* ---- the issuer ---- */

int sh_gate_attested_tls_new(const sh_gate_config *gc, int64_t now, sh_gate_attested_tls **out,
                             sh_error *err) {
  *out = NULL;
  if (!gc->tee)
    return sh_error_set(err, SH_EINVAL,
                        "--tls-attested needs --tee (the TEE whose evidence the "
                        "certificate carries)");
  sh_gate_attested_tls *a = calloc(1, sizeof *a);
  if (!a) return sh_error_set(err, SH_ENOMEM, "out of memory");
  if (sh_gate_attested_tls_ttl(gc, &a->ttl, err) < 0) goto fail;
  sh_attest_provider_config pc = {
      .tee = strcmp(gc->tee, "auto") == 0 ? SH_ATTEST_TEE_AUTO : sh_tee_from_name(gc->tee),
      .now = now,
      .gcp_audience = gc->tee_gcp_audience,
  };
  char why[256] = "";
  if (sh_attest_provider_open(&pc, &a->provider, why, sizeof why) < 0) {
    sh_error_set(err, SH_EINVAL, "--tls-attested: --tee %s: %s", gc->tee, why);
    goto fail;
  }
  /* The key exists only in this process's memory (and its forked workers'). */
  a->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  if (!a->key) {
    fail_openssl(err, "cannot generate the P-256 key");
    goto fail;
  }
  unsigned char *spki = NULL;
  int spki_len = i2d_PUBKEY(a->key, &spki);
  uint8_t digest[32];
  int ok = spki_len > 0 && sh_attest_sha256(spki, (size_t)spki_len, digest) == 0;
  OPENSSL_free(spki);
  if (!ok || binding_cbor(digest, a->binding, sizeof a->binding, &a->binding_len) < 0) {
    fail_openssl(err, "cannot encode the key's binding");
    goto fail;
  }
  *out = a;
  return 0;
fail:
  sh_gate_attested_tls_free(a);
  return err ? err->code : SH_EINVAL;
}

struct evp_pkey_st *sh_gate_attested_tls_key(const sh_gate_attested_tls *a) {
  return a->key;
}

int64_t sh_gate_attested_tls_every(const sh_gate_attested_tls *a) {
  return a->ttl;
}

const char *sh_gate_attested_tls_tee(const sh_gate_attested_tls *a) {
  return sh_tee_name(sh_attest_provider_tee(a->provider));
}

static int add_ext(X509 *x, int nid, const char *value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
  int ok = e && X509_add_ext(x, e, -1) == 1;
  X509_EXTENSION_free(e);
  return ok ? 0 : -1;
}

/* The evidence extension (see the top of this file), non-critical. */
static int add_evidence_ext(X509 *x, const uint8_t *cbor, size_t len) {
  ASN1_OBJECT *oid = OBJ_txt2obj(SH_GATE_TLS_EVIDENCE_OID, 1);
  ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
  X509_EXTENSION *e = NULL;
  int ok = oid && os && len <= INT32_MAX && ASN1_OCTET_STRING_set(os, cbor, (int)len) == 1 &&
           (e = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, os)) != NULL &&
           X509_add_ext(x, e, -1) == 1;
  X509_EXTENSION_free(e);
  ASN1_OCTET_STRING_free(os);
  ASN1_OBJECT_free(oid);
  return ok ? 0 : -1;
}

int sh_gate_attested_tls_issue_at(sh_gate_attested_tls *a, int64_t now, char **pem, size_t *pem_len,
                                  sh_error *err) {
  *pem = NULL;
  *pem_len = 0;
  static const uint8_t zero_nonce[32]; /* §4: the certificate's evidence has n = 0^32 */
  uint8_t D[64];
  uint8_t *evidence = NULL, *ext = NULL;
  size_t evidence_len = 0, ext_len = 0;
  X509 *x = NULL;
  BIGNUM *serial = NULL;
  BIO *mem = NULL;
  int rc = SH_EINVAL;
  if (sh_attest_binding_digest(zero_nonce, sizeof zero_nonce, a->binding, a->binding_len, D) < 0) {
    rc = sh_error_set(err, SH_EINVAL, "--tls-attested: cannot compute the binding digest");
    goto done;
  }
  char why[256] = "";
  if (sh_attest_provider_evidence(a->provider, D, zero_nonce, sizeof zero_nonce, a->binding,
                                  a->binding_len, now, &evidence, &evidence_len, why,
                                  sizeof why) < 0) {
    rc = sh_error_set(err, SH_ESYS, "--tls-attested: the TEE (%s) gave no evidence: %s",
                      sh_gate_attested_tls_tee(a), why);
    goto done;
  }
  if (sh_gate_attested_tls_extension(sh_gate_attested_tls_tee(a), evidence, evidence_len,
                                     a->binding, a->binding_len, now, &ext, &ext_len) < 0) {
    rc = sh_error_set(err, SH_ENOMEM, "--tls-attested: out of memory encoding the evidence");
    goto done;
  }
  x = X509_new();
  serial = BN_new();
  /* RFC 5280 §4.1.2.2: a positive serial of at most 20 octets; 127 random bits */
  if (!x || !serial || BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) ||
      X509_set_version(x, X509_VERSION_3) != 1 ||
      !X509_time_adj_ex(X509_getm_notBefore(x), 0, 0, &(time_t){(time_t)now}) ||
      !X509_time_adj_ex(X509_getm_notAfter(x), 0, (long)(a->ttl + SH_GATE_TLS_MARGIN),
                        &(time_t){(time_t)now}) ||
      X509_set_pubkey(x, a->key) != 1) {
    fail_openssl(err, "cannot build the certificate");
    goto done;
  }
  X509_NAME *name = X509_get_subject_name(x);
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 (const unsigned char *)"shield attested TLS", -1, -1, 0) != 1 ||
      X509_set_issuer_name(x, name) != 1 ||
      add_ext(x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
      add_ext(x, NID_key_usage, "critical,digitalSignature") < 0 ||
      add_ext(x, NID_ext_key_usage, "serverAuth") < 0 ||
      add_ext(x, NID_subject_key_identifier, "hash") < 0 || add_evidence_ext(x, ext, ext_len) < 0 ||
      X509_sign(x, a->key, EVP_sha256()) <= 0) {
    fail_openssl(err, "cannot build the certificate");
    goto done;
  }
  mem = BIO_new(BIO_s_mem());
  char *p = NULL;
  long n = 0;
  if (!mem || PEM_write_bio_X509(mem, x) != 1 || (n = BIO_get_mem_data(mem, &p)) <= 0 ||
      !(*pem = malloc((size_t)n))) {
    fail_openssl(err, "cannot encode the certificate");
    goto done;
  }
  memcpy(*pem, p, (size_t)n);
  *pem_len = (size_t)n;
  rc = 0;
done:
  BIO_free(mem);
  BN_free(serial);
  X509_free(x);
  free(ext);
  free(evidence);
  ERR_clear_error();
  return rc;
}

int sh_gate_attested_tls_issue(void *arg, char **pem, size_t *pem_len, sh_error *err) {
  return sh_gate_attested_tls_issue_at(arg, (int64_t)time(NULL), pem, pem_len, err);
}

void sh_gate_attested_tls_free(sh_gate_attested_tls *a) {
  if (!a) return;
  sh_attest_provider_free(a->provider);
  EVP_PKEY_free(a->key);
  free(a);
}
