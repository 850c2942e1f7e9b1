/* cli/attest.c — `shield attest` and `shield dev-root` (the simulated TEE, docs/protocol.md
 * §1.7, attest.h).
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
 * attest/ never does: the time a new dev root is dated from is passed in too).  --debug makes PCR0
 * zero (a debug enclave); --pcr overrides one PCR (48 bytes hex) — both exist to produce negative
 * test evidence.
 */
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attest.h"
#include "common.h"
#include "opts.h"

/* ---- shield attest ---- */

typedef struct attest_args {
  const char *tee, *nonce_hex, *pk_path, *out_path, *dir;
  int64_t at;       /* --at, 0: now */
  int64_t lifetime; /* --lifetime, 0: the default */
  int debug;
  uint8_t pcrbuf[32][48];
  const uint8_t *pcrs[32];
} attest_args;

static int set_at(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  (void)name;
  attest_args *a = t;
  if (sh_rfc3339_parse(v, strlen(v), SH_RFC3339_UNIX, &a->at) < 0 || a->at <= 0)
    return sh_cli__fail(err, "--at: '%s' is not RFC 3339 (UTC) or Unix seconds", v);
  return 0;
}

/* --pcr N=HEX: PCR N (0-31) is the 48 bytes of HEX (96 digits), for negative test evidence */
static int set_pcr(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  (void)name;
  attest_args *a = t;
  char *end;
  long idx = strtol(v, &end, 10);
  size_t got = 0;
  if (end == v || *end != '=' || idx < 0 || idx > 31 || strlen(end + 1) != 96 ||
      OPENSSL_hexstr2buf_ex(a->pcrbuf[idx], 48, &got, end + 1, '\0') != 1 || got != 48)
    return sh_cli__fail(err, "--pcr: '%s' is not N=<96 hex digits> (N 0-31)", v);
  a->pcrs[idx] = a->pcrbuf[idx];
  return 0;
}

static const char *const tees[] = {"simulated", NULL};

