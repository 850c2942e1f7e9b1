/* attest/verify.c — sh_attest_verify: dispatch by type, the cache, common result fields. */
#include "internal.h"

#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

/* SHA-256 of the signed content (evidence_sha256) and the signature bytes, without a full
 * parse: this is the whole cost of a cache hit beyond the lookup. */
static int signed_content(sh_tee tee, const uint8_t *ev, size_t len, uint8_t sha[32],
                          sh_iovec *sig) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int rc = -1;
  if (md && EVP_DigestInit_ex(md, sh_attest__md_sha256(), NULL)) {
    switch (tee) {
      case SH_TEE_NITRO:
      case SH_TEE_SIMULATED:
        rc = sh_attest__nitro_signed_content(ev, len, md, sig);
        break;
      case SH_TEE_SEV_SNP:
        rc = sh_attest__snp_signed_content(ev, len, md, sig);
        break;
      case SH_TEE_AZURE_SNP:
        rc = sh_attest__azure_signed_content(ev, len, md, sig);
        break;
      case SH_TEE_AZURE_TDX:
        rc = sh_attest__azure_tdx_signed_content(ev, len, md, sig);
        break;
      case SH_TEE_TDX:
      case SH_TEE_SGX:
        rc = sh_attest__dcap_signed_content(ev, len, md, sig);
        break;
      default:
        break;
    }
    if (rc == 0 && !EVP_DigestFinal_ex(md, sha, NULL)) rc = -1;
  }
  EVP_MD_CTX_free(md);
  return rc;
}

/* The cache entry is found by the content hash; everything else that changes the verdict is
 * compared byte for byte (cache.c), so a hit costs one hash.  Layout: "shield-cache-v2" ‖
 * tee ‖ allow_debug ‖ policy_sha256 ‖ u64 len ‖ signature ‖ u64 len ‖ nonce (len ~0: none) ‖
 * u64 len ‖ key (len ~0: none) ‖ for tdx/sgx/azure-tdx SHA-256 of the collateral (a quote's
 * verdict depends on it: another CRL may revoke its PCK).  Returns the length, or 0 when it
 * does not fit (not cached). */
#define CACHE_EXTRA_MAX 4096
static size_t cache_extra(sh_tee tee, const sh_iovec *sig, const sh_attest_options *o,
                          const uint8_t pol[32], uint8_t out[CACHE_EXTRA_MAX]) {
  size_t n = 0;
  const uint8_t *parts[3] = {sig->ptr, o->nonce, o->public_key};
  size_t lens[3] = {sig->len, o->nonce_len, o->public_key_len};
  if (16 + 2 + 32 + 3 * 8 + sig->len + (o->nonce ? o->nonce_len : 0) +
          (o->public_key ? o->public_key_len : 0) + 32 >
      CACHE_EXTRA_MAX)
    return 0;
  memcpy(out, "shield-cache-v2", 16);
  n = 16;
  out[n++] = (uint8_t)tee;
  out[n++] = (uint8_t)(o->allow_debug != 0);
  memcpy(out + n, pol, 32);
  n += 32;
  for (int k = 0; k < 3; k++) {
    uint64_t l = (k == 0 || parts[k]) ? (uint64_t)lens[k] : ~(uint64_t)0;
    for (int i = 0; i < 8; i++)
      out[n++] = (uint8_t)(l >> (8 * i));
    if (parts[k] && lens[k]) {
      memcpy(out + n, parts[k], lens[k]);
      n += lens[k];
    }
  }
  int dcap = tee == SH_TEE_TDX || tee == SH_TEE_SGX || tee == SH_TEE_AZURE_TDX;
  if (dcap && o->dcap_collateral) {
    memcpy(out + n, sh_attest_collateral_sha256(o->dcap_collateral), 32); /* the same digest */
    n += 32;
  } else if (dcap) {
    if (!EVP_Digest(o->collateral ? o->collateral : (const uint8_t *)"", o->collateral_len, out + n,
                    NULL, sh_attest__md_sha256(), NULL))
      return 0;
    n += 32;
  }
  return n;
}

