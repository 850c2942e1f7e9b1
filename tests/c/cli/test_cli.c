/* tests/c/cli/test_cli.c — cli/: the option-table parser (every kind of value, bad values,
 * the syntax), the --help printer (every row listed), the serve command's table (what it
 * fills in sh_config and sh_gate_config, the cross-module rules), and the dispatch of
 * `shield COMMAND` (exit codes, --help on stdout, usage errors on stderr).  White-box: it
 * includes cli's private opts.h.  Prints "N passed, N failed". */
#include "testutil.h"

#include <fcntl.h>
#include <stdarg.h>
#include <unistd.h>

#include "cli.h"
#include "common.h"
#include "gate.h"
#include "opts.h"

/* ---- a table with every kind ---- */

typedef struct targs {
  int flag;
  const char *str, *once, *empty_ok, *choice, *pos[4];
  int npos;
  int i32;
  uint64_t u64;
  unsigned oct;
  double secs;
  int custom_calls;
  char custom_name[16]; /* a copy: the name apply gets is valid during the call only */
} targs;

static int custom(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  targs *a = t;
  a->custom_calls++;
  snprintf(a->custom_name, sizeof a->custom_name, "%s", name);
  if (strcmp(v, "bad") == 0) return sh_cli__fail(err, "%s: '%s' is refused by apply", name, v);
  return 0;
}

static const char *const colours[] = {"red", "green", NULL};

#define F(f) .off = offsetof(targs, f), .size = sizeof(((targs *)0)->f)
static const sh_cli_opt topts[] = {
    {"--flag", .help = "set a flag", .kind = SH_CLI_SET, .ival = 7, F(flag)},
    {"--no-flag", .kind = SH_CLI_SET, .ival = 0, F(flag)},
    {"--str", .metavar = "S", .help = "a string", .kind = SH_CLI_STR, F(str)},
    {"--once", .metavar = "S", .help = "a string, once", .kind = SH_CLI_STR, .flags = SH_CLI_ONCE,
     F(once)},
    {"--maybe-empty", .metavar = "S", .help = "a string, maybe empty", .kind = SH_CLI_STR,
     .flags = SH_CLI_EMPTY_OK, F(empty_ok)},
    {.kind = SH_CLI_SECTION, .help = "Numbers:"},
    {"--i32", .alias = "--int", .metavar = "N", .help = "an int in 1-100\nsecond help line",
     .kind = SH_CLI_INT, .lo = 1, .hi = 100, .accepts = "a number in 1-100", F(i32)},
    {"--u64", .metavar = "N", .help = "a big count", .kind = SH_CLI_INT, .lo = 0, .hi = INT64_MAX,
     .accepts = "a count", F(u64)},
    {"--oct", .metavar = "MODE", .help = "an octal mode", .kind = SH_CLI_INT, .flags = SH_CLI_OCTAL,
     .lo = 0, .hi = 0777, .accepts = "an octal mode", F(oct)},
    {"--secs", .metavar = "S", .help = "seconds", .kind = SH_CLI_SECONDS, F(secs)},
    {"--colour", .metavar = "red|green", .help = "a choice", .kind = SH_CLI_CHOICE,
     .choices = colours, F(choice)},
    {"--custom", .alias = "--c", .metavar = "V", .help = "applied by a function",
     .kind = SH_CLI_CUSTOM, .apply = custom},
    {"--old", .metavar = "X", .help = "ignored, with a warning", .kind = SH_CLI_IGNORED,
     .why = "test"},
    {"--old-bool", .help = "ignored", .kind = SH_CLI_IGNORED},
    {"--help", .alias = "-h", .help = "show this message", .kind = SH_CLI_HELP},
    {"--version", .help = "show the version", .kind = SH_CLI_VERSION},
};
#undef F

static int tpos(void *const *targets, const char *arg, sh_error *err) {
  targs *a = targets[0];
  if (a->npos == 4) return sh_cli__fail(err, "too many");
  a->pos[a->npos++] = arg;
  return 0;
}

static targs ta;
static sh_error terr;
static char tout[16384];

/* Parse the NULL-terminated arguments with the test table (the --help/--version output in
 * tout).  Returns sh_cli__parse's result. */
