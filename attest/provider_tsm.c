/* attest/provider_tsm.c — SEV-SNP and TDX evidence through configfs-tsm, the kernel's one
 * interface for confidential-guest reports (Linux >= 6.7; the ABI is
 * Documentation/ABI/testing/configfs-tsm):
 *
 *   mkdir <tsm>/report/<name>     a report object; its attributes appear with it
 *   provider                      (RO) "sev_guest" or "tdx_guest": who makes the report
 *   generation                    (RO) incremented by every write to inblob or an option
 *   inblob                        (WO) up to 64 bytes of report data: we write D
 *   outblob                       (RO) the report (SNP) or the quote (TDX), made on first read
 *   auxblob                       (RO) SNP: the host's certificate table (GHCB spec §4.1.8.1)
 *   rmdir <tsm>/report/<name>
 *
 * Why one directory per request: a report object holds one inblob at a time, so two threads
 * sharing one would read each other's report.  A unique name (pid, a process-wide counter)
 * gives each call its own.  Why the generation check: anyone with access to configfs can
 * write into any report directory; the ABI's answer is `generation`, which must be exactly
 * one more after our inblob write than before it, read after outblob, or the outblob may hold
 * someone else's inblob.  Then we retry in a new directory, a bounded number of times, and
 * the report's REPORT_DATA is compared with D besides (belt and braces: a report that does
 * not bind D is never handed out). */
#include "provider.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TSM_OUTBLOB_MAX (32u * 1024u) /* include/linux/tsm.h: TSM_OUTBLOB_MAX SZ_32K */
#define TSM_AUXBLOB_MAX (64u * 1024u) /* the SNP certificate table: a few certificates */
#define TSM_ATTEMPTS 3

static atomic_ulong tsm_seq;

static const char *tsm_name(sh_tee tee) {
  return tee == SH_TEE_TDX ? "tdx_guest" : "sev_guest";
}

typedef struct tsm_dir {
  char path[4096];
  int made;
} tsm_dir;

static int dir_make(sh_attest_provider *p, tsm_dir *d, char *err, size_t errlen) {
  char base[4096];
  d->made = 0;
  if (sh_attest__prov_path(p, SH_PATH_TSM_DIR, base, sizeof base) < 0)
    return sh_attest__prov_err(err, errlen, "configfs-tsm: path too long");
  /* EEXIST: a directory left behind by a process that had our pid: take the next name */
  for (int i = 0; i < 8; i++) {
    unsigned long seq = atomic_fetch_add(&tsm_seq, 1);
    if (snprintf(d->path, sizeof d->path, "%s/shield-%ld-%lu", base, (long)getpid(), seq) >=
        (int)sizeof d->path)
      return sh_attest__prov_err(err, errlen, "configfs-tsm: path too long");
    int rc = p->tsm_mkdir ? p->tsm_mkdir(p->ctx, d->path) : mkdir(d->path, 0700);
    if (rc == 0) {
      d->made = 1;
      return 0;
    }
    if (errno != EEXIST) break;
  }
  return sh_attest__prov_err(err, errlen, "configfs-tsm: mkdir %s: %s", d->path, strerror(errno));
}

static void dir_remove(sh_attest_provider *p, tsm_dir *d) {
  /* a failed rmdir leaves one report object behind; nothing else depends on it */
  if (d->made) (void)(p->tsm_rmdir ? p->tsm_rmdir(p->ctx, d->path) : rmdir(d->path));
  d->made = 0;
}

static int attr_path(const tsm_dir *d, const char *attr, char *out, size_t n) {
  int w = snprintf(out, n, "%s/%s", d->path, attr);
  return w > 0 && (size_t)w < n ? 0 : -1;
}

/* A small text attribute (provider, generation), trailing newline removed. */
static int read_text(const tsm_dir *d, const char *attr, char *out, size_t n, char *err,
                     size_t errlen) {
  char path[4200];
  uint8_t *b = NULL;
  size_t len = 0;
  if (attr_path(d, attr, path, sizeof path) < 0 || sh_attest__prov_read(path, 256, &b, &len) < 0)
    return sh_attest__prov_err(err, errlen, "configfs-tsm: cannot read %s/%s: %s", d->path, attr,
                               strerror(errno));
  while (len && (b[len - 1] == '\n' || b[len - 1] == ' '))
    len--;
  int ok = len < n && memchr(b, 0, len) == NULL;
  if (ok) {
    memcpy(out, b, len);
    out[len] = 0;
  }
  free(b);
  return ok ? 0
            : sh_attest__prov_err(err, errlen, "configfs-tsm: %s/%s is not text", d->path, attr);
}

