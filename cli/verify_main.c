/* cli/verify_main.c — the test-only `attest-verify` executable (not installed): `shield verify`
 * without Python (no libpython to load), usable before the shield binary exists. */
#include "opts.h"

int main(int argc, char **argv) {
  argv[0] = (char *)"verify";
  return sh_cli__verify(argc, argv);
}