static int tparse(int with_positional, ...) {
  char *argv[32];
  int argc = 0;
  argv[argc++] = "test";
  va_list ap;
  va_start(ap, with_positional);
  char *a;
  while ((a = va_arg(ap, char *)) && argc < 31)
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  memset(&ta, 0, sizeof ta);
  memset(&terr, 0, sizeof terr);
  void *const targets[] = {&ta};
  sh_cli_cmd cmd = {.name = "test",
                    .usage = "Usage: test [OPTIONS]\n",
                    .opts = topts,
                    .nopts = sizeof topts / sizeof *topts,
                    .targets = targets,
                    .positional = with_positional ? tpos : NULL};
  FILE *out = fmemopen(tout, sizeof tout - 1, "w");
  int rc = sh_cli__parse(&cmd, argc, argv, out, &terr);
  fclose(out);
  return rc;
}

#define OK(...) (tparse(1, __VA_ARGS__, NULL) == 0)
#define BAD(needle, ...) \
  (tparse(1, __VA_ARGS__, NULL) == SH_EINVAL && strstr(terr.message, needle) != NULL)

static void test_kinds(void) {
  CHECK(OK("--flag") && ta.flag == 7, "SET");
  CHECK(OK("--flag", "--no-flag") && ta.flag == 0, "SET, the last wins");
  CHECK(BAD("--flag takes no value", "--flag=1"), "SET with a value: %s", terr.message);
  CHECK(OK("--str", "a", "--str=b") && !strcmp(ta.str, "b"), "STR, both syntaxes, last wins");
  CHECK(OK("--str", "--flag") && !strcmp(ta.str, "--flag") && !ta.flag,
        "a value is the next argument whatever it looks like");
  CHECK(BAD("--str: the value must not be empty", "--str="), "STR empty: %s", terr.message);
  CHECK(BAD("--str: the value must not be empty", "--str", ""), "STR empty (separate)");
  CHECK(BAD("--str needs a value", "--str"), "STR at the end: %s", terr.message);
  CHECK(OK("--maybe-empty", "") && ta.empty_ok && !*ta.empty_ok, "EMPTY_OK");
  CHECK(OK("--once", "x") && !strcmp(ta.once, "x"), "ONCE");
  CHECK(BAD("--once given twice", "--once", "x", "--once=y"), "ONCE twice: %s", terr.message);

  CHECK(OK("--i32", "1") && ta.i32 == 1 && OK("--i32=100") && ta.i32 == 100, "INT bounds");
  CHECK(OK("--int", "42") && ta.i32 == 42, "INT by its alias");
  const char *bad_ints[] = {"0",  "101",  "-1",  "12x", "",  " 5",
                            "+5", "0x10", "1e2", "5 ",  "-", "99999999999999999999999"};
  for (size_t k = 0; k < sizeof bad_ints / sizeof *bad_ints; k++) {
    CHECK(BAD("is not a number in 1-100", "--i32", bad_ints[k]), "INT '%s': %s", bad_ints[k],
          terr.message);
    CHECK(strstr(terr.message, "--i32: '") == terr.message, "the message names the flag: %s",
          terr.message);
  }
  CHECK(BAD("--int: '0'", "--int", "0"), "the message names the flag as given: %s", terr.message);
  CHECK(OK("--u64", "9223372036854775807") && ta.u64 == 9223372036854775807ull, "INT 8 bytes");
  CHECK(BAD("is not a count", "--u64", "-5"), "INT 8 bytes negative");
  CHECK(OK("--oct", "660") && ta.oct == 0660 && OK("--oct", "0") && ta.oct == 0, "OCTAL");
  CHECK(BAD("an octal mode", "--oct", "9") && BAD("an octal mode", "--oct", "1000"),
        "OCTAL range and digits");

  CHECK(OK("--secs", "2.5") && ta.secs == 2.5 && OK("--secs", "0") && ta.secs == 0, "SECONDS");
  const char *bad_secs[] = {"-1", "nan", "inf", "1e10", "5s", "", " 1", "+1", "-0"};
  for (size_t k = 0; k < sizeof bad_secs / sizeof *bad_secs; k++)
    CHECK(BAD("--secs: '", "--secs", bad_secs[k]) && strstr(terr.message, "seconds"),
          "SECONDS '%s': %s", bad_secs[k], terr.message);

  CHECK(OK("--colour", "green") && !strcmp(ta.choice, "green"), "CHOICE");
  CHECK(BAD("--colour: 'blue' is not one of red, green", "--colour", "blue"), "CHOICE bad: %s",
        terr.message);
  CHECK(BAD("is not one of", "--colour", "Red"), "CHOICE is exact");

  CHECK(OK("--custom", "v", "--c=w") && ta.custom_calls == 2 && !strcmp(ta.custom_name, "--c"),
        "CUSTOM, by its name and alias");
  CHECK(BAD("--custom: 'bad' is refused by apply", "--custom", "bad"), "CUSTOM error: %s",
        terr.message);

  CHECK(OK("--old", "x", "--old-bool"), "IGNORED (a warning on stderr)");
  CHECK(BAD("--old-bool takes no value", "--old-bool=1"), "IGNORED without a value");
  CHECK(BAD("--old needs a value", "--old"), "IGNORED with a value");
}

