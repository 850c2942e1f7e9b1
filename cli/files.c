/*
 * cli/files.c — the files the commands read (evidence, certificates, keys, JWKS): bounded, with
 * a message that says why one could not be read.
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "opts.h"

uint8_t *sh_cli__read_file(const char *path, size_t *len, int64_t *over) {
  if (over) *over = -1;
  FILE *f = !strcmp(path, "-") ? stdin : fopen(path, "rb");
  if (!f) return NULL;
  uint8_t *buf = malloc(SH_CLI_MAX_FILE + 1);
  size_t n = buf ? fread(buf, 1, SH_CLI_MAX_FILE + 1, f) : 0;
  int err = !buf ? ENOMEM : ferror(f) ? errno : 0;
  if (!err && n > SH_CLI_MAX_FILE && over) {
    struct stat st;
    *over = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : 0;
  }
  if (f != stdin) fclose(f);
  if (err || n > SH_CLI_MAX_FILE) {
    free(buf);
    errno = err;
    return NULL;
  }
  *len = n;
  return buf;
}

void sh_cli__read_error(const char *cmd, const char *path, int64_t over) {
  if (over > 0)
    fprintf(stderr, "%s: %s is %lld bytes, over the 4 MiB limit\n", cmd, path, (long long)over);
  else if (over == 0)
    fprintf(stderr, "%s: %s is over the 4 MiB limit\n", cmd, path);
  else
    fprintf(stderr, "%s: cannot read %s: %s\n", cmd, path, errno ? strerror(errno) : "error");
}

uint8_t *sh_cli__load_spki(const char *path, size_t *len) {
  size_t n = 0;
  uint8_t *raw = sh_cli__read_file(path, &n, NULL), *der = NULL;
  if (!raw) return NULL;
  BIO *b = BIO_new_mem_buf(raw, (int)n);
  EVP_PKEY *pk = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
  if (!pk) {
    const unsigned char *q = raw;
    pk = d2i_PUBKEY(NULL, &q, (long)n);
  }
  if (pk) {
    unsigned char *out = NULL;
    int l = i2d_PUBKEY(pk, &out);
    if (l > 0) {
      der = malloc((size_t)l);
      if (der) {
        memcpy(der, out, (size_t)l);
        *len = (size_t)l;
      }
    }
    OPENSSL_free(out);
  }
  EVP_PKEY_free(pk);
  BIO_free(b);
  free(raw);
  ERR_clear_error();
  return der;
}
