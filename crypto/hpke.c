/* crypto/hpke.c — HPKE base mode (RFC 9180) with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
 * AES-GCM, composed from OpenSSL 3.0 EVP: X25519 (EVP_PKEY_derive), HKDF (EVP_KDF "HKDF" in
 * EXTRACT_ONLY / EXPAND_ONLY modes) and AES-GCM (EVP_CIPHER).  OpenSSL 3.2 has OSSL_HPKE_*,
 * Debian 12 ships 3.0, hence this file; known answers in tests/c/crypto/test_crypto.c (RFC 9180
 * A.1) and round trips against the Python `cryptography` package's HPKE in tests/py.
 */
#include "crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <string.h>

#define NH 32 /* HKDF-SHA256 output */

/* "HPKE-v1" ‖ suite_id ‖ label ‖ data into buf[at..cap): the labelled input of §4's
 * LabeledExtract and LabeledExpand.  Returns the end offset, or 0 when it does not fit. */
static size_t labeled_input(uint8_t *buf, size_t cap, size_t at, const uint8_t *suite, size_t slen,
                            const char *label, const uint8_t *data, size_t dlen) {
  size_t ll = strlen(label);
  if (at + 7 + slen + ll + dlen > cap) return 0;
  memcpy(buf + at, "HPKE-v1", 7);
  at += 7;
  memcpy(buf + at, suite, slen);
  at += slen;
  memcpy(buf + at, label, ll);
  at += ll;
  if (dlen) memcpy(buf + at, data, dlen);
  return at + dlen;
}

/* Extract(salt, ikm) with ikm = "HPKE-v1" ‖ suite_id ‖ label ‖ ikm (§4 LabeledExtract). */
static int labeled_extract(const uint8_t *suite, size_t slen, const uint8_t *salt, size_t salt_len,
                           const char *label, const uint8_t *ikm, size_t ikm_len, uint8_t out[NH]) {
  uint8_t buf[7 + 10 + 32 + 64];
  size_t n = labeled_input(buf, sizeof buf, 0, suite, slen, label, ikm, ikm_len);
  if (n == 0) return -1;
  EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
  EVP_KDF_CTX *c = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
  int mode = EVP_KDF_HKDF_MODE_EXTRACT_ONLY;
  static uint8_t empty[1];
  OSSL_PARAM p[] = {OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
                    OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
                    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, buf, n),
                    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                                      salt_len ? (void *)salt : empty, salt_len),
                    OSSL_PARAM_construct_end()};
  int ok = c && EVP_KDF_derive(c, out, NH, p) == 1;
  EVP_KDF_CTX_free(c);
  EVP_KDF_free(kdf);
  OPENSSL_cleanse(buf, sizeof buf);
  return ok ? 0 : -1;
}

/* Expand(prk, I2OSP(L, 2) ‖ "HPKE-v1" ‖ suite_id ‖ label ‖ info, L) (§4 LabeledExpand). */
static int labeled_expand(const uint8_t *suite, size_t slen, const uint8_t prk[NH],
                          const char *label, const uint8_t *info, size_t info_len, uint8_t *out,
                          size_t L) {
  uint8_t buf[2 + 7 + 10 + 32 + 128];
  buf[0] = (uint8_t)(L >> 8); /* I2OSP(L, 2) */
  buf[1] = (uint8_t)L;
  size_t n = labeled_input(buf, sizeof buf, 2, suite, slen, label, info, info_len);
  if (n == 0) return -1;
  EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
  EVP_KDF_CTX *c = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  OSSL_PARAM p[] = {OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
                    OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
                    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)prk, NH),
                    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, buf, n),
                    OSSL_PARAM_construct_end()};
  int ok = c && EVP_KDF_derive(c, out, L, p) == 1;
  EVP_KDF_CTX_free(c);
  EVP_KDF_free(kdf);
  return ok ? 0 : -1;
}