static void test_syntax(void) {
  CHECK(BAD("unknown option '--nope' (see --help)", "--nope"), "unknown: %s", terr.message);
  CHECK(BAD("unknown option '--nope'", "--nope=1"), "unknown with a value: %s", terr.message);
  CHECK(BAD("unknown option '-x'", "-x"), "unknown short option");
  char longname[200];
  memset(longname, 'a', sizeof longname - 1);
  longname[0] = longname[1] = '-';
  longname[sizeof longname - 1] = '\0';
  CHECK(BAD("unknown option", longname) && strlen(terr.message) < 120, "a long unknown flag");
  CHECK(OK("a", "-", "--", "--flag", "-x") && ta.npos == 4 && !strcmp(ta.pos[1], "-") &&
            !strcmp(ta.pos[2], "--flag") && !ta.flag,
        "positional: '-', and everything after '--'");
  CHECK(BAD("too many", "a", "b", "c", "d", "e"), "a positional callback's error");
  CHECK(tparse(0, "x", NULL) == SH_EINVAL && strstr(terr.message, "unexpected argument 'x'"),
        "no positional accepted: %s", terr.message);
}

static void test_help(void) {
  CHECK(tparse(1, "--help", "--nope", NULL) == 1, "--help returns 1 (before a later error)");
  CHECK(strncmp(tout, "Usage: test [OPTIONS]\n", 22) == 0, "usage first: %.40s", tout);
  for (size_t k = 0; k < sizeof topts / sizeof *topts; k++) {
    const sh_cli_opt *o = &topts[k];
    if (o->kind == SH_CLI_SECTION) {
      CHECK(strstr(tout, o->help) != NULL, "section '%s' listed", o->help);
      continue;
    }
    CHECK(strstr(tout, o->flag) != NULL, "%s listed", o->flag);
    if (o->alias) CHECK(strstr(tout, o->alias) != NULL, "alias %s listed", o->alias);
    if (o->metavar) {
      char want[64];
      snprintf(want, sizeof want, " %s", o->metavar);
      CHECK(strstr(tout, want) != NULL, "%s's metavar listed", o->flag);
    }
  }
  CHECK(strstr(tout, "  --flag/--no-flag ") != NULL, "a row without help joins the one before");
  CHECK(strstr(tout, "  --i32, --int N ") != NULL, "alias and metavar");
  CHECK(strstr(tout, "an int in 1-100\n                               second help line\n"),
        "continuation lines are indented to the help column:\n%s", tout);
  CHECK(tparse(1, "-h", NULL) == 1 && strstr(tout, "--version"), "-h");
  CHECK(tparse(1, "--version", NULL) == 1, "--version returns 1");
  char want[64];
  snprintf(want, sizeof want, "shield %s\n", sh_version());
  CHECK(strcmp(tout, want) == 0, "--version prints '%s', got '%s'", want, tout);
}

/* ---- the serve command's table ---- */

/* Every row well-formed: a flag, help (or shown with the row before), a metavar exactly when
 * the kind takes a value, the right field size, no name twice. */
