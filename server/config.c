/*
 * server/config.c — the `shield` command line (uvicorn-compatible flag names).
 *
 * Every value is validated in full (no trailing junk, ranges) and a bad one yields a message
 * naming the flag and what it accepts; the caller exits 2 on a negative return.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

static int parse_ll_env(const char *s, long long *out) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < 1 || v > 1024) return -1;
  *out = v;
  return 0;
}

void sh_config_init(sh_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->app = NULL;
  cfg->app_dir = ".";
  cfg->host = "127.0.0.1";
  cfg->port = 8000;
  cfg->uds = NULL;
  cfg->fd = -1;
  cfg->backlog = 2048;
  cfg->lifespan = "auto";
  cfg->loop = "auto";
  cfg->log_level = "info";
  cfg->access_log = 1;
  cfg->gc_freeze = 1;
  cfg->root_path = "";
  cfg->max_header_size = 16 * 1024;
  cfg->max_body_size = 0;
  cfg->timeout_header = 10.0;
  cfg->timeout_keep_alive = 5.0;
  cfg->server_header = 1;
  cfg->date_header = 1;
  cfg->body_high_water = 256 * 1024;
  cfg->write_high_water = 1024 * 1024;
  cfg->handle_signals = 0;
  /* production serving (workers, proxy headers, limits, logs, metrics) */
  cfg->workers = 1;
  const char *wc = getenv("WEB_CONCURRENCY"); /* uvicorn's default for --workers */
  long long n;
  if (wc && parse_ll_env(wc, &n) == 0) cfg->workers = (int)n;
  cfg->timeout_graceful_shutdown = 30.0;
  cfg->proxy_headers = 1;
  const char *fai = getenv("FORWARDED_ALLOW_IPS");
  cfg->forwarded_allow_ips = (fai && *fai) ? fai : "127.0.0.1";
  cfg->access_log_format = "common";
  cfg->state_table_size = 65536;
  cfg->vsock_port = -1;
  cfg->vsock_cid = 0xFFFFFFFFu; /* VMADDR_CID_ANY */
  cfg->uds_mode = 0666;
  cfg->interface = "auto";
  cfg->listen_fd_inherited = -1;
  cfg->notify_fd = -1;
}

