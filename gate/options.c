/*
 * gate/options.c — the gate's flags on the `shield` command line (`--attest-*`, `--dev`,
 * `--trust-simulated`, `--state-url` and the flags of what verification needs), as a hook of
 * the server's parser (sh_config_hook, server.h): one table drives the parsing; the help text
 * is the gate's two sections of `shield --help`.  What the values mean is sh_gate_config's
 * (gate.h); their validation is config.c's (sh_gate_config_check), run once the whole command
 * line is read, before any worker forks, so that a bad one exits 2 with its message.
 *
 * (The flag parsing of every module moves to cli/ in a later step; until then this is the
 * one place that knows the gate's flag names.)
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate_internal.h"

/* How a flag is applied:
 *   O_BOOL     no value; sets an int to 1
 *   O_ONCE     a string; given twice is an error (the keys and collateral: an ambiguity)
 *   O_LAST     a string; the last one given wins
 *   O_TYPES    --attest-types: a list of docs/protocol.md §0 names, checked here
 *   O_EXCLUDE  --attest-exclude: a path prefix, repeatable (at most 15)
 *   O_CLOCK    --attest-clock: an RFC 3339 UTC time */
enum { O_BOOL, O_ONCE, O_LAST, O_TYPES, O_EXCLUDE, O_CLOCK };

typedef struct option {
  const char *name;
  int kind;
  size_t off; /* offsetof the sh_gate_config field */
} option;

#define O(n, k, field) \
  { n, k, offsetof(sh_gate_config, field) }
static const option options[] = {
    O("--attest-types", O_TYPES, types),
    O("--attest-policy", O_LAST, policy),
    O("--attest-required", O_BOOL, required),
    O("--attest-exclude", O_EXCLUDE, exclude),
    O("--trust-simulated", O_BOOL, trust_simulated),
    O("--dev", O_BOOL, dev),
    O("--attest-clock", O_CLOCK, clock),
    O("--state-url", O_LAST, state_url), /* checked (and Redis reached) by sh_gate_new */
    O("--attest-maa-issuer", O_ONCE, maa_issuer),
    O("--attest-maa-audience", O_ONCE, maa_audience),
    O("--attest-maa-jwks", O_ONCE, maa_jwks),
    O("--attest-maa-jwks-url", O_ONCE, maa_jwks_url),
    O("--attest-maa-discovery-url", O_ONCE, maa_discovery_url),
    O("--attest-gcp-audience", O_ONCE, gcp_audience),
    O("--attest-gcp-jwks", O_ONCE, gcp_jwks),
    O("--attest-gcp-jwks-url", O_ONCE, gcp_jwks_url),
    O("--attest-gcp-discovery-url", O_ONCE, gcp_discovery_url),
    O("--jwks-url", O_ONCE, jwks_url),
    O("--attest-collateral", O_ONCE, collateral),
    O("--attest-fetch", O_BOOL, fetch),
    O("--attest-offline", O_BOOL, offline),
    O("--attest-cache-dir", O_ONCE, cache_dir),
    O("--attest-fetch-timeout", O_ONCE, fetch_timeout),
    O("--kds-url", O_ONCE, kds_url),
    O("--pcs-url", O_ONCE, pcs_url),
    O("--fetch-ca", O_ONCE, fetch_ca),
    O("--attest-client-vcek", O_BOOL, client_vcek),
};
#undef O

/* A valued flag takes "--name=value" (value set) or the next argument (consumed), never an
 * empty one.  0, or SH_EINVAL with err set. */
static int take_value(const char *name, const char **value, int argc, char **argv, int *i,
                      sh_error *err) {
  if (!*value) {
    if (*i + 1 >= argc) {
      sh_error_set(err, SH_EINVAL, "%s needs a value", name);
      return SH_EINVAL;
    }
    *value = argv[++*i];
  }
  if (!**value) {
    sh_error_set(err, SH_EINVAL, "%s: the value must not be empty", name);
    return SH_EINVAL;
  }
  return 0;
}

static int parse(void *data, sh_config *cfg, const char *name, const char *value, int argc,
                 char **argv, int *i, sh_error *err) {
  (void)cfg;
  sh_gate_config *gc = data;
  const option *o = NULL;
  for (size_t k = 0; k < sizeof options / sizeof *options && !o; k++)
    if (strcmp(name, options[k].name) == 0) o = &options[k];
  if (!o) return 0;
  void *field = (char *)gc + o->off;
  if (o->kind == O_BOOL) {
    if (value) {
      sh_error_set(err, SH_EINVAL, "%s takes no value", name);
      return SH_EINVAL;
    }
    *(int *)field = 1;
    return 1;
  }
  if (take_value(name, &value, argc, argv, i, err) < 0) return SH_EINVAL;
  const char **str = field;
  unsigned bits;
  int64_t t;
  switch (o->kind) {
    case O_ONCE:
      if (*str) {
        sh_error_set(err, SH_EINVAL, "%s given twice", name);
        return SH_EINVAL;
      }
      *str = value;
      break;
    case O_LAST:
      *str = value;
      break;
    case O_TYPES:
      if (sh_gate__check_types(value, &bits, err) < 0) return SH_EINVAL;
      *str = value;
      break;
    case O_EXCLUDE:
      if (value[0] != '/') {
        sh_error_set(err, SH_EINVAL, "--attest-exclude: '%s' must start with '/'", value);
        return SH_EINVAL;
      }
      if (gc->num_exclude >= 15) {
        sh_error_set(err, SH_EINVAL, "--attest-exclude: at most 15 paths");
        return SH_EINVAL;
      }
      gc->exclude[gc->num_exclude++] = value;
      gc->exclude[gc->num_exclude] = NULL;
      break;
    case O_CLOCK:
      if (sh_rfc3339_parse(value, strlen(value), 0, &t) < 0 || t <= 0) {
        sh_error_set(err, SH_EINVAL,
                     "--attest-clock: '%s' is not an RFC 3339 UTC time (e.g. 2022-10-13T08:58:02Z)",
                     value);
        return SH_EINVAL;
      }
      gc->clock = t;
      break;
  }
  return 1;
}

