/*
 * cli/serve_opts.c — the options of `shield [OPTIONS] MODULE:ATTR`: one table for the server's
 * flags (sh_config, server.h; uvicorn's names) and the attestation gate's (sh_gate_config,
 * gate.h), and the checks run once the whole command line is read.
 *
 * What a value means is the owning module's (the field comments of sh_config and
 * sh_gate_config); the checks that need the whole configuration are theirs too
 * (sh_config_check, sh_gate_config_check).  What is here: the flag names, the help lines, the
 * check of each value on its own (so that the message names the flag as soon as it is read),
 * and the rules that tie the two modules' flags together.
 */
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gate.h"
#include "opts.h"

enum { T_SRV, T_GATE }; /* the targets */

#define SRV(f) .target = T_SRV, .off = offsetof(sh_config, f), .size = sizeof(((sh_config *)0)->f)
#define GATE(f) \
  .target = T_GATE, .off = offsetof(sh_gate_config, f), .size = sizeof(((sh_gate_config *)0)->f)
#define SECTION(text) \
  { .kind = SH_CLI_SECTION, .help = text }

static const char *const lifespans[] = {"auto", "on", "off", NULL};
static const char *const loops[] = {"auto", "asyncio", "uvloop", NULL};
static const char *const levels[] = {"critical", "error", "warning", "info",
                                     "debug",    "trace", NULL};
static const char *const log_formats[] = {"common", "json", NULL};

/* ---- values whose check is more than a kind ---- */

/* --tee: a docs/protocol.md §0 name of a TEE that can produce evidence, or auto */
static int set_tee(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  (void)name;
  sh_tee tee = sh_tee_from_name(v);
  if (strcmp(v, "auto") != 0 && (tee == SH_TEE_UNKNOWN || tee == SH_TEE_MAA))
    return sh_cli__fail(err,
                        "--tee: '%s' is not one of nitro, sev-snp, tdx, sgx, azure-snp, "
                        "azure-tdx, gcp, simulated, auto",
                        v);
  ((sh_gate_config *)t)->tee = v;
  return 0;
}

static int set_uds(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  if (!*v) return sh_cli__fail(err, "%s: the value must not be empty", name);
  /* sockaddr_un.sun_path is 108 bytes with its NUL (unix(7)) */
  if (strlen(v) >= 108) return sh_cli__fail(err, "--uds: path too long (at most 107 bytes)");
  ((sh_config *)t)->uds = v;
  return 0;
}

static int set_interface(void *t, const sh_cli_opt *o, const char *name, const char *v,
                         sh_error *err) {
  (void)o;
  (void)name;
  if (strcmp(v, "wsgi") == 0)
    return sh_cli__fail(err, "--interface wsgi: shield serves ASGI apps only");
  /* uvicorn's: how the app is called (pyshim/bridge.py, asgi_app) */
  if (strcmp(v, "auto") != 0 && strcmp(v, "asgi3") != 0 && strcmp(v, "asgi2") != 0)
    return sh_cli__fail(err, "--interface: '%s' is not one of auto, asgi3, asgi2", v);
  ((sh_config *)t)->interface = v;
  return 0;
}

static int set_ws(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)t;
  (void)o;
  (void)name;
  /* auto: there is no WebSocket implementation to pick, as with none */
  if (strcmp(v, "none") != 0 && strcmp(v, "auto") != 0)
    return sh_cli__fail(err, "--ws %s: shield does not serve WebSockets (use --ws none)", v);
  return 0;
}

static int set_root_path(void *t, const sh_cli_opt *o, const char *name, const char *v,
                         sh_error *err) {
  (void)o;
  (void)name;
  if (*v && v[0] != '/')
    return sh_cli__fail(err, "--root-path: '%s' must be empty or start with '/'", v);
  ((sh_config *)t)->root_path = v;
  return 0;
}

/* --header NAME:VALUE, repeatable; the lines are checked by sh_config_check (server.h). */
static int add_header(void *t, const sh_cli_opt *o, const char *name, const char *v,
                      sh_error *err) {
  (void)o;
  (void)name;
  sh_config *cfg = t;
  if (cfg->num_extra_headers >= 15) return sh_cli__fail(err, "--header: at most 15 extra headers");
  cfg->extra_headers[cfg->num_extra_headers++] = v;
  return 0;
}

