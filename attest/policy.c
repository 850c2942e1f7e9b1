/* attest/policy.c — verification policy, loaded from a JSON document.
 *
 * Format (every key optional; unknown keys are an error, so a typo never relaxes a policy):
 *
 *   {
 *     "version": 1,
 *     "name": "production",
 *     "allow_debug": false,          // debug TEEs (Nitro PCR0 = 0, SNP policy DEBUG) refused
 *     "freshness": "nonce",          // "nonce" | "timestamp" | "none" (docs/protocol.md §1.3)
 *     "max_age": 300,                // seconds, for "timestamp" (Nitro document timestamp)
 *     "allow_unfresh": false,        // must be true for "freshness": "none"
 *     "nitro": {
 *       "allow_debug": false,        // overrides the top level for this type
 *       "pcrs": {"0": ["<hex 48 bytes>", ...], "8": "<hex>"}   // allowed values per PCR
 *     },
 *     "sev-snp": {                   // and "azure-snp", same keys
 *       "allow_debug": false,
 *       "measurement": ["<hex 48>"], "host_data": ["<hex 32>"], "id_key_digest": ["<hex 48>"],
 *       "min_tcb": {"bl": 0, "tee": 0, "snp": 0, "ucode": 0, "fmc": 0},   // REPORTED_TCB
 *       "min_guest_svn": 0,
 *       "max_vmpl": 3,
 *       "allow_migrate_ma": false, "allow_smt": true, "require_single_socket": false
 *     }
 *   }
 *
 * "maa" and "gcp" (token types): see token_policy.c.  "tdx", "sgx" and "azure-tdx" (DCAP
 * quotes; azure-tdx takes the tdx keys, applied to its TD quote): see dcap.c.
 * An empty allow-list means "any value".  policy_sha256 is SHA-256 of the document's bytes as
 * given.  The built-in "production" policy is the document PRODUCTION below.  With
 * "freshness": "nonce" the caller (the server) must pass the nonce it issued; the library
 * checks what it is given (sh_attest_options.nonce) and cannot know a nonce was expected.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char PRODUCTION[] =
    "{\"version\": 1, \"name\": \"production\", \"allow_debug\": false, "
    "\"freshness\": \"nonce\", \"max_age\": 300}\n";

void sh_attest__hexlist_free(sh_hexlist *l) {
  free(l->v);
  free(l->lens);
  memset(l, 0, sizeof *l);
}

static void tee_free(sh_policy_tee *t) {
  for (int i = 0; i < 32; i++)
    sh_attest__hexlist_free(&t->pcrs[i]);
  sh_attest__hexlist_free(&t->measurement);
  sh_attest__hexlist_free(&t->host_data);
  sh_attest__hexlist_free(&t->id_key_digest);
}

void sh_attest_policy_free(sh_attest_policy *p) {
  if (!p) return;
  tee_free(&p->nitro);
  tee_free(&p->snp);
  tee_free(&p->azure);
  sh_attest__token_policy_free(p->maa);
  sh_attest__token_policy_free(p->gcp);
  sh_attest__dcap_policy_free(p->tdx);
  sh_attest__dcap_policy_free(p->sgx);
  sh_attest__dcap_policy_free(p->azure_tdx);
  free(p);
}

int sh_attest__policy_err(char *buf, size_t n, const char *msg, const char *what) {
  if (buf && n) snprintf(buf, n, "policy: %s%s%s", msg, what ? ": " : "", what ? what : "");
  return -1;
}

/* The one loader of hex allow-lists (this file's, token_policy.c's and dcap.c's sections). */
int sh_attest__hexlist_load(json_t *j, size_t want, sh_hexlist *l, char *eb, size_t en,
                            const char *k) {
  json_t *arr = json_is_string(j) ? json_pack("[O]", j) : json_incref(j);
  size_t n = json_array_size(arr);
  if (!json_is_array(arr) || n == 0) {
    json_decref(arr);
    return sh_attest__policy_err(eb, en, "expected a hex string or a non-empty list of them", k);
  }
  sh_attest__hexlist_free(l); /* a key given twice cannot leak the first list */
  l->v = calloc(n, sizeof *l->v);
  l->lens = calloc(n, sizeof *l->lens);
  if (!l->v || !l->lens || want > sizeof *l->v) {
    json_decref(arr);
    return sh_attest__policy_err(eb, en, "out of memory", NULL);
  }
  for (size_t i = 0; i < n; i++) {
    if (sh_attest__json_unhex(json_array_get(arr, i), l->v[i], want) < 0) {
      json_decref(arr);
      return sh_attest__policy_err(eb, en, "bad hex value (wrong length or characters)", k);
    }
    l->lens[i] = want;
    l->n = i + 1;
  }
  json_decref(arr);
  return 0;
}

