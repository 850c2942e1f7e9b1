/*
 * pyshim/main.c — the `shield` command.
 *
 *   shield MODULE:ATTR [options]     serve an ASGI app (embedded CPython)
 *   shield --native-hello [options]  serve the C hello handler (no Python: the native ceiling)
 *   shield verify …                  verify TEE evidence (attest/, no Python)
 */
#include <stdio.h>
#include <string.h>

#include "pyshim.h"
#include "server.h"
#ifdef SHIELD_HAVE_ATTEST
#include "attest.h"
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

int main(int argc, char **argv) {
#ifdef SHIELD_HAVE_ATTEST
  if (argc > 1 && strcmp(argv[1], "verify") == 0) return sh_attest_cli_verify(argc - 1, argv + 1);
#endif
  sh_config cfg;
  sh_config_init(&cfg);
  sh_error err = {0};
  int rc = sh_config_parse(&cfg, argc, argv, &err);
  if (rc == 1) return 0;
  if (rc < 0) {
    fprintf(stderr, "shield: %s\nTry 'shield --help' for the list of options.\n", err.message);
    return 2;
  }
  sh_log_set_level(cfg.log_level);
  if (cfg.native_hello) return serve_native_hello(&cfg);
  return sh_pyshim_main(&cfg, argc, argv);
}