static int add_reload_dir(void *t, const sh_cli_opt *o, const char *name, const char *v,
                          sh_error *err) {
  (void)o;
  sh_config *cfg = t;
  if (!*v) return sh_cli__fail(err, "%s: the value must not be empty", name);
  if (cfg->num_reload_dirs >= 15) return sh_cli__fail(err, "--reload-dir: at most 15 directories");
  cfg->reload_dirs[cfg->num_reload_dirs++] = v;
  return 0;
}

static int set_metrics(void *t, const sh_cli_opt *o, const char *name, const char *v,
                       sh_error *err) {
  (void)o;
  if (!*v) return sh_cli__fail(err, "%s: the value must not be empty", name);
  char *end = NULL;
  long p = v[0] == '/' ? 0 : strtol(v, &end, 10);
  if (v[0] != '/' && (!(*v >= '0' && *v <= '9') || *end || p < 0 || p > 65535))
    return sh_cli__fail(err,
                        "--metrics-port: '%s' is neither a port (0-65535) nor an absolute UNIX "
                        "socket path",
                        v);
  ((sh_config *)t)->metrics = v;
  return 0;
}

static int set_cert_reqs(void *t, const sh_cli_opt *o, const char *name, const char *v,
                         sh_error *err) {
  (void)o;
  (void)name;
  /* uvicorn passes ssl.CERT_NONE/OPTIONAL/REQUIRED as 0/1/2 */
  static const char *const reqs[] = {"none", "optional", "required"};
  for (int k = 0; k < 3; k++)
    if (strcmp(v, reqs[k]) == 0 || (v[0] == '0' + k && v[1] == '\0')) {
      ((sh_config *)t)->ssl_cert_reqs = k;
      return 0;
    }
  return sh_cli__fail(err, "--ssl-cert-reqs: '%s' is not one of 0|none, 1|optional, 2|required", v);
}

static int set_min_version(void *t, const sh_cli_opt *o, const char *name, const char *v,
                           sh_error *err) {
  (void)o;
  (void)name;
  sh_config *cfg = t;
  if (strcmp(v, "1.2") == 0 || strcmp(v, "TLSv1.2") == 0)
    cfg->ssl_min_version = 0x0303;
  else if (strcmp(v, "1.3") == 0 || strcmp(v, "TLSv1.3") == 0)
    cfg->ssl_min_version = 0x0304;
  else
    return sh_cli__fail(err, "--ssl-min-version: '%s' is not 1.2 or 1.3", v);
  return 0;
}

static int set_types(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  if (!*v) return sh_cli__fail(err, "%s: the value must not be empty", name);
  if (sh_gate_check_types(v, err) < 0) return SH_EINVAL;
  ((sh_gate_config *)t)->types = v;
  return 0;
}

static int add_exclude(void *t, const sh_cli_opt *o, const char *name, const char *v,
                       sh_error *err) {
  (void)o;
  sh_gate_config *gc = t;
  if (!*v) return sh_cli__fail(err, "%s: the value must not be empty", name);
  if (v[0] != '/') return sh_cli__fail(err, "--attest-exclude: '%s' must start with '/'", v);
  if (gc->num_exclude >= 15) return sh_cli__fail(err, "--attest-exclude: at most 15 paths");
  gc->exclude[gc->num_exclude++] = v;
  gc->exclude[gc->num_exclude] = NULL;
  return 0;
}

static int set_clock(void *t, const sh_cli_opt *o, const char *name, const char *v, sh_error *err) {
  (void)o;
  int64_t at;
  if (!*v) return sh_cli__fail(err, "%s: the value must not be empty", name);
  if (sh_rfc3339_parse(v, strlen(v), 0, &at) < 0 || at <= 0)
    return sh_cli__fail(
        err, "--attest-clock: '%s' is not an RFC 3339 UTC time (e.g. 2022-10-13T08:58:02Z)", v);
  ((sh_gate_config *)t)->clock = at;
  return 0;
}

/* ---- the table: the order of `shield --help` ---- */

