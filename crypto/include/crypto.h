/*
 * crypto/include/crypto.h — Shield's cryptographic building blocks (the one public header).
 *
 * Owns:   HPKE (RFC 9180) base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
 *         AES-128-GCM / AES-256-GCM, composed from OpenSSL 3.0 EVP primitives (3.0 has no HPKE
 *         API); RSA-OAEP-256 key wrapping.  (base64url is common.h's sh_b64_encode.)
 * Never:  knows about HTTP, Python or attestation; keeps global mutable state; reads the clock.
 * Threads: every function may be called from any thread.
 * Memory: outputs go to caller-provided buffers (sizes documented per function) or are
 *         malloc'd where said; inputs are borrowed for the duration of the call.  Secrets on
 *         the stack are cleansed before return.
 * Errors: 0 on success, -1 on failure (bad key, authentication failure, out of memory); no
 *         partial output is meaningful after -1.
 */
#ifndef SHIELD_CRYPTO_H
#define SHIELD_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with -fvisibility=hidden: only what is marked here is exported from a
 * shared object that links it (the Python extension). */
#define SH_CRYPTO_API __attribute__((visibility("default")))

/* RFC 9180 §7 identifiers */
#define SH_HPKE_KEM_X25519_SHA256 0x0020
#define SH_HPKE_KDF_HKDF_SHA256 0x0001
#define SH_HPKE_AEAD_AES128GCM 0x0001
#define SH_HPKE_AEAD_AES256GCM 0x0002
#define SH_HPKE_ENC_LEN 32 /* Nenc of DHKEM(X25519) */
#define SH_HPKE_TAG_LEN 16 /* Nt of both AEADs */

/* Single-shot HPKE base mode (RFC 9180 §6.1 SealBase/OpenBase, sequence number 0).
 * pk_r: the recipient's raw 32-byte X25519 public key; sk_e: the ephemeral private key (32
 * bytes) for known-answer tests, NULL for a fresh random one (always NULL in production).
 * enc receives 32 bytes; ct receives pt_len + 16 bytes. */
SH_CRYPTO_API int sh_crypto_hpke_seal(uint16_t aead_id, const uint8_t pk_r[32], const uint8_t *info,
                                      size_t info_len, const uint8_t *aad, size_t aad_len,
                                      const uint8_t *pt, size_t pt_len, const uint8_t *sk_e,
                                      uint8_t enc[SH_HPKE_ENC_LEN], uint8_t *ct);
/* sk_r: the recipient's raw 32-byte X25519 private key; pt receives ct_len - 16 bytes. */
SH_CRYPTO_API int sh_crypto_hpke_open(uint16_t aead_id, const uint8_t sk_r[32],
                                      const uint8_t enc[32], const uint8_t *info, size_t info_len,
                                      const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                                      size_t ct_len, uint8_t *pt);

/* Seals `pt` to the public key in DER SubjectPublicKeyInfo `spki` as docs/protocol.md §1.4 says:
 * X25519 keys -> HPKE base (AES-256-GCM), alg "HPKE-X25519-SHA256-AES256GCM", *enc_len 32;
 * RSA keys (>= 2048 bits) -> RSA-OAEP with SHA-256 (MGF1-SHA-256, empty label),
 * alg "RSA-OAEP-256", *enc_len 0.  *alg receives a static string; *ct is malloc'd (caller
 * frees).  Other key types: -1. */
SH_CRYPTO_API int sh_crypto_seal_to_spki(const uint8_t *spki, size_t spki_len, const uint8_t *info,
                                         size_t info_len, const uint8_t *pt, size_t pt_len,
                                         const char **alg, uint8_t enc[SH_HPKE_ENC_LEN],
                                         size_t *enc_len, uint8_t **ct, size_t *ct_len);

#ifdef __cplusplus
}
#endif
#endif