void sh_config_usage(FILE *out, const sh_config_hook *hook) {
  fputs(
      "Usage: shield [OPTIONS] MODULE:ATTR\n"
      "\n"
      "Serve the ASGI app MODULE:ATTR (e.g. main:app) over HTTP/1.1.\n"
      "\n"
      "Options:\n"
      "  --factory                    treat MODULE:ATTR as a factory returning the app\n"
      "  --app-dir DIR                add DIR to sys.path (default .)\n"
      "  --host HOST                  bind address (default 127.0.0.1; :: for IPv6)\n"
      "  --port N                     bind port, 0-65535 (default 8000; 0 = any free port)\n"
      "  --uds PATH                   bind a UNIX domain socket instead of TCP\n"
      "  --fd N                       serve an inherited listening socket\n"
      "  --backlog N                  listen backlog (default 2048)\n"
      "  --lifespan auto|on|off       ASGI lifespan protocol (default auto)\n"
      "  --interface auto|asgi3|asgi2 how the app is called (default auto: detected)\n"
      "  --loop auto|asyncio|uvloop   event loop for the app (default auto)\n"
      "  --log-level LEVEL            critical|error|warning|info|debug|trace (default info)\n"
      "  --access-log/--no-access-log one line per response (default on)\n"
      "  --gc-freeze/--no-gc-freeze   after start-up, move the app's objects out of the\n"
      "                               garbage collector's reach (gc.freeze; default on)\n"
      "  --env-file FILE              load environment variables from FILE\n"
      "  --root-path PATH             ASGI root_path for apps behind a path prefix\n"
      "  --max-header-size N          request head limit in bytes (default 16384; 431 beyond)\n"
      "                               alias: --h11-max-incomplete-event-size\n"
      "  --max-body-size N            request body limit in bytes (default 0 = unlimited; 413)\n"
      "  --timeout-header S           seconds to receive a request head (default 10)\n"
      "  --timeout-keep-alive S       idle keep-alive seconds (default 5)\n"
      "  --server-header/--no-server-header   send 'server: shield' (default on)\n"
      "  --date-header/--no-date-header       send 'date:' (default on)\n"
      "  --native-hello               serve the built-in C hello handler (no Python)\n"
      "Production serving:\n"
      "  --workers N                  worker processes (default $WEB_CONCURRENCY or 1)\n"
      "  --timeout-graceful-shutdown S  in-flight requests get S seconds on stop (default 30)\n"
      "  --limit-max-requests N       recycle a worker after N requests (rolling, no loss)\n"
      "  --limit-max-requests-jitter N  add a random 0..N per worker\n"
      "  --limit-concurrency N        answer 503 beyond N requests in flight per worker\n"
      "  --timeout-body S             cut a request body that stalls S seconds (default off)\n"
      "  --proxy-headers/--no-proxy-headers  trust X-Forwarded-For/-Proto, Forwarded\n"
      "                               from --forwarded-allow-ips peers (default on)\n"
      "  --forwarded-allow-ips LIST   IPs/CIDRs or '*' (default $FORWARDED_ALLOW_IPS or\n"
      "                               127.0.0.1); UNIX-socket peers are always trusted\n"
      "  --header NAME:VALUE          extra response header (repeatable)\n"
      "  --access-log-format common|json  access log line format (default common)\n"
      "  --metrics-port PORT|PATH     serve Prometheus metrics (TCP 127.0.0.1:PORT or UDS)\n"
      "  --state-secret-file FILE     >= 32 bytes every worker shares (default: random)\n"
      "  --state-table-size N         shared state table entries (default 65536)\n"
      "  --vsock-port PORT            listen on AF_VSOCK (Nitro enclaves) instead of TCP\n"
      "  --vsock-cid CID              vsock address to bind (default any)\n"
      "  --uds-perms MODE             octal mode of the --uds socket (default 0666)\n"
      "  --reload                     restart the worker when a watched file changes\n"
      "  --reload-dir DIR             directory to watch (repeatable; default --app-dir)\n"
      "  --ssl-certfile FILE          serve HTTPS with this PEM certificate chain (leaf first)\n"
      "  --ssl-keyfile FILE           PEM private key (default: the --ssl-certfile file)\n"
      "  --ssl-keyfile-password PW    password of an encrypted --ssl-keyfile\n"
      "  --ssl-ca-certs FILE          PEM CAs that client certificates must chain to\n"
      "  --ssl-cert-reqs 0|1|2        client certificate: 0/none (default), 1/optional,\n"
      "                               2/required (names none|optional|required accepted too)\n"
      "  --ssl-ciphers LIST           TLS 1.2 cipher list, OpenSSL syntax (default OpenSSL's)\n"
      "  --ssl-min-version 1.2|1.3    oldest TLS version accepted (default 1.2)\n"
      "                               (SIGHUP reloads the certificate, key and CA files)\n",
      out);
  if (hook && hook->usage) hook->usage(hook->data, out); /* another module's options */
  fputs(
      "  --help                       show this message and exit\n"
      "  --version                    show the version and exit\n",
      out);
}

/* Full-string integer parse within [lo, hi]. */
static int parse_ll(const char *s, long long lo, long long hi, long long *out) {
  if (!s || !*s) return -1;
  errno = 0;
  char *end = NULL;
  long long v = strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_seconds(const char *s, double *out) {
  if (!s || !*s) return -1;
  errno = 0;
  char *end = NULL;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < 0 || v > 86400.0 * 365)
    return -1;
  *out = v;
  return 0;
}

static int one_of(const char *v, const char *const *choices) {
  for (; *choices; choices++)
    if (strcmp(v, *choices) == 0) return 1;
  return 0;
}

/* ---- production-serving flags (workers, proxy headers, limits, logs, metrics) ----
 * Returns 1 when `name` was one of these flags (consumed, *i advanced past a separate value),
 * 0 when it is not, or a negative code with err set. */
