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
 * full table first reclaims expired slots along its probe path and otherwise fails with
 * SH_SHM_FULL, which callers treat as "overloaded" (fail closed: never forget a nonce to make
 * room for another).
 *
 * Why a robust mutex: a worker that crashes while holding the lock must not wedge the others.
 * PTHREAD_MUTEX_ROBUST hands the next locker EOWNERDEAD; the table's invariants hold at every
 * instruction boundary that matters (a slot's key is written before it is marked used), so
 * the new owner just marks the mutex consistent and carries on.
 *
 * Keys are fixed 32-byte digests (callers hash their own keys, e.g. SHA-256 of a nonce), so
 * slot layout is flat and no key bytes from the network are compared with variable lengths.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "shmtable.h"

enum { SLOT_EMPTY = 0, SLOT_USED = 1, SLOT_DELETED = 2 };

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
  size_t used;     /* SLOT_USED count (including expired not yet reclaimed) */
  size_t map_size;
  slot slots[];
};

static size_t round_pow2(size_t n) {
  size_t p = 16;
  while (p < n) p <<= 1;
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
    snprintf(err->message, sizeof err->message, "cannot map %zu bytes of shared memory: %s",
             size, strerror(errno));
    return SH_ESYS;
  }
  sh_shm_table *t = mem; /* anonymous mappings are zero-filled: every slot is SLOT_EMPTY */
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

static void lock(sh_shm_table *t) {
  if (pthread_mutex_lock(&t->mu) == EOWNERDEAD) pthread_mutex_consistent(&t->mu);
}

static void unlock(sh_shm_table *t) { pthread_mutex_unlock(&t->mu); }

static size_t hash_key(const uint8_t *key) {
  /* Keys are already uniformly distributed digests: their first bytes are the hash. */
  uint64_t h;
  memcpy(&h, key, sizeof h);
  return (size_t)h;
}

static int live(const slot *s, double now) { return s->state == SLOT_USED && s->expires_at > now; }

/* Find the slot holding `key` (live or expired), or NULL.  Lock held. */
static slot *find(sh_shm_table *t, const uint8_t *key) {
  size_t mask = t->capacity - 1;
  size_t i = hash_key(key) & mask;
  for (size_t n = 0; n < t->capacity; n++, i = (i + 1) & mask) {
    slot *s = &t->slots[i];
    if (s->state == SLOT_EMPTY) return NULL;
    if (s->state == SLOT_USED && memcmp(s->key, key, SH_SHM_KEY_LEN) == 0) return s;
  }
  return NULL;
}

/* The first reusable slot on key's probe path: empty, deleted, or expired.  Lock held. */
static slot *find_free(sh_shm_table *t, const uint8_t *key, double now) {
  size_t mask = t->capacity - 1;
  size_t i = hash_key(key) & mask;
  for (size_t n = 0; n < t->capacity; n++, i = (i + 1) & mask) {
    slot *s = &t->slots[i];
    if (s->state != SLOT_USED) return s;
    if (s->expires_at <= now) {
      s->state = SLOT_DELETED;
      t->used--;
      return s;
    }
  }
  return NULL;
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
    /* Keep one slot in four free so probe sequences stay short and always terminate. */
    if (t->used + 1 > t->capacity - t->capacity / 4) {
      s = NULL;
      size_t mask = t->capacity - 1;
      size_t i = hash_key(key) & mask;
      for (size_t n = 0; n < t->capacity; n++, i = (i + 1) & mask) {
        slot *c = &t->slots[i];
        if (c->state == SLOT_USED && c->expires_at <= now) {
          c->state = SLOT_DELETED;
          t->used--;
        }
        if (c->state == SLOT_EMPTY) break;
      }
      if (t->used + 1 > t->capacity - t->capacity / 4) {
        rc = SH_SHM_FULL;
        goto done;
      }
    }
    s = find_free(t, key, now);
    if (s == NULL) {
      rc = SH_SHM_FULL;
      goto done;
    }
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

int sh_shm_table_del(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN]) {
  lock(t);
  slot *s = find(t, key);
  int rc = SH_SHM_NOTFOUND;
  if (s != NULL) {
    s->state = SLOT_DELETED;
    t->used--;
    rc = 0;
  }
  unlock(t);
  return rc;
}

size_t sh_shm_table_count(sh_shm_table *t, double now) {
  size_t n = 0;
  lock(t);
  for (size_t i = 0; i < t->capacity; i++) n += live(&t->slots[i], now);
  unlock(t);
  return n;
}
