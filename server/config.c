/*
 * server/config.c — the server's configuration: its defaults (sh_config_init) and the checks
 * that need the whole of it (sh_config_check).  The command line that fills it is cli/'s
 * (one option table for parsing and --help); messages here name the flags (uvicorn's names)
 * because that is what a user has to change.
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

/* --header NAME:VALUE (RFC 9110 §5.1: the name a token; §5.5: no control characters in the
 * value but HTAB), so a bad line is refused at start-up, never sent on every response. */
static int check_extra_headers(const sh_config *cfg, sh_error *err) {
  if (cfg->num_extra_headers < 0 ||
      cfg->num_extra_headers >= (int)(sizeof cfg->extra_headers / sizeof *cfg->extra_headers)) {
    SH_ERR(err, SH_EINVAL, "--header: at most 15 extra headers");
    return SH_EINVAL;
  }
  for (int h = 0; h < cfg->num_extra_headers; h++) {
    const char *value = cfg->extra_headers[h];
    const char *colon = value ? strchr(value, ':') : NULL;
    if (!colon || colon == value) {
      SH_ERR(err, SH_EINVAL, "--header: '%s' is not NAME:VALUE", value ? value : "");
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
  }
  return 0;
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

/* After the whole command line: TLS flags that only make sense together. */
static int check_ssl_flags(const sh_config *cfg, sh_error *err) {
  /* (TLS from memory, ssl_issue, takes the CA and cipher flags; it has no key file) */
  int tls = cfg->ssl_certfile || cfg->ssl_issue;
  if ((!cfg->ssl_certfile && (cfg->ssl_keyfile || cfg->ssl_keyfile_password)) ||
      (!tls && (cfg->ssl_ca_certs || cfg->ssl_cert_reqs || cfg->ssl_ciphers))) {
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

int sh_config_check(sh_config *cfg, sh_error *err) {
  if (err) {
    err->code = 0;
    err->message[0] = '\0';
  }
  if (cfg->uds && cfg->fd >= 0) {
    SH_ERR(err, SH_EINVAL, "--uds and --fd cannot be used together");
    return SH_EINVAL;
  }
  if (check_extra_headers(cfg, err) < 0) return SH_EINVAL;
  if (check_serving_flags(cfg, err) < 0) return SH_EINVAL;
  if (check_ssl_flags(cfg, err) < 0) return SH_EINVAL;
  return 0;
}
