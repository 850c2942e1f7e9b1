/*
 * cli/serve.c — `shield [OPTIONS] MODULE:ATTR` and `shield --native-hello [OPTIONS]`: serve an
 * ASGI app (embedded CPython, pyshim/) or the C hello handler (no Python: the native ceiling),
 * behind the attestation gate when --attest-types is given.  The options are serve_opts.c's.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gate.h"
#include "opts.h"
#include "pyshim.h"
#include "server.h"

static int serve_native_hello(sh_config *cfg) {
  sh_error err = {0};
  sh_server *srv = NULL;
  cfg->handle_signals = 1;
  if (sh_server_new(cfg, sh_hello_handler(), &srv, &err) < 0) {
    fprintf(stderr, "shield: %s\n", err.message);
    return 1;
  }
  int rc = sh_server_run(srv);
  sh_server_free(srv);
  return rc < 0 ? 1 : 0;
}

typedef struct worker_args {
  int argc;
  char **argv;
  const sh_gate_config *gate; /* the --attest-* flags */
} worker_args;

/* One worker process (forked by the supervisor, before any interpreter exists). */
static int python_worker(sh_config *cfg, void *arg) {
  worker_args *a = arg;
  return sh_pyshim_main(cfg, a->gate, a->argc, a->argv);
}

static int hello_worker(sh_config *cfg, void *arg) {
  (void)arg;
  return serve_native_hello(cfg);
}

int sh_cli__serve(int argc, char **argv) {
  sh_config cfg;
  sh_gate_config gcfg;
  sh_error err = {0};
  int rc = sh_cli__serve_parse(&cfg, &gcfg, argc, argv, stdout, &err);
  if (rc == 1) return 0; /* --help, --version */
  if (rc < 0) {
    sh_cli_cmd cmd;
    sh_cli__serve_cmd(&cmd, NULL);
    return sh_cli__usage_error(&cmd, &err);
  }
  sh_log_set_level(cfg.log_level);
  /* --tls-attested: the key is generated here, in the process that forks the workers, so
   * that all of them serve it (inherited memory, never a file); the supervisor issues the
   * certificates (sh_config.ssl_issue, set by the parser) and re-issues them. */
  sh_gate_attested_tls *atls = NULL;
  if (gcfg.tls_attested) {
    if (sh_gate_attested_tls_new(&gcfg, (int64_t)time(NULL), &atls, &err) < 0) {
      fprintf(stderr, "shield: %s\n", err.message);
      return 1;
    }
    cfg.ssl_key = sh_gate_attested_tls_key(atls);
    cfg.ssl_issue_arg = atls;
  }
  /* Serving runs go through the supervisor (server/supervisor.c), even with one worker: it
   * gives crash restarts, SIGHUP rolling restarts and shared state at the cost of one fork.
   * The native hello with one worker stays single-process (the C ceiling, benchmarked),
   * unless a certificate must be re-issued (the supervisor's job). */
  if (cfg.native_hello && cfg.workers == 1 && !cfg.reload && !atls) return serve_native_hello(&cfg);
  worker_args wa = {argc, argv, &gcfg};
  rc = sh_supervisor_run(&cfg, cfg.native_hello ? hello_worker : python_worker, &wa);
  sh_gate_attested_tls_free(atls);
  return rc;
}
