/* cli/attest.c — `shield attest` (this machine's TEE evidence, attest.h's providers) and
 * `shield dev-root` (the simulated TEE, docs/protocol.md §1.7).
 *
 *   shield attest --tee TYPE [--nonce HEX] [--public-key FILE] [--out FILE] [--json]
 *                 [--gcp-audience VALUE] [--gcp-socket PATH] [--device-root DIR]
 *                 [--at RFC3339|UNIX] [--lifetime SECONDS] [--debug] [--pcr N=HEX]...
 *                 [--data-dir DIR]
 *       writes evidence binding D(nonce, public key) (§1.2) in the type's §1.5 encoding: the
 *       raw bytes (a JWT's text for gcp) to FILE or stdout, or with --json one line
 *       {"tee_type", "source", "evidence": b64url, "nonce": b64url} (what the deployment
 *       images' smoke checks read).  TYPE: nitro, sev-snp, tdx, sgx, azure-snp, azure-tdx,
 *       gcp, simulated or auto (the TEE whose device is present; never simulated).  A TEE that
 *       is not there fails with the provider's message naming the missing device (exit 1).
 *   shield dev-root [--der] [--data-dir DIR]
 *       prints the dev root certificate (PEM; --der: raw DER), creating it on first use.
 *
 * --nonce defaults to 32 random bytes (printed by --json).  The simulated TEE's own options
 * (--at, --lifetime, --debug, --pcr, --data-dir) exist to produce negative test evidence and
 * are refused with any other TEE.  The dev root lives in $XDG_DATA_HOME/shield (else
 * ~/.local/share/shield); servers accept its evidence only with --trust-simulated.  --at
 * defaults to now (the CLI reads the clock; attest/ never does).  --debug makes PCR0 zero (a
 * debug enclave); --pcr overrides one PCR (48 bytes hex).  --device-root prefixes every device
 * and configfs path (tests against a fake tree).
 */
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "attest.h"
#include "common.h"
#include "opts.h"

/* ---- shield attest ---- */

typedef struct attest_args {
  const char *tee, *nonce_hex, *pk_path, *out_path, *dir;
  const char *gcp_audience, *gcp_socket, *device_root;
  int json;
  int64_t at;       /* --at, 0: now */
  int64_t lifetime; /* --lifetime, 0: the default */
  int debug;
  int sim_only; /* a simulated-only option was given (its name is in sim_flag) */
  const char *sim_flag;
  uint8_t pcrbuf[32][48];
  const uint8_t *pcrs[32];
} attest_args;

static int set_at(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  attest_args *a = t;
  if (sh_rfc3339_parse(v, strlen(v), SH_RFC3339_UNIX, &a->at) < 0 || a->at <= 0)
    return sh_cli__fail(err, "--at: '%s' is not RFC 3339 (UTC) or Unix seconds", v);
  a->sim_only = 1;
  a->sim_flag = name;
  return 0;
}

/* --pcr N=HEX: PCR N (0-31) is the 48 bytes of HEX (96 digits), for negative test evidence */
static int set_pcr(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  attest_args *a = t;
  char *end;
  long idx = strtol(v, &end, 10);
  size_t got = 0;
  if (end == v || *end != '=' || idx < 0 || idx > 31 || strlen(end + 1) != 96 ||
      OPENSSL_hexstr2buf_ex(a->pcrbuf[idx], 48, &got, end + 1, '\0') != 1 || got != 48)
    return sh_cli__fail(err, "--pcr: '%s' is not N=<96 hex digits> (N 0-31)", v);
  a->pcrs[idx] = a->pcrbuf[idx];
  a->sim_only = 1;
  a->sim_flag = name;
  return 0;
}

/* --tee: the TEEs that produce evidence (docs/protocol.md §0; maa is a verifier's token) */
static const char *const tees[] = {"nitro",     "sev-snp", "tdx",       "sgx",  "azure-snp",
                                   "azure-tdx", "gcp",     "simulated", "auto", NULL};

#define SECTION(text) \
  { .kind = SH_CLI_SECTION, .help = text }
