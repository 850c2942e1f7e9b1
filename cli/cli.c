/*
 * cli/cli.c — `shield COMMAND ...`: the subcommands (listed in `shield --help` from this same
 * table), else the serve command.
 */
#include <string.h>

#include "cli.h"
#include "opts.h"

const sh_cli_sub sh_cli__subs[] = {
    {"verify", "verify TEE evidence (shield verify --type TYPE FILE)", sh_cli__verify},
    {"attest", "write this machine's TEE evidence (shield attest --tee TYPE)", sh_cli__attest},
    {"attest-server", "check and print what a server proves (shield attest-server URL)",
     sh_cli__attest_server},
    {"dev-root", "print the simulated TEE's dev root certificate", sh_cli__dev_root},
};
const size_t sh_cli__nsubs = sizeof sh_cli__subs / sizeof *sh_cli__subs;

int sh_cli_main(int argc, char **argv) {
  if (argc > 1)
    for (size_t k = 0; k < sh_cli__nsubs; k++)
      if (strcmp(argv[1], sh_cli__subs[k].name) == 0)
        return sh_cli__subs[k].run(argc - 1, argv + 1);
  return sh_cli__serve(argc, argv);
}