static int parse_serving_flag(sh_config *cfg, const char *name, const char *value, int argc,
                              char **argv, int *i, sh_error *err) {
  static const struct {
    const char *n;
    size_t off;
    int v;
  } flags[] = {
      {"--proxy-headers", offsetof(sh_config, proxy_headers), 1},
      {"--no-proxy-headers", offsetof(sh_config, proxy_headers), 0},
      {"--reload", offsetof(sh_config, reload), 1},
  };
  for (size_t b = 0; b < sizeof flags / sizeof flags[0]; b++) {
    if (strcmp(name, flags[b].n) == 0) {
      if (value) {
        SH_ERR(err, SH_EINVAL, "%s takes no value", name);
        return SH_EINVAL;
      }
      *(int *)((char *)cfg + flags[b].off) = flags[b].v;
      return 1;
    }
  }
  /* uvicorn flags that have nothing to select in shield: accepted so a Dockerfile's command
   * line keeps working, with a note (README: the uvicorn flag table says why). */
  static const struct {
    const char *n;
    int has_value;
    const char *why;
  } compat[] = {
      {"--http", 1, "shield has one HTTP/1.1 implementation (llhttp)"},
      {"--use-colors", 0, "log lines are plain text"},
      {"--no-use-colors", 0, NULL},
      {"--timeout-notify", 1, "the supervisor watches workers through their exit and pipe"},
      {"--reload-delay", 1, "changes are debounced by 0.2 s"},
      {"--reload-include", 1, "--reload watches *.py files"},
      {"--reload-exclude", 1, "--reload watches *.py files outside hidden dirs and __pycache__"},
  };
  for (size_t b = 0; b < sizeof compat / sizeof compat[0]; b++) {
    if (strcmp(name, compat[b].n) != 0) continue;
    if (compat[b].has_value && !value) {
      if (*i + 1 >= argc) {
        SH_ERR(err, SH_EINVAL, "%s needs a value", name);
        return SH_EINVAL;
      }
      value = argv[++*i];
    }
    if (!compat[b].has_value && value) {
      SH_ERR(err, SH_EINVAL, "%s takes no value", name);
      return SH_EINVAL;
    }
    if (compat[b].why) fprintf(stderr, "WARNING:  %s is ignored: %s\n", name, compat[b].why);
    return 1;
  }
  if (strcmp(name, "--ws") == 0) {
    if (!value) {
      if (*i + 1 >= argc) {
        SH_ERR(err, SH_EINVAL, "%s needs a value", name);
        return SH_EINVAL;
      }
      value = argv[++*i];
    }
    if (strcmp(value, "none") != 0 && strcmp(value, "auto") != 0) {
      SH_ERR(err, SH_EINVAL, "--ws %s: shield does not serve WebSockets (use --ws none)", value);
      return SH_EINVAL;
    }
    return 1; /* auto: there is no WebSocket implementation to pick, as with none */
  }
  if (strcmp(name, "--interface") == 0) {
    /* uvicorn's: how the app is called (pyshim/bridge.py, asgi_app) */
    static const char *const kinds[] = {"auto", "asgi3", "asgi2", NULL};
    if (!value) {
      if (*i + 1 >= argc) {
        SH_ERR(err, SH_EINVAL, "%s needs a value", name);
        return SH_EINVAL;
      }
      value = argv[++*i];
    }
    if (strcmp(value, "wsgi") == 0) {
      SH_ERR(err, SH_EINVAL, "--interface wsgi: shield serves ASGI apps only");
      return SH_EINVAL;
    }
    if (!one_of(value, kinds)) {
      SH_ERR(err, SH_EINVAL, "--interface: '%s' is not one of auto, asgi3, asgi2", value);
      return SH_EINVAL;
    }
    cfg->interface = value;
    return 1;
  }
  static const char *const valued[] = {"--workers",
                                       "--timeout-graceful-shutdown",
                                       "--limit-max-requests",
                                       "--limit-max-requests-jitter",
                                       "--limit-concurrency",
                                       "--timeout-body",
                                       "--forwarded-allow-ips",
                                       "--header",
                                       "--access-log-format",
                                       "--metrics-port",
                                       "--state-secret-file",
                                       "--state-table-size",
                                       "--vsock-port",
                                       "--vsock-cid",
                                       "--uds-perms",
                                       "--reload-dir",
                                       NULL};
  if (!one_of(name, valued)) return 0;
  if (!value) {
    if (*i + 1 >= argc) {
      SH_ERR(err, SH_EINVAL, "%s needs a value", name);
      return SH_EINVAL;
    }
    value = argv[++*i];
  }
  long long n;
  double d;
  if (strcmp(name, "--workers") == 0) {
    if (parse_ll(value, 1, 1024, &n) < 0) goto bad_count;
    cfg->workers = (int)n;
  } else if (strcmp(name, "--limit-max-requests") == 0 ||
             strcmp(name, "--limit-max-requests-jitter") == 0) {
    if (parse_ll(value, 0, LLONG_MAX, &n) < 0) goto bad_count;
    if (name[20] == '\0')
      cfg->limit_max_requests = (uint64_t)n;
    else
      cfg->limit_max_requests_jitter = (uint64_t)n;
  } else if (strcmp(name, "--limit-concurrency") == 0) {
    if (parse_ll(value, 0, INT_MAX, &n) < 0) goto bad_count;
    cfg->limit_concurrency = (int)n;
  } else if (strcmp(name, "--state-table-size") == 0) {
    if (parse_ll(value, 1, 1 << 24, &n) < 0) goto bad_count;
    cfg->state_table_size = (size_t)n;
  } else if (strcmp(name, "--timeout-graceful-shutdown") == 0 ||
             strcmp(name, "--timeout-body") == 0) {
    if (parse_seconds(value, &d) < 0) {
      SH_ERR(err, SH_EINVAL, "%s: '%s' is not a number of seconds (>= 0)", name, value);
      return SH_EINVAL;
    }
    if (name[10] == 'g')
      cfg->timeout_graceful_shutdown = d;
    else
      cfg->timeout_body = d;
  } else if (strcmp(name, "--forwarded-allow-ips") == 0) {
    cfg->forwarded_allow_ips = value; /* validated by sh_proxy_check_list at server start */
  } else if (strcmp(name, "--header") == 0) {
    const char *colon = strchr(value, ':');
    if (!colon || colon == value) {
      SH_ERR(err, SH_EINVAL, "--header: '%s' is not NAME:VALUE", value);
      return SH_EINVAL;
    }
    for (const char *p = value; p < colon; p++)
      if (!sh_http_token_char((unsigned char)*p)) {
        SH_ERR(err, SH_EINVAL, "--header: '%.*s' is not a valid header name", (int)(colon - value),
               value);
        return SH_EINVAL;
      }
    for (const char *p = colon + 1; *p; p++)
      if ((unsigned char)*p < 0x20 && *p != '\t') {
        SH_ERR(err, SH_EINVAL, "--header: control characters in the value of '%s'", value);
        return SH_EINVAL;
      }
    if (cfg->num_extra_headers >= 15) {
      SH_ERR(err, SH_EINVAL, "--header: at most 15 extra headers");
      return SH_EINVAL;
    }
    cfg->extra_headers[cfg->num_extra_headers++] = value;
  } else if (strcmp(name, "--access-log-format") == 0) {
    static const char *const fmts[] = {"common", "json", NULL};
    if (!one_of(value, fmts)) {
      SH_ERR(err, SH_EINVAL, "--access-log-format: '%s' is not one of common, json", value);
      return SH_EINVAL;
    }
    cfg->access_log_format = value;
  } else if (strcmp(name, "--metrics-port") == 0) {
    if (!*value) goto empty;
    if (value[0] != '/' && parse_ll(value, 0, 65535, &n) < 0) {
      SH_ERR(err, SH_EINVAL,
             "--metrics-port: '%s' is neither a port (0-65535) nor an "
             "absolute UNIX socket path",
             value);
      return SH_EINVAL;
    }
    cfg->metrics = value;
  } else if (strcmp(name, "--state-secret-file") == 0) {
    if (!*value) goto empty;
    cfg->state_secret_file = value;
  } else if (strcmp(name, "--vsock-port") == 0) {
    if (parse_ll(value, 0, 0xFFFFFFFELL, &n) < 0) {
      SH_ERR(err, SH_EINVAL, "--vsock-port: '%s' is not a vsock port number", value);
      return SH_EINVAL;
    }
    cfg->vsock_port = (int)n;
  } else if (strcmp(name, "--vsock-cid") == 0) {
    if (parse_ll(value, 0, 0xFFFFFFFFLL, &n) < 0) {
      SH_ERR(err, SH_EINVAL, "--vsock-cid: '%s' is not a CID (0-4294967295)", value);
      return SH_EINVAL;
    }
    cfg->vsock_cid = (unsigned)n;
  } else if (strcmp(name, "--uds-perms") == 0) {
    char *end = NULL;
    errno = 0;
    long m = strtol(value, &end, 8);
    if (errno || end == value || *end || m < 0 || m > 0777) {
      SH_ERR(err, SH_EINVAL, "--uds-perms: '%s' is not an octal mode (e.g. 660)", value);
      return SH_EINVAL;
    }
    cfg->uds_mode = (int)m;
  } else if (strcmp(name, "--reload-dir") == 0) {
    if (!*value) goto empty;
    if (cfg->num_reload_dirs >= 15) {
      SH_ERR(err, SH_EINVAL, "--reload-dir: at most 15 directories");
      return SH_EINVAL;
    }
    cfg->reload_dirs[cfg->num_reload_dirs++] = value;
  }
  return 1;
bad_count:
  SH_ERR(err, SH_EINVAL, "%s: '%s' is not a valid count", name, value);
  return SH_EINVAL;
empty:
  SH_ERR(err, SH_EINVAL, "%s: the value must not be empty", name);
  return SH_EINVAL;
}