#define A(f) .off = offsetof(attest_args, f), .size = sizeof(((attest_args *)0)->f)
static const sh_cli_opt attest_opts[] = {
    {"--tee", .metavar = "TYPE",
     .help = "nitro, sev-snp, tdx, sgx, azure-snp, azure-tdx, gcp,\n"
             "simulated (development) or auto (required)",
     .kind = SH_CLI_CHOICE, .choices = tees, A(tee)},
    {"--nonce", .metavar = "HEX",
     .help = "the nonce to bind (default 32 random bytes; at most 512)", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, A(nonce_hex)},
    {"--public-key", .metavar = "FILE", .help = "the public key to bind (PEM or DER SPKI)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, A(pk_path)},
    {"--out", .metavar = "FILE", .help = "write the evidence there (default stdout)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, A(out_path)},
    {"--json",
     .help = "print {\"tee_type\", \"source\", \"evidence\", \"nonce\"} (base64url)\n"
             "instead of the raw evidence",
     .kind = SH_CLI_SET, .ival = 1, A(json)},
    SECTION("Provider settings:"),
    {"--gcp-audience", .metavar = "VALUE",
     .help = "gcp: the Confidential Space token's audience (required)", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, A(gcp_audience)},
    {"--gcp-socket", .metavar = "PATH",
     .help = "gcp: the launcher's socket\n(default /run/container_launcher/teeserver.sock)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, A(gcp_socket)},
    {"--device-root", .metavar = "DIR", .help = "prefix of every device and configfs path (tests)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, A(device_root)},
    SECTION("The simulated TEE (negative test evidence; --tee simulated only):"),
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
          "Usage: shield attest --tee TYPE [--nonce HEX] [OPTIONS]\n"
          "\n"
          "Write this machine's TEE evidence bound to the nonce and public key (docs/protocol.md\n"
          "§1.2), as the server's own --tee would make it.  --tee simulated writes Nitro-format\n"
          "evidence signed by the local dev root (accepted only with --trust-simulated).\n",
      .opts = attest_opts,
      .nopts = sizeof attest_opts / sizeof *attest_opts,
      .targets = targets,
  };
}

/* The simulated TEE with its own options (attest.h: what the simulated provider calls). */
static int simulated(const attest_args *a, const uint8_t *nonce, size_t nl, const uint8_t *spki,
                     size_t sl, int64_t now, uint8_t **ev, size_t *evlen, char *eb, size_t ebl) {
  sh_attest_sim_params p;
  memset(&p, 0, sizeof p);
  p.nonce = nonce;
  p.nonce_len = nl;
  p.public_key = spki;
  p.public_key_len = sl;
  p.now = now;
  p.at = a->at ? a->at : now;
  p.lifetime = a->lifetime;
  p.debug = a->debug;
  memcpy(p.pcrs, a->pcrs, sizeof p.pcrs);
  p.dir = a->dir;
  return sh_attest_simulated_evidence(&p, ev, evlen, eb, ebl);
}

/* Any other TEE: its provider (auto detects it), D computed here as the server does. */
static int provider(const attest_args *a, const uint8_t *nonce, size_t nl, const uint8_t *spki,
                    size_t sl, int64_t now, uint8_t **ev, size_t *evlen, sh_tee *tee,
                    const char **source, char *eb, size_t ebl) {
  sh_attest_provider_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.tee = strcmp(a->tee, "auto") == 0 ? SH_ATTEST_TEE_AUTO : sh_tee_from_name(a->tee);
  cfg.root = a->device_root;
  cfg.simulated_dir = a->dir;
  cfg.now = now;
  cfg.gcp_socket = a->gcp_socket;
  cfg.gcp_audience = a->gcp_audience;
  sh_attest_provider *p = NULL;
  if (sh_attest_provider_open(&cfg, &p, eb, ebl) < 0) return -1;
  uint8_t D[64];
  int rc = -1;
  if (sh_attest_binding_digest(nonce, nl, spki, sl, D) < 0) {
    snprintf(eb, ebl, "the nonce or public key is too long to bind");
  } else if (sh_attest_provider_evidence(p, D, nonce, nl, spki, sl, now, ev, evlen, eb, ebl) == 0) {
    *tee = sh_attest_provider_tee(p);
    *source = sh_attest_provider_source(p);
    rc = 0;
  }
  sh_attest_provider_free(p);
  return rc;
}

/* --json: one line for humans and the images' smoke checks (the §4 document's field names). */
static char *json_line(sh_tee tee, const char *source, const uint8_t *ev, size_t evlen,
                       const uint8_t *nonce, size_t nl) {
  char *e = sh_b64_encode_alloc(ev, evlen, SH_B64_PROTOCOL);
  char *n = sh_b64_encode_alloc(nonce, nl, SH_B64_PROTOCOL);
  json_t *o = e && n ? json_pack("{s:s, s:s, s:s, s:s}", "tee_type", sh_tee_name(tee), "source",
                                 source, "evidence", e, "nonce", n)
                     : NULL;
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  free(e);
  free(n);
  return text;
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
  int sim = rc == 0 && a.tee && strcmp(a.tee, "simulated") == 0;
  if (rc == 0 && !a.tee) rc = sh_cli__fail(&err, "missing --tee TYPE");
  if (rc == 0 && !sim && (a.sim_only || a.lifetime || a.debug || a.dir))
    rc = sh_cli__fail(&err, "%s: only --tee simulated takes it",
                      a.sim_only   ? a.sim_flag
                      : a.lifetime ? "--lifetime"
                      : a.debug    ? "--debug"
                                   : "--data-dir");
  if (rc < 0) return sh_cli__usage_error(&cmd, &err);

  unsigned char *nonce = NULL;
  uint8_t *spki = NULL, *ev = NULL;
  size_t evlen = 0, spki_len = 0, nl = 0;
  char *text = NULL;
  int code = 2;
  if (a.nonce_hex) {
    long l = 0;
    if (!(nonce = OPENSSL_hexstr2buf(a.nonce_hex, &l)) || l > 512) {
      fprintf(stderr, "shield attest: --nonce: not hex (at most 512 bytes)\n");
      goto out;
    }
    nl = (size_t)l;
  } else {
    nl = 32; /* a fresh nonce, like a client's (docs/protocol.md §4) */
    if (!(nonce = OPENSSL_malloc(nl)) || RAND_bytes(nonce, (int)nl) != 1) {
      fprintf(stderr, "shield attest: no randomness for a nonce\n");
      goto out;
    }
  }
  if (a.pk_path && !(spki = sh_cli__load_spki(a.pk_path, &spki_len))) {
    fprintf(stderr, "shield attest: %s: not a PEM or DER public key\n", a.pk_path);
    goto out;
  }
  int64_t now = (int64_t)time(NULL); /* the CLI reads the clock; attest/ never does */
  sh_tee tee = SH_TEE_SIMULATED;
  const char *source = "simulated";
  char eb[512] = "";
  code = 1;
  if ((sim ? simulated(&a, nonce, nl, spki, spki_len, now, &ev, &evlen, eb, sizeof eb)
           : provider(&a, nonce, nl, spki, spki_len, now, &ev, &evlen, &tee, &source, eb,
                      sizeof eb)) < 0) {
    fprintf(stderr, "shield attest: %s\n", eb);
    goto out;
  }
  if (a.json && !(text = json_line(tee, source, ev, evlen, nonce, nl))) {
    fprintf(stderr, "shield attest: out of memory\n");
    goto out;
  }
  FILE *f = a.out_path ? fopen(a.out_path, "wb") : stdout;
  int wrote = f && (text ? fputs(text, f) >= 0 && fputc('\n', f) == '\n'
                         : fwrite(ev, 1, evlen, f) == evlen);
  if (f && a.out_path && fclose(f) != 0) wrote = 0;
  if (!wrote || (!a.out_path && fflush(stdout) != 0)) {
    fprintf(stderr, "shield attest: cannot write %s\n", a.out_path ? a.out_path : "stdout");
    goto out;
  }
  code = 0;
out:
  OPENSSL_free(nonce);
  free(spki);
  free(ev);
  free(text);
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