static void test_serve_table(void) {
  const sh_cli_opt *t = sh_cli__serve_opts;
  size_t n = sh_cli__serve_nopts;
  for (size_t k = 0; k < n; k++) {
    const sh_cli_opt *o = &t[k];
    if (o->kind == SH_CLI_SECTION) {
      CHECK(o->help && !o->flag, "row %zu: a section has a heading", k);
      continue;
    }
    CHECK(o->flag && strncmp(o->flag, "--", 2) == 0, "row %zu: a --flag", k);
    CHECK(o->help || (k > 0 && t[k - 1].kind != SH_CLI_SECTION), "%s: help, or a row before",
          o->flag);
    int takes = o->kind == SH_CLI_STR || o->kind == SH_CLI_INT || o->kind == SH_CLI_SECONDS ||
                o->kind == SH_CLI_CHOICE || o->kind == SH_CLI_CUSTOM;
    if (o->kind != SH_CLI_IGNORED)
      CHECK(!takes == !o->metavar, "%s: a metavar exactly when it takes a value", o->flag);
    if (o->kind == SH_CLI_INT)
      CHECK((o->size == 4 || o->size == 8) && o->lo >= 0 && o->lo <= o->hi && o->accepts &&
                (o->size == 8 || o->hi <= 0xFFFFFFFFLL),
            "%s: integer field and range", o->flag);
    if (o->kind == SH_CLI_SECONDS) CHECK(o->size == sizeof(double), "%s: a double", o->flag);
    if (o->kind == SH_CLI_SET) CHECK(o->size == sizeof(int), "%s: an int", o->flag);
    if (o->kind == SH_CLI_STR || o->kind == SH_CLI_CHOICE)
      CHECK(o->size == sizeof(const char *), "%s: a string field", o->flag);
    if (o->kind == SH_CLI_CHOICE) CHECK(o->choices && o->choices[0], "%s: choices", o->flag);
    if (o->kind == SH_CLI_CUSTOM) CHECK(o->apply != NULL, "%s: apply", o->flag);
    for (size_t j = k + 1; j < n; j++) {
      if (t[j].kind == SH_CLI_SECTION) continue;
      CHECK(strcmp(o->flag, t[j].flag) != 0 && (!t[j].alias || strcmp(o->flag, t[j].alias)) &&
                (!o->alias ||
                 (strcmp(o->alias, t[j].flag) && (!t[j].alias || strcmp(o->alias, t[j].alias)))),
            "%s: listed twice", o->flag);
    }
  }
}

static sh_config cfg;
static sh_gate_config gc;
static sh_error err;
static char sout[32768];

static int serve(const char *first, ...) {
  char *argv[40];
  int argc = 0;
  argv[argc++] = "shield";
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a && argc < 39; a = va_arg(ap, const char *))
    argv[argc++] = (char *)a;
  va_end(ap);
  argv[argc] = NULL;
  memset(&err, 0, sizeof err);
  FILE *out = fmemopen(sout, sizeof sout - 1, "w");
  int rc = sh_cli__serve_parse(&cfg, &gc, argc, argv, out, &err);
  fclose(out);
  return rc;
}
#define SERVE_OK(...) (serve(__VA_ARGS__, NULL) == 0)
#define SERVE_BAD(needle, ...) \
  (serve(__VA_ARGS__, NULL) == SH_EINVAL && strstr(err.message, needle) != NULL)

