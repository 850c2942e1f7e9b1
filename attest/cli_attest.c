/* attest/cli_attest.c — `shield attest` and `shield dev-root` (the simulated TEE, §1.7).
 *
 *   shield attest --tee simulated --nonce HEX [--public-key FILE] [--out FILE]
 *                 [--at RFC3339|UNIX] [--lifetime SECONDS] [--debug] [--pcr N=HEX]...
 *                 [--data-dir DIR]
 *       writes the raw evidence bytes (a tagged COSE_Sign1) to FILE or stdout.
 *   shield dev-root [--der] [--data-dir DIR]
 *       prints the dev root certificate (PEM; --der: raw DER), creating it on first use.
 *
 * The dev root lives in $XDG_DATA_HOME/shield (else ~/.local/share/shield); servers accept
 * its evidence only with --trust-simulated.  --at defaults to now (the CLI reads the clock;
 * the library never does).  --debug makes PCR0 zero (a debug enclave); --pcr overrides one PCR
 * (48 bytes hex) — both exist to produce negative test evidence.
 */
#include "internal.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage_attest(void) {
  fprintf(stderr,
          "usage: shield attest --tee simulated --nonce HEX [--public-key FILE] [--out FILE]\n"
          "                     [--at RFC3339|UNIX] [--lifetime SECONDS] [--debug]\n"
          "                     [--pcr N=HEX]... [--data-dir DIR]\n");
}

int sh_attest_cli_attest(int argc, char **argv) {
  const char *tee = NULL, *nonce_hex = NULL, *pk_path = NULL, *out_path = NULL, *at_s = NULL,
             *life_s = NULL, *dir = NULL;
  sh_attest_sim_params p;
  uint8_t pcrbuf[32][48];
  unsigned char *nonce = NULL;
  uint8_t *spki = NULL, *ev = NULL;
  size_t evlen = 0;
  int code = 2;
  memset(&p, 0, sizeof p);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **dst = NULL;
    if (!strcmp(a, "--debug")) {
      p.debug = 1;
      continue;
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage_attest();
      return 2;
    }
    if (!strcmp(a, "--tee"))
      dst = &tee;
    else if (!strcmp(a, "--nonce"))
      dst = &nonce_hex;
    else if (!strcmp(a, "--public-key"))
      dst = &pk_path;
    else if (!strcmp(a, "--out"))
      dst = &out_path;
    else if (!strcmp(a, "--at"))
      dst = &at_s;
    else if (!strcmp(a, "--lifetime"))
      dst = &life_s;
    else if (!strcmp(a, "--data-dir"))
      dst = &dir;
    else if (!strcmp(a, "--pcr") && i + 1 < argc) {
      char *end;
      const char *v = argv[++i];
      long idx = strtol(v, &end, 10);
      size_t got = 0;
      if (end == v || *end != '=' || idx < 0 || idx > 31 || strlen(end + 1) != 96 ||
          OPENSSL_hexstr2buf_ex(pcrbuf[idx], 48, &got, end + 1, '\0') != 1 || got != 48) {
        fprintf(stderr, "shield attest: --pcr wants N=<96 hex digits>\n");
        return 2;
      }
      p.pcrs[idx] = pcrbuf[idx];
      continue;
    } else {
      fprintf(stderr, "shield attest: unknown argument %s\n", a);
      usage_attest();
      return 2;
    }
    if (i + 1 >= argc || *dst) {
      usage_attest();
      return 2;
    }
    *dst = argv[++i];
  }
  if (!tee || !nonce_hex) {
    usage_attest();
    return 2;
  }
  if (strcmp(tee, "simulated")) {
    fprintf(stderr, "shield attest: only --tee simulated is supported by this command\n");
    return 2;
  }
  long nl = 0;
  if (!*nonce_hex || !(nonce = OPENSSL_hexstr2buf(nonce_hex, &nl)) || nl > 512) {
    fprintf(stderr, "shield attest: --nonce: not hex (at most 512 bytes)\n");
    goto out;
  }
  p.nonce = nonce;
  p.nonce_len = (size_t)nl;
  if (pk_path && !(spki = sh_attest__cli_load_spki(pk_path, &p.public_key_len))) {
    fprintf(stderr, "shield attest: %s: not a PEM or DER public key\n", pk_path);
    goto out;
  }
  p.public_key = spki;
  p.at = (int64_t)time(NULL);
  if (at_s && (sh_rfc3339_parse(at_s, strlen(at_s), SH_RFC3339_UNIX, &p.at) < 0 || p.at <= 0)) {
    fprintf(stderr, "shield attest: --at: not RFC 3339 (UTC) or Unix seconds\n");
    goto out;
  }
  if (life_s && (p.lifetime = strtoll(life_s, NULL, 10)) <= 0) {
    fprintf(stderr, "shield attest: --lifetime: positive seconds\n");
    goto out;
  }
  p.dir = dir;
  char eb[512] = "";
  if (sh_attest_simulated_evidence(&p, &ev, &evlen, eb, sizeof eb) < 0) {
    fprintf(stderr, "shield attest: %s\n", eb);
    code = 1;
    goto out;
  }
  FILE *f = out_path ? fopen(out_path, "wb") : stdout;
  if (!f || fwrite(ev, 1, evlen, f) != evlen || (out_path ? fclose(f) : fflush(f)) != 0) {
    fprintf(stderr, "shield attest: cannot write %s\n", out_path ? out_path : "stdout");
    code = 1;
    goto out;
  }
  code = 0;
out:
  OPENSSL_free(nonce);
  free(spki);
  free(ev);
  return code;
}

int sh_attest_cli_dev_root(int argc, char **argv) {
  const char *dir = NULL;
  int der_out = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--der"))
      der_out = 1;
    else if (!strcmp(argv[i], "--data-dir") && i + 1 < argc)
      dir = argv[++i];
    else {
      fprintf(stderr, "usage: shield dev-root [--der] [--data-dir DIR]\n");
      return 2;
    }
  }
  uint8_t *der = NULL;
  size_t n = 0;
  char eb[512] = "";
  if (sh_attest_simulated_root(dir, 1, &der, &n, eb, sizeof eb) < 0) {
    fprintf(stderr, "shield dev-root: %s\n", eb);
    return 1;
  }
  int ok;
  if (der_out) {
    ok = fwrite(der, 1, n, stdout) == n;
  } else {
    const unsigned char *q = der;
    X509 *x = d2i_X509(NULL, &q, (long)n);
    ok = x && PEM_write_X509(stdout, x);
    X509_free(x);
  }
  free(der);
  return ok && fflush(stdout) == 0 ? 0 : 1;
}
