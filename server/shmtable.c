/*
 * server/shmtable.c — a fixed-size hash table in shared memory, for state every worker must
 * agree on: consumed nonces, replay windows, attestation sessions.
 *
 * Why shared memory and not a pipe to the supervisor: a lookup sits on the request path of
 * every attested request; a process-shared mutex around a few hundred nanoseconds of probing
 * costs less than any IPC round trip.  The supervisor maps the region (MAP_SHARED |
 * MAP_ANONYMOUS) *before* forking, so every worker inherits the same pages, and a restarted
 * worker (forked again from the supervisor) sees everything its predecessor wrote.
 *
 * Why fixed-size: the region cannot grow after the fork.  Entries expire; an insert into a
 * table at its load limit (3/4) first sweeps out expired entries and otherwise fails with
 * SH_SHM_FULL, which callers treat as "overloaded" (fail closed: never forget a nonce to make
 * room for another).
 *
 * Linear probing with backward-shift deletion (Knuth 6.4, Algorithm R): no tombstones, so a
 * table that has seen millions of short-lived nonces still finds a missing key within its
 * cluster instead of scanning every slot.  Slots are addressed by a *keyed* hash (a random
 * per-table seed, SipHash-1-3): keys are digests of client-chosen nonces, and with a public
 * hash a client could grind nonces into one cluster and make every lookup linear.
 *
 * Why a robust mutex: a worker that crashes while holding the lock must not wedge the others.
 * PTHREAD_MUTEX_ROBUST hands the next locker EOWNERDEAD.  A holder killed in the middle of
 * a backward shift can leave an entry duplicated or behind a hole, so the new owner rebuilds
 * the probe order (repair(): every entry re-inserted, duplicates dropped) before it marks the
 * mutex consistent.
 *
 * Keys are fixed 32-byte digests (callers hash their own keys, e.g. SHA-256 of a nonce), so
 * slot layout is flat and no key bytes from the network are compared with variable lengths.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#include "server.h"

enum { SLOT_EMPTY = 0, SLOT_USED = 1 };

typedef struct slot {
  uint8_t key[SH_SHM_KEY_LEN];
  uint32_t state;
  uint32_t value_len;
  double expires_at; /* absolute, seconds since the epoch (caller's clock) */
  uint8_t value[SH_SHM_VALUE_MAX];
} slot;

struct sh_shm_table {
  pthread_mutex_t mu;
  size_t capacity; /* power of two */
  size_t used;     /* SLOT_USED count (including expired not yet swept) */
  size_t map_size;
  uint64_t k0, k1; /* hash key */
  uint64_t repairs;
  slot slots[];
};

static size_t round_pow2(size_t n) {
  size_t p = 16;
  while (p < n)
    p <<= 1;
  return p;
}

int sh_shm_table_create(size_t capacity, sh_shm_table **out, sh_error *err) {
  *out = NULL;
  if (capacity == 0 || capacity > ((size_t)1 << 24)) {
    err->code = SH_EINVAL;
    snprintf(err->message, sizeof err->message,
             "shared table capacity must be between 1 and 16777216 entries (got %zu)", capacity);
    return SH_EINVAL;
  }
  size_t cap = round_pow2(capacity + capacity / 3); /* keep the load factor under 3/4 */
  size_t size = sizeof(sh_shm_table) + cap * sizeof(slot);
  void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    err->code = SH_ESYS;
    snprintf(err->message, sizeof err->message, "cannot map %zu bytes of shared memory: %s", size,
             strerror(errno));
    return SH_ESYS;
  }
  sh_shm_table *t = mem; /* anonymous mappings are zero-filled: every slot is SLOT_EMPTY */
  uint64_t seed[2];
  if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
    munmap(mem, size);
    err->code = SH_ESYS;
    snprintf(err->message, sizeof err->message, "getrandom: %s", strerror(errno));
    return SH_ESYS;
  }
  t->k0 = seed[0];
  t->k1 = seed[1];
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  int rc = pthread_mutex_init(&t->mu, &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc != 0) {
    munmap(mem, size);
    err->code = SH_ESYS;
    snprintf(err->message, sizeof err->message, "cannot create a process-shared mutex: %s",
             strerror(rc));
    return SH_ESYS;
  }
  t->capacity = cap;
  t->map_size = size;
  *out = t;
  return 0;
}