static void test_serve_flags(void) {
  CHECK(SERVE_OK("main:app") && !strcmp(cfg.app, "main:app") && cfg.port == 8000 &&
            cfg.max_header_size == 16384 && cfg.timeout_keep_alive == 5.0 && !gc.types,
        "defaults: %s", err.message);
  CHECK(SERVE_OK("--port", "0", "--host=::1", "--timeout-header=2.5", "--max-body-size", "1024",
                 "--no-access-log", "--log-level", "debug", "--h11-max-incomplete-event-size",
                 "8192", "--factory", "m:f"),
        "good flags: %s", err.message);
  CHECK(cfg.port == 0 && !strcmp(cfg.host, "::1") && cfg.timeout_header == 2.5 &&
            cfg.max_body_size == 1024 && !cfg.access_log && !strcmp(cfg.log_level, "debug") &&
            cfg.max_header_size == 8192 && cfg.factory,
        "good flag values");
  CHECK(
      SERVE_OK("m:a", "--workers", "3", "--limit-max-requests", "10", "--limit-max-requests-jitter",
               "5", "--limit-concurrency", "7", "--state-table-size", "1024", "--vsock-cid",
               "4294967295", "--uds-perms", "640", "--timeout-graceful-shutdown", "1.5",
               "--timeout-body", "3", "--header", "X-A: 1", "--header", "X-B:2", "--reload-dir",
               "/tmp", "--metrics-port", "9100", "--no-proxy-headers", "--access-log-format",
               "json", "--interface", "asgi2", "--ws", "none", "--root-path", "/api"),
      "production flags: %s", err.message);
  CHECK(cfg.workers == 3 && cfg.limit_max_requests == 10 && cfg.limit_max_requests_jitter == 5 &&
            cfg.limit_concurrency == 7 && cfg.state_table_size == 1024 &&
            cfg.vsock_cid == 0xFFFFFFFFu && cfg.uds_mode == 0640 &&
            cfg.timeout_graceful_shutdown == 1.5 && cfg.timeout_body == 3 &&
            cfg.num_extra_headers == 2 && !strcmp(cfg.extra_headers[1], "X-B:2") &&
            cfg.num_reload_dirs == 1 && !strcmp(cfg.metrics, "9100") && !cfg.proxy_headers &&
            !strcmp(cfg.access_log_format, "json") && !strcmp(cfg.interface, "asgi2") &&
            !strcmp(cfg.root_path, "/api"),
        "production flag values");
  CHECK(SERVE_OK("m:a", "--ssl-certfile", "c.pem", "--ssl-ca-certs", "ca.pem", "--ssl-cert-reqs",
                 "required", "--ssl-min-version", "TLSv1.3") &&
            cfg.ssl_cert_reqs == 2 && cfg.ssl_min_version == 0x0304,
        "TLS flags: %s", err.message);
  CHECK(SERVE_OK("--native-hello") && cfg.native_hello, "native hello");
  CHECK(SERVE_OK("m:a", "--http", "h11", "--use-colors", "--no-use-colors", "--reload-delay", "1"),
        "uvicorn flags that are ignored");

  /* what each bad value says (the flag, and what it accepts) */
  CHECK(serve(NULL) < 0 && strstr(err.message, "MODULE:ATTR"), "missing app");
  CHECK(SERVE_BAD("--port: '70000' is not a port number (0-65535)", "m:a", "--port", "70000"),
        "port range: %s", err.message);
  CHECK(SERVE_BAD("--port", "m:a", "--port", "80x"), "port junk");
  CHECK(SERVE_BAD("--timeout-keep-alive", "m:a", "--timeout-keep-alive", "-1"), "neg timeout");
  CHECK(SERVE_BAD("--timeout-header", "m:a", "--timeout-header", "nan"), "nan timeout");
  CHECK(SERVE_BAD("auto, on, off", "m:a", "--lifespan", "maybe"), "lifespan choice");
  CHECK(SERVE_BAD("--loop", "m:a", "--loop=tokio"), "loop choice");
  CHECK(SERVE_BAD("--log-level", "m:a", "--log-level", "loud"), "level choice");
  CHECK(SERVE_BAD("--bogus", "m:a", "--bogus"), "unknown flag");
  CHECK(SERVE_BAD("needs", "m:a", "--port"), "missing value");
  CHECK(SERVE_BAD("MODULE:ATTR", "noattr"), "app without colon: %s", err.message);
  CHECK(SERVE_BAD("verify, attest, attest-server, dev-root", "verfy"), "a mistyped command: %s",
        err.message);
  CHECK(SERVE_BAD("MODULE:ATTR", "m:"), "app without attr");
  CHECK(SERVE_BAD("64-1048576", "m:a", "--max-header-size", "10"), "tiny header limit");
  CHECK(SERVE_BAD("--access-log takes no value", "m:a", "--access-log=yes"), "bool with value");
  CHECK(SERVE_BAD("only one MODULE:ATTR", "m:a", "n:b"), "two apps");
  CHECK(SERVE_BAD("--uds", "m:a", "--uds", "/tmp/x", "--fd", "3"), "uds+fd");
  CHECK(SERVE_BAD("--workers: '0' is not a valid count", "m:a", "--workers", "0"), "workers");
  CHECK(SERVE_BAD("--workers", "m:a", "--workers", "1025"), "workers max");
  CHECK(SERVE_BAD("--interface wsgi: shield serves ASGI apps only", "m:a", "--interface", "wsgi"),
        "wsgi");
  CHECK(SERVE_BAD("--interface: 'x'", "m:a", "--interface", "x"), "interface");
  CHECK(SERVE_BAD("--ws websockets", "m:a", "--ws", "websockets"), "ws");
  CHECK(SERVE_BAD("--header", "m:a", "--header", "Bad Name: x"), "header name");
  CHECK(SERVE_BAD("--header", "m:a", "--header", "NoColon"), "header colon");
  CHECK(SERVE_BAD("--metrics-port", "m:a", "--metrics-port", "rel/path"), "metrics");
  CHECK(SERVE_BAD("--metrics-port", "m:a", "--metrics-port", "+80"), "metrics sign");
  CHECK(SERVE_OK("m:a", "--metrics-port", "/run/m.sock"), "metrics on a UNIX socket");
  CHECK(SERVE_BAD("--uds-perms: '999' is not an octal mode", "m:a", "--uds-perms", "999"),
        "uds perms");
  CHECK(SERVE_BAD("--root-path", "m:a", "--root-path", "api"), "root path");
  CHECK(SERVE_BAD("--app-dir: the value must not be empty", "m:a", "--app-dir="), "empty");
  CHECK(SERVE_BAD("--ssl-cert-reqs", "m:a", "--ssl-certfile", "c", "--ssl-cert-reqs", "maybe"),
        "cert reqs");
  CHECK(SERVE_BAD("--ssl-min-version: '1.1' is not 1.2 or 1.3", "m:a", "--ssl-certfile", "c",
                  "--ssl-min-version", "1.1"),
        "min version");
  CHECK(SERVE_BAD("--ssl-certfile", "m:a", "--ssl-keyfile", "k.pem"), "key without cert");
  CHECK(SERVE_BAD("--forwarded-allow-ips", "m:a", "--forwarded-allow-ips", "not-an-ip"),
        "forwarded-allow-ips: %s", err.message);
  char *many[40] = {"m:a"};
  int nm = 1;
  for (int k = 0; k < 16; k++) {
    many[nm++] = "--header";
    many[nm++] = "X-A: 1";
  }
  many[nm] = NULL;
  char *argv[42] = {"shield"};
  memcpy(argv + 1, many, sizeof many);
  CHECK(sh_cli__serve_parse(&cfg, &gc, nm + 1, argv, stdout, &err) < 0 &&
            strstr(err.message, "at most 15"),
        "16 headers: %s", err.message);
}

