/* tests/c/crypto/test_crypto.c — crypto/: HPKE known answers (RFC 9180 A.1.1, DHKEM(X25519,
 * HKDF-SHA256), HKDF-SHA256, AES-128-GCM: sequence 0, whose nonce is base_nonce), seal/open
 * round trips with AES-256-GCM, tampering, wrong keys; RSA-OAEP-256 sealing to an SPKI.
 * (base64url moved to common/: its checks are in tests/c/common/test_common.c.)
 * Prints "N passed, N failed"; exits non-zero on failure. */
#include "testutil.h"
#include "crypto.h"

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t unhex(const char *h, uint8_t *out) {
  size_t n = strlen(h) / 2;
  for (size_t i = 0; i < n; i++)
    sscanf(h + 2 * i, "%2hhx", &out[i]);
  return n;
}

int main(void) {
  /* RFC 9180 A.1.1 */
  uint8_t skE[32], pkR[32], skR[32], info[64], pt[64], aad[16], want_ct[128], want_enc[32];
  unhex("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736", skE);
  unhex("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d", pkR);
  unhex("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8", skR);
  unhex("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431", want_enc);
  size_t il = unhex("4f6465206f6e2061204772656369616e2055726e", info);
  size_t pl = unhex("4265617574792069732074727574682c20747275746820626561757479", pt);
  size_t al = unhex("436f756e742d30", aad);
  size_t cl = unhex(
      "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
      "6d8770ac83d07bea87e13c512a",
      want_ct);
  uint8_t enc[32], ct[128], back[512];
  CHECK(sh_crypto_hpke_seal(SH_HPKE_AEAD_AES128GCM, pkR, info, il, aad, al, pt, pl, skE, enc, ct) ==
            0,
        "seal");
  CHECK(!memcmp(enc, want_enc, 32), "enc differs from A.1.1");
  CHECK(cl == pl + 16 && !memcmp(ct, want_ct, cl), "ciphertext differs from A.1.1");
  CHECK(sh_crypto_hpke_open(SH_HPKE_AEAD_AES128GCM, skR, want_enc, info, il, aad, al, want_ct, cl,
                            back) == 0 &&
            !memcmp(back, pt, pl),
        "open A.1.1");
  want_ct[3] ^= 1;
  CHECK(sh_crypto_hpke_open(SH_HPKE_AEAD_AES128GCM, skR, want_enc, info, il, aad, al, want_ct, cl,
                            back) < 0,
        "tampered ciphertext opened");
  want_ct[3] ^= 1;
  CHECK(sh_crypto_hpke_open(SH_HPKE_AEAD_AES128GCM, skR, want_enc, info, il - 1, aad, al, want_ct,
                            cl, back) < 0,
        "other info opened");
  /* AES-256-GCM: random ephemeral, round trip, wrong recipient */
  uint8_t key[32] = {7};
  CHECK(sh_crypto_hpke_seal(SH_HPKE_AEAD_AES256GCM, pkR, (const uint8_t *)"shield-session-v1", 17,
                            NULL, 0, key, 32, NULL, enc, ct) == 0,
        "seal 256");
  CHECK(sh_crypto_hpke_open(SH_HPKE_AEAD_AES256GCM, skR, enc, (const uint8_t *)"shield-session-v1",
                            17, NULL, 0, ct, 48, back) == 0 &&
            !memcmp(back, key, 32),
        "open 256");
  uint8_t other[32];
  memcpy(other, skR, 32);
  other[5] ^= 0x40;
  CHECK(sh_crypto_hpke_open(SH_HPKE_AEAD_AES256GCM, other, enc,
                            (const uint8_t *)"shield-session-v1", 17, NULL, 0, ct, 48, back) < 0,
        "wrong recipient opened");
  CHECK(sh_crypto_hpke_seal(0x0003, pkR, NULL, 0, NULL, 0, key, 32, NULL, enc, ct) < 0,
        "unknown AEAD accepted");

  /* seal to SPKI: X25519 and RSA-2048 */
  EVP_PKEY *xk = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, skR, 32);
  unsigned char *spki = NULL;
  int sl = i2d_PUBKEY(xk, &spki);
  const char *alg = NULL;
  uint8_t *sealed = NULL;
  size_t el = 0, sdl = 0;
  CHECK(sh_crypto_seal_to_spki(spki, (size_t)sl, (const uint8_t *)"i", 1, key, 32, &alg, enc, &el,
                               &sealed, &sdl) == 0 &&
            el == 32 && sdl == 48 && !strcmp(alg, "HPKE-X25519-SHA256-AES256GCM"),
        "x25519 spki");
  CHECK(sealed &&
            sh_crypto_hpke_open(SH_HPKE_AEAD_AES256GCM, skR, enc, (const uint8_t *)"i", 1, NULL, 0,
                                sealed, sdl, back) == 0 &&
            !memcmp(back, key, 32),
        "x25519 spki open");
  free(sealed);
  OPENSSL_free(spki);
  EVP_PKEY_free(xk);
  EVP_PKEY *rk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  spki = NULL;
  sl = i2d_PUBKEY(rk, &spki);
  CHECK(sh_crypto_seal_to_spki(spki, (size_t)sl, NULL, 0, key, 32, &alg, enc, &el, &sealed, &sdl) ==
                0 &&
            el == 0 && sdl == 256 && !strcmp(alg, "RSA-OAEP-256"),
        "rsa spki");
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(rk, NULL);
  size_t ol = sizeof back;
  CHECK(c && EVP_PKEY_decrypt_init(c) == 1 &&
            EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) == 1 &&
            EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha256()) == 1 &&
            EVP_PKEY_decrypt(c, back, &ol, sealed, sdl) == 1 && ol == 32 && !memcmp(back, key, 32),
        "rsa open");
  EVP_PKEY_CTX_free(c);
  free(sealed);
  CHECK(sh_crypto_seal_to_spki(spki, (size_t)sl - 1, NULL, 0, key, 32, &alg, enc, &el, &sealed,
                               &sdl) < 0,
        "truncated spki accepted");
  OPENSSL_free(spki);
  EVP_PKEY_free(rk);

  return test_summary();
}
