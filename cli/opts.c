/*
 * cli/opts.c — the one option parser and the one --help printer of every `shield` command,
 * both driven by the command's table (opts.h says what a row holds).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "opts.h"

/* Where the help text starts: two spaces of indent and the flag column. */
#define HELP_COL 31

int sh_cli__fail(sh_error *err, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = SH_EINVAL;
  }
  return SH_EINVAL;
}

int sh_cli__usage_error(const sh_cli_cmd *cmd, const sh_error *err) {
  fprintf(stderr, "%s: %s\nTry '%s --help' for the list of options.\n", cmd->name, err->message,
          cmd->name);
  return 2;
}

/* ---- --help ---- */

/* "--flag[, alias][ METAVAR]" into buf at *n (bounded). */
static void add_flag(char *buf, size_t cap, size_t *n, const sh_cli_opt *o) {
  int w = snprintf(buf + *n, cap - *n, "%s%s%s%s%s", o->flag, o->alias ? ", " : "",
                   o->alias ? o->alias : "", o->metavar ? " " : "", o->metavar ? o->metavar : "");
  if (w > 0) *n += (size_t)w < cap - *n ? (size_t)w : cap - *n - 1;
}

static void print_help_text(FILE *out, const char *text) {
  for (const char *p = text;;) {
    const char *nl = strchr(p, '\n');
    fprintf(out, "%.*s\n", nl ? (int)(nl - p) : (int)strlen(p), p);
    if (!nl || !nl[1]) break;
    p = nl + 1;
    fprintf(out, "%*s", HELP_COL, "");
  }
}

void sh_cli__usage(const sh_cli_cmd *cmd, FILE *out) {
  fputs(cmd->usage, out);
  if (cmd->nsubs) {
    fputs("\nCommands:\n", out);
    for (size_t k = 0; k < cmd->nsubs; k++)
      fprintf(out, "  %-*s%s\n", HELP_COL - 2, cmd->subs[k].name, cmd->subs[k].summary);
    fprintf(out, "  %-*s%s\n", HELP_COL - 2, "", "(shield COMMAND --help: its options)");
  }
  fputs("\nOptions:\n", out);
  for (size_t k = 0; k < cmd->nopts; k++) {
    const sh_cli_opt *o = &cmd->opts[k];
    if (o->kind == SH_CLI_SECTION) {
      fprintf(out, "%s\n", o->help);
      continue;
    }
    char left[160];
    size_t n = 0;
    add_flag(left, sizeof left, &n, o);
    /* rows without help of their own share this line: --access-log/--no-access-log */
    while (k + 1 < cmd->nopts && !cmd->opts[k + 1].help && cmd->opts[k + 1].flag) {
      if (n + 1 < sizeof left) left[n++] = '/';
      left[n] = '\0';
      add_flag(left, sizeof left, &n, &cmd->opts[++k]);
    }
    if (!o->help) { /* a first row without help: shown, with nothing to say */
      fprintf(out, "  %s\n", left);
      continue;
    }
    if (n + 3 > HELP_COL) /* too wide: the help goes on the next line */
      fprintf(out, "  %s\n%*s", left, HELP_COL, "");
    else
      fprintf(out, "  %-*s", HELP_COL - 2, left);
    print_help_text(out, o->help);
  }
  if (cmd->epilog) fputs(cmd->epilog, out);
}

/* ---- parsing ---- */

/* The whole of s as an integer in [lo, hi] (base 10 or 8).  0, or -1. */
static int parse_int(const char *s, int base, long long lo, long long hi, long long *out) {
  /* strtoll would skip leading blanks and take a '+': the value is exactly the digits */
  if (!s || !(isdigit((unsigned char)s[0]) || (s[0] == '-' && isdigit((unsigned char)s[1]))))
    return -1;
  errno = 0;
  char *end = NULL;
  long long v = strtoll(s, &end, base);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

/* Seconds: finite, in [0, one year] (a longer timeout is a mistake, not a wish). */
static int parse_seconds(const char *s, double *out) {
  if (!s || !(isdigit((unsigned char)s[0]) || s[0] == '.')) return -1; /* no blank, no sign */
  errno = 0;
  char *end = NULL;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < 0 || v > 86400.0 * 365)
    return -1;
  *out = v;
  return 0;
}

static int choices_fail(const sh_cli_opt *o, const char *name, const char *value, sh_error *err) {
  char list[200];
  size_t n = 0;
  list[0] = '\0';
  for (const char *const *c = o->choices; *c && n < sizeof list; c++) {
    int w = snprintf(list + n, sizeof list - n, "%s%s", c == o->choices ? "" : ", ", *c);
    if (w < 0) break;
    n += (size_t)w;
  }
  return sh_cli__fail(err, "%s: '%s' is not one of %s", name, value, list);
}