/* Checks across flags, after the whole command line was read. */
static int check_serving_flags(sh_config *cfg, sh_error *err) {
  int listeners = (cfg->uds != NULL) + (cfg->fd >= 0) + (cfg->vsock_port >= 0);
  if (listeners > 1) {
    SH_ERR(err, SH_EINVAL, "--uds, --fd and --vsock-port cannot be used together");
    return SH_EINVAL;
  }
  if (cfg->proxy_headers && cfg->forwarded_allow_ips) {
    sh_proxy_list *l = NULL;
    if (sh_proxy_list_parse(cfg->forwarded_allow_ips, &l, err) < 0) return SH_EINVAL;
    sh_proxy_list_free(l);
  }
  if (cfg->reload && cfg->workers > 1) {
    /* as uvicorn: --reload serves one worker */
    fprintf(stderr, "WARNING:  --reload and --workers are mutually exclusive: one worker\n");
    cfg->workers = 1;
  }
  return 0;
}

enum { F_BOOL_ON, F_BOOL_OFF, F_VALUE };

/* ---- TLS flags (server/tls.c), uvicorn's names.  Returns 1 when `name` is one of them and
 * was applied, 0 when it is not a TLS flag, or a negative code with err set. ---- */
static int parse_ssl_flag(sh_config *cfg, const char *name, const char *value, sh_error *err) {
  static const char *const files[] = {"--ssl-certfile", "--ssl-keyfile", "--ssl-ca-certs", NULL};
  if (one_of(name, files) || strcmp(name, "--ssl-keyfile-password") == 0 ||
      strcmp(name, "--ssl-ciphers") == 0) {
    if (!*value) {
      SH_ERR(err, SH_EINVAL, "%s: the value must not be empty", name);
      return SH_EINVAL;
    }
    if (strcmp(name, "--ssl-certfile") == 0)
      cfg->ssl_certfile = value;
    else if (strcmp(name, "--ssl-keyfile") == 0)
      cfg->ssl_keyfile = value;
    else if (strcmp(name, "--ssl-ca-certs") == 0)
      cfg->ssl_ca_certs = value;
    else if (strcmp(name, "--ssl-keyfile-password") == 0)
      cfg->ssl_keyfile_password = value;
    else
      cfg->ssl_ciphers = value;
    return 1;
  }
  if (strcmp(name, "--ssl-cert-reqs") == 0) {
    /* uvicorn passes ssl.CERT_NONE/OPTIONAL/REQUIRED as 0/1/2. */
    static const char *const reqs[] = {"none", "optional", "required", NULL};
    for (int k = 0; reqs[k]; k++)
      if (strcmp(value, reqs[k]) == 0 || (value[0] == '0' + k && value[1] == '\0')) {
        cfg->ssl_cert_reqs = k;
        return 1;
      }
    SH_ERR(err, SH_EINVAL, "--ssl-cert-reqs: '%s' is not one of 0|none, 1|optional, 2|required",
           value);
    return SH_EINVAL;
  }
  if (strcmp(name, "--ssl-min-version") == 0) {
    if (strcmp(value, "1.2") == 0 || strcmp(value, "TLSv1.2") == 0)
      cfg->ssl_min_version = 0x0303;
    else if (strcmp(value, "1.3") == 0 || strcmp(value, "TLSv1.3") == 0)
      cfg->ssl_min_version = 0x0304;
    else {
      SH_ERR(err, SH_EINVAL, "--ssl-min-version: '%s' is not 1.2 or 1.3", value);
      return SH_EINVAL;
    }
    return 1;
  }
  return 0;
}