static void test_gate_flags(void) {
  CHECK(SERVE_OK("m:a", "--attest-types", "nitro,simulated", "--trust-simulated",
                 "--attest-required", "--attest-exclude", "/health", "--attest-exclude=/metrics",
                 "--dev", "--attest-clock", "2022-10-13T09:00:00Z", "--attest-policy", "p.json",
                 "--attest-policy", "q.json"),
        "gate flags: %s", err.message);
  CHECK(gc.types && !strcmp(gc.types, "nitro,simulated") && gc.trust_simulated && gc.required &&
            gc.num_exclude == 2 && !strcmp(gc.exclude[1], "/metrics") && !gc.exclude[2] && gc.dev &&
            gc.clock == 1665651600 && !strcmp(gc.policy, "q.json"),
        "gate flag values");
  /* Confidential Space tokens need a larger head (docs/protocol.md §1.4) unless one was set */
  CHECK(cfg.max_header_size == 64 * 1024, "header limit with the gate: %zu", cfg.max_header_size);
  CHECK(SERVE_OK("m:a", "--attest-types", "nitro", "--max-header-size", "20000") &&
            cfg.max_header_size == 20000,
        "an explicit header limit stays");
  CHECK(SERVE_BAD("--attest-types: 'quantum' is not a TEE type", "m:a", "--attest-types",
                  "nitro,quantum"),
        "types: %s", err.message);
  CHECK(SERVE_BAD("RFC 3339", "m:a", "--dev", "--attest-clock", "yesterday"), "clock");
  CHECK(SERVE_BAD("--attest-clock is a debugging aid", "m:a", "--attest-types", "nitro",
                  "--attest-clock", "2022-10-13T09:00:00Z"),
        "clock without --dev (sh_gate_config_check): %s", err.message);
  CHECK(SERVE_BAD("must start with '/'", "m:a", "--attest-exclude", "health"), "exclude");
  CHECK(SERVE_BAD("--attest-maa-issuer given twice", "m:a", "--attest-maa-issuer", "https://a",
                  "--attest-maa-issuer", "https://b"),
        "once");
  CHECK(SERVE_BAD("--native-hello", "--native-hello", "--attest-types", "nitro"),
        "the gate needs an app: %s", err.message);
  CHECK(SERVE_BAD("need --attest-types", "m:a", "--attest-required"), "required alone");
}