static int x25519_dh(const uint8_t sk[32], const uint8_t pk[32], uint8_t out[32]) {
  EVP_PKEY *a = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, 32);
  EVP_PKEY *b = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, pk, 32);
  EVP_PKEY_CTX *c = a ? EVP_PKEY_CTX_new(a, NULL) : NULL;
  size_t n = 32;
  /* OpenSSL refuses an all-zero shared secret (RFC 7748 §6.1 check), as §7.1.4 asks */
  int ok = b && c && EVP_PKEY_derive_init(c) == 1 && EVP_PKEY_derive_set_peer(c, b) == 1 &&
           EVP_PKEY_derive(c, out, &n) == 1 && n == 32;
  EVP_PKEY_CTX_free(c);
  EVP_PKEY_free(a);
  EVP_PKEY_free(b);
  return ok ? 0 : -1;
}

static int x25519_pub(const uint8_t sk[32], uint8_t pk[32]) {
  EVP_PKEY *a = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, 32);
  size_t n = 32;
  int ok = a && EVP_PKEY_get_raw_public_key(a, pk, &n) == 1 && n == 32;
  EVP_PKEY_free(a);
  return ok ? 0 : -1;
}

static int x25519_gen(uint8_t sk[32]) {
  EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
  size_t n = 32;
  int ok = k && EVP_PKEY_get_raw_private_key(k, sk, &n) == 1 && n == 32;
  EVP_PKEY_free(k);
  return ok ? 0 : -1;
}

/* §4.1 ExtractAndExpand with kem_context = enc ‖ pkRm. */
static int kem_shared_secret(const uint8_t dh[32], const uint8_t enc[32], const uint8_t pk_r[32],
                             uint8_t ss[32]) {
  static const uint8_t kem_suite[5] = {'K', 'E', 'M', 0x00, 0x20};
  uint8_t prk[NH], ctx[64];
  memcpy(ctx, enc, 32);
  memcpy(ctx + 32, pk_r, 32);
  int rc = labeled_extract(kem_suite, 5, NULL, 0, "eae_prk", dh, 32, prk) == 0 &&
                   labeled_expand(kem_suite, 5, prk, "shared_secret", ctx, 64, ss, 32) == 0
               ? 0
               : -1;
  OPENSSL_cleanse(prk, sizeof prk);
  return rc;
}

/* §5.1 KeySchedule, mode_base (psk and psk_id empty). */
static int key_schedule(uint16_t aead_id, const uint8_t ss[32], const uint8_t *info,
                        size_t info_len, uint8_t *key, size_t nk, uint8_t nonce[12]) {
  uint8_t suite[10] = {
      'H', 'P', 'K', 'E', 0x00, 0x20, 0x00, 0x01, (uint8_t)(aead_id >> 8), (uint8_t)aead_id};
  uint8_t ctx[1 + 2 * NH], secret[NH];
  ctx[0] = 0x00; /* mode_base */
  int ok = labeled_extract(suite, 10, NULL, 0, "psk_id_hash", NULL, 0, ctx + 1) == 0 &&
           labeled_extract(suite, 10, NULL, 0, "info_hash", info, info_len, ctx + 1 + NH) == 0 &&
           labeled_extract(suite, 10, ss, 32, "secret", NULL, 0, secret) == 0 &&
           labeled_expand(suite, 10, secret, "key", ctx, sizeof ctx, key, nk) == 0 &&
           labeled_expand(suite, 10, secret, "base_nonce", ctx, sizeof ctx, nonce, 12) == 0;
  OPENSSL_cleanse(secret, sizeof secret);
  return ok ? 0 : -1;
}

static const EVP_CIPHER *gcm(uint16_t aead_id, size_t *nk) {
  if (aead_id == SH_HPKE_AEAD_AES128GCM) {
    *nk = 16;
    return EVP_aes_128_gcm();
  }
  if (aead_id == SH_HPKE_AEAD_AES256GCM) {
    *nk = 32;
    return EVP_aes_256_gcm();
  }
  return NULL;
}