void sh_shm_table_free(sh_shm_table *t) {
  if (t == NULL) return;
  /* The mutex is not destroyed: other processes may still map the region. */
  munmap(t, t->map_size);
}

/* SipHash-1-3 of the 32-byte key (Aumasson & Bernstein), keyed per table. */
/* clang-format off */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                        \
  do {                                                                                  \
    v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                           \
    v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                              \
    v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                              \
    v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                           \
  } while (0)
/* clang-format on */

static size_t hash_key(const sh_shm_table *t, const uint8_t *key) {
  uint64_t v0 = 0x736f6d6570736575ULL ^ t->k0, v1 = 0x646f72616e646f6dULL ^ t->k1;
  uint64_t v2 = 0x6c7967656e657261ULL ^ t->k0, v3 = 0x7465646279746573ULL ^ t->k1;
  for (int i = 0; i < SH_SHM_KEY_LEN; i += 8) {
    uint64_t m;
    memcpy(&m, key + i, 8);
    v3 ^= m;
    SIPROUND;
    v0 ^= m;
  }
  uint64_t b = (uint64_t)SH_SHM_KEY_LEN << 56;
  v3 ^= b;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return (size_t)(v0 ^ v1 ^ v2 ^ v3);
}

static int live(const slot *s, double now) {
  return s->state == SLOT_USED && s->expires_at > now;
}

/* Find the slot holding `key` (live or expired), or NULL.  Lock held. */
static slot *find(sh_shm_table *t, const uint8_t *key) {
  size_t mask = t->capacity - 1;
  size_t i = hash_key(t, key) & mask;
  for (size_t n = 0; n < t->capacity; n++, i = (i + 1) & mask) {
    slot *s = &t->slots[i];
    if (s->state == SLOT_EMPTY) return NULL;
    if (memcmp(s->key, key, SH_SHM_KEY_LEN) == 0) return s;
  }
  return NULL;
}

/* Remove slot i and shift later members of its cluster back (no tombstones).  Lock held.
 * Returns 1 when an entry moved into slot i (the caller re-examines it). */
static int remove_at(sh_shm_table *t, size_t i) {
  size_t mask = t->capacity - 1;
  size_t j = i;
  int moved_into_i = 0;
  size_t first = i;
  t->used--;
  for (;;) {
    t->slots[i].state = SLOT_EMPTY;
    for (;;) {
      j = (j + 1) & mask;
      if (t->slots[j].state == SLOT_EMPTY) return moved_into_i;
      size_t k = hash_key(t, t->slots[j].key) & mask;
      /* slot j stays if its home k lies cyclically in (i, j] */
      int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
      if (!stays) break;
    }
    t->slots[i] = t->slots[j];
    if (i == first) moved_into_i = 1;
    i = j;
  }
}

/* Drop every expired entry (the table is at its load limit).  Lock held. */
static void sweep(sh_shm_table *t, double now) {
  for (size_t i = 0; i < t->capacity; i++) {
    while (t->slots[i].state == SLOT_USED && t->slots[i].expires_at <= now) {
      if (!remove_at(t, i)) break;
    }
  }
}

/* After a lock holder died mid-update: re-insert every entry (in probe order, starting after
 * an empty slot, so each lands where lookups will find it); duplicates keep the first. */
