/* tests/c/testutil.h — the tiny runner shared by the C unit tests: CHECK counts passes and
 * failures (printing the failing expression and a message), test_summary() prints the
 * "N passed, N failed" line the CI reads and gives the exit code.  Vector files are read in
 * place from $SHIELD_VECTORS (set `vdir` first). */
#ifndef SHIELD_TESTUTIL_H
#define SHIELD_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int passed, failed;

#define CHECK(cond, ...)                                                \
  do {                                                                  \
    if (cond) {                                                         \
      passed++;                                                         \
    } else {                                                            \
      failed++;                                                         \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
      fprintf(stderr, __VA_ARGS__);                                     \
      fputc('\n', stderr);                                              \
    }                                                                   \
  } while (0)

static const char *vdir; /* the shared vectors folder, or NULL when absent */

/* An RFC 3339 UTC time ("2024-01-02T03:04:05Z") as seconds since the epoch. */
static inline int64_t T(const char *s) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return (int64_t)timegm(&tm);
}

/* Read <vdir>/attestation/<rel> (NUL-terminated, caller frees), or NULL. */
static inline uint8_t *slurp(const char *rel, size_t *len) {
  char path[1024];
  *len = 0;
  snprintf(path, sizeof path, "%s/attestation/%s", vdir, rel);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (b != NULL && fread(b, 1, (size_t)n, f) != (size_t)n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  if (b != NULL) b[n] = 0;
  *len = b != NULL ? (size_t)n : 0;
  return b;
}

/* xorshift64: a fixed-seed, reproducible stream for the mutation sweeps. */
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static inline uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static inline int test_summary(void) {
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

#endif