int sh_attest__hexlist_allows(const sh_hexlist *l, const uint8_t *v, size_t len) {
  if (!l->n) return 1;
  for (size_t i = 0; i < l->n; i++)
    if (l->lens[i] == len && !CRYPTO_memcmp(l->v[i], v, len)) return 1;
  return 0;
}

int sh_attest__hexlist_allows_json(const sh_hexlist *l, json_t *obj, const char *key) {
  if (!l->n) return 1;
  json_t *j = json_object_get(obj, key);
  size_t hl = json_string_length(j);
  uint8_t v[64];
  /* an allow-list with no value to compare is a mismatch (fail closed) */
  if (!json_is_string(j) || hl > 2 * sizeof v || sh_attest__json_unhex(j, v, hl / 2) < 0) return 0;
  return sh_attest__hexlist_allows(l, v, hl / 2);
}

static int get_bool(json_t *v, int *out, char *eb, size_t en, const char *k) {
  if (!json_is_boolean(v)) return sh_attest__policy_err(eb, en, "expected true or false", k);
  *out = json_is_true(v);
  return 0;
}

static int get_uint(json_t *v, int64_t max, int64_t *out, char *eb, size_t en, const char *k) {
  if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
    return sh_attest__policy_err(eb, en, "expected a small non-negative integer", k);
  *out = json_integer_value(v);
  return 0;
}

static void tee_defaults(sh_policy_tee *t) {
  memset(t, 0, sizeof *t);
  t->allow_debug = -1;
  t->max_vmpl = 3;
  t->allow_smt = 1;
}

