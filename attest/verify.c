/* attest/verify.c — sh_attest_verify: dispatch by type, the cache, common result fields. */
#include "internal.h"

#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

int sh_nitro_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_attest_bytes *sig);
int sh_snp_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_attest_bytes *sig);
int sh_azure_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_attest_bytes *sig);

/* SHA-256 of the signed content (evidence_sha256) and the signature bytes, without a full
 * parse: this is the whole cost of a cache hit beyond the lookup. */
static int signed_content(sh_attest_tee tee, const uint8_t *ev, size_t len, uint8_t sha[32],
                          sh_attest_bytes *sig)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int rc = -1;
    if (md && EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
        switch (tee) {
        case SH_ATTEST_TEE_NITRO: rc = sh_nitro_signed_content(ev, len, md, sig); break;
        case SH_ATTEST_TEE_SEV_SNP: rc = sh_snp_signed_content(ev, len, md, sig); break;
        case SH_ATTEST_TEE_AZURE_SNP: rc = sh_azure_signed_content(ev, len, md, sig); break;
        default: break;
        }
        if (rc == 0 && !EVP_DigestFinal_ex(md, sha, NULL))
            rc = -1;
    }
    EVP_MD_CTX_free(md);
    return rc;
}

static void cache_key(sh_attest_tee tee, const uint8_t sha[32], const sh_attest_bytes *sig,
                      const sh_attest_options *o, const uint8_t pol[32], uint8_t key[32])
{
    uint8_t t[4] = {(uint8_t)tee, (uint8_t)(o->allow_debug != 0), o->nonce != NULL,
                    o->public_key != NULL};
    uint8_t nl[8], kl[8];
    for (int i = 0; i < 8; i++) {
        nl[i] = (uint8_t)((uint64_t)o->nonce_len >> (8 * i));
        kl[i] = (uint8_t)((uint64_t)o->public_key_len >> (8 * i));
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(md, "shield-cache-v1", 16) || !EVP_DigestUpdate(md, t, 4) ||
        !EVP_DigestUpdate(md, sha, 32) || !EVP_DigestUpdate(md, sig->ptr, sig->len) ||
        !EVP_DigestUpdate(md, pol, 32) || !EVP_DigestUpdate(md, nl, 8) ||
        (o->nonce && !EVP_DigestUpdate(md, o->nonce, o->nonce_len)) ||
        !EVP_DigestUpdate(md, kl, 8) ||
        (o->public_key && !EVP_DigestUpdate(md, o->public_key, o->public_key_len)) ||
        !EVP_DigestFinal_ex(md, key, NULL))
        memset(key, 0, 32);
    EVP_MD_CTX_free(md);
}

int sh_attest_verify(const uint8_t *ev, size_t len, sh_attest_tee tee,
                     const sh_attest_options *o, sh_attest_result **out)
{
    *out = NULL;
    if (!o || o->at <= 0)
        return -1;
    sh_attest_policy *own = NULL;
    const sh_attest_policy *pol = o->policy;
    if (!pol && !(pol = own = sh_attest_policy_production()))
        return -1;
    uint8_t sha[32], key[32];
    sh_attest_bytes sig = {NULL, 0};
    int located = ev && len && signed_content(tee, ev, len, sha, &sig) == 0;
    /* Results that depend on explicit extra roots are never cached (fail-closed). */
    int cacheable = o->cache && located && !o->nextra_roots;
    sh_attest_result *r = NULL;
    if (cacheable) {
        cache_key(tee, sha, &sig, o, pol->sha256, key);
        if (sh_cache_get(o->cache, key, o->at, &r) == 0) {
            r->cache_hit = 1;
            r->timestamp = (double)o->at;
            if (sh_set_bytes(&r->raw_evidence, &r->raw_evidence_len, ev, len) < 0) {
                sh_attest_result_free(r);
                r = NULL;
                goto done;
            }
            goto done;
        }
    }
    if (!(r = sh_result_new()))
        goto done;
    r->tee = tee;
    r->timestamp = (double)o->at;
    memcpy(r->policy_sha256, pol->sha256, 32);
    if (located) {
        memcpy(r->evidence_sha256, sha, 32);
        r->has_evidence_sha256 = 1;
    }
    if (ev && len && sh_set_bytes(&r->raw_evidence, &r->raw_evidence_len, ev, len) < 0) {
        sh_attest_result_free(r);
        r = NULL;
        goto done;
    }
    sh_vctx v = {o, pol, r, INT64_MIN, INT64_MAX};
    int rc;
    if (!ev || !len) {
        rc = sh_fail(r, SH_ATTEST_MISSING, "no evidence");
    } else {
        switch (tee) {
        case SH_ATTEST_TEE_NITRO: rc = sh_nitro_verify(&v, ev, len); break;
        case SH_ATTEST_TEE_SEV_SNP: rc = sh_snp_verify(&v, ev, len); break;
        case SH_ATTEST_TEE_AZURE_SNP: rc = sh_azure_verify(&v, ev, len); break;
        default: rc = sh_fail(r, SH_ATTEST_UNSUPPORTED_TYPE, "unsupported evidence type"); break;
        }
    }
    /* fail-closed: verified only when the type's verifier returned success and set no reason */
    r->verified = rc == 0 && r->reason == SH_ATTEST_OK;
    if (!r->verified && r->reason == SH_ATTEST_OK)
        sh_fail(r, SH_ATTEST_MALFORMED, "verification failed");
    if (r->verified) {
        r->message[0] = 0;
        if (cacheable)
            sh_cache_put(o->cache, key, r, v.valid_from, v.valid_until);
    }
done:
    ERR_clear_error();
    sh_attest_policy_free(own);
    *out = r;
    return r ? 0 : -1;
}