static void test_serve_help(void) {
  CHECK(serve("--help", NULL) == 1, "--help");
  for (size_t k = 0; k < sh_cli__serve_nopts; k++) {
    const sh_cli_opt *o = &sh_cli__serve_opts[k];
    if (o->kind == SH_CLI_SECTION) continue;
    const char *want = o->flag;
    const char *p = sout;
    int found = 0;
    /* the flag as a word: not only as the prefix of a longer one */
    while ((p = strstr(p, want)) != NULL) {
      char after = p[strlen(want)];
      if (after == ' ' || after == '/' || after == ',' || after == '\n') found = 1;
      p++;
    }
    CHECK(found, "shield --help lists %s", o->flag);
  }
  for (size_t k = 0; k < sh_cli__nsubs; k++) {
    char want[64];
    snprintf(want, sizeof want, "\n  %s ", sh_cli__subs[k].name);
    CHECK(strstr(sout, want) != NULL, "shield --help lists the command %s", sh_cli__subs[k].name);
  }
  CHECK(strstr(sout, "mutual-TLS modes") != NULL, "the gate's section");
  CHECK(serve("--version", NULL) == 1 && strstr(sout, sh_version()), "--version");
}

/* ---- dispatch: sh_cli_main with stdout and stderr captured ---- */

static char cout[65536], cerr[8192];

static void slurp_fd(int fd, char *buf, size_t cap) {
  lseek(fd, 0, SEEK_SET);
  ssize_t n = read(fd, buf, cap - 1);
  buf[n > 0 ? n : 0] = '\0';
}

static int run(const char *first, ...) {
  char *argv[16];
  int argc = 0;
  argv[argc++] = "shield";
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a && argc < 15; a = va_arg(ap, const char *))
    argv[argc++] = (char *)a;
  va_end(ap);
  argv[argc] = NULL;
  char po[] = "/tmp/shield-cli-out-XXXXXX", pe[] = "/tmp/shield-cli-err-XXXXXX";
  int fo = mkstemp(po), fe = mkstemp(pe);
  unlink(po);
  unlink(pe);
  fflush(stdout);
  fflush(stderr);
  int so = dup(1), se = dup(2);
  dup2(fo, 1);
  dup2(fe, 2);
  int rc = sh_cli_main(argc, argv);
  fflush(stdout);
  fflush(stderr);
  dup2(so, 1);
  dup2(se, 2);
  close(so);
  close(se);
  slurp_fd(fo, cout, sizeof cout);
  slurp_fd(fe, cerr, sizeof cerr);
  close(fo);
  close(fe);
  return rc;
}

/* 48 bytes of hex: a well-formed --pcr value */
#define HEX96                                                                                  \
  "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" \
  "000000"