static int check(void *data, sh_config *cfg, sh_error *err) {
  sh_gate_config *gc = data;
  if (sh_gate_config_check(gc, err) < 0) return SH_EINVAL;
  if (gc->types && cfg->native_hello) {
    sh_error_set(err, SH_EINVAL, "--attest-types needs an app to protect (not --native-hello)");
    return SH_EINVAL;
  }
  /* Confidential Space tokens are ~11 KB (docs/protocol.md §1.4): 64 KiB unless set explicitly. */
  if (gc->types && cfg->max_header_size == 16 * 1024) cfg->max_header_size = 64 * 1024;
  /* --dev only: tests of the pool's caps slow every verification down */
  const char *delay = gc->dev ? getenv("SHIELD_ATTEST_VERIFY_DELAY_MS") : NULL;
  if (delay && *delay) gc->verify_delay_ms = strtol(delay, NULL, 10);
  return 0;
}

static void usage(void *data, FILE *out) {
  (void)data;
  fputs(
      "Client attestation (docs/protocol.md: header, session and mutual-TLS modes, verified\n"
      "before the app runs):\n"
      "  --attest-types LIST          accepted TEE types: nitro,sev-snp,azure-snp,azure-tdx,\n"
      "                               tdx,sgx,maa,gcp,simulated (turns attestation on)\n"
      "  --attest-policy FILE         verification policy (JSON; default: production)\n"
      "  --attest-required            401 for requests without evidence (default optional)\n"
      "  --attest-exclude PATH        path prefix served without attestation (repeatable)\n"
      "  --trust-simulated            accept simulated evidence (development only)\n"
      "  --dev                        development mode (allows --attest-clock)\n"
      "  --attest-clock RFC3339       verify evidence as of that time (needs --dev); also the\n"
      "                               fetch clock: fetched keys and collateral, and failures,\n"
      "                               never expire and fetch rate limits never reset (restart)\n"
      "Keys and collateral for verification (the server refuses to start without what an\n"
      "accepted type needs, naming the flag to add):\n"
      "  --attest-maa-issuer URL      MAA instance whose tokens are accepted (required, maa)\n"
      "  --attest-maa-audience VALUE  expected aud of MAA tokens (optional: MAA sets none)\n"
      "  --attest-gcp-audience VALUE  expected aud of Confidential Space tokens (required,\n"
      "                               gcp; the issuer is Google's, always checked)\n"
      "  --attest-maa-jwks FILE, --attest-gcp-jwks FILE   the issuer's JWKS, read at start\n"
      "  --attest-collateral FILE|DIR DCAP collateral for tdx/sgx (JSON or PCS responses)\n"
      "  --attest-fetch               fetch what is missing (AMD KDS VCEKs, Intel PCS\n"
      "                               collateral, OpenID/JWKS), cached, rate-limited\n"
      "  --attest-offline             the same from --attest-cache-dir files only\n"
      "  --attest-cache-dir DIR       disk cache of fetched documents (default: memory)\n"
      "  --attest-fetch-timeout S     per fetch (default 10)\n"
      "  --kds-url URL, --pcs-url URL AMD KDS / Intel PCS or PCCS base (with --attest-fetch)\n"
      "  --jwks-url URL               JWKS location instead of OpenID discovery (one of\n"
      "                               maa/gcp; else --attest-maa-jwks-url/-gcp-jwks-url)\n"
      "  --attest-maa-discovery-url URL, --attest-gcp-discovery-url URL   OpenID discovery\n"
      "                               base instead of the issuer (a forwarder)\n"
      "  --fetch-ca FILE              extra TLS anchors for fetching (a private PCCS)\n"
      "  --attest-client-vcek         sev-snp/azure-snp without fetching: clients send the\n"
      "                               VCEK in the evidence bundle\n"
      "  --state-url URL              nonces and sessions in Redis for several replicas:\n"
      "                               redis://[:password@]host[:port][/db] or unix:///path\n",
      out);
}

void sh_gate_options(sh_gate_config *gc, sh_config_hook *out) {
  *out = (sh_config_hook){.data = gc, .parse = parse, .check = check, .usage = usage};
}
