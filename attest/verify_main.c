/* attest/verify_main.c — the test-only `attest-verify` executable (not installed): the same
 * code path as `shield verify`, usable before the shield binary exists. */
#include "attest.h"

int main(int argc, char **argv) {
  argv[0] = (char *)"verify";
  return sh_attest_cli_verify(argc, argv);
}