const sh_cli_opt sh_cli__serve_opts[] = {
    {"--factory", .help = "treat MODULE:ATTR as a factory returning the app", .kind = SH_CLI_SET,
     .ival = 1, SRV(factory)},
    {"--app-dir", .metavar = "DIR", .help = "add DIR to sys.path (default .)", .kind = SH_CLI_STR,
     SRV(app_dir)},
    {"--host", .metavar = "HOST", .help = "bind address (default 127.0.0.1; :: for IPv6)",
     .kind = SH_CLI_STR, SRV(host)},
    {"--port", .metavar = "N", .help = "bind port, 0-65535 (default 8000; 0 = any free port)",
     .kind = SH_CLI_INT, .lo = 0, .hi = 65535, .accepts = "a port number (0-65535)", SRV(port)},
    {"--uds", .metavar = "PATH", .help = "bind a UNIX domain socket instead of TCP",
     .kind = SH_CLI_CUSTOM, .apply = set_uds, SRV(uds)},
    {"--fd", .metavar = "N", .help = "serve an inherited listening socket", .kind = SH_CLI_INT,
     .lo = 0, .hi = INT_MAX, .accepts = "a file descriptor number (>= 0)", SRV(fd)},
    {"--backlog", .metavar = "N", .help = "listen backlog (default 2048)", .kind = SH_CLI_INT,
     .lo = 1, .hi = 65535, .accepts = "a number in 1-65535", SRV(backlog)},
    {"--lifespan", .metavar = "auto|on|off", .help = "ASGI lifespan protocol (default auto)",
     .kind = SH_CLI_CHOICE, .choices = lifespans, SRV(lifespan)},
    {"--interface", .metavar = "auto|asgi3|asgi2",
     .help = "how the app is called (default auto: detected)", .kind = SH_CLI_CUSTOM,
     .apply = set_interface, SRV(interface)},
    {"--loop", .metavar = "auto|asyncio|uvloop", .help = "event loop for the app (default auto)",
     .kind = SH_CLI_CHOICE, .choices = loops, SRV(loop)},
    {"--log-level", .metavar = "LEVEL",
     .help = "critical|error|warning|info|debug|trace (default info)", .kind = SH_CLI_CHOICE,
     .choices = levels, SRV(log_level)},
    {"--access-log", .help = "one line per response (default on)", .kind = SH_CLI_SET, .ival = 1,
     SRV(access_log)},
    {"--no-access-log", .kind = SH_CLI_SET, .ival = 0, SRV(access_log)},
    {"--access-log-format", .metavar = "common|json",
     .help = "access log line format (default common)", .kind = SH_CLI_CHOICE,
     .choices = log_formats, SRV(access_log_format)},
    {"--gc-freeze",
     .help = "after start-up, move the app's objects out of the\n"
             "garbage collector's reach (gc.freeze; default on)",
     .kind = SH_CLI_SET, .ival = 1, SRV(gc_freeze)},
    {"--no-gc-freeze", .kind = SH_CLI_SET, .ival = 0, SRV(gc_freeze)},
    {"--env-file", .metavar = "FILE", .help = "load environment variables from FILE",
     .kind = SH_CLI_STR, SRV(env_file)},
    {"--root-path", .metavar = "PATH", .help = "ASGI root_path for apps behind a path prefix",
     .kind = SH_CLI_CUSTOM, .apply = set_root_path, SRV(root_path)},
    {"--max-header-size", .alias = "--h11-max-incomplete-event-size", .metavar = "N",
     .help = "request head limit in bytes (default 16384; 431 beyond)", .kind = SH_CLI_INT,
     /* at least a minimal request line; at most 1 MiB (the head is buffered in memory) */
     .lo = 64, .hi = 1024 * 1024, .accepts = "a byte count in 64-1048576", SRV(max_header_size)},
    {"--max-body-size", .metavar = "N",
     .help = "request body limit in bytes (default 0 = unlimited; 413)", .kind = SH_CLI_INT,
     .lo = 0, .hi = LLONG_MAX, .accepts = "a byte count (>= 0; 0 = unlimited)", SRV(max_body_size)},
    {"--timeout-header", .metavar = "S", .help = "seconds to receive a request head (default 10)",
     .kind = SH_CLI_SECONDS, SRV(timeout_header)},
    {"--timeout-keep-alive", .metavar = "S", .help = "idle keep-alive seconds (default 5)",
     .kind = SH_CLI_SECONDS, SRV(timeout_keep_alive)},
    {"--server-header", .help = "send 'server: shield' (default on)", .kind = SH_CLI_SET, .ival = 1,
     SRV(server_header)},
    {"--no-server-header", .kind = SH_CLI_SET, .ival = 0, SRV(server_header)},
    {"--date-header", .help = "send 'date:' (default on)", .kind = SH_CLI_SET, .ival = 1,
     SRV(date_header)},
    {"--no-date-header", .kind = SH_CLI_SET, .ival = 0, SRV(date_header)},
    {"--native-hello", .help = "serve the built-in C hello handler (no Python)", .kind = SH_CLI_SET,
     .ival = 1, SRV(native_hello)},

    SECTION("Production serving:"),
    {"--workers", .metavar = "N", .help = "worker processes (default $WEB_CONCURRENCY or 1)",
     .kind = SH_CLI_INT, .lo = 1, .hi = 1024, .accepts = "a valid count", SRV(workers)},
    {"--timeout-graceful-shutdown", .metavar = "S",
     .help = "in-flight requests get S seconds on stop (default 30)", .kind = SH_CLI_SECONDS,
     SRV(timeout_graceful_shutdown)},
    {"--limit-max-requests", .metavar = "N",
     .help = "recycle a worker after N requests (rolling, no loss)", .kind = SH_CLI_INT, .lo = 0,
     .hi = LLONG_MAX, .accepts = "a valid count", SRV(limit_max_requests)},
    {"--limit-max-requests-jitter", .metavar = "N", .help = "add a random 0..N per worker",
     .kind = SH_CLI_INT, .lo = 0, .hi = LLONG_MAX, .accepts = "a valid count",
     SRV(limit_max_requests_jitter)},
    {"--limit-concurrency", .metavar = "N",
     .help = "answer 503 beyond N requests in flight per worker", .kind = SH_CLI_INT, .lo = 0,
     .hi = INT_MAX, .accepts = "a valid count", SRV(limit_concurrency)},
    {"--timeout-body", .metavar = "S",
     .help = "cut a request body that stalls S seconds (default off)", .kind = SH_CLI_SECONDS,
     SRV(timeout_body)},
    {"--proxy-headers",
     .help = "trust X-Forwarded-For/-Proto, Forwarded\n"
             "from --forwarded-allow-ips peers (default on)",
     .kind = SH_CLI_SET, .ival = 1, SRV(proxy_headers)},
    {"--no-proxy-headers", .kind = SH_CLI_SET, .ival = 0, SRV(proxy_headers)},
    /* checked (sh_proxy_list_parse) by sh_config_check */
    {"--forwarded-allow-ips", .metavar = "LIST",
     .help = "IPs/CIDRs or '*' (default $FORWARDED_ALLOW_IPS or\n"
             "127.0.0.1); UNIX-socket peers are always trusted",
     .kind = SH_CLI_STR, .flags = SH_CLI_EMPTY_OK, SRV(forwarded_allow_ips)},
    {"--header", .metavar = "NAME:VALUE", .help = "extra response header (repeatable)",
     .kind = SH_CLI_CUSTOM, .apply = add_header, SRV(extra_headers)},
    {"--metrics-port", .metavar = "PORT|PATH",
     .help = "serve Prometheus metrics (TCP 127.0.0.1:PORT or UDS)", .kind = SH_CLI_CUSTOM,
     .apply = set_metrics, SRV(metrics)},
    {"--state-secret-file", .metavar = "FILE",
     .help = ">= 32 bytes every worker shares (default: random)", .kind = SH_CLI_STR,
     SRV(state_secret_file)},
    {"--state-table-size", .metavar = "N", .help = "shared state table entries (default 65536)",
     .kind = SH_CLI_INT, .lo = 1, .hi = 1 << 24, .accepts = "a valid count", SRV(state_table_size)},
    {"--vsock-port", .metavar = "PORT",
     .help = "listen on AF_VSOCK (Nitro enclaves) instead of TCP", .kind = SH_CLI_INT, .lo = 0,
     .hi = 0xFFFFFFFELL, .accepts = "a vsock port number", SRV(vsock_port)},
    {"--vsock-cid", .metavar = "CID", .help = "vsock address to bind (default any)",
     .kind = SH_CLI_INT, .lo = 0, .hi = 0xFFFFFFFFLL, .accepts = "a CID (0-4294967295)",
     SRV(vsock_cid)},
    {"--uds-perms", .metavar = "MODE", .help = "octal mode of the --uds socket (default 0666)",
     .kind = SH_CLI_INT, .flags = SH_CLI_OCTAL, .lo = 0, .hi = 0777,
     .accepts = "an octal mode (e.g. 660)", SRV(uds_mode)},
    {"--reload", .help = "restart the worker when a watched file changes", .kind = SH_CLI_SET,
     .ival = 1, SRV(reload)},
    {"--reload-dir", .metavar = "DIR", .help = "directory to watch (repeatable; default --app-dir)",
     .kind = SH_CLI_CUSTOM, .apply = add_reload_dir, SRV(reload_dirs)},

    SECTION("TLS (SIGHUP reloads the certificate, key and CA files):"),
    {"--ssl-certfile", .metavar = "FILE",
     .help = "serve HTTPS with this PEM certificate chain (leaf first)", .kind = SH_CLI_STR,
     SRV(ssl_certfile)},
    {"--ssl-keyfile", .metavar = "FILE",
     .help = "PEM private key (default: the --ssl-certfile file)", .kind = SH_CLI_STR,
     SRV(ssl_keyfile)},
    {"--ssl-keyfile-password", .metavar = "PW", .help = "password of an encrypted --ssl-keyfile",
     .kind = SH_CLI_STR, SRV(ssl_keyfile_password)},
    {"--ssl-ca-certs", .metavar = "FILE", .help = "PEM CAs that client certificates must chain to",
     .kind = SH_CLI_STR, SRV(ssl_ca_certs)},
    {"--ssl-cert-reqs", .metavar = "0|1|2",
     .help = "client certificate: 0/none (default), 1/optional,\n"
             "2/required (names none|optional|required accepted too)",
     .kind = SH_CLI_CUSTOM, .apply = set_cert_reqs, SRV(ssl_cert_reqs)},
    {"--ssl-ciphers", .metavar = "LIST",
     .help = "TLS 1.2 cipher list, OpenSSL syntax (default OpenSSL's)", .kind = SH_CLI_STR,
     SRV(ssl_ciphers)},
    {"--ssl-min-version", .metavar = "1.2|1.3", .help = "oldest TLS version accepted (default 1.2)",
     .kind = SH_CLI_CUSTOM, .apply = set_min_version, SRV(ssl_min_version)},

    SECTION("uvicorn flags accepted so its command lines keep working (no effect here):"),
    {"--http", .metavar = "TYPE", .help = "ignored: one HTTP/1.1 implementation (llhttp)",
     .kind = SH_CLI_IGNORED, .why = "shield has one HTTP/1.1 implementation (llhttp)"},
    {"--ws", .metavar = "none|auto", .help = "no WebSocket support yet: other values are refused",
     .kind = SH_CLI_CUSTOM, .apply = set_ws},
    {"--use-colors", .help = "ignored: log lines are plain text", .kind = SH_CLI_IGNORED,
     .why = "log lines are plain text"},
    {"--no-use-colors", .kind = SH_CLI_IGNORED},
    {"--timeout-notify", .metavar = "S",
     .help = "ignored: the supervisor sees exits and readiness directly", .kind = SH_CLI_IGNORED,
     .why = "the supervisor watches workers through their exit and pipe"},
    {"--reload-delay", .metavar = "S", .help = "ignored: changes are debounced by 0.2 s",
     .kind = SH_CLI_IGNORED, .why = "changes are debounced by 0.2 s"},
    {"--reload-include", .metavar = "GLOB", .help = "ignored: --reload watches *.py files",
     .kind = SH_CLI_IGNORED, .why = "--reload watches *.py files"},
    {"--reload-exclude", .metavar = "GLOB", .help = "ignored: --reload watches *.py files",
     .kind = SH_CLI_IGNORED,
     .why = "--reload watches *.py files outside hidden dirs and __pycache__"},

    SECTION("Client attestation (docs/protocol.md: header, session and mutual-TLS modes, "
            "verified\nbefore the app runs):"),
    {"--attest-types", .metavar = "LIST",
     .help = "accepted TEE types: nitro,sev-snp,azure-snp,azure-tdx,\n"
             "tdx,sgx,maa,gcp,simulated (turns attestation on)",
     .kind = SH_CLI_CUSTOM, .apply = set_types, GATE(types)},
    {"--attest-policy", .metavar = "FILE",
     .help = "verification policy (JSON; default: production)", .kind = SH_CLI_STR, GATE(policy)},
    {"--attest-required", .help = "401 for requests without evidence (default optional)",
     .kind = SH_CLI_SET, .ival = 1, GATE(required)},
    {"--attest-exclude", .metavar = "PATH",
     .help = "path prefix served without attestation (repeatable)", .kind = SH_CLI_CUSTOM,
     .apply = add_exclude, GATE(exclude)},
    {"--trust-simulated", .help = "accept simulated evidence (development only)",
     .kind = SH_CLI_SET, .ival = 1, GATE(trust_simulated)},
    {"--dev", .help = "development mode (allows --attest-clock)", .kind = SH_CLI_SET, .ival = 1,
     GATE(dev)},
    {"--attest-clock", .metavar = "RFC3339",
     .help = "verify evidence as of that time (needs --dev); also the\n"
             "fetch clock: fetched keys and collateral, and failures,\n"
             "never expire and fetch rate limits never reset (restart)",
     .kind = SH_CLI_CUSTOM, .apply = set_clock, GATE(clock)},
    /* checked (and Redis reached) by sh_gate_new */
    {"--state-url", .metavar = "URL",
     .help = "nonces and sessions in Redis for several replicas:\n"
             "redis://[:password@]host[:port][/db] or unix:///path",
     .kind = SH_CLI_STR, GATE(state_url)},

    SECTION("Keys and collateral for verification (the server refuses to start without what "
            "an\naccepted type needs, naming the flag to add):"),
    /* SH_CLI_ONCE: two keys or two collateral sources for one type are an ambiguity */
    {"--attest-maa-issuer", .metavar = "URL",
     .help = "MAA instance whose tokens are accepted (required, maa)", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, GATE(maa_issuer)},
    {"--attest-maa-audience", .metavar = "VALUE",
     .help = "expected aud of MAA tokens (optional: MAA sets none)", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, GATE(maa_audience)},
    {"--attest-gcp-audience", .metavar = "VALUE",
     .help = "expected aud of Confidential Space tokens (required,\n"
             "gcp; the issuer is Google's, always checked)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, GATE(gcp_audience)},
    {"--attest-maa-jwks", .metavar = "FILE", .help = "the MAA issuer's JWKS, read at start",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, GATE(maa_jwks)},
    {"--attest-gcp-jwks", .metavar = "FILE", .help = "Google's JWKS for OIDC tokens, read at start",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, GATE(gcp_jwks)},
    {"--attest-collateral", .metavar = "FILE|DIR",
     .help = "DCAP collateral for tdx/sgx (JSON or PCS responses)", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, GATE(collateral)},
    {"--attest-fetch",
     .help = "fetch what is missing (AMD KDS VCEKs, Intel PCS\n"
             "collateral, OpenID/JWKS), cached, rate-limited",
     .kind = SH_CLI_SET, .ival = 1, GATE(fetch)},
    {"--attest-offline", .help = "the same from --attest-cache-dir files only", .kind = SH_CLI_SET,
     .ival = 1, GATE(offline)},
    {"--attest-cache-dir", .metavar = "DIR",
     .help = "disk cache of fetched documents (default: memory)", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, GATE(cache_dir)},
    /* kept as text: sh_gate_config_check refuses anything but 0.1-120 seconds */
    {"--attest-fetch-timeout", .metavar = "S", .help = "per fetch (default 10)", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, GATE(fetch_timeout)},
    {"--kds-url", .metavar = "URL", .help = "AMD KDS base (with --attest-fetch)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, GATE(kds_url)},
    {"--pcs-url", .metavar = "URL", .help = "Intel PCS or PCCS base (with --attest-fetch)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, GATE(pcs_url)},
    {"--jwks-url", .metavar = "URL",
     .help = "JWKS location instead of OpenID discovery (one of\n"
             "maa/gcp; else --attest-maa-jwks-url/-gcp-jwks-url)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, GATE(jwks_url)},
    {"--attest-maa-jwks-url", .metavar = "URL", .help = "the MAA issuer's JWKS location",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, GATE(maa_jwks_url)},
    {"--attest-gcp-jwks-url", .metavar = "URL", .help = "Google's JWKS location",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, GATE(gcp_jwks_url)},
    {"--attest-maa-discovery-url", .metavar = "URL",
     .help = "OpenID discovery base instead of the MAA issuer (a forwarder)", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, GATE(maa_discovery_url)},
    {"--attest-gcp-discovery-url", .metavar = "URL",
     .help = "OpenID discovery base instead of Google's issuer (a forwarder)", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, GATE(gcp_discovery_url)},
    {"--fetch-ca", .metavar = "FILE", .help = "extra TLS anchors for fetching (a private PCCS)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, GATE(fetch_ca)},
    {"--attest-client-vcek",
     .help = "sev-snp/azure-snp without fetching: clients send the\n"
             "VCEK in the evidence bundle",
     .kind = SH_CLI_SET, .ival = 1, GATE(client_vcek)},

    SECTION("The server's own TEE (docs/protocol.md §4: evidence for clients that check it "
            "before\nthey send):"),
    {"--tee", .metavar = "TYPE",
     .help = "the server's TEE: nitro, sev-snp, tdx, sgx, azure-snp,\n"
             "azure-tdx, gcp, simulated (development) or auto",
     .kind = SH_CLI_CUSTOM, .apply = set_tee, .flags = SH_CLI_ONCE, GATE(tee)},
    {"--tee-gcp-audience", .metavar = "VALUE",
     .help = "audience of the server's own Confidential Space token", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, GATE(tee_gcp_audience)},
    {"--health-path", .metavar = "PATH",
     .help = "TEE health endpoint (default /.well-known/shield/health)", .kind = SH_CLI_STR,
     .flags = SH_CLI_ONCE, GATE(health_path)},
    {"--attach-server-attestation",
     .help = "X-Server-Attestation and X-Server-TEE-Type on responses", .kind = SH_CLI_SET,
     .ival = 1, GATE(attach_server_attestation)},
    {"--tls-attested",
     .help = "TLS key made in the TEE, self-signed certificate carrying\nits evidence",
     .kind = SH_CLI_SET, .ival = 1, GATE(tls_attested)},
    {"--tls-attested-ttl", .metavar = "S",
     .help = "re-issue the attested certificate every S seconds\n(default 3600, at most 10500)",
     .kind = SH_CLI_STR, .flags = SH_CLI_ONCE, GATE(tls_attested_ttl)},

    SECTION("Other:"),
    {"--help", .alias = "-h", .help = "show this message and exit", .kind = SH_CLI_HELP},
    {"--version", .help = "show the version and exit", .kind = SH_CLI_VERSION},
};
const size_t sh_cli__serve_nopts = sizeof sh_cli__serve_opts / sizeof *sh_cli__serve_opts;

/* MODULE:ATTR, once; a bare word is a command name mistyped, or an app without its ATTR. */
static int positional(void *const *targets, const char *arg, sh_error *err) {
  sh_config *cfg = targets[T_SRV];
  if (cfg->app)
    return sh_cli__fail(err, "unexpected extra argument '%s' (only one MODULE:ATTR)", arg);
  const char *colon = strchr(arg, ':');
  if (!colon)
    return sh_cli__fail(err,
                        "'%s' is neither a command (verify, attest, attest-server, dev-root) nor "
                        "an app: the app is given as MODULE:ATTR (e.g. main:app)",
                        arg);
  if (colon == arg || colon[1] == '\0')
    return sh_cli__fail(err, "the app must be given as MODULE:ATTR (e.g. main:app), got '%s'", arg);
  cfg->app = arg;
  return 0;
}

void sh_cli__serve_cmd(sh_cli_cmd *cmd, void *const *targets) {
  *cmd = (sh_cli_cmd){
      .name = "shield",
      .usage =
          "Usage: shield [OPTIONS] MODULE:ATTR\n"
          "       shield COMMAND [OPTIONS]\n"
          "\n"
          "Serve the ASGI app MODULE:ATTR (e.g. main:app) over HTTP/1.1.\n",
      .opts = sh_cli__serve_opts,
      .nopts = sh_cli__serve_nopts,
      .targets = targets,
      .subs = sh_cli__subs,
      .nsubs = sh_cli__nsubs,
      .positional = positional,
  };
}

/* The rules that tie the gate's flags to the server's. */
static int check_gate(sh_config *cfg, sh_gate_config *gc, sh_error *err) {
  if (sh_gate_config_check(gc, err) < 0) return SH_EINVAL;
  if (gc->types && cfg->native_hello)
    return sh_cli__fail(err, "--attest-types needs an app to protect (not --native-hello)");
  /* the server's own endpoints are the gate's, and the gate wraps the app's handler */
  if (gc->tee && cfg->native_hello)
    return sh_cli__fail(err,
                        "--tee needs an app to serve (not --native-hello): the attestation and "
                        "health endpoints are the gate's, in front of the app");
  /* Confidential Space tokens are ~11 KB (docs/protocol.md §1.4): 64 KiB unless set explicitly */
  if (gc->types && cfg->max_header_size == 16 * 1024) cfg->max_header_size = 64 * 1024;
  /* --dev only: tests of the pool's caps slow every verification down */
  const char *delay = gc->dev ? getenv("SHIELD_ATTEST_VERIFY_DELAY_MS") : NULL;
  if (delay && *delay) gc->verify_delay_ms = strtol(delay, NULL, 10);
  /* --dev only: tests of the server's evidence cache age it in seconds, not minutes */
  const char *max_age = gc->dev ? getenv("SHIELD_TEE_MAX_AGE") : NULL;
  if (max_age && *max_age) gc->tee_max_age = strtol(max_age, NULL, 10);
  return 0;
}

/* --tls-attested (gate.h): the gate's certificate served by the server from memory.  Run
 * before sh_config_check, which then knows that TLS is on (ssl_issue) for the other --ssl-*
 * flags (--ssl-ca-certs for mutual TLS, --ssl-ciphers, --ssl-min-version still apply).  The
 * key and the provider are made in serve.c (ssl_key, ssl_issue_arg), not while parsing. */
static int check_tls_attested(sh_config *cfg, sh_gate_config *gc, sh_error *err) {
  if (!gc->tls_attested) {
    if (gc->tls_attested_ttl) return sh_cli__fail(err, "--tls-attested-ttl needs --tls-attested");
    return 0;
  }
  if (cfg->ssl_certfile || cfg->ssl_keyfile || cfg->ssl_keyfile_password)
    return sh_cli__fail(err,
                        "--tls-attested makes its own key and certificate inside the TEE: drop "
                        "--ssl-certfile/--ssl-keyfile/--ssl-keyfile-password, or --tls-attested");
  if (!gc->tee)
    return sh_cli__fail(err,
                        "--tls-attested needs --tee (the TEE whose evidence the certificate "
                        "carries; --tee simulated for development)");
  int64_t ttl;
  if (sh_gate_attested_tls_ttl(gc, &ttl, err) < 0) return SH_EINVAL;
  cfg->ssl_issue = sh_gate_attested_tls_issue;
  cfg->ssl_reissue_every = (double)ttl;
  return 0;
}

int sh_cli__serve_parse(sh_config *cfg, sh_gate_config *gc, int argc, char **argv, FILE *out,
                        sh_error *err) {
  sh_config_init(cfg);
  sh_gate_config_init(gc);
  void *const targets[] = {cfg, gc};
  sh_cli_cmd cmd;
  sh_cli__serve_cmd(&cmd, targets);
  int rc = sh_cli__parse(&cmd, argc, argv, out, err);
  if (rc != 0) return rc;
  if (check_tls_attested(cfg, gc, err) < 0) return SH_EINVAL;
  if (sh_config_check(cfg, err) < 0) return SH_EINVAL;
  if (check_gate(cfg, gc, err) < 0) return SH_EINVAL;
  if (!cfg->app && !cfg->native_hello)
    return sh_cli__fail(err, "missing the app: shield [OPTIONS] MODULE:ATTR (see --help)");
  return 0;
}