static int aead(int enc, const EVP_CIPHER *ciph, const uint8_t *key, const uint8_t nonce[12],
                const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t in_len,
                uint8_t *out) {
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  int n = 0, ok;
  size_t body = enc ? in_len : in_len - SH_HPKE_TAG_LEN;
  if (in_len > 0x7fffffff) return -1;
  ok = c && EVP_CipherInit_ex(c, ciph, NULL, NULL, NULL, enc) == 1 &&
       EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) == 1 &&
       EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) == 1 &&
       (!aad_len || EVP_CipherUpdate(c, NULL, &n, aad, (int)aad_len) == 1) &&
       (!body || EVP_CipherUpdate(c, out, &n, in, (int)body) == 1);
  if (ok && !enc)
    ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, SH_HPKE_TAG_LEN, (void *)(in + body)) == 1;
  ok = ok && EVP_CipherFinal_ex(c, out + body, &n) == 1;
  if (ok && enc)
    ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, SH_HPKE_TAG_LEN, out + body) == 1;
  EVP_CIPHER_CTX_free(c);
  return ok ? 0 : -1;
}

int sh_crypto_hpke_seal(uint16_t aead_id, const uint8_t pk_r[32], const uint8_t *info,
                        size_t info_len, const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                        size_t pt_len, const uint8_t *sk_e, uint8_t enc[SH_HPKE_ENC_LEN],
                        uint8_t *ct) {
  uint8_t ske[32], dh[32], ss[32], key[32], nonce[12];
  size_t nk = 0;
  const EVP_CIPHER *ciph = gcm(aead_id, &nk);
  int rc = -1;
  if (!ciph) return -1;
  if (sk_e)
    memcpy(ske, sk_e, 32);
  else if (x25519_gen(ske) < 0)
    goto out;
  /* §4.1 Encap: enc = pkE, dh = DH(skE, pkR) */
  if (x25519_pub(ske, enc) < 0 || x25519_dh(ske, pk_r, dh) < 0 ||
      kem_shared_secret(dh, enc, pk_r, ss) < 0 ||
      key_schedule(aead_id, ss, info, info_len, key, nk, nonce) < 0 ||
      aead(1, ciph, key, nonce, aad, aad_len, pt, pt_len, ct) < 0)
    goto out;
  rc = 0;
out:
  OPENSSL_cleanse(ske, sizeof ske);
  OPENSSL_cleanse(dh, sizeof dh);
  OPENSSL_cleanse(ss, sizeof ss);
  OPENSSL_cleanse(key, sizeof key);
  return rc;
}

int sh_crypto_hpke_open(uint16_t aead_id, const uint8_t sk_r[32], const uint8_t enc[32],
                        const uint8_t *info, size_t info_len, const uint8_t *aad, size_t aad_len,
                        const uint8_t *ct, size_t ct_len, uint8_t *pt) {
  uint8_t pkr[32], dh[32], ss[32], key[32], nonce[12];
  size_t nk = 0;
  const EVP_CIPHER *ciph = gcm(aead_id, &nk);
  int rc = -1;
  if (!ciph || ct_len < SH_HPKE_TAG_LEN) return -1;
  /* §4.1 Decap: dh = DH(skR, pkE), kem_context = enc ‖ pkRm */
  if (x25519_pub(sk_r, pkr) < 0 || x25519_dh(sk_r, enc, dh) < 0 ||
      kem_shared_secret(dh, enc, pkr, ss) < 0 ||
      key_schedule(aead_id, ss, info, info_len, key, nk, nonce) < 0 ||
      aead(0, ciph, key, nonce, aad, aad_len, ct, ct_len, pt) < 0)
    goto out;
  rc = 0;
out:
  OPENSSL_cleanse(dh, sizeof dh);
  OPENSSL_cleanse(ss, sizeof ss);
  OPENSSL_cleanse(key, sizeof key);
  return rc;
}
