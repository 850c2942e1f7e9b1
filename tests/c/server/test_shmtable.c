/*
 * tests/c/server/test_shmtable.c — the shared-memory table (server/shmtable.c) and the proxy
 * trust list (server/proxy.c): put/get/del, expiry, insert-if-absent, the load limit and
 * sweeping, backward-shift deletion under churn (no tombstone build-up), sharing across
 * fork(), concurrent check-and-set from several processes, and recovery when a process dies
 * holding the lock.  Prints "N passed, N failed".
 *
 * shmtable.c is included (not linked) so the test can reach the mutex and hash directly.
 */
#include "../../../server/shmtable.c"

#include <arpa/inet.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server_internal.h"
#include "testutil.h"

static void key_of(uint64_t n, uint8_t key[SH_SHM_KEY_LEN]) {
  memset(key, 0, SH_SHM_KEY_LEN);
  memcpy(key, &n, sizeof n);
  key[31] = 0x5a;
}

static sh_shm_table *make(size_t cap) {
  sh_error err = {0};
  sh_shm_table *t = NULL;
  int rc = sh_shm_table_create(cap, &t, &err);
  CHECK(rc == 0 && t, "create: %s", err.message);
  return t;
}

static void test_basic(void) {
  sh_shm_table *t = make(100);
  uint8_t k[32];
  key_of(1, k);
  char buf[SH_SHM_VALUE_MAX];
  size_t len = sizeof buf;
  CHECK(sh_shm_table_get(t, k, buf, &len, NULL, 0) == SH_SHM_NOTFOUND, "empty");
  CHECK(sh_shm_table_put(t, k, "abc", 3, 100, 0, 0) == 0, "put");
  len = sizeof buf;
  double exp = 0;
  CHECK(sh_shm_table_get(t, k, buf, &len, &exp, 1) == 0 && len == 3 && !memcmp(buf, "abc", 3) &&
            exp == 100,
        "get");
  CHECK(sh_shm_table_put(t, k, "x", 1, 100, 1, 1) == SH_SHM_EXISTS, "only_if_absent live");
  CHECK(sh_shm_table_put(t, k, "xy", 2, 200, 1, 0) == 0, "replace");
  len = 1; /* short buffer: truncated copy, full length reported */
  CHECK(sh_shm_table_get(t, k, buf, &len, NULL, 1) == 0 && len == 2 && buf[0] == 'x', "short");
  CHECK(sh_shm_table_get(t, k, NULL, &len, NULL, 250) == SH_SHM_NOTFOUND, "expired");
  CHECK(sh_shm_table_put(t, k, "n", 1, 300, 250, 1) == 0, "only_if_absent after expiry");
  CHECK(sh_shm_table_count(t, 251) == 1, "count");
  CHECK(sh_shm_table_del(t, k) == 0 && sh_shm_table_del(t, k) == SH_SHM_NOTFOUND, "del");
  CHECK(sh_shm_table_put(t, k, buf, SH_SHM_VALUE_MAX + 1, 1, 0, 0) == SH_EINVAL, "too long");
  sh_error err = {0};
  sh_shm_table *bad = NULL;
  CHECK(sh_shm_table_create(0, &bad, &err) == SH_EINVAL && err.message[0], "cap 0");
  sh_shm_table_free(t);
}

static void test_full_and_sweep(void) {
  sh_shm_table *t = make(64); /* capacity 128 slots, limit 96 */
  uint8_t k[32];
  size_t n = 0;
  for (uint64_t i = 0; i < 1000; i++) {
    key_of(i, k);
    int rc = sh_shm_table_put(t, k, "v", 1, 10, 0, 1);
    if (rc == SH_SHM_FULL) break;
    CHECK(rc == 0, "put %llu", (unsigned long long)i);
    n++;
  }
  CHECK(n == 96, "load limit: %zu entries", n);
  /* every entry still found */
  size_t found = 0;
  for (uint64_t i = 0; i < n; i++) {
    key_of(i, k);
    size_t len = 0;
    found += sh_shm_table_get(t, k, NULL, &len, NULL, 5) == 0;
  }
  CHECK(found == n, "found %zu of %zu", found, n);
  /* after expiry, inserts sweep and succeed; live entries are never evicted */
  key_of(5000, k);
  CHECK(sh_shm_table_put(t, k, "v", 1, 100, 20, 1) == 0, "put after sweep");
  CHECK(sh_shm_table_count(t, 20) == 1, "only the new entry is live");
  sh_shm_table_free(t);
}

static void test_churn(void) {
  /* Millions of short-lived nonces must not degrade lookups (no tombstones): after heavy
   * insert/delete/expire churn every slot not used is EMPTY. */
  sh_shm_table *t = make(1000);
  uint8_t k[32];
  for (uint64_t i = 0; i < 200000; i++) {
    key_of(i, k);
    int rc = sh_shm_table_put(t, k, &i, sizeof i, (double)i + 50, (double)i, 1);
    CHECK(rc == 0 || i < 50, "churn put %llu -> %d", (unsigned long long)i, rc);
    if (rc != 0) break;
    if (i % 3 == 0) sh_shm_table_del(t, k);
  }
  size_t empty = 0, used = 0;
  for (size_t i = 0; i < t->capacity; i++) {
    empty += t->slots[i].state == SLOT_EMPTY;
    used += t->slots[i].state == SLOT_USED;
  }
  CHECK(empty + used == t->capacity && used == t->used, "no tombstones, used counter exact");
  /* the last 50 (minus deleted) are live and reachable */
  size_t live_found = 0;
  for (uint64_t i = 200000 - 40; i < 200000; i++) {
    key_of(i, k);
    uint64_t v = 0;
    size_t len = sizeof v;
    if (sh_shm_table_get(t, k, &v, &len, NULL, 199999.5) == 0 && v == i) live_found++;
  }
  size_t expect = 0;
  for (uint64_t i = 200000 - 40; i < 200000; i++)
    expect += i % 3 != 0;
  CHECK(live_found == expect, "live %zu expected %zu", live_found, expect);
  sh_shm_table_free(t);
}

