/*
 * cli/opts.h — the option tables of the `shield` commands (private to cli/).
 *
 * One table per command drives both the parsing and the --help text: each row is a flag, the
 * metavar of its value, its help line, how the value is checked (kind, range, choices) and
 * where it goes (a field of one of the command's target structs, by offset).  No help text is
 * written anywhere else, so a flag cannot be parsed without being listed, or listed without
 * being parsed (tests/c/cli/test_cli.c checks both).
 *
 * Syntax (uvicorn's, click's): "--flag value" or "--flag=value"; a flag without a value
 * refuses "=value"; a value is the next argument whatever it looks like ("--root-path
 * --x" sets "--x"); "--" ends the options; "-" and anything not starting with '-' is a
 * positional argument.  Every error names the flag and what it accepts.
 */
#ifndef SHIELD_CLI_OPTS_H
#define SHIELD_CLI_OPTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "server.h" /* sh_config, sh_error, SH_EINVAL */

/* What a row does with its flag. */
typedef enum sh_cli_kind {
  SH_CLI_SECTION, /* no flag: `help` is a heading line of --help */
  SH_CLI_HELP,    /* print the command's usage on stdout; the command exits 0 */
  SH_CLI_VERSION, /* print "shield <version>" on stdout; the command exits 0 */
  SH_CLI_SET,     /* no value: the int field is set to `ival` */
  SH_CLI_IGNORED, /* accepted for compatibility, nothing stored; `why` (if set) is printed as
                     a warning; takes a value when `metavar` is set */
  SH_CLI_STR,     /* the value itself (const char * field, pointing into argv) */
  SH_CLI_INT,     /* an integer in [lo, hi], the whole value (base 10, or 8 with
                     SH_CLI_OCTAL), into an integer field of `size` bytes (4 or 8) */
  SH_CLI_SECONDS, /* a finite number of seconds in [0, one year], into a double field */
  SH_CLI_CHOICE,  /* one of `choices` (NULL-terminated), as given, into a const char * field */
  SH_CLI_CUSTOM,  /* `apply` checks the value and stores it */
} sh_cli_kind;

/* Row flags. */
#define SH_CLI_ONCE 0x1u     /* STR: given twice is an error (an ambiguity, e.g. two keys) */
#define SH_CLI_EMPTY_OK 0x2u /* STR: "" is a value (default: "the value must not be empty") */
#define SH_CLI_OCTAL 0x4u    /* INT: base 8 */

typedef struct sh_cli_opt sh_cli_opt;
struct sh_cli_opt {
  const char *flag;    /* "--port"; NULL for a SECTION */
  const char *alias;   /* another name with the same effect ("-h"), or NULL */
  const char *metavar; /* "N" when the flag takes a value, else NULL */
  /* The help text ("\n" starts a continuation line).  NULL: the row is shown on the line of
   * the row before it, "--access-log/--no-access-log" (the pairs of uvicorn's help). */
  const char *help;
  sh_cli_kind kind;
  unsigned flags; /* SH_CLI_* above */
  int target;     /* index of the command's target struct the field is in */
  size_t off;     /* offsetof the field in it */
  size_t size;    /* sizeof the field (SH_CLI_INT) */
  long long ival; /* SH_CLI_SET: the value stored */
  long long lo, hi;
  const char *accepts;        /* INT, SECONDS: what the value must be, for the message
                                 "--flag: 'x' is not <accepts>" */
  const char *const *choices; /* SH_CLI_CHOICE */
  const char *why;            /* SH_CLI_IGNORED: the warning */
  /* SH_CLI_CUSTOM: check `value` and store it in `target` (the row's target struct).  `name`
   * is the flag as given (the alias, maybe), for messages: valid during the call only (`value`
   * points into argv and may be kept).  0, or SH_EINVAL with err set. */
  int (*apply)(void *target, const sh_cli_opt *o, const char *name, const char *value,
               sh_error *err);
};

/* A subcommand, listed in the usage of the command that dispatches to it. */
typedef struct sh_cli_sub {
  const char *name;
  const char *summary;               /* one line for the list in --help */
  int (*run)(int argc, char **argv); /* argv[0] is the subcommand's name; the exit code */
} sh_cli_sub;

