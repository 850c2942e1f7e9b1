/* attest/nonce.c — server nonces (docs/protocol.md §1.1) and session proofs (§1.4 mode 2).
 *
 * Nonce: 0x01 ‖ u32be(issued_at) ‖ 11 random bytes ‖ HMAC-SHA256(secret, first 16)[0:16].
 * Stateless to issue and to check (any worker or replica holding the secret can check any
 * nonce); "not consumed" is the caller's shared table (shared memory, Redis), consulted only
 * after the MAC and the age passed, so forged nonces never reach the shared state.
 * The MAC is compared in constant time (CRYPTO_memcmp); a 128-bit truncated HMAC-SHA256 is
 * the usual truncation (RFC 2104 §5 allows >= half the output).
 */
#include "internal.h"

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* A nonce a little ahead of this replica's clock is from a replica whose clock is ahead. */
#define NONCE_FUTURE_SKEW 5

/*
 * Why one HMAC context per thread: EVP_MAC_fetch("HMAC") and a "digest" parameter on every
 * init are two locked provider lookups per MAC, about 1 µs, which was a third of the gate's
 * whole cost for a session request.  A context made once per thread keeps its digest, and
 * EVP_MAC_init(ctx, key, len, NULL) re-keys it (and resets it) for the next MAC.  The context
 * is freed when its thread exits; the main thread's lives as long as the process.  Between
 * MACs it holds the last key, as the session table already does.
 */
static EVP_MAC *hmac_alg;
static pthread_key_t hmac_tls;
static int hmac_ready;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_ctx_free(void *c) {
  EVP_MAC_CTX_free(c);
}

static void hmac_setup(void) {
  hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
  hmac_ready = hmac_alg && pthread_key_create(&hmac_tls, hmac_ctx_free) == 0;
}

/* This thread's HMAC-SHA256 context, keyed with key and ready for updates; NULL on failure. */
static EVP_MAC_CTX *hmac_start(const uint8_t *key, size_t klen) {
  if (pthread_once(&hmac_once, hmac_setup) != 0 || !hmac_ready) return NULL;
  EVP_MAC_CTX *c = pthread_getspecific(hmac_tls);
  if (!c) {
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end()};
    if (!(c = EVP_MAC_CTX_new(hmac_alg))) return NULL;
    if (!EVP_MAC_CTX_set_params(c, params) || pthread_setspecific(hmac_tls, c) != 0) {
      EVP_MAC_CTX_free(c);
      return NULL;
    }
  }
  return EVP_MAC_init(c, key, klen, NULL) ? c : NULL;
}

static int hmac_finish(EVP_MAC_CTX *c, uint8_t out[32]) {
  size_t n = 0;
  return EVP_MAC_final(c, out, &n, 32) && n == 32 ? 0 : -1;
}

static int mac16(const uint8_t *secret, size_t slen, const uint8_t in[16], uint8_t out[16]) {
  uint8_t full[32];
  EVP_MAC_CTX *c = hmac_start(secret, slen);
  int rc = c && EVP_MAC_update(c, in, 16) ? hmac_finish(c, full) : -1;
  if (rc == 0) memcpy(out, full, 16);
  OPENSSL_cleanse(full, sizeof full);
  return rc;
}

int sh_attest_nonce_issue(const uint8_t *secret, size_t secret_len, int64_t now,
                          uint8_t out[SH_ATTEST_NONCE_LEN]) {
  if (!secret || secret_len < SH_ATTEST_SECRET_MIN || now <= 0 || now > 0xFFFFFFFFll) return -1;
  out[0] = 0x01;
  out[1] = (uint8_t)(now >> 24);
  out[2] = (uint8_t)(now >> 16);
  out[3] = (uint8_t)(now >> 8);
  out[4] = (uint8_t)now;
  if (RAND_bytes(out + 5, 11) != 1 || mac16(secret, secret_len, out, out + 16) < 0) return -1;
  return 0;
}

sh_attest_reason sh_attest_nonce_check(const uint8_t *secret, size_t secret_len,
                                       const uint8_t *nonce, size_t len, int64_t now, int64_t ttl,
                                       int64_t *issued_at) {
  uint8_t m[16];
  if (!secret || secret_len < SH_ATTEST_SECRET_MIN || !nonce || len != SH_ATTEST_NONCE_LEN ||
      nonce[0] != 0x01)
    return SH_ATTEST_NONCE_INVALID;
  if (mac16(secret, secret_len, nonce, m) < 0 || CRYPTO_memcmp(m, nonce + 16, 16) != 0)
    return SH_ATTEST_NONCE_INVALID;
  int64_t t = ((int64_t)nonce[1] << 24) | ((int64_t)nonce[2] << 16) | ((int64_t)nonce[3] << 8) |
              (int64_t)nonce[4];
  if (issued_at) *issued_at = t;
  if (t > now + NONCE_FUTURE_SKEW) return SH_ATTEST_NONCE_INVALID;
  if (now - t > (ttl > 0 ? ttl : SH_ATTEST_NONCE_TTL)) return SH_ATTEST_NONCE_EXPIRED;
  return SH_ATTEST_OK;
}

/* mac = HMAC-SHA256(session_key, "shield-proof-v1" ‖ 0x00 ‖ t ‖ 0x00 ‖ METHOD ‖ 0x00 ‖
 * request-target ‖ 0x00 ‖ Content-Digest value or empty)   (docs/protocol.md §1.4, mode 2) */
int sh_attest_proof_mac(const uint8_t key[32], int64_t t_ms, const char *method, size_t mlen,
                        const char *target, size_t tlen, const char *digest, size_t dlen,
                        uint8_t out[32]) {
  static const char label[] = "shield-proof-v1"; /* sizeof includes the 0x00 */
  char ts[24];
  int tn = snprintf(ts, sizeof ts, "%lld", (long long)t_ms);
  static const uint8_t z = 0;
  if (tn <= 0 || t_ms < 0) return -1;
  EVP_MAC_CTX *c = hmac_start(key, 32);
  int ok = c && EVP_MAC_update(c, (const uint8_t *)label, sizeof label) &&
           EVP_MAC_update(c, (const uint8_t *)ts, (size_t)tn) && EVP_MAC_update(c, &z, 1) &&
           EVP_MAC_update(c, (const uint8_t *)method, mlen) && EVP_MAC_update(c, &z, 1) &&
           EVP_MAC_update(c, (const uint8_t *)target, tlen) && EVP_MAC_update(c, &z, 1) &&
           (!dlen || EVP_MAC_update(c, (const uint8_t *)digest, dlen));
  return ok ? hmac_finish(c, out) : -1;
}

int sh_attest_sha256(const void *data, size_t len, uint8_t out[32]) {
  unsigned int n = 0;
  return EVP_Digest(data, len, out, &n, sh_attest__md_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}
