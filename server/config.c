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

#ifndef SHIELD_VERSION
#define SHIELD_VERSION "0.1.0"
#endif

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
}

void sh_config_usage(FILE *out) {
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
      "  --loop auto|asyncio|uvloop   event loop for the app (default auto)\n"
      "  --log-level LEVEL            critical|error|warning|info|debug|trace (default info)\n"
      "  --access-log/--no-access-log one line per response (default on)\n"
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

enum { F_BOOL_ON, F_BOOL_OFF, F_VALUE };

int sh_config_parse(sh_config *cfg, int argc, char **argv, sh_error *err) {
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
    static const struct { const char *n; size_t off; int v; } bools[] = {
        {"--factory", offsetof(sh_config, factory), 1},
        {"--access-log", offsetof(sh_config, access_log), 1},
        {"--no-access-log", offsetof(sh_config, access_log), 0},
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
      sh_config_usage(stdout);
      return 1;
    }
    if (strcmp(name, "--version") == 0) {
      printf("shield %s\n", SHIELD_VERSION);
      return 1;
    }

    static const char *const with_value[] = {
        "--app-dir", "--host", "--port", "--uds", "--fd", "--backlog", "--lifespan", "--loop",
        "--log-level", "--env-file", "--root-path", "--max-header-size",
        "--h11-max-incomplete-event-size", "--max-body-size", "--timeout-header",
        "--timeout-keep-alive", NULL};
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
        SH_ERR(err, SH_EINVAL, "%s: '%s' is not a byte count (>= 0; 0 = unlimited)", name,
               value);
        return SH_EINVAL;
      }
      cfg->max_body_size = (uint64_t)n;
    } else if (strcmp(name, "--timeout-header") == 0 ||
               strcmp(name, "--timeout-keep-alive") == 0) {
      if (parse_seconds(value, &d) < 0) {
        SH_ERR(err, SH_EINVAL, "%s: '%s' is not a number of seconds (>= 0)", name, value);
        return SH_EINVAL;
      }
      if (name[10] == 'h') cfg->timeout_header = d;
      else cfg->timeout_keep_alive = d;
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
  if (!cfg->app && !cfg->native_hello) {
    SH_ERR(err, SH_EINVAL, "missing the app: shield [OPTIONS] MODULE:ATTR (see --help)");
    return SH_EINVAL;
  }
  return 0;
}