typedef struct sh_cli_cmd {
  const char *name;  /* "shield", "shield verify": the prefix of its messages */
  const char *usage; /* the synopsis lines ("Usage: ...\n") and a paragraph, printed first */
  const sh_cli_opt *opts;
  size_t nopts;
  void *const *targets;   /* the structs the rows write to, by sh_cli_opt.target */
  const sh_cli_sub *subs; /* listed under "Commands:" (may be NULL) */
  size_t nsubs;
  const char *epilog; /* printed after the options (may be NULL) */
  /* A positional argument: 0, or SH_EINVAL with err set.  NULL: none accepted. */
  int (*positional)(void *const *targets, const char *arg, sh_error *err);
} sh_cli_cmd;

/*
 * Parse argv[1..argc-1] with cmd's table into its targets.  Returns 0, 1 when --help or
 * --version was printed on `out` (the command then exits 0), or SH_EINVAL with err set (a
 * usage error: the command prints it with sh_cli__usage_error and exits 2).
 */
int sh_cli__parse(const sh_cli_cmd *cmd, int argc, char **argv, FILE *out, sh_error *err);

/* err = SH_EINVAL and the formatted message; returns SH_EINVAL. */
int sh_cli__fail(sh_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* cmd's --help text: the usage paragraph, the subcommands, every row of the table. */
void sh_cli__usage(const sh_cli_cmd *cmd, FILE *out);

/* "<cmd>: <message>\nTry '<cmd> --help' for the list of options.\n" on stderr; returns 2. */
int sh_cli__usage_error(const sh_cli_cmd *cmd, const sh_error *err);

/* The commands (each in its own file). */
int sh_cli__serve(int argc, char **argv);         /* serve.c: shield [OPTIONS] MODULE:ATTR */
int sh_cli__verify(int argc, char **argv);        /* verify.c: shield verify */
int sh_cli__attest(int argc, char **argv);        /* attest.c: shield attest */
int sh_cli__dev_root(int argc, char **argv);      /* attest.c: shield dev-root */
int sh_cli__attest_server(int argc, char **argv); /* attest_server.c: shield attest-server */

/* The subcommands of `shield` (cli.c), for dispatch and for `shield --help`. */
extern const sh_cli_sub sh_cli__subs[];
extern const size_t sh_cli__nsubs;

/* ---- serve_opts.c: `shield [OPTIONS] MODULE:ATTR` without running anything ---- */
struct sh_gate_config;
/* The serve command's table (targets: 0 sh_config, 1 sh_gate_config). */
extern const sh_cli_opt sh_cli__serve_opts[];
extern const size_t sh_cli__serve_nopts;
/* Fill cfg and gc (initialised here) from argv and run every check that needs the whole
 * command line (sh_config_check, sh_gate_config_check, the flags of one module that depend
 * on the other's).  Returns 0, 1 (--help/--version printed on out), or SH_EINVAL with err. */
int sh_cli__serve_parse(sh_config *cfg, struct sh_gate_config *gc, int argc, char **argv, FILE *out,
                        sh_error *err);
/* The serve command as sh_cli__parse sees it (for its usage). */
void sh_cli__serve_cmd(sh_cli_cmd *cmd, void *const *targets);

/* ---- files.c: the files the commands read ---- */
#define SH_CLI_MAX_FILE (4u << 20) /* evidence, certificates, keys: 4 MiB */
/* A file ("-": stdin) of at most SH_CLI_MAX_FILE bytes (malloc'd), or NULL: then *over (when
 * given) is the file's size when it is larger than that (0: larger, size unknown, e.g. a
 * pipe), else -1 and errno says why it could not be read. */
uint8_t *sh_cli__read_file(const char *path, size_t *len, int64_t *over);
/* Why sh_cli__read_file failed, on stderr, prefixed "<cmd>: ". */
void sh_cli__read_error(const char *cmd, const char *path, int64_t over);
/* A public key file, PEM (PUBLIC KEY) or DER SubjectPublicKeyInfo, as DER SPKI (malloc'd). */
uint8_t *sh_cli__load_spki(const char *path, size_t *len);

#endif /* SHIELD_CLI_OPTS_H */
