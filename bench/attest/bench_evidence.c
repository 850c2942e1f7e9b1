/* bench/attest/bench_evidence.c — fresh server evidence per second from the simulated provider
 * (attest.h, sh_attest_provider_evidence: what GET /.well-known/shield/attestation costs the
 * server, docs/protocol.md §4), next to the bare cost of the cryptography it cannot avoid:
 * one P-384 key generation (the enclave leaf key) and two ECDSA P-384/SHA-384 signatures (the
 * leaf certificate by the dev root, the COSE_Sign1 by the leaf), on messages of the same size.
 * The ratio (evidence ÷ bare) is what the provider adds: CBOR, certificate encoding, the dev
 * root's loading.  A measurement tool, not a test.
 * Usage: bench-evidence [ITERATIONS] [ROUNDS]   (default 300, 5; each figure the minimum over
 * the rounds).  The dev root goes to a fresh temporary directory. */
#include "attest.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* One fresh evidence: a new nonce each time, k = a 64-byte binding CBOR stand-in. */
static double evidence_us(sh_attest_provider *p, int n, int64_t at) {
  uint8_t nonce[32], k[64], D[64];
  char err[256];
  memset(k, 0xa5, sizeof k);
  double t0 = now_us();
  for (int i = 0; i < n; i++) {
    uint8_t *ev = NULL;
    size_t len = 0;
    RAND_bytes(nonce, sizeof nonce);
    if (sh_attest_binding_digest(nonce, sizeof nonce, k, sizeof k, D) < 0 ||
        sh_attest_provider_evidence(p, D, nonce, sizeof nonce, k, sizeof k, at, &ev, &len, err,
                                    sizeof err) < 0) {
      fprintf(stderr, "bench-evidence: %s\n", err);
      exit(1);
    }
    free(ev);
  }
  return (now_us() - t0) / n;
}

/* The unavoidable part: keygen + two signatures over ~1 KB and ~3 KB (certificate TBS and
 * Sig_structure sizes of a simulated document). */
static double bare_us(EVP_PKEY *root, int n) {
  static uint8_t tbs_cert[1024], tbs_doc[3072];
  uint8_t sig[160];
  RAND_bytes(tbs_cert, sizeof tbs_cert);
  RAND_bytes(tbs_doc, sizeof tbs_doc);
  double t0 = now_us();
  for (int i = 0; i < n; i++) {
    EVP_PKEY *leaf = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t sl = sizeof sig;
    int ok = leaf && md && EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, root) == 1 &&
             EVP_DigestSign(md, sig, &sl, tbs_cert, sizeof tbs_cert) == 1 &&
             EVP_MD_CTX_reset(md) == 1 &&
             EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, leaf) == 1 &&
             (sl = sizeof sig, EVP_DigestSign(md, sig, &sl, tbs_doc, sizeof tbs_doc) == 1);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(leaf);
    if (!ok) {
      fprintf(stderr, "bench-evidence: OpenSSL signing failed\n");
      exit(1);
    }
  }
  return (now_us() - t0) / n;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 300, rounds = argc > 2 ? atoi(argv[2]) : 5;
  if (n <= 0 || rounds <= 0) {
    fprintf(stderr, "usage: bench-evidence [ITERATIONS] [ROUNDS]\n");
    return 2;
  }
  char dir[] = "/tmp/bench-evidence-XXXXXX";
  if (!mkdtemp(dir)) {
    perror("bench-evidence: mkdtemp");
    return 1;
  }
  int64_t at = (int64_t)time(NULL);
  sh_attest_provider_config cfg = {.tee = SH_TEE_SIMULATED, .simulated_dir = dir, .now = at};
  sh_attest_provider *p = NULL;
  char err[256];
  if (sh_attest_provider_open(&cfg, &p, err, sizeof err) < 0) {
    fprintf(stderr, "bench-evidence: %s\n", err);
    return 1;
  }
  EVP_PKEY *root = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
  double ev = 1e30, bare = 1e30;
  evidence_us(p, n / 10 + 1, at); /* warm-up: the dev root file in the page cache */
  for (int r = 0; r < rounds; r++) {
    double e = evidence_us(p, n, at), b = bare_us(root, n);
    if (e < ev) ev = e;
    if (b < bare) bare = b;
  }
  printf(
      "simulated evidence: %.1f us each (%.0f/s); keygen + 2 ECDSA P-384 signatures: %.1f us "
      "(%.0f/s); evidence / bare = %.2fx\n",
      ev, 1e6 / ev, bare, 1e6 / bare, ev / bare);
  EVP_PKEY_free(root);
  sh_attest_provider_free(p);
  char path[sizeof dir + 32];
  snprintf(path, sizeof path, "%s/dev-root.pem", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/dev-root.key", dir);
  unlink(path);
  rmdir(dir);
  return 0;
}