static int load_tee(json_t *o, sh_tee tee, sh_policy_tee *t, char *eb, size_t en) {
  const char *k;
  json_t *v;
  int64_t n = 0;
  if (!json_is_object(o))
    return sh_attest__policy_err(eb, en, "expected an object", sh_tee_name(tee));
  json_object_foreach(o, k, v) {
    int b;
    if (!strcmp(k, "allow_debug")) {
      if (get_bool(v, &b, eb, en, k) < 0) return -1;
      t->allow_debug = b;
    } else if (tee == SH_TEE_NITRO && !strcmp(k, "pcrs")) {
      const char *pk;
      json_t *pv;
      if (!json_is_object(v)) return sh_attest__policy_err(eb, en, "expected an object", k);
      json_object_foreach(v, pk, pv) {
        char *end;
        long idx = strtol(pk, &end, 10);
        if (!*pk || *end || idx < 0 || idx > 31)
          return sh_attest__policy_err(eb, en, "PCR index must be 0..31", pk);
        if (sh_attest__hexlist_load(pv, 48, &t->pcrs[idx], eb, en, pk) < 0) return -1;
      }
    } else if (tee != SH_TEE_NITRO && !strcmp(k, "measurement")) {
      if (sh_attest__hexlist_load(v, 48, &t->measurement, eb, en, k) < 0) return -1;
    } else if (tee != SH_TEE_NITRO && !strcmp(k, "host_data")) {
      if (sh_attest__hexlist_load(v, 32, &t->host_data, eb, en, k) < 0) return -1;
    } else if (tee != SH_TEE_NITRO && !strcmp(k, "id_key_digest")) {
      if (sh_attest__hexlist_load(v, 48, &t->id_key_digest, eb, en, k) < 0) return -1;
    } else if (tee != SH_TEE_NITRO && !strcmp(k, "min_tcb")) {
      const char *tk;
      json_t *tv;
      if (!json_is_object(v)) return sh_attest__policy_err(eb, en, "expected an object", k);
      t->has_min_tcb = 1;
      json_object_foreach(v, tk, tv) {
        uint8_t *dst = !strcmp(tk, "bl")      ? &t->min_tcb_bl
                       : !strcmp(tk, "tee")   ? &t->min_tcb_tee
                       : !strcmp(tk, "snp")   ? &t->min_tcb_snp
                       : !strcmp(tk, "ucode") ? &t->min_tcb_ucode
                       : !strcmp(tk, "fmc")   ? &t->min_tcb_fmc
                                              : NULL;
        if (!dst) return sh_attest__policy_err(eb, en, "unknown min_tcb field", tk);
        if (get_uint(tv, 255, &n, eb, en, tk) < 0) return -1;
        *dst = (uint8_t)n;
      }
    } else if (tee != SH_TEE_NITRO && !strcmp(k, "min_guest_svn")) {
      if (get_uint(v, UINT32_MAX, &n, eb, en, k) < 0) return -1;
      t->min_guest_svn = (uint32_t)n;
    } else if (tee != SH_TEE_NITRO && !strcmp(k, "max_vmpl")) {
      if (get_uint(v, 3, &n, eb, en, k) < 0) return -1;
      t->max_vmpl = (uint32_t)n;
    } else if (tee != SH_TEE_NITRO && !strcmp(k, "allow_migrate_ma")) {
      if (get_bool(v, &t->allow_migrate_ma, eb, en, k) < 0) return -1;
    } else if (tee != SH_TEE_NITRO && !strcmp(k, "allow_smt")) {
      if (get_bool(v, &t->allow_smt, eb, en, k) < 0) return -1;
    } else if (tee != SH_TEE_NITRO && !strcmp(k, "require_single_socket")) {
      if (get_bool(v, &t->require_single_socket, eb, en, k) < 0) return -1;
    } else {
      return sh_attest__policy_err(eb, en, "unknown key", k);
    }
  }
  return 0;
}

