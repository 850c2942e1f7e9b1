/*
 * cli/attest_server.c — `shield attest-server URL [OPTIONS]`: what a server proves about its
 * TEE (docs/protocol.md §4), checked the way the client SDK checks it before it sends.
 *
 * The options are parsed here (one table: parsing and --help); the check itself is the
 * Python package's AttestedClient (shield_asgi.client), run in the embedded interpreter of the
 * venv the binary is installed in (pyshim's sh_pyshim_call) by shield_asgi.attest_server —
 * so the command and the SDK can never disagree about what "verified" means: a nonce-bound
 * attestation fetched over the very connection, the evidence verified natively, D(n, k =
 * binding.cbor), the TLS key of that connection, the policy, the TEE types and measurements.
 * Exit status: 0 the server proved what was asked, 1 it did not (or could not be reached),
 * 2 usage error.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "common.h"
#include "opts.h"
#include "pyshim.h"

typedef struct attest_server_args {
  const char *url, *path, *policy, *tee_types, *cafile, *simulated_root;
  int allow_plain, trust_simulated, json;
  double timeout;
  json_t *measurements; /* name -> lower-case hex (--measurement, repeatable) */
} attest_server_args;

/* --measurement NAME=HEX: what the server must measure (the verifier's names: PCR0, MRTD,
 * measurement, …), repeatable */
static int set_measurement(void *t, const sh_cli_opt *o, const char *name, const char *v,
                           sh_error *err) {
  (void)o;
  attest_server_args *a = t;
  const char *eq = strchr(v, '=');
  size_t hl = eq ? strlen(eq + 1) : 0;
  if (!eq || eq == v || hl == 0 || hl % 2) goto bad;
  char hex[1025];
  if (hl >= sizeof hex) goto bad;
  for (size_t i = 0; i < hl; i++) {
    char c = eq[1 + i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) goto bad;
    hex[i] = (char)(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c); /* measurements are lower-case */
  }
  hex[hl] = '\0';
  if (!a->measurements && !(a->measurements = json_object()))
    return sh_cli__fail(err, "%s: out of memory", name);
  if (json_object_setn_new(a->measurements, v, (size_t)(eq - v), json_string(hex)) < 0)
    return sh_cli__fail(err, "%s: out of memory", name);
  return 0;
bad:
  return sh_cli__fail(err, "%s: '%s' is not NAME=HEX (an even number of hex digits, at most 1024)",
                      name, v);
}

/* --tee-types a,b: docs/protocol.md §0 names (the Shield library's spellings too) */
static int set_tee_types(void *t, const sh_cli_opt *o, const char *name, const char *v,
                         sh_error *err) {
  (void)o;
  unsigned mask = 0;
  sh_iovec bad = {0};
  if (sh_tee_parse_list(v, strlen(v), &mask, &bad) < 0 || mask == 0)
    return sh_cli__fail(err, "%s: '%.*s' is not a TEE type", name,
                        bad.len ? (int)bad.len : (int)strlen(v),
                        bad.len ? (const char *)bad.base : v);
  ((attest_server_args *)t)->tee_types = v;
  return 0;
}

static int set_path(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  if (v[0] != '/') return sh_cli__fail(err, "%s: '%s' must start with '/'", name, v);
  ((attest_server_args *)t)->path = v;
  return 0;
}

