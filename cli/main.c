/* cli/main.c — the `shield` and `shield-asgi` executables (cli.h says what they do). */
#include "cli.h"

int main(int argc, char **argv) {
  return sh_cli_main(argc, argv);
}