/* After the whole command line: TLS flags that only make sense together. */
static int check_ssl_flags(const sh_config *cfg, sh_error *err) {
  if (!cfg->ssl_certfile && (cfg->ssl_keyfile || cfg->ssl_ca_certs || cfg->ssl_cert_reqs ||
                             cfg->ssl_keyfile_password || cfg->ssl_ciphers)) {
    SH_ERR(err, SH_EINVAL, "the --ssl-* options need --ssl-certfile (the server certificate)");
    return SH_EINVAL;
  }
  if (cfg->ssl_cert_reqs && !cfg->ssl_ca_certs) {
    SH_ERR(err, SH_EINVAL,
           "--ssl-cert-reqs optional/required needs --ssl-ca-certs (the CAs client "
           "certificates must chain to)");
    return SH_EINVAL;
  }
  return 0;
}

int sh_config_parse(sh_config *cfg, int argc, char **argv, const sh_config_hook *hook,
                    sh_error *err) {
  static const char *const lifespans[] = {"auto", "on", "off", NULL};
  static const char *const loops[] = {"auto", "asyncio", "uvloop", NULL};
  static const char *const levels[] = {"critical", "error", "warning", "info",
                                       "debug",    "trace", NULL};
  int positional_done = 0;
  if (err) {
    err->code = 0;
    err->message[0] = '\0';
  }
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--") == 0) {
      positional_done = 1;
      continue;
    }
    if (positional_done || arg[0] != '-' || arg[1] == '\0') {
      if (cfg->app) {
        SH_ERR(err, SH_EINVAL, "unexpected extra argument '%s' (only one MODULE:ATTR)", arg);
        return SH_EINVAL;
      }
      const char *colon = strchr(arg, ':');
      if (!colon || colon == arg || colon[1] == '\0') {
        SH_ERR(err, SH_EINVAL, "the app must be given as MODULE:ATTR (e.g. main:app), got '%s'",
               arg);
        return SH_EINVAL;
      }
      cfg->app = arg;
      continue;
    }
    /* --name=value or --name value */
    char name[64];
    const char *value = NULL;
    const char *eq = strchr(arg, '=');
    size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
    if (nlen >= sizeof name) {
      SH_ERR(err, SH_EINVAL, "unknown option '%.60s' (see --help)", arg);
      return SH_EINVAL;
    }
    memcpy(name, arg, nlen);
    name[nlen] = '\0';
    if (eq) value = eq + 1;

    /* Flags without a value. */
    static const struct {
      const char *n;
      size_t off;
      int v;
    } bools[] = {
        {"--factory", offsetof(sh_config, factory), 1},
        {"--access-log", offsetof(sh_config, access_log), 1},
        {"--no-access-log", offsetof(sh_config, access_log), 0},
        {"--gc-freeze", offsetof(sh_config, gc_freeze), 1},
        {"--no-gc-freeze", offsetof(sh_config, gc_freeze), 0},
        {"--server-header", offsetof(sh_config, server_header), 1},
        {"--no-server-header", offsetof(sh_config, server_header), 0},
        {"--date-header", offsetof(sh_config, date_header), 1},
        {"--no-date-header", offsetof(sh_config, date_header), 0},
        {"--native-hello", offsetof(sh_config, native_hello), 1},
    };
    int handled = 0;
    for (size_t b = 0; b < sizeof bools / sizeof bools[0]; b++) {
      if (strcmp(name, bools[b].n) == 0) {
        if (value) {
          SH_ERR(err, SH_EINVAL, "%s takes no value", name);
          return SH_EINVAL;
        }
        *(int *)((char *)cfg + bools[b].off) = bools[b].v;
        handled = 1;
        break;
      }
    }
    if (handled) continue;
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
      sh_config_usage(stdout, hook);
      return 1;
    }
    if (strcmp(name, "--version") == 0) {
      printf("shield %s\n", sh_version()); /* common.h: meson.project_version() */
      return 1;
    }

    int sr = parse_serving_flag(cfg, name, value, argc, argv, &i, err);
    if (sr < 0) return sr;
    if (sr == 1) continue;
    if (hook && hook->parse) { /* another module's flags (the gate's --attest-*) */
      sr = hook->parse(hook->data, cfg, name, value, argc, argv, &i, err);
      if (sr < 0) return sr;
      if (sr == 1) continue;
    }

    if (strncmp(name, "--ssl-", 6) == 0) { /* TLS flags: parse_ssl_flag above */
      if (!value) {
        if (i + 1 >= argc) {
          SH_ERR(err, SH_EINVAL, "%s needs a value", name);
          return SH_EINVAL;
        }
        value = argv[++i];
      }
      int r = parse_ssl_flag(cfg, name, value, err);
      if (r < 0) return r;
      if (r == 0) {
        SH_ERR(err, SH_EINVAL, "unknown option '%s' (see --help)", name);
        return SH_EINVAL;
      }
      continue;
    }
    static const char *const with_value[] = {"--app-dir",
                                             "--host",
                                             "--port",
                                             "--uds",
                                             "--fd",
                                             "--backlog",
                                             "--lifespan",
                                             "--loop",
                                             "--log-level",
                                             "--env-file",
                                             "--root-path",
                                             "--max-header-size",
                                             "--h11-max-incomplete-event-size",
                                             "--max-body-size",
                                             "--timeout-header",
                                             "--timeout-keep-alive",
                                             NULL};
    if (!one_of(name, with_value)) {
      SH_ERR(err, SH_EINVAL, "unknown option '%s' (see --help)", name);
      return SH_EINVAL;
    }
    if (!value) {
      if (i + 1 >= argc) {
        SH_ERR(err, SH_EINVAL, "%s needs a value", name);
        return SH_EINVAL;
      }
      value = argv[++i];
    }

    long long n;
    double d;
    if (strcmp(name, "--app-dir") == 0) {
      if (!*value) goto empty;
      cfg->app_dir = value;
    } else if (strcmp(name, "--host") == 0) {
      if (!*value) goto empty;
      cfg->host = value;
    } else if (strcmp(name, "--port") == 0) {
      if (parse_ll(value, 0, 65535, &n) < 0) {
        SH_ERR(err, SH_EINVAL, "--port: '%s' is not a port number (0-65535)", value);
        return SH_EINVAL;
      }
      cfg->port = (int)n;
    } else if (strcmp(name, "--uds") == 0) {
      if (!*value) goto empty;
      if (strlen(value) >= 108) {
        SH_ERR(err, SH_EINVAL, "--uds: path too long (at most 107 bytes)");
        return SH_EINVAL;
      }
      cfg->uds = value;
    } else if (strcmp(name, "--fd") == 0) {
      if (parse_ll(value, 0, INT_MAX, &n) < 0) {
        SH_ERR(err, SH_EINVAL, "--fd: '%s' is not a file descriptor number (>= 0)", value);
        return SH_EINVAL;
      }
      cfg->fd = (int)n;
    } else if (strcmp(name, "--backlog") == 0) {
      if (parse_ll(value, 1, 65535, &n) < 0) {
        SH_ERR(err, SH_EINVAL, "--backlog: '%s' is not a number in 1-65535", value);
        return SH_EINVAL;
      }
      cfg->backlog = (int)n;
    } else if (strcmp(name, "--lifespan") == 0) {
      if (!one_of(value, lifespans)) {
        SH_ERR(err, SH_EINVAL, "--lifespan: '%s' is not one of auto, on, off", value);
        return SH_EINVAL;
      }
      cfg->lifespan = value;
    } else if (strcmp(name, "--loop") == 0) {
      if (!one_of(value, loops)) {
        SH_ERR(err, SH_EINVAL, "--loop: '%s' is not one of auto, asyncio, uvloop", value);
        return SH_EINVAL;
      }
      cfg->loop = value;
    } else if (strcmp(name, "--log-level") == 0) {
      if (!one_of(value, levels)) {
        SH_ERR(err, SH_EINVAL,
               "--log-level: '%s' is not one of critical, error, warning, info, debug, trace",
               value);
        return SH_EINVAL;
      }
      cfg->log_level = value;
    } else if (strcmp(name, "--env-file") == 0) {
      if (!*value) goto empty;
      cfg->env_file = value;
    } else if (strcmp(name, "--root-path") == 0) {
      if (*value && value[0] != '/') {
        SH_ERR(err, SH_EINVAL, "--root-path: '%s' must be empty or start with '/'", value);
        return SH_EINVAL;
      }
      cfg->root_path = value;
    } else if (strcmp(name, "--max-header-size") == 0 ||
               strcmp(name, "--h11-max-incomplete-event-size") == 0) {
      /* At least a minimal request line; at most 1 MiB (the head is buffered in memory). */
      if (parse_ll(value, 64, 1024 * 1024, &n) < 0) {
        SH_ERR(err, SH_EINVAL, "%s: '%s' is not a byte count in 64-1048576", name, value);
        return SH_EINVAL;
      }
      cfg->max_header_size = (size_t)n;
    } else if (strcmp(name, "--max-body-size") == 0) {
      if (parse_ll(value, 0, LLONG_MAX, &n) < 0) {
        SH_ERR(err, SH_EINVAL, "%s: '%s' is not a byte count (>= 0; 0 = unlimited)", name, value);
        return SH_EINVAL;
      }
      cfg->max_body_size = (uint64_t)n;
    } else if (strcmp(name, "--timeout-header") == 0 || strcmp(name, "--timeout-keep-alive") == 0) {
      if (parse_seconds(value, &d) < 0) {
        SH_ERR(err, SH_EINVAL, "%s: '%s' is not a number of seconds (>= 0)", name, value);
        return SH_EINVAL;
      }
      if (name[10] == 'h')
        cfg->timeout_header = d;
      else
        cfg->timeout_keep_alive = d;
    }
    continue;
  empty:
    SH_ERR(err, SH_EINVAL, "%s: the value must not be empty", name);
    return SH_EINVAL;
  }
  if (cfg->uds && cfg->fd >= 0) {
    SH_ERR(err, SH_EINVAL, "--uds and --fd cannot be used together");
    return SH_EINVAL;
  }
  if (check_serving_flags(cfg, err) < 0) return SH_EINVAL;
  if (check_ssl_flags(cfg, err) < 0) return SH_EINVAL;
  if (hook && hook->check && hook->check(hook->data, cfg, err) < 0) return SH_EINVAL;
  if (!cfg->app && !cfg->native_hello) {
    SH_ERR(err, SH_EINVAL, "missing the app: shield [OPTIONS] MODULE:ATTR (see --help)");
    return SH_EINVAL;
  }
  return 0;
}