#define A(f) .off = offsetof(attest_server_args, f), .size = sizeof(((attest_server_args *)0)->f)
#define ONCE(f) .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, A(f)
static const sh_cli_opt opts[] = {
    {"--path", .metavar = "PATH",
     .help = "the attestation endpoint (default\n/.well-known/shield/attestation; "
             "/attestation for an\nAttestationRouter mounted at the root)",
     .kind = SH_CLI_CUSTOM, .apply = set_path},
    {.kind = SH_CLI_SECTION, .help = "What the server must prove:"},
    {"--policy", .metavar = "FILE", .help = "an --attest-policy file (measurements, debug, TCB)",
     ONCE(policy)},
    {"--tee-types", .metavar = "LIST", .help = "the TEE types allowed (comma-separated)",
     .kind = SH_CLI_CUSTOM, .apply = set_tee_types},
    {"--measurement", .metavar = "NAME=HEX",
     .help = "an expected measurement (repeatable; e.g. PCR0=…, MRTD=…)", .kind = SH_CLI_CUSTOM,
     .apply = set_measurement},
    {.kind = SH_CLI_SECTION, .help = "The connection:"},
    {"--cafile", .metavar = "FILE",
     .help = "CA certificates for the server's TLS certificate\n(default: the system's)",
     ONCE(cafile)},
    {"--allow-plain",
     .help = "accept http:// (nothing then ties the attested TEE to the peer:\ndevelopment only)",
     .kind = SH_CLI_SET, .ival = 1, A(allow_plain)},
    {"--timeout", .metavar = "SECONDS", .help = "for each request (default 30)",
     .kind = SH_CLI_SECONDS, A(timeout)},
    {.kind = SH_CLI_SECTION, .help = "Simulated evidence (development, docs/protocol.md §1.7):"},
    {"--trust-simulated", .help = "accept the simulated TEE (needs --simulated-root)",
     .kind = SH_CLI_SET, .ival = 1, A(trust_simulated)},
    {"--simulated-root", .metavar = "FILE",
     .help = "the dev root it must chain to (PEM or DER: shield dev-root)", ONCE(simulated_root)},
    {.kind = SH_CLI_SECTION, .help = "Other:"},
    {"--json", .help = "print the result as JSON", .kind = SH_CLI_SET, .ival = 1, A(json)},
    {"--help", .alias = "-h", .help = "show this message and exit", .kind = SH_CLI_HELP},
};
#undef ONCE
#undef A

static int positional(void *const *targets, const char *arg, sh_error *err) {
  attest_server_args *a = targets[0];
  if (a->url) return sh_cli__fail(err, "more than one URL ('%s')", arg);
  if (strncmp(arg, "https://", 8) != 0 && strncmp(arg, "http://", 7) != 0)
    return sh_cli__fail(err, "'%s' is not an https:// (or http://) URL", arg);
  a->url = arg;
  return 0;
}

int sh_cli__attest_server(int argc, char **argv) {
  attest_server_args a = {0};
  void *const targets[] = {&a};
  sh_cli_cmd cmd = {
      .name = "shield attest-server",
      .usage =
          "Usage: shield attest-server URL [OPTIONS]\n"
          "\n"
          "Fetch the server's attestation (docs/protocol.md §4) bound to a fresh nonce over\n"
          "one connection, verify it as the client SDK does (evidence, binding to that\n"
          "connection's TLS key, policy) and print what the server proves.  Exit status: 0\n"
          "proved, 1 not proved (the reason is printed), 2 usage error.\n",
      .opts = opts,
      .nopts = sizeof opts / sizeof *opts,
      .targets = targets,
      .positional = positional,
  };
  sh_error err = {0};
  int rc = sh_cli__parse(&cmd, argc, argv, stdout, &err);
  if (rc == 1) {
    json_decref(a.measurements);
    return 0; /* --help */
  }
  if (rc == 0 && !a.url) rc = sh_cli__fail(&err, "missing the server's URL");
  if (rc == 0 && a.trust_simulated && !a.simulated_root)
    rc = sh_cli__fail(&err, "--trust-simulated needs --simulated-root FILE (shield dev-root)");
  if (rc == 0 && a.simulated_root && !a.trust_simulated)
    rc = sh_cli__fail(&err, "--simulated-root is used only with --trust-simulated");
  if (rc == 0 && strncmp(a.url, "http://", 7) == 0 && !a.allow_plain)
    rc = sh_cli__fail(&err,
                      "%s has no TLS key the attestation could bind: use https:// (or "
                      "--allow-plain for development)",
                      a.url);
  if (rc < 0) {
    json_decref(a.measurements);
    return sh_cli__usage_error(&cmd, &err);
  }
  /* the settings, for shield_asgi.attest_server.main (one JSON argument: no second parser) */
  json_t *cfg =
      json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:b, s:b, s:b, s:f, s:o}", "url", a.url, "path",
                a.path ? a.path : "/.well-known/shield/attestation", "policy", a.policy,
                "tee_types", a.tee_types, "cafile", a.cafile, "simulated_root", a.simulated_root,
                "allow_plain", a.allow_plain, "trust_simulated", a.trust_simulated, "json", a.json,
                "timeout", a.timeout > 0 ? a.timeout : 30.0, "measurements",
                a.measurements ? a.measurements : json_object());
  char *text = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
  json_decref(cfg); /* "o" took the measurements' reference */
  if (!text) {
    fprintf(stderr, "shield attest-server: out of memory\n");
    return 1;
  }
  rc = sh_pyshim_call("shield_asgi.attest_server", "main", text, argc, argv);
  free(text);
  return rc;
}
