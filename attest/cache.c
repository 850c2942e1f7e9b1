/* attest/cache.c — bounded, thread-safe verification cache.
 *
 * 4-way set-associative table (like a CPU cache): O(1) lookup and insert, a hard bound on
 * memory, no allocation on a hit beyond the result handed out.  An entry is found by the
 * SHA-256 of the signed content (the evidence_sha256 the caller computes anyway, so a hit
 * costs one hash, not two) and matches only when `extra` — the signature bytes and
 * everything else that changes the verdict (type, policy_sha256, nonce, key, allow_debug;
 * built by verify.c) — is byte-for-byte equal: the same content in another encoding (tagged
 * or untagged COSE, bundle or raw report, base64 text) hits the same entry.  An entry is only
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
  uint8_t *extra;
  size_t extra_len;
  sh_attest_result *r;
  int64_t valid_from, valid_until;
  uint64_t stamp;
} entry;

/* Verified intermediate chains (x509.c): the issuer of a leaf, found by the SHA-256 of its
 * DER, with the rest of the path to a pinned root that OpenSSL already verified, and the
 * validity window of that path.  Few distinct chains exist (AMD ASK/ASVK, Intel PCK CAs, the
 * Nitro intermediates of a host), so a small table with LRU replacement is enough. */
#define CHAINS 64
typedef struct chain_entry {
  uint8_t key[32];
  STACK_OF(X509) * upper;
  int64_t not_before, not_after;
  uint64_t stamp;
} chain_entry;

/* Verified shared objects (DCAP collateral, collateral.c; parsed DCAP CA certificates,
 * dcap.c): found by the SHA-256 of their input, valid for verification times in
 * [not_before, not_after), reference-counted by their owner (ref/unref), immutable once
 * stored. */
#define OBJS 32
typedef struct obj_entry {
  uint8_t key[32];
  void *obj;
  void *(*ref)(void *);
  void (*unref)(void *);
  int64_t not_before, not_after;
  uint64_t stamp;
} obj_entry;

struct sh_attest_cache {
  pthread_mutex_t mu;
  entry *e;
  size_t nsets, count;
  uint64_t clock;
  chain_entry chains[CHAINS];
  obj_entry objs[OBJS];
};

sh_attest_cache *sh_attest_cache_new(size_t max_entries) {
  sh_attest_cache *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  /* max_entries 0: no results are kept, only verified chains (cheaper fresh verification) */
  c->nsets = max_entries == 0 ? 0 : max_entries < WAYS ? 1 : max_entries / WAYS;
  c->e = calloc(c->nsets ? c->nsets * WAYS : 1, sizeof *c->e);
  if (!c->e || pthread_mutex_init(&c->mu, NULL)) {
    free(c->e);
    free(c);
    return NULL;
  }
  return c;
}

void sh_attest_cache_free(sh_attest_cache *c) {
  if (!c) return;
  for (size_t i = 0; i < c->nsets * WAYS; i++) {
    sh_attest_result_free(c->e[i].r);
    free(c->e[i].extra);
  }
  for (int i = 0; i < CHAINS; i++)
    sk_X509_pop_free(c->chains[i].upper, X509_free);
  for (int i = 0; i < OBJS; i++)
    if (c->objs[i].obj) c->objs[i].unref(c->objs[i].obj);
  pthread_mutex_destroy(&c->mu);
  free(c->e);
  free(c);
}

size_t sh_attest_cache_size(sh_attest_cache *c) {
  pthread_mutex_lock(&c->mu);
  size_t n = c->count;
  pthread_mutex_unlock(&c->mu);
  return n;
}

static entry *set_of(sh_attest_cache *c, const uint8_t key[32]) {
  if (!c->nsets) return NULL;
  uint64_t h;
  memcpy(&h, key, sizeof h);
  return &c->e[(h % c->nsets) * WAYS];
}

static int same(const entry *e, const uint8_t key[32], const uint8_t *extra, size_t extra_len) {
  return e->r && !memcmp(e->key, key, 32) && e->extra_len == extra_len &&
         !memcmp(e->extra, extra, extra_len);
}

int sh_attest__cache_get(sh_attest_cache *c, const uint8_t key[32], const uint8_t *extra,
                         size_t extra_len, int64_t at, sh_attest_result **out) {
  *out = NULL;
  pthread_mutex_lock(&c->mu);
  entry *s = set_of(c, key);
  for (int i = 0; s && i < WAYS; i++) {
    if (same(&s[i], key, extra, extra_len)) {
      if (at >= s[i].valid_from && at < s[i].valid_until) {
        *out = sh_attest__result_clone(s[i].r);
        s[i].stamp = ++c->clock;
      }
      break;
    }
  }
  pthread_mutex_unlock(&c->mu);
  return *out ? 0 : -1;
}

