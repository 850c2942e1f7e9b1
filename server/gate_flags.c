/*
 * server/gate_flags.c — the command-line flags of client attestation (gate.h).
 *
 *   --attest-types LIST      TEE types accepted (protocol.md §0 names and aliases); turns the
 *                            gate on
 *   --attest-policy FILE     verification policy (attest/policy.c format)
 *   --attest-required        requests without evidence get 401 missing (default: they pass
 *                            with no attestation result)
 *   --attest-exclude PATH    path prefix served without attestation (repeatable)
 *   --trust-simulated        accept simulated evidence (protocol.md §1.7; development)
 *   --dev                    development mode: allows --attest-clock
 *   --attest-clock RFC3339   verify as if it were that time (--dev only; logged loudly)
 *   (keys, issuers, audiences, collateral and fetching: gate_verify_flags.c)
 *   --state-url URL          nonces and sessions in Redis (redis://[:pw@]host[:port][/db] or
 *                            unix:///path[?db=N]) so several replicas agree (gate_state.c)
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gate.h"
#include "server_internal.h"

static const char *const tee_names[] = {"nitro", "sev-snp", "azure-snp", "azure-tdx", "tdx", "sgx", "maa",
                                        "gcp", "simulated", "aws_nitro", "sev", "gcp_sev",
                                        "azure_maa", "intel_sgx", NULL};

static int types_ok(const char *list, char *bad, size_t badlen) {
  const char *p = list;
  int n = 0;
  while (*p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    int found = 0;
    for (const char *const *t = tee_names; *t; t++)
      if (strlen(*t) == len && strncmp(*t, p, len) == 0) found = 1;
    if (!found) {
      snprintf(bad, badlen, "%.*s", (int)(len > 40 ? 40 : len), p);
      return 0;
    }
    n++;
    if (!e) break;
    p = e + 1;
  }
  if (n == 0) snprintf(bad, badlen, "(empty)");
  return n > 0;
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = (unsigned)(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

int64_t sh_gate_parse_rfc3339(const char *s) {
  int Y, M, D, h, m, sec, n = 0;
  if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &n) != 6 ||
      n != 19)
    return -1;
  const char *p = s + n;
  if (*p == '.')
    for (p++; *p >= '0' && *p <= '9'; p++) {
    }
  if (strcmp(p, "Z") != 0 && strcmp(p, "z") != 0 && strcmp(p, "+00:00") != 0) return -1;
  if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return -1;
  return days_from_civil(Y, (unsigned)M, (unsigned)D) * 86400 + h * 3600 + m * 60 + sec;
}

int sh_gate_flag_bool(const char *name, const char *value, sh_error *err) {
  if (!value) return 0;
  SH_ERR(err, SH_EINVAL, "%s takes no value", name);
  return SH_EINVAL;
}

int sh_gate_flag_value(const char *name, const char **value, int argc, char **argv, int *i,
                       sh_error *err) {
  if (!*value) {
    if (*i + 1 >= argc) {
      SH_ERR(err, SH_EINVAL, "%s needs a value", name);
      return SH_EINVAL;
    }
    *value = argv[++*i];
  }
  if (!**value) {
    SH_ERR(err, SH_EINVAL, "%s: the value must not be empty", name);
    return SH_EINVAL;
  }
  return 0;
}

int sh_gate_parse_flag(sh_config *cfg, const char *name, const char *value, int argc,
                       char **argv, int *i, sh_error *err) {
  static const char *const bools[] = {"--attest-required", "--trust-simulated", "--dev", NULL};
  static const char *const valued[] = {"--attest-types", "--attest-policy", "--attest-exclude",
                                       "--attest-clock", "--state-url", NULL};
  int vr = sh_gate_verify_parse_flag(cfg, name, value, argc, argv, i, err);
  if (vr != 0) return vr; /* keys, issuers, collateral, fetching (gate_verify_flags.c) */
  int is_bool = 0, is_valued = 0;
  for (const char *const *b = bools; *b; b++)
    if (strcmp(name, *b) == 0) is_bool = 1;
  for (const char *const *b = valued; *b; b++)
    if (strcmp(name, *b) == 0) is_valued = 1;
  if (!is_bool && !is_valued) return 0;
  if (is_bool) {
    if (sh_gate_flag_bool(name, value, err) < 0) return SH_EINVAL;
    if (name[2] == 'a') cfg->attest_required = 1;
    else if (name[2] == 't') cfg->trust_simulated = 1;
    else cfg->dev = 1;
    return 1;
  }
  if (sh_gate_flag_value(name, &value, argc, argv, i, err) < 0) return SH_EINVAL;
  if (strcmp(name, "--attest-types") == 0) {
    char bad[48];
    if (!types_ok(value, bad, sizeof bad)) {
      SH_ERR(err, SH_EINVAL,
             "--attest-types: '%s' is not a TEE type (nitro, sev-snp, azure-snp, azure-tdx, tdx, sgx, "
             "maa, gcp, simulated)",
             bad);
      return SH_EINVAL;
    }
    cfg->attest_types = value;
  } else if (strcmp(name, "--attest-policy") == 0) {
    cfg->attest_policy = value;
  } else if (strcmp(name, "--state-url") == 0) {
    cfg->state_url = value; /* checked (and Redis reached) by sh_gate_wrap */
  } else if (strcmp(name, "--attest-exclude") == 0) {
    if (value[0] != '/') {
      SH_ERR(err, SH_EINVAL, "--attest-exclude: '%s' must start with '/'", value);
      return SH_EINVAL;
    }
    if (cfg->num_attest_exclude >= 15) {
      SH_ERR(err, SH_EINVAL, "--attest-exclude: at most 15 paths");
      return SH_EINVAL;
    }
    cfg->attest_exclude[cfg->num_attest_exclude++] = value;
    cfg->attest_exclude[cfg->num_attest_exclude] = NULL;
  } else { /* --attest-clock */
    int64_t t = sh_gate_parse_rfc3339(value);
    if (t <= 0) {
      SH_ERR(err, SH_EINVAL, "--attest-clock: '%s' is not an RFC 3339 UTC time "
             "(e.g. 2022-10-13T08:58:02Z)", value);
      return SH_EINVAL;
    }
    cfg->attest_clock = t;
  }
  return 1;
}

int sh_gate_check_flags(sh_config *cfg, sh_error *err) {
  if (sh_gate_verify_check_flags(cfg, err) < 0) return SH_EINVAL; /* gate_verify_flags.c */
  if (cfg->attest_clock && !cfg->dev) {
    SH_ERR(err, SH_EINVAL, "--attest-clock is a debugging aid: it needs --dev");
    return SH_EINVAL;
  }
  int any = cfg->attest_policy || cfg->attest_required || cfg->num_attest_exclude ||
            cfg->attest_clock || cfg->state_url;
  if (any && !cfg->attest_types) {
    SH_ERR(err, SH_EINVAL, "--attest-policy/--attest-required/--attest-exclude/--attest-clock/"
           "--state-url need --attest-types");
    return SH_EINVAL;
  }
  if (cfg->attest_types && cfg->native_hello) {
    SH_ERR(err, SH_EINVAL, "--attest-types needs an app to protect (not --native-hello)");
    return SH_EINVAL;
  }
  /* Confidential Space tokens are ~11 KB (protocol.md §1.4): 64 KiB unless set explicitly. */
  if (cfg->attest_types && cfg->max_header_size == 16 * 1024) cfg->max_header_size = 64 * 1024;
  return 0;
}