static void test_dispatch(void) {
  const char *subs[] = {"verify", "attest", "attest-server", "dev-root"};
  for (size_t k = 0; k < sizeof subs / sizeof *subs; k++) {
    char want[64];
    snprintf(want, sizeof want, "Usage: shield %s", subs[k]);
    CHECK(run(subs[k], "--help", NULL) == 0 && strstr(cout, want) && !*cerr,
          "shield %s --help: exit 0, usage on stdout (stderr '%s')", subs[k], cerr);
    CHECK(strstr(cout, "--help"), "shield %s --help lists --help", subs[k]);
    CHECK(run(subs[k], "-h", NULL) == 0 && strstr(cout, want), "shield %s -h", subs[k]);
    snprintf(want, sizeof want, "Try 'shield %s --help'", subs[k]);
    CHECK(run(subs[k], "--bogus", NULL) == 2 && strstr(cerr, "unknown option '--bogus'") &&
              strstr(cerr, want) && !*cout,
          "shield %s --bogus: exit 2 on stderr: %s", subs[k], cerr);
  }
  const char *verify_flags[] = {
      "--type",       "--at",          "--cert",       "--policy",          "--nonce",
      "--public-key", "--allow-debug", "--json",       "--trust-simulated", "--jwks",
      "--issuer",     "--audience",    "--collateral", "--fetch",           "--offline",
      "--cache-dir",  "--fetch-ca",    "--kds-url",    "--pcs-url",         "--jwks-url"};
  run("verify", "--help", NULL);
  for (size_t k = 0; k < sizeof verify_flags / sizeof *verify_flags; k++)
    CHECK(strstr(cout, verify_flags[k]) != NULL, "shield verify --help lists %s", verify_flags[k]);
  const char *attest_flags[] = {"--tee",     "--nonce",        "--public-key", "--out",
                                "--json",    "--gcp-audience", "--gcp-socket", "--device-root",
                                "--at",      "--lifetime",     "--debug",      "--pcr",
                                "--data-dir"};
  run("attest", "--help", NULL);
  for (size_t k = 0; k < sizeof attest_flags / sizeof *attest_flags; k++)
    CHECK(strstr(cout, attest_flags[k]) != NULL, "shield attest --help lists %s", attest_flags[k]);
  run("dev-root", "--help", NULL);
  CHECK(strstr(cout, "--der") && strstr(cout, "--data-dir"), "shield dev-root --help");

  CHECK(run("verify", "--type", "tpm", "x", NULL) == 2 && strstr(cerr, "--type: 'tpm'"),
        "verify: unknown type: %s", cerr);
  CHECK(run("verify", "x", NULL) == 2 && strstr(cerr, "missing --type"), "verify: no type");
  CHECK(run("verify", "--type", "nitro", NULL) == 2 && strstr(cerr, "missing the evidence FILE"),
        "verify: no file: %s", cerr);
  CHECK(run("verify", "--type", "nitro", "a", "b", NULL) == 2 && strstr(cerr, "more than one"),
        "verify: two files");
  CHECK(run("verify", "--type", "nitro", "x", "--at", "yesterday", NULL) == 2 &&
            strstr(cerr, "--at: not an RFC 3339 time"),
        "verify: --at: %s", cerr);
  CHECK(run("verify", "--type", "nitro", "--type", "sgx", "x", NULL) == 2 &&
            strstr(cerr, "--type given twice"),
        "verify: --type twice");
  CHECK(run("attest", "--tee", "maa", "--nonce", "00", NULL) == 2 &&
            strstr(cerr, "--tee: 'maa' is not one of nitro"),
        "attest: --tee: %s", cerr);
  CHECK(run("attest", "--nonce", "00", NULL) == 2 && strstr(cerr, "missing --tee TYPE"),
        "attest: no --tee: %s", cerr);
  CHECK(run("attest", "--tee", "nitro", "--debug", NULL) == 2 &&
            strstr(cerr, "--debug: only --tee simulated takes it"),
        "attest: a simulated-only option with another TEE: %s", cerr);
  CHECK(run("attest", "--tee", "sev-snp", "--pcr", "0=" HEX96, NULL) == 2 &&
            strstr(cerr, "--pcr: only --tee simulated takes it"),
        "attest: --pcr with another TEE: %s", cerr);
  CHECK(run("attest", "--tee", "simulated", "--nonce", "00", "--lifetime", "5x", NULL) == 2 &&
            strstr(cerr, "--lifetime"),
        "attest: --lifetime junk: %s", cerr);
  CHECK(run("attest", "--tee", "simulated", "--nonce", "00", "--pcr", "40=00", NULL) == 2 &&
            strstr(cerr, "--pcr"),
        "attest: --pcr");

  CHECK(run("--help", NULL) == 0 && strstr(cout, "Usage: shield [OPTIONS] MODULE:ATTR") &&
            strstr(cout, "\n  verify ") && strstr(cout, "\n  dev-root ") && !*cerr,
        "shield --help");
  char want[64];
  snprintf(want, sizeof want, "shield %s\n", sh_version());
  CHECK(run("--version", NULL) == 0 && !strcmp(cout, want), "shield --version: '%s'", cout);
  CHECK(run("frobnicate", NULL) == 2 && strstr(cerr, "'frobnicate' is neither a command") &&
            strstr(cerr, "Try 'shield --help'") && !*cout,
        "an unknown command: exit 2: %s", cerr);
  CHECK(run("--no-such-flag", "m:a", NULL) == 2 && strstr(cerr, "--no-such-flag"),
        "an unknown flag: exit 2: %s", cerr);
}

int main(void) {
  test_kinds();
  test_syntax();
  test_help();
  test_serve_table();
  test_serve_flags();
  test_gate_flags();
  test_serve_help();
  test_dispatch();
  return test_summary();
}