void sh_attest__cache_put(sh_attest_cache *c, const uint8_t key[32], const uint8_t *extra,
                          size_t extra_len, const sh_attest_result *r, int64_t valid_from,
                          int64_t valid_until) {
  if (valid_until <= valid_from || !c->nsets) return;
  sh_attest_result *copy = sh_attest__result_clone(r);
  uint8_t *xc = malloc(extra_len ? extra_len : 1);
  if (!copy || !xc) {
    sh_attest_result_free(copy);
    free(xc);
    return;
  }
  if (extra_len) memcpy(xc, extra, extra_len);
  free(copy->raw_evidence); /* the cached copy never holds the caller's encoding */
  copy->raw_evidence = NULL;
  copy->raw_evidence_len = 0;
  pthread_mutex_lock(&c->mu);
  entry *s = set_of(c, key), *victim = &s[0];
  for (int i = 0; i < WAYS; i++) {
    if (same(&s[i], key, extra, extra_len)) {
      victim = &s[i];
      break;
    }
    if (!s[i].r || s[i].stamp < victim->stamp || (victim->r && !s[i].r)) victim = &s[i];
  }
  sh_attest_result *old = victim->r;
  uint8_t *old_extra = victim->extra;
  if (!old) c->count++;
  memcpy(victim->key, key, 32);
  victim->extra = xc;
  victim->extra_len = extra_len;
  victim->r = copy;
  victim->valid_from = valid_from;
  victim->valid_until = valid_until;
  victim->stamp = ++c->clock;
  pthread_mutex_unlock(&c->mu);
  sh_attest_result_free(old);
  free(old_extra);
}

static STACK_OF(X509) * chain_dup(STACK_OF(X509) * sk) {
  STACK_OF(X509) *d = sk_X509_new_reserve(NULL, sk_X509_num(sk));
  for (int i = 0; d && i < sk_X509_num(sk); i++) {
    X509 *x = sk_X509_value(sk, i);
    if (!X509_up_ref(x) || !sk_X509_push(d, x)) {
      X509_free(x);
      sk_X509_pop_free(d, X509_free);
      d = NULL;
    }
  }
  return d;
}

STACK_OF(X509) * sh_attest__cache_chain_get(sh_attest_cache *c, const uint8_t key[32],
                                            int64_t *not_before, int64_t *not_after) {
  STACK_OF(X509) *out = NULL;
  pthread_mutex_lock(&c->mu);
  for (int i = 0; i < CHAINS; i++) {
    chain_entry *e = &c->chains[i];
    if (e->upper && !memcmp(e->key, key, 32)) {
      out = chain_dup(e->upper);
      *not_before = e->not_before;
      *not_after = e->not_after;
      e->stamp = ++c->clock;
      break;
    }
  }
  pthread_mutex_unlock(&c->mu);
  return out;
}

void sh_attest__cache_chain_put(sh_attest_cache *c, const uint8_t key[32], STACK_OF(X509) * upper,
                                int64_t not_before, int64_t not_after) {
  STACK_OF(X509) *copy = chain_dup(upper), *old = NULL;
  if (!copy) return;
  pthread_mutex_lock(&c->mu);
  chain_entry *victim = &c->chains[0];
  for (int i = 0; i < CHAINS; i++) {
    chain_entry *e = &c->chains[i];
    if (e->upper && !memcmp(e->key, key, 32)) {
      victim = e;
      break;
    }
    if (!e->upper || (victim->upper && e->stamp < victim->stamp)) victim = e;
  }
  old = victim->upper;
  memcpy(victim->key, key, 32);
  victim->upper = copy;
  victim->not_before = not_before;
  victim->not_after = not_after;
  victim->stamp = ++c->clock;
  pthread_mutex_unlock(&c->mu);
  sk_X509_pop_free(old, X509_free);
}

void *sh_attest__cache_obj_get(sh_attest_cache *c, const uint8_t key[32], int64_t at,
                               int64_t *not_before, int64_t *not_after) {
  void *out = NULL;
  pthread_mutex_lock(&c->mu);
  for (int i = 0; i < OBJS; i++) {
    obj_entry *e = &c->objs[i];
    if (e->obj && !memcmp(e->key, key, 32)) {
      if (at >= e->not_before && at < e->not_after) {
        out = e->ref(e->obj);
        *not_before = e->not_before;
        *not_after = e->not_after;
        e->stamp = ++c->clock;
      }
      break;
    }
  }
  pthread_mutex_unlock(&c->mu);
  return out;
}

void sh_attest__cache_obj_put(sh_attest_cache *c, const uint8_t key[32], void *obj,
                              void *(*ref)(void *), void (*unref)(void *), int64_t not_before,
                              int64_t not_after) {
  if (not_after <= not_before) return;
  void *old = NULL;
  void (*old_unref)(void *) = NULL;
  pthread_mutex_lock(&c->mu);
  obj_entry *victim = &c->objs[0];
  for (int i = 0; i < OBJS; i++) {
    obj_entry *e = &c->objs[i];
    if (e->obj && !memcmp(e->key, key, 32)) {
      victim = e;
      break;
    }
    if (!e->obj || (victim->obj && e->stamp < victim->stamp)) victim = e;
  }
  old = victim->obj;
  old_unref = victim->unref;
  memcpy(victim->key, key, 32);
  victim->obj = ref(obj);
  victim->ref = ref;
  victim->unref = unref;
  victim->not_before = not_before;
  victim->not_after = not_after;
  victim->stamp = ++c->clock;
  pthread_mutex_unlock(&c->mu);
  if (old) old_unref(old);
}
