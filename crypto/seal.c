/* crypto/seal.c — seal a short secret (a session key) to a client's public key, by key type
 * (docs/protocol.md §1.4): X25519 -> HPKE base mode AES-256-GCM; RSA -> RSA-OAEP-256. */
#include "crypto.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

int sh_crypto_seal_to_spki(const uint8_t *spki, size_t spki_len, const uint8_t *info,
                           size_t info_len, const uint8_t *pt, size_t pt_len, const char **alg,
                           uint8_t enc[SH_HPKE_ENC_LEN], size_t *enc_len, uint8_t **ct,
                           size_t *ct_len) {
  const unsigned char *p = spki;
  EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)spki_len);
  EVP_PKEY_CTX *c = NULL;
  int rc = -1;
  *ct = NULL;
  *ct_len = 0;
  *enc_len = 0;
  if (!k || p != spki + spki_len) goto out;
  if (EVP_PKEY_get_base_id(k) == EVP_PKEY_X25519) {
    uint8_t pk[32];
    size_t n = 32;
    if (EVP_PKEY_get_raw_public_key(k, pk, &n) != 1 || n != 32 ||
        !(*ct = malloc(pt_len + SH_HPKE_TAG_LEN)) ||
        sh_crypto_hpke_seal(SH_HPKE_AEAD_AES256GCM, pk, info, info_len, NULL, 0, pt, pt_len, NULL,
                            enc, *ct) < 0)
      goto out;
    *ct_len = pt_len + SH_HPKE_TAG_LEN;
    *enc_len = SH_HPKE_ENC_LEN;
    *alg = "HPKE-X25519-SHA256-AES256GCM";
    rc = 0;
  } else if (EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA && EVP_PKEY_get_bits(k) >= 2048) {
    size_t n = 0;
    /* RFC 8017 §7.1: OAEP, SHA-256 for both the label hash and MGF1, empty label */
    if (!(c = EVP_PKEY_CTX_new(k, NULL)) || EVP_PKEY_encrypt_init(c) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha256()) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(c, EVP_sha256()) != 1 ||
        EVP_PKEY_encrypt(c, NULL, &n, pt, pt_len) != 1 || !(*ct = malloc(n)) ||
        EVP_PKEY_encrypt(c, *ct, &n, pt, pt_len) != 1)
      goto out;
    *ct_len = n;
    *alg = "RSA-OAEP-256";
    rc = 0;
  }
out:
  if (rc < 0) {
    free(*ct);
    *ct = NULL;
    *ct_len = 0;
  }
  EVP_PKEY_CTX_free(c);
  EVP_PKEY_free(k);
  ERR_clear_error();
  return rc;
}
