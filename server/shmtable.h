/* server/shmtable.h — a fixed-size, lock-protected hash table with expiring entries in
 * shared memory.  The supervisor maps it before forking; a worker gets it from
 * sh_server_shared_table() (server.h) and uses the calls below (any thread, any process:
 * a process-shared robust mutex guards every call; each call is O(cluster), never blocks on
 * I/O).  Times are the caller's clock in seconds (wall clock, so every worker agrees). */
#ifndef SHIELD_SERVER_SHMTABLE_H
#define SHIELD_SERVER_SHMTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

#define SH_SHM_KEY_LEN 32    /* keys are digests (e.g. SHA-256 of a nonce) */
#define SH_SHM_VALUE_MAX 128 /* enough for a session key, its expiry and last proof time */

enum { SH_SHM_NOTFOUND = -20, SH_SHM_EXISTS = -21, SH_SHM_FULL = -22 };

typedef struct sh_shm_table sh_shm_table;

/* Map a table for `capacity` live entries; call before fork() so workers share it. */
int sh_shm_table_create(size_t capacity, sh_shm_table **out, sh_error *err);
void sh_shm_table_free(sh_shm_table *t);

/* Insert or replace.  only_if_absent: fail with SH_SHM_EXISTS when a live entry exists
 * (atomic check-and-set: how a nonce is consumed exactly once across workers). */
int sh_shm_table_put(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN], const void *value,
                     size_t value_len, double expires_at, double now, int only_if_absent);

/* Copy up to *value_len bytes of a live entry; *value_len becomes its full length. */
int sh_shm_table_get(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN], void *value,
                     size_t *value_len, double *expires_at, double now);
/* Read-modify-write a live entry atomically: fn runs under the table's lock with the value in
 * place (it may change the bytes, not the length) and its return value is returned.  fn must
 * be short and must not call the table.  SH_SHM_NOTFOUND when there is no live entry. */
int sh_shm_table_update(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN],
                        int (*fn)(void *value, size_t value_len, void *ctx), void *ctx,
                        double now);
int sh_shm_table_del(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN]);
size_t sh_shm_table_count(sh_shm_table *t, double now);

#endif
