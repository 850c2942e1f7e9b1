/* tests/c/testutil.h — the tiny runner shared by the C unit tests: CHECK counts passes and
 * failures (printing the failing expression and a message), test_summary() prints the
 * "N passed, N failed" line the CI reads and gives the exit code.  Vector files are read in
 * place from the shared vectors folder (vectors_init() finds it; slurp() reads a file). */
#ifndef SHIELD_TESTUTIL_H
#define SHIELD_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static int passed, failed;

#define CHECK(cond, ...)                                              \
  do {                                                                \
    if (cond) {                                                       \
      passed++;                                                       \
    } else {                                                          \
      failed++;                                                       \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                   \
      fputc('\n', stderr);                                            \
    }                                                                 \
  } while (0)

static const char *vdir; /* the shared vectors folder, or NULL when absent */

/* meson's exit code for a skipped test */
#define TEST_SKIP 77

/* The shared vectors folder: $SHIELD_VECTORS (the variable the README offers, honoured at
 * `meson test` time), else $SHIELD_VECTORS_DEFAULT (tests/c/meson.build passes
 * <source>/../shared/vectors).  Returns it when its attestation/ folder exists; else NULL, with
 * the reason in `why` (the suite then skips what needs vectors and ends with
 * test_summary_skip(why)).  When it exists, a vector file a test needs and does not find is a
 * failure (slurp), never a skip. */
static inline const char *vectors_init(char *why, size_t wl) {
  const char *d = getenv("SHIELD_VECTORS"), *from = "SHIELD_VECTORS";
  if (!d || !*d) {
    d = getenv("SHIELD_VECTORS_DEFAULT");
    from = "the default (SHIELD_VECTORS unset)";
  }
  char p[1024];
  struct stat st;
  snprintf(p, sizeof p, "%s/attestation", d ? d : "");
  if (d && *d && stat(p, &st) == 0 && S_ISDIR(st.st_mode)) return vdir = d;
  snprintf(why, wl,
           "no shared vectors: %s/attestation is not a folder (from %s; set SHIELD_VECTORS to "
           "the shared vectors folder)",
           d && *d ? d : "(unset)", from);
  return vdir = NULL;
}

/* An RFC 3339 UTC time ("2024-01-02T03:04:05Z") as seconds since the epoch. */
static inline int64_t T(const char *s) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return (int64_t)timegm(&tm);
}

static inline int test_summary(void);

/* Read <vdir>/attestation/<rel> (NUL-terminated, caller frees).  A file that cannot be read
 * ends the suite as failed, here: the vectors folder is there, so a file missing from it is a
 * check the suite cannot make, never a skip. */
static inline uint8_t *slurp(const char *rel, size_t *len) {
  char path[1024];
  *len = 0;
  snprintf(path, sizeof path, "%s/attestation/%s", vdir ? vdir : "(no vectors folder)", rel);
  FILE *f = fopen(path, "rb");
  if (!f) {
    failed++;
    fprintf(stderr, "FAIL: vector file %s cannot be read; stopping\n", path);
    exit(test_summary());
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (b != NULL && fread(b, 1, (size_t)n, f) != (size_t)n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  if (b == NULL) {
    failed++;
    fprintf(stderr, "FAIL: vector file %s: read error; stopping\n", path);
    exit(test_summary());
  }
  b[n] = 0;
  *len = (size_t)n;
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

/* The end of a suite part of which could not run (why): a failure of what did run still fails
 * it; else it is a skip (exit 77), so a run without the data never counts as a pass. */
static inline int test_summary_skip(const char *why) {
  printf("%d passed, %d failed\n", passed, failed);
  if (failed) return 1;
  printf("SKIP: %s\n", why);
  return TEST_SKIP;
}

#endif