static void test_fork_shared_and_cas(void) {
  sh_shm_table *t = make(4096);
  uint8_t k[32];
  key_of(42, k);
  pid_t p = fork();
  if (p == 0) {
    _exit(sh_shm_table_put(t, k, "child", 5, 1e12, 0, 0) == 0 ? 0 : 1);
  }
  int st = 0;
  waitpid(p, &st, 0);
  char buf[16];
  size_t len = sizeof buf;
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child put");
  CHECK(sh_shm_table_get(t, k, buf, &len, NULL, 1) == 0 && len == 5 && !memcmp(buf, "child", 5),
        "parent sees the child's entry");
  /* 4 processes race to consume the same 500 nonces: each consumed exactly once */
  int pipes[4][2];
  for (int w = 0; w < 4; w++) {
    if (pipe(pipes[w]) < 0) abort();
    if (fork() == 0) {
      int won = 0;
      for (uint64_t i = 1000; i < 1500; i++) {
        uint8_t kk[32];
        key_of(i, kk);
        won += sh_shm_table_put(t, kk, "", 0, 1e12, 0, 1) == 0;
      }
      if (write(pipes[w][1], &won, sizeof won) != sizeof won) _exit(2);
      _exit(0);
    }
    close(pipes[w][1]);
  }
  int total = 0;
  for (int w = 0; w < 4; w++) {
    int won = 0;
    if (read(pipes[w][0], &won, sizeof won) == sizeof won) total += won;
    close(pipes[w][0]);
    wait(NULL);
  }
  CHECK(total == 500, "each nonce consumed once across processes: %d", total);
  sh_shm_table_free(t);
}

static void test_owner_dies_holding_lock(void) {
  sh_shm_table *t = make(256);
  uint8_t k[32];
  for (uint64_t i = 0; i < 100; i++) {
    key_of(i, k);
    sh_shm_table_put(t, k, "v", 1, 1e12, 0, 0);
  }
  pid_t p = fork();
  if (p == 0) {
    pthread_mutex_lock(&t->mu);
    /* simulate a kill in the middle of a backward shift: a duplicated entry and a hole */
    size_t i = 0;
    while (t->slots[i].state != SLOT_USED)
      i++;
    size_t j = (i + 1) & (t->capacity - 1);
    while (t->slots[j].state == SLOT_USED)
      j = (j + 1) & (t->capacity - 1);
    t->slots[j] = t->slots[i];
    raise(SIGKILL);
  }
  waitpid(p, NULL, 0);
  key_of(7, k);
  size_t len = 0;
  CHECK(sh_shm_table_get(t, k, NULL, &len, NULL, 1) == 0, "usable after the owner died");
  CHECK(t->repairs == 1, "repaired once");
  CHECK(sh_shm_table_count(t, 1) == 100, "duplicates dropped: %zu", sh_shm_table_count(t, 1));
  size_t found = 0;
  for (uint64_t i = 0; i < 100; i++) {
    key_of(i, k);
    found += sh_shm_table_get(t, k, NULL, &len, NULL, 1) == 0;
  }
  CHECK(found == 100, "all entries reachable after repair: %zu", found);
  sh_shm_table_free(t);
}

static void test_proxy_list(void) {
  sh_error err = {0};
  sh_proxy_list *l = NULL;
  CHECK(sh_proxy_list_parse("127.0.0.1, 10.0.0.0/8,::1,2001:db8::/32", &l, &err) == 0, "%s",
        err.message);
  CHECK(sh_proxy_trusted(l, "127.0.0.1") && sh_proxy_trusted(l, "10.200.1.2") &&
            sh_proxy_trusted(l, "::1") && sh_proxy_trusted(l, "2001:db8:1::5"),
        "trusted");
  CHECK(!sh_proxy_trusted(l, "127.0.0.2") && !sh_proxy_trusted(l, "11.0.0.1") &&
            !sh_proxy_trusted(l, "2001:db9::1") && !sh_proxy_trusted(l, "nonsense"),
        "untrusted");
  sh_proxy_list_free(l);
  CHECK(sh_proxy_list_parse("*", &l, &err) == 0 && sh_proxy_trusted(l, "8.8.8.8"), "star");
  sh_proxy_list_free(l);
  CHECK(sh_proxy_list_parse("10.0.0.0/33", &l, &err) == SH_EINVAL, "bad prefix");
  CHECK(sh_proxy_list_parse("example.com", &l, &err) == SH_EINVAL, "hostname");
}

int main(void) {
  test_basic();
  test_full_and_sweep();
  test_churn();
  test_fork_shared_and_cas();
  test_owner_dies_holding_lock();
  test_proxy_list();
  return test_summary();
}