static int apply(const sh_cli_cmd *cmd, const sh_cli_opt *o, const char *name, const char *value,
                 FILE *out, sh_error *err) {
  char *field = (char *)cmd->targets[o->target] + o->off;
  long long n;
  double d;
  switch (o->kind) {
    case SH_CLI_SECTION:
      break;
    case SH_CLI_HELP:
      sh_cli__usage(cmd, out);
      return 1;
    case SH_CLI_VERSION:
      fprintf(out, "shield %s\n", sh_version()); /* common.h: meson.project_version() */
      return 1;
    case SH_CLI_SET:
      *(int *)field = (int)o->ival;
      break;
    case SH_CLI_IGNORED:
      if (o->why) fprintf(stderr, "WARNING:  %s is ignored: %s\n", name, o->why);
      break;
    case SH_CLI_STR:
      if (!*value && !(o->flags & SH_CLI_EMPTY_OK))
        return sh_cli__fail(err, "%s: the value must not be empty", name);
      if ((o->flags & SH_CLI_ONCE) && *(const char **)field)
        return sh_cli__fail(err, "%s given twice", name);
      *(const char **)field = value;
      break;
    case SH_CLI_INT:
      if (parse_int(value, (o->flags & SH_CLI_OCTAL) ? 8 : 10, o->lo, o->hi, &n) < 0)
        return sh_cli__fail(err, "%s: '%s' is not %s", name, value,
                            o->accepts ? o->accepts : "a number in range");
      if (o->size == 8) {
        uint64_t v = (uint64_t)n;
        memcpy(field, &v, 8);
      } else if (o->size == 4) {
        uint32_t v = (uint32_t)n; /* lo >= 0 in every table: the bits of an int or unsigned */
        memcpy(field, &v, 4);
      } else {
        return sh_cli__fail(err, "%s: no integer field of %zu bytes", name, o->size);
      }
      break;
    case SH_CLI_SECONDS:
      if (parse_seconds(value, &d) < 0)
        return sh_cli__fail(err, "%s: '%s' is not %s", name, value,
                            o->accepts ? o->accepts : "a number of seconds (>= 0)");
      memcpy(field, &d, sizeof d);
      break;
    case SH_CLI_CHOICE: {
      const char *const *c = o->choices;
      while (*c && strcmp(*c, value) != 0)
        c++;
      if (!*c) return choices_fail(o, name, value, err);
      *(const char **)field = value;
      break;
    }
    case SH_CLI_CUSTOM:
      return o->apply(cmd->targets[o->target], o, name, value, err) < 0 ? SH_EINVAL : 0;
  }
  return 0;
}

static const sh_cli_opt *find(const sh_cli_cmd *cmd, const char *name) {
  for (size_t k = 0; k < cmd->nopts; k++) {
    const sh_cli_opt *o = &cmd->opts[k];
    if (o->kind == SH_CLI_SECTION) continue;
    if (strcmp(o->flag, name) == 0 || (o->alias && strcmp(o->alias, name) == 0)) return o;
  }
  return NULL;
}

int sh_cli__parse(const sh_cli_cmd *cmd, int argc, char **argv, FILE *out, sh_error *err) {
  if (err) {
    err->code = 0;
    err->message[0] = '\0';
  }
  int positional_only = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!positional_only && strcmp(arg, "--") == 0) {
      positional_only = 1;
      continue;
    }
    if (positional_only || arg[0] != '-' || arg[1] == '\0') {
      if (!cmd->positional) return sh_cli__fail(err, "unexpected argument '%s'", arg);
      if (cmd->positional(cmd->targets, arg, err) < 0) return SH_EINVAL;
      continue;
    }
    /* --name=value or --name value */
    char name[64];
    const char *value = NULL;
    const char *eq = strchr(arg, '=');
    size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
    if (nlen >= sizeof name) return sh_cli__fail(err, "unknown option '%.60s' (see --help)", arg);
    memcpy(name, arg, nlen);
    name[nlen] = '\0';
    if (eq) value = eq + 1;
    const sh_cli_opt *o = find(cmd, name);
    if (!o) return sh_cli__fail(err, "unknown option '%s' (see --help)", name);
    if (!o->metavar && value) return sh_cli__fail(err, "%s takes no value", name);
    if (o->metavar && !value) {
      if (i + 1 >= argc) return sh_cli__fail(err, "%s needs a value", name);
      value = argv[++i];
    }
    int rc = apply(cmd, o, name, value, out, err);
    if (rc != 0) return rc;
  }
  return 0;
}