static void repair(sh_shm_table *t) {
  size_t mask = t->capacity - 1;
  size_t start = 0;
  while (start < t->capacity && t->slots[start].state != SLOT_EMPTY)
    start++;
  if (start == t->capacity) start = 0;
  t->used = 0;
  for (size_t i = 0; i < t->capacity; i++)
    t->used += t->slots[i].state == SLOT_USED;
  for (size_t n = 1; n <= t->capacity; n++) {
    size_t i = (start + n) & mask;
    if (t->slots[i].state != SLOT_USED) continue;
    slot copy = t->slots[i];
    t->slots[i].state = SLOT_EMPTY;
    t->used--;
    if (find(t, copy.key) != NULL) continue; /* a duplicate from an interrupted shift */
    size_t h = hash_key(t, copy.key) & mask;
    while (t->slots[h].state == SLOT_USED)
      h = (h + 1) & mask;
    t->slots[h] = copy;
    t->used++;
  }
  t->repairs++;
}

static void lock(sh_shm_table *t) {
  if (pthread_mutex_lock(&t->mu) == EOWNERDEAD) {
    repair(t);
    pthread_mutex_consistent(&t->mu);
  }
}

static void unlock(sh_shm_table *t) {
  pthread_mutex_unlock(&t->mu);
}

int sh_shm_table_put(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN], const void *value,
                     size_t value_len, double expires_at, double now, int only_if_absent) {
  if (value_len > SH_SHM_VALUE_MAX) return SH_EINVAL;
  lock(t);
  int rc = 0;
  slot *s = find(t, key);
  if (s != NULL && live(s, now) && only_if_absent) {
    rc = SH_SHM_EXISTS;
    goto done;
  }
  if (s == NULL) {
    /* Keep one slot in four free so clusters stay short and probes always end. */
    size_t limit = t->capacity - t->capacity / 4;
    if (t->used + 1 > limit) {
      sweep(t, now);
      if (t->used + 1 > limit) {
        rc = SH_SHM_FULL;
        goto done;
      }
    }
    size_t mask = t->capacity - 1;
    size_t i = hash_key(t, key) & mask;
    while (t->slots[i].state == SLOT_USED)
      i = (i + 1) & mask;
    s = &t->slots[i];
    memcpy(s->key, key, SH_SHM_KEY_LEN);
    t->used++;
  }
  memcpy(s->value, value, value_len);
  s->value_len = (uint32_t)value_len;
  s->expires_at = expires_at;
  s->state = SLOT_USED; /* last: the slot is complete before it is visible as used */
done:
  unlock(t);
  return rc;
}

int sh_shm_table_get(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN], void *value,
                     size_t *value_len, double *expires_at, double now) {
  lock(t);
  slot *s = find(t, key);
  int rc = SH_SHM_NOTFOUND;
  if (s != NULL && live(s, now)) {
    size_t n = s->value_len < *value_len ? s->value_len : *value_len;
    if (value != NULL) memcpy(value, s->value, n);
    *value_len = s->value_len;
    if (expires_at != NULL) *expires_at = s->expires_at;
    rc = 0;
  }
  unlock(t);
  return rc;
}

int sh_shm_table_update(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN],
                        int (*fn)(void *value, size_t value_len, void *ctx), void *ctx,
                        double now) {
  lock(t);
  slot *s = find(t, key);
  int rc = SH_SHM_NOTFOUND;
  if (s != NULL && live(s, now)) rc = fn(s->value, s->value_len, ctx);
  unlock(t);
  return rc;
}

int sh_shm_table_del(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN]) {
  lock(t);
  slot *s = find(t, key);
  int rc = SH_SHM_NOTFOUND;
  if (s != NULL) {
    remove_at(t, (size_t)(s - t->slots));
    rc = 0;
  }
  unlock(t);
  return rc;
}

size_t sh_shm_table_count(sh_shm_table *t, double now) {
  size_t n = 0;
  lock(t);
  for (size_t i = 0; i < t->capacity; i++)
    n += live(&t->slots[i], now);
  unlock(t);
  return n;
}