int sh_attest_policy_load(const char *text, size_t len, sh_attest_policy **out, char *eb,
                          size_t en) {
  *out = NULL;
  json_error_t je;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
  if (!json_is_object(root)) {
    json_decref(root);
    return sh_attest__policy_err(eb, en, "not a JSON object", root ? NULL : je.text);
  }
  sh_attest_policy *p = calloc(1, sizeof *p);
  if (!p) {
    json_decref(root);
    return sh_attest__policy_err(eb, en, "out of memory", NULL);
  }
  tee_defaults(&p->nitro);
  tee_defaults(&p->snp);
  tee_defaults(&p->azure);
  p->max_age = 300;
  snprintf(p->name, sizeof p->name, "custom");
  EVP_Digest(text, len, p->sha256, NULL, EVP_sha256(), NULL);
  int allow_unfresh = 0;
  const char *k;
  json_t *v;
  int64_t n = 0;
  json_object_foreach(root, k, v) {
    int rc = 0;
    if (!strcmp(k, "version"))
      rc = (json_is_integer(v) && json_integer_value(v) == 1)
               ? 0
               : sh_attest__policy_err(eb, en, "version must be 1", NULL);
    else if (!strcmp(k, "name"))
      rc = json_is_string(v) ? (snprintf(p->name, sizeof p->name, "%s", json_string_value(v)), 0)
                             : sh_attest__policy_err(eb, en, "expected a string", k);
    else if (!strcmp(k, "allow_debug"))
      rc = get_bool(v, &p->allow_debug, eb, en, k);
    else if (!strcmp(k, "allow_unfresh"))
      rc = get_bool(v, &allow_unfresh, eb, en, k);
    else if (!strcmp(k, "max_age")) {
      rc = get_uint(v, 366 * 86400, &n, eb, en, k);
      p->max_age = n;
    } else if (!strcmp(k, "freshness")) {
      const char *s = json_string_value(v);
      if (s && !strcmp(s, "nonce"))
        p->freshness = SH_FRESH_NONCE;
      else if (s && !strcmp(s, "timestamp"))
        p->freshness = SH_FRESH_TIMESTAMP;
      else if (s && !strcmp(s, "none"))
        p->freshness = SH_FRESH_NONE;
      else
        rc = sh_attest__policy_err(eb, en, "freshness must be nonce, timestamp or none", NULL);
    } else if (!strcmp(k, "nitro"))
      rc = load_tee(v, SH_TEE_NITRO, &p->nitro, eb, en);
    else if (!strcmp(k, "sev-snp"))
      rc = load_tee(v, SH_TEE_SEV_SNP, &p->snp, eb, en);
    else if (!strcmp(k, "azure-snp"))
      rc = load_tee(v, SH_TEE_AZURE_SNP, &p->azure, eb, en);
    else if (!strcmp(k, "maa") && !p->maa) /* format: token_policy.c */
      rc = sh_attest__token_policy_load(v, SH_TEE_MAA, &p->maa, eb, en);
    else if (!strcmp(k, "gcp") && !p->gcp)
      rc = sh_attest__token_policy_load(v, SH_TEE_GCP, &p->gcp, eb, en);
    else if (!strcmp(k, "tdx") && !p->tdx) /* format: dcap.c */
      rc = sh_attest__dcap_policy_load(v, SH_TEE_TDX, &p->tdx, eb, en);
    else if (!strcmp(k, "sgx") && !p->sgx)
      rc = sh_attest__dcap_policy_load(v, SH_TEE_SGX, &p->sgx, eb, en);
    else if (!strcmp(k, "azure-tdx") && !p->azure_tdx)
      rc = sh_attest__dcap_policy_load(v, SH_TEE_AZURE_TDX, &p->azure_tdx, eb, en);
    else
      rc = sh_attest__policy_err(eb, en, "unknown key", k);
    if (rc < 0) {
      json_decref(root);
      sh_attest_policy_free(p);
      return -1;
    }
  }
  json_decref(root);
  if (p->freshness == SH_FRESH_NONE && !allow_unfresh) {
    sh_attest_policy_free(p);
    return sh_attest__policy_err(eb, en, "freshness \"none\" requires \"allow_unfresh\": true",
                                 NULL);
  }
  *out = p;
  return 0;
}

int sh_attest_policy_load_file(const char *path, sh_attest_policy **out, char *eb, size_t en) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return sh_attest__policy_err(eb, en, "cannot open", path);
  char *buf = malloc(1 << 20);
  size_t n = buf ? fread(buf, 1, 1 << 20, f) : 0;
  int too_big = buf && n == (1 << 20);
  fclose(f);
  int rc = (!buf || too_big)
               ? sh_attest__policy_err(eb, en, "unreadable or larger than 1 MiB", path)
               : sh_attest_policy_load(buf, n, out, eb, en);
  free(buf);
  return rc;
}

sh_attest_policy *sh_attest_policy_production(void) {
  sh_attest_policy *p = NULL;
  sh_attest_policy_load(PRODUCTION, sizeof PRODUCTION - 1, &p, NULL, 0);
  return p;
}

const uint8_t *sh_attest_policy_sha256(const sh_attest_policy *p) {
  return p->sha256;
}

const sh_policy_tee *sh_attest__policy_for(const sh_attest_policy *p, sh_tee tee) {
  return tee == SH_TEE_NITRO ? &p->nitro : tee == SH_TEE_AZURE_SNP ? &p->azure : &p->snp;
}

int sh_attest__allow_debug(const sh_attest_policy *p, int section, int allow_debug) {
  if (allow_debug) return 1;
  return section >= 0 ? section : p->allow_debug;
}