static int read_generation(const tsm_dir *d, uint64_t *g, char *err, size_t errlen) {
  char t[32], *end;
  if (read_text(d, "generation", t, sizeof t, err, errlen) < 0) return -1;
  errno = 0;
  unsigned long long v = strtoull(t, &end, 10);
  if (!t[0] || *end || errno)
    return sh_attest__prov_err(err, errlen, "configfs-tsm: generation \"%s\" is not a number", t);
  *g = v;
  return 0;
}

int sh_attest__tsm_provider(sh_attest_provider *p, char *name, size_t n, char *err, size_t errlen) {
  if (!sh_attest__prov_exists(p, SH_PATH_TSM_DIR)) return 1;
  tsm_dir d;
  if (dir_make(p, &d, err, errlen) < 0) return -1;
  int rc = read_text(&d, "provider", name, n, err, errlen);
  dir_remove(p, &d);
  return rc;
}

int sh_attest__tsm_check(sh_attest_provider *p, sh_tee tee, char *err, size_t errlen) {
  char name[32];
  int rc = sh_attest__tsm_provider(p, name, sizeof name, err, errlen);
  if (rc != 0) return rc;
  if (strcmp(name, tsm_name(tee)) != 0)
    return sh_attest__prov_err(err, errlen,
                               "%s: configfs-tsm's provider is \"%s\", not \"%s\": this guest is "
                               "another kind of TEE",
                               sh_tee_name(tee), name, tsm_name(tee));
  return 0;
}

/* One attempt in a fresh directory.  1: the generation moved (another writer), retry. */
static int attempt(sh_attest_provider *p, const uint8_t D[64], uint8_t **out, size_t *len,
                   uint64_t *g0, uint64_t *g1, char *err, size_t errlen) {
  tsm_dir d;
  char path[4200], name[32];
  uint8_t *blob = NULL, *aux = NULL;
  size_t blen = 0, alen = 0;
  int rc = -1;
  if (dir_make(p, &d, err, errlen) < 0) return -1;
  if (read_text(&d, "provider", name, sizeof name, err, errlen) < 0) goto out;
  if (strcmp(name, tsm_name(p->tee)) != 0) {
    sh_attest__prov_err(err, errlen, "configfs-tsm: provider is \"%s\", not \"%s\"", name,
                        tsm_name(p->tee));
    goto out;
  }
  if (read_generation(&d, g0, err, errlen) < 0) goto out;
  if (attr_path(&d, "inblob", path, sizeof path) < 0 || sh_attest__prov_write(path, D, 64) < 0) {
    sh_attest__prov_err(err, errlen, "configfs-tsm: writing %s/inblob: %s", d.path,
                        strerror(errno));
    goto out;
  }
  /* reading outblob makes the report (the driver asks the firmware or the quote service) */
  if (attr_path(&d, "outblob", path, sizeof path) < 0 ||
      sh_attest__prov_read(path, TSM_OUTBLOB_MAX, &blob, &blen) < 0) {
    sh_attest__prov_err(err, errlen, "configfs-tsm: reading %s/outblob: %s", d.path,
                        strerror(errno));
    goto out;
  }
  if (p->tee == SH_TEE_SEV_SNP) {
    /* auxblob: absent on kernels without it, empty when the host supplies no certificates */
    if (attr_path(&d, "auxblob", path, sizeof path) < 0 ||
        (sh_attest__prov_read(path, TSM_AUXBLOB_MAX, &aux, &alen) < 0 && errno != ENOENT)) {
      sh_attest__prov_err(err, errlen, "configfs-tsm: reading %s/auxblob: %s", d.path,
                          strerror(errno));
      goto out;
    }
  }
  if (read_generation(&d, g1, err, errlen) < 0) goto out;
  if (*g1 != *g0 + 1) {
    rc = 1;
    goto out;
  }
  if (p->tee == SH_TEE_SEV_SNP) {
    rc = sh_attest__snp_encode(blob, blen, aux, alen, D, out, len, err, errlen);
  } else if (sh_attest__quote_binds(blob, blen, 1, D, err, errlen) == 0) {
    *out = blob;
    *len = blen;
    blob = NULL;
    rc = 0;
  }
out:
  dir_remove(p, &d);
  free(blob);
  free(aux);
  return rc;
}

int sh_attest__tsm_evidence(sh_attest_provider *p, const uint8_t D[64], uint8_t **out, size_t *len,
                            char *err, size_t errlen) {
  uint64_t g0 = 0, g1 = 0;
  for (int i = 0; i < TSM_ATTEMPTS; i++) {
    int rc = attempt(p, D, out, len, &g0, &g1, err, errlen);
    if (rc <= 0) return rc;
  }
  return sh_attest__prov_err(err, errlen,
                             "configfs-tsm: the report's generation went from %" PRIu64
                             " to %" PRIu64
                             " (not +1): another process wrote to the report "
                             "directory; gave up after %d attempts",
                             g0, g1, TSM_ATTEMPTS);
}
