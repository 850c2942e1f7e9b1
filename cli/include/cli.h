/*
 * cli/include/cli.h — the `shield` command line (the one public header of cli/).
 *
 * What this module owns
 *   The `shield` (and `shield-asgi`) executable: every command and option, parsed by one
 *   table-driven parser that also prints --help (opts.c), so the flags and their help cannot
 *   drift apart.  The commands:
 *     shield [OPTIONS] MODULE:ATTR        serve an ASGI app (serve.c; options: serve_opts.c,
 *                                         uvicorn's names, filling server.h's sh_config and
 *                                         gate.h's sh_gate_config)
 *     shield --native-hello [OPTIONS]     serve the C hello handler (no Python)
 *     shield verify --type TYPE FILE ...  verify TEE evidence with attest.h (verify.c)
 *     shield attest --tee TYPE ...        this machine's TEE evidence (attest.h's providers);
 *                                         shield dev-root: the simulated TEE's root (attest.c,
 *                                         docs/protocol.md §1.7)
 *     shield attest-server URL ...        what a server proves (docs/protocol.md §4), checked
 *                                         by the Python package's client SDK in the embedded
 *                                         interpreter (attest_server.c)
 *   Reading the clock for the commands (the verification time `--at` defaults to now): the
 *   libraries below take every time as an input.
 *
 * What it never does
 *   Hold the rules of a value's meaning: what a setting means, and the checks that need the
 *   whole configuration, are the owning module's (sh_config_check, sh_gate_config_check,
 *   attest.h).  Nothing depends on cli/: it sits on top of pyshim/, gate/, server/, attest/,
 *   crypto/ and common/, through their public headers only.
 *
 * Exit status of every command: 0 success (--help and --version included, printed on
 * stdout), 1 failure (evidence rejected, a server that could not start), 2 usage error (the
 * message on stderr names the flag and what it accepts, then "Try 'shield ... --help'").
 *
 * Threads: the main thread, before any other exists.
 */
#ifndef SHIELD_CLI_H
#define SHIELD_CLI_H

#ifdef __cplusplus
extern "C" {
#endif

/* Run the `shield` command line (argv[0] the program, argv[1] a command name or the serve
 * command's first argument).  Returns the exit code. */
int sh_cli_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif /* SHIELD_CLI_H */
