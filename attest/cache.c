/* attest/cache.c — bounded, thread-safe verification cache.
 *
 * 4-way set-associative table (like a CPU cache): O(1) lookup and insert, a hard bound on
 * memory, no allocation on a hit.  The key (verify.c) is SHA-256 over the SHA-256 of the
 * signed content, the signature bytes and everything that changes the verdict (type,
 * policy_sha256, nonce, key, allow_debug): the same content in another encoding (tagged or
 * untagged COSE, bundle or raw report, base64 text) hits the same entry.  An entry is only
 * valid for verification times inside [valid_from, valid_until): the latest notBefore and
 * the earliest notAfter of the chain, narrowed by the document timestamp and the policy's
 * max age.  Only verified results are stored (a failure is never cached).
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define WAYS 4

typedef struct entry {
    uint8_t key[32];
    sh_attest_result *r;
    int64_t valid_from, valid_until;
    uint64_t stamp;
} entry;

struct sh_attest_cache {
    pthread_mutex_t mu;
    entry *e;
    size_t nsets, count;
    uint64_t clock;
};

sh_attest_cache *sh_attest_cache_new(size_t max_entries)
{
    sh_attest_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->nsets = max_entries < WAYS ? 1 : max_entries / WAYS;
    c->e = calloc(c->nsets * WAYS, sizeof *c->e);
    if (!c->e || pthread_mutex_init(&c->mu, NULL)) {
        free(c->e);
        free(c);
        return NULL;
    }
    return c;
}

void sh_attest_cache_free(sh_attest_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nsets * WAYS; i++)
        sh_attest_result_free(c->e[i].r);
    pthread_mutex_destroy(&c->mu);
    free(c->e);
    free(c);
}

size_t sh_attest_cache_size(sh_attest_cache *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->count;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static entry *set_of(sh_attest_cache *c, const uint8_t key[32])
{
    uint64_t h;
    memcpy(&h, key, sizeof h);
    return &c->e[(h % c->nsets) * WAYS];
}

int sh_cache_get(sh_attest_cache *c, const uint8_t key[32], int64_t at, sh_attest_result **out)
{
    *out = NULL;
    pthread_mutex_lock(&c->mu);
    entry *s = set_of(c, key);
    for (int i = 0; i < WAYS; i++) {
        if (s[i].r && !memcmp(s[i].key, key, 32)) {
            if (at >= s[i].valid_from && at < s[i].valid_until) {
                *out = sh_result_clone(s[i].r);
                s[i].stamp = ++c->clock;
            }
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return *out ? 0 : -1;
}

void sh_cache_put(sh_attest_cache *c, const uint8_t key[32], const sh_attest_result *r,
                  int64_t valid_from, int64_t valid_until)
{
    if (valid_until <= valid_from)
        return;
    sh_attest_result *copy = sh_result_clone(r);
    if (!copy)
        return;
    free(copy->raw_evidence); /* the cached copy never holds the caller's encoding */
    copy->raw_evidence = NULL;
    copy->raw_evidence_len = 0;
    pthread_mutex_lock(&c->mu);
    entry *s = set_of(c, key), *victim = &s[0];
    for (int i = 0; i < WAYS; i++) {
        if (s[i].r && !memcmp(s[i].key, key, 32)) {
            victim = &s[i];
            break;
        }
        if (!s[i].r || s[i].stamp < victim->stamp || (victim->r && !s[i].r))
            victim = &s[i];
    }
    sh_attest_result *old = victim->r;
    if (!old)
        c->count++;
    memcpy(victim->key, key, 32);
    victim->r = copy;
    victim->valid_from = valid_from;
    victim->valid_until = valid_until;
    victim->stamp = ++c->clock;
    pthread_mutex_unlock(&c->mu);
    sh_attest_result_free(old);
}