int sh_attest_verify(const uint8_t *ev, size_t len, sh_tee tee, const sh_attest_options *o,
                     sh_attest_result **out) {
  *out = NULL;
  if (!o || o->at <= 0) return -1;
  sh_attest_policy *own = NULL;
  const sh_attest_policy *pol = o->policy;
  if (!pol && !(pol = own = sh_attest_policy_production())) return -1;
  uint8_t sha[32], extra[CACHE_EXTRA_MAX];
  size_t extra_len = 0;
  sh_iovec sig = {NULL, 0};
  int located = ev && len && signed_content(tee, ev, len, sha, &sig) == 0;
  /* Results that depend on explicit extra roots are never cached (fail-closed). */
  int cacheable = o->cache && located && !o->nextra_roots && !o->trust_simulated &&
                  (extra_len = cache_extra(tee, &sig, o, pol->sha256, extra)) > 0;
  sh_attest_result *r = NULL;
  if (cacheable) {
    if (sh_attest__cache_get(o->cache, sha, extra, extra_len, o->at, &r) == 0) {
      r->cache_hit = 1;
      r->timestamp = (double)o->at;
      if (sh_attest__set_bytes(&r->raw_evidence, &r->raw_evidence_len, ev, len) < 0) {
        sh_attest_result_free(r);
        r = NULL;
        goto done;
      }
      goto done;
    }
  }
  if (!(r = sh_attest__result_new())) goto done;
  r->tee = tee;
  r->timestamp = (double)o->at;
  memcpy(r->policy_sha256, pol->sha256, 32);
  if (located) {
    memcpy(r->evidence_sha256, sha, 32);
    r->has_evidence_sha256 = 1;
  }
  if (ev && len && sh_attest__set_bytes(&r->raw_evidence, &r->raw_evidence_len, ev, len) < 0) {
    sh_attest_result_free(r);
    r = NULL;
    goto done;
  }
  sh_vctx v = {o, pol, r, INT64_MIN, INT64_MAX};
  int rc;
  if (!ev || !len) {
    rc = sh_attest__fail(r, SH_ATTEST_MISSING, "no evidence");
  } else {
    switch (tee) {
      case SH_TEE_NITRO:
      case SH_TEE_SIMULATED:
        rc = sh_attest__nitro_verify(&v, ev, len);
        break; /* same format */
      case SH_TEE_SEV_SNP:
        rc = sh_attest__snp_verify(&v, ev, len);
        break;
      case SH_TEE_AZURE_SNP:
        rc = sh_attest__azure_verify(&v, ev, len);
        break;
      case SH_TEE_AZURE_TDX:
        rc = sh_attest__azure_tdx_verify(&v, ev, len);
        break;
      case SH_TEE_MAA:
        rc = sh_attest__maa_verify(&v, ev, len);
        break;
      case SH_TEE_GCP:
        rc = sh_attest__gcp_verify(&v, ev, len);
        break;
      case SH_TEE_TDX:
        rc = sh_attest__tdx_verify(&v, ev, len);
        break;
      case SH_TEE_SGX:
        rc = sh_attest__sgx_verify(&v, ev, len);
        break;
      default:
        rc = sh_attest__fail(r, SH_ATTEST_UNSUPPORTED_TYPE, "unsupported evidence type");
        break;
    }
  }
  /* fail-closed: verified only when the type's verifier returned success and set no reason */
  r->verified = rc == 0 && r->reason == SH_ATTEST_OK;
  if (!r->verified && r->reason == SH_ATTEST_OK)
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "verification failed");
  if (r->verified) {
    r->message[0] = 0;
    if (cacheable)
      sh_attest__cache_put(o->cache, sha, extra, extra_len, r, v.valid_from, v.valid_until);
  }
done:
  ERR_clear_error();
  sh_attest_policy_free(own);
  *out = r;
  return r ? 0 : -1;
}