#define A(f) .off = offsetof(attest_args, f), .size = sizeof(((attest_args *)0)->f)
static const sh_cli_opt attest_opts[] = {
    {"--tee", .metavar = "simulated", .help = "the TEE to simulate (required)",
     .kind = SH_CLI_CHOICE, .choices = tees, A(tee)},
    {"--nonce", .metavar = "HEX", .help = "the nonce to bind (required; at most 512 bytes)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, A(nonce_hex)},
    {"--public-key", .metavar = "FILE", .help = "the public key to bind (PEM or DER SPKI)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, A(pk_path)},
    {"--out", .metavar = "FILE", .help = "write the evidence there (default stdout)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, A(out_path)},
    {"--at", .metavar = "RFC3339|UNIX", .help = "the document's time (default now)",
     .kind = SH_CLI_CUSTOM, .apply = set_at},
    {"--lifetime", .metavar = "SECONDS",
     .help = "validity of the signing certificate (default 3 hours)", .kind = SH_CLI_INT, .lo = 1,
     .hi = INT64_MAX, .accepts = "a positive number of seconds", A(lifetime)},
    {"--debug", .help = "a debug enclave (PCR0 zero)", .kind = SH_CLI_SET, .ival = 1, A(debug)},
    {"--pcr", .metavar = "N=HEX", .help = "PCR N (0-31) is these 48 bytes (repeatable)",
     .kind = SH_CLI_CUSTOM, .apply = set_pcr},
    {"--data-dir", .metavar = "DIR",
     .help = "where the dev root is (default $XDG_DATA_HOME/shield)", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, A(dir)},
    {"--help", .alias = "-h", .help = "show this message and exit", .kind = SH_CLI_HELP},
};

static void attest_cmd(sh_cli_cmd *cmd, void *const *targets) {
  *cmd = (sh_cli_cmd){
      .name = "shield attest",
      .usage =
          "Usage: shield attest --tee simulated --nonce HEX [OPTIONS]\n"
          "\n"
          "Write simulated TEE evidence (Nitro format, signed by the local dev root: accepted\n"
          "only with --trust-simulated) bound to the nonce and public key.\n",
      .opts = attest_opts,
      .nopts = sizeof attest_opts / sizeof *attest_opts,
      .targets = targets,
  };
}

int sh_cli__attest(int argc, char **argv) {
  attest_args a;
  memset(&a, 0, sizeof a);
  void *const targets[] = {&a};
  sh_cli_cmd cmd;
  attest_cmd(&cmd, targets);
  sh_error err = {0};
  int rc = sh_cli__parse(&cmd, argc, argv, stdout, &err);
  if (rc == 1) return 0; /* --help */
  if (rc == 0 && !a.tee) rc = sh_cli__fail(&err, "missing --tee simulated");
  if (rc == 0 && !a.nonce_hex) rc = sh_cli__fail(&err, "missing --nonce HEX");
  if (rc < 0) return sh_cli__usage_error(&cmd, &err);

  sh_attest_sim_params p;
  unsigned char *nonce = NULL;
  uint8_t *spki = NULL, *ev = NULL;
  size_t evlen = 0;
  int code = 2;
  memset(&p, 0, sizeof p);
  long nl = 0;
  if (!(nonce = OPENSSL_hexstr2buf(a.nonce_hex, &nl)) || nl > 512) {
    fprintf(stderr, "shield attest: --nonce: not hex (at most 512 bytes)\n");
    goto out;
  }
  p.nonce = nonce;
  p.nonce_len = (size_t)nl;
  if (a.pk_path && !(spki = sh_cli__load_spki(a.pk_path, &p.public_key_len))) {
    fprintf(stderr, "shield attest: %s: not a PEM or DER public key\n", a.pk_path);
    goto out;
  }
  p.public_key = spki;
  p.now = (int64_t)time(NULL); /* the CLI reads the clock; attest/ never does */
  p.at = a.at ? a.at : p.now;
  p.lifetime = a.lifetime;
  p.debug = a.debug;
  memcpy(p.pcrs, a.pcrs, sizeof p.pcrs);
  p.dir = a.dir;
  char eb[512] = "";
  if (sh_attest_simulated_evidence(&p, &ev, &evlen, eb, sizeof eb) < 0) {
    fprintf(stderr, "shield attest: %s\n", eb);
    code = 1;
    goto out;
  }
  FILE *f = a.out_path ? fopen(a.out_path, "wb") : stdout;
  if (!f || fwrite(ev, 1, evlen, f) != evlen || (a.out_path ? fclose(f) : fflush(f)) != 0) {
    fprintf(stderr, "shield attest: cannot write %s\n", a.out_path ? a.out_path : "stdout");
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

/* ---- shield dev-root ---- */

typedef struct dev_root_args {
  const char *dir;
  int der;
} dev_root_args;

#define D(f) .off = offsetof(dev_root_args, f), .size = sizeof(((dev_root_args *)0)->f)
static const sh_cli_opt dev_root_opts[] = {
    {"--der", .help = "raw DER instead of PEM", .kind = SH_CLI_SET, .ival = 1, D(der)},
    {"--data-dir", .metavar = "DIR",
     .help = "where the dev root is (default $XDG_DATA_HOME/shield)", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, D(dir)},
    {"--help", .alias = "-h", .help = "show this message and exit", .kind = SH_CLI_HELP},
};

int sh_cli__dev_root(int argc, char **argv) {
  dev_root_args a = {0};
  void *const targets[] = {&a};
  sh_cli_cmd cmd = {
      .name = "shield dev-root",
      .usage =
          "Usage: shield dev-root [OPTIONS]\n"
          "\n"
          "Print the simulated TEE's dev root certificate, creating it on first use.\n",
      .opts = dev_root_opts,
      .nopts = sizeof dev_root_opts / sizeof *dev_root_opts,
      .targets = targets,
  };
  sh_error err = {0};
  int rc = sh_cli__parse(&cmd, argc, argv, stdout, &err);
  if (rc == 1) return 0; /* --help */
  if (rc < 0) return sh_cli__usage_error(&cmd, &err);
  uint8_t *der = NULL;
  size_t n = 0;
  char eb[512] = "";
  if (sh_attest_simulated_root(a.dir, 1, (int64_t)time(NULL), &der, &n, eb, sizeof eb) < 0) {
    fprintf(stderr, "shield dev-root: %s\n", eb);
    return 1;
  }
  int ok;
  if (a.der) {
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
