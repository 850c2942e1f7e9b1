/*
 * pyshim/main.c — the `shield` command.
 *
 *   shield MODULE:ATTR [options]     serve an ASGI app (embedded CPython)
 *   shield --native-hello [options]  serve the C hello handler (no Python: the native ceiling)
 *   shield verify …                  verify TEE evidence (attest/, no Python)
 *   shield attest --tee simulated …  simulated evidence; shield dev-root: its root (§1.7)
 */
#include <stdio.h>
#include <string.h>

#include "pyshim.h"
#include "server.h"
#ifdef SHIELD_HAVE_ATTEST
#include "attest.h"
#endif
#ifdef SHIELD_HAVE_GATE
#include "gate.h"
#endif

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
  const struct sh_gate_config *gate; /* the --attest-* flags, or NULL */
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

int main(int argc, char **argv) {
#ifdef SHIELD_HAVE_ATTEST
  if (argc > 1 && strcmp(argv[1], "verify") == 0) return sh_attest_cli_verify(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "attest") == 0) return sh_attest_cli_attest(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "dev-root") == 0)
    return sh_attest_cli_dev_root(argc - 1, argv + 1);
#endif
  sh_config cfg;
  sh_config_init(&cfg);
  sh_error err = {0};
  const sh_config_hook *hook = NULL;
  const struct sh_gate_config *gate = NULL;
#ifdef SHIELD_HAVE_GATE
  sh_gate_config gcfg; /* the --attest-* flags (gate/) */
  sh_config_hook gate_hook;
  sh_gate_config_init(&gcfg);
  sh_gate_options(&gcfg, &gate_hook);
  hook = &gate_hook;
  gate = &gcfg;
#endif
  int rc = sh_config_parse(&cfg, argc, argv, hook, &err);
  if (rc == 1) return 0;
  if (rc < 0) {
    fprintf(stderr, "shield: %s\nTry 'shield --help' for the list of options.\n", err.message);
    return 2;
  }
  sh_log_set_level(cfg.log_level);
  /* Serving runs go through the supervisor (server/supervisor.c), even with one worker: it
   * gives crash restarts, SIGHUP rolling restarts and shared state at the cost of one fork.
   * The native hello with one worker stays single-process (the C ceiling, benchmarked). */
  if (cfg.native_hello && cfg.workers == 1 && !cfg.reload) return serve_native_hello(&cfg);
  worker_args wa = {argc, argv, gate};
  return sh_supervisor_run(&cfg, cfg.native_hello ? hello_worker : python_worker, &wa);
}
