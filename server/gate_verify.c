/*
 * server/gate_verify.c — what the gate's verification needs at run time (issue #5): the
 * configured JWKS, issuers and audiences of the token types, the DCAP collateral, and the
 * fetcher of whatever is missing (AMD KDS, Intel PCS/PCCS, OpenID/JWKS), with its cache.
 *
 * Everything is read once, at sh_gate_wrap (main thread of each worker, before the pool
 * starts): the JWKS files (checked to be a JSON object with a "keys" array), the DCAP
 * collateral (a JSON-form file or a directory of Intel PCS responses, preloaded as one
 * sh_attest_collateral so its SHA-256 and verified form are computed once), and the fetcher.
 * gate_verify_flags.c already refused missing or malformed flags with exit status 2; what can
 * only be found by reading (a JWKS that is not JSON) fails sh_gate_wrap here.
 *
 * sh_gate_verify runs on the gate's pool threads only: it may block on the network (one
 * request at a time per fetcher, each bounded by --attest-fetch-timeout), never on the libuv
 * I/O thread.  A failed fetch is collateral_missing (protocol.md §3: 503
 * attestation_unavailable), answered like any other verdict.  A maa/gcp token whose kid the
 * cached JWKS lacks makes the fetcher refetch that issuer's JWKS (key rotation), at most once
 * per issuer per 60 s per worker (attest.h sh_attest_fetch_jwks_refresh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <attest.h>
#include <jansson.h>

#include "gate.h"
#include "server_internal.h"

#define GCP_ISSUER "https://confidentialcomputing.googleapis.com"
#define MAX_JWKS_FILE (256 * 1024)

struct sh_gate_verifier {
  uint8_t *maa_jwks, *gcp_jwks; /* file contents, or NULL */
  size_t maa_jwks_len, gcp_jwks_len;
  const char *maa_issuer, *maa_audience, *gcp_audience; /* borrowed from the config */
  sh_attest_collateral *dcap;                           /* --attest-collateral, or NULL */
  sh_attest_fetcher *fetcher;                           /* --attest-fetch/-offline, or NULL */
  /* the fetcher borrows these for its lifetime */
  sh_attest_fetch_issuer issuers[2];
  sh_attest_fetch_config fc;
};

/* A JWKS file: at most 256 KiB, a JSON object with a "keys" array.  malloc'd or NULL. */
static uint8_t *read_jwks(const char *flag, const char *path, size_t *len, sh_error *err) {
  FILE *f = fopen(path, "rb");
  uint8_t *buf = f ? malloc(MAX_JWKS_FILE + 1) : NULL;
  size_t n = buf ? fread(buf, 1, MAX_JWKS_FILE + 1, f) : 0;
  int bad = !buf || ferror(f) || n > MAX_JWKS_FILE;
  if (f) fclose(f);
  if (bad) {
    free(buf);
    SH_ERR(err, SH_EINVAL, "%s: cannot read '%.150s' (at most 256 KiB)", flag, path);
    return NULL;
  }
  json_error_t je;
  json_t *doc = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &je);
  int ok = json_is_array(json_object_get(doc, "keys"));
  json_decref(doc);
  if (!ok) {
    free(buf);
    SH_ERR(err, SH_EINVAL, "%s: '%.150s' is not a JWKS (a JSON object with a \"keys\" array)", flag,
           path);
    return NULL;
  }
  *len = n;
  return buf;
}

/* --attest-collateral: read once and preloaded (attest.h sh_attest_collateral_new). */
static sh_attest_collateral *load_collateral(const char *path, sh_error *err) {
  uint8_t *buf = NULL;
  size_t len = 0;
  char msg[256];
  if (sh_attest_collateral_read(path, &buf, &len, msg, sizeof msg) < 0) {
    SH_ERR(err, SH_EINVAL, "--attest-collateral: %.200s", msg);
    return NULL;
  }
  json_error_t je;
  json_t *doc = json_loadb((const char *)buf, len, 0, &je);
  int ok = json_is_object(doc);
  json_decref(doc);
  sh_attest_collateral *c = ok ? sh_attest_collateral_new(buf, len) : NULL;
  free(buf);
  if (!c)
    SH_ERR(err, SH_EINVAL,
           "--attest-collateral: '%.100s' is not DCAP collateral (JSON form, "
           "at most 1 MiB, or a directory of Intel PCS responses)",
           path);
  return c;
}

/* The fetcher: only the configured bases, only the issuers of the token types that are on
 * and have no JWKS file. */
static int make_fetcher(sh_gate_verifier *v, const sh_config *cfg, int maa, int gcp,
                        sh_error *err) {
  size_t ni = 0;
  if (maa && !v->maa_jwks)
    v->issuers[ni++] = (sh_attest_fetch_issuer){.issuer = cfg->attest_maa_issuer,
                                                .jwks_url = cfg->attest_maa_jwks_url,
                                                .discovery_url = cfg->attest_maa_discovery_url};
  if (gcp && !v->gcp_jwks)
    v->issuers[ni++] = (sh_attest_fetch_issuer){.issuer = GCP_ISSUER,
                                                .jwks_url = cfg->attest_gcp_jwks_url,
                                                .discovery_url = cfg->attest_gcp_discovery_url};
  v->fc.issuers = v->issuers;
  v->fc.nissuers = ni;
  v->fc.cache_dir = cfg->attest_cache_dir;
  v->fc.offline = cfg->attest_offline;
  v->fc.ca_file = cfg->attest_fetch_ca;
  v->fc.timeout_ms = cfg->attest_fetch_timeout_ms;
  v->fc.amd_kds_url = cfg->attest_kds_url;
  v->fc.intel_pcs_url = cfg->attest_pcs_url;
  char msg[256];
  if (!(v->fetcher = sh_attest_fetcher_new(&v->fc, msg, sizeof msg))) {
    SH_ERR(err, SH_EINVAL, "--attest-cache-dir: %.200s", msg);
    return -1;
  }
  return 0;
}

static int type_on(const char *list, const char *a, const char *b) {
  for (const char *p = list; p && *p;) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if ((strlen(a) == len && !strncmp(p, a, len)) || (b && strlen(b) == len && !strncmp(p, b, len)))
      return 1;
    p = e ? e + 1 : NULL;
  }
  return 0;
}

sh_gate_verifier *sh_gate_verifier_new(const sh_config *cfg, sh_error *err) {
  sh_gate_verifier *v = calloc(1, sizeof *v);
  if (!v) {
    SH_ERR(err, SH_ENOMEM, "out of memory");
    return NULL;
  }
  int maa = type_on(cfg->attest_types, "maa", "azure_maa"),
      gcp = type_on(cfg->attest_types, "gcp", NULL);
  v->maa_issuer = cfg->attest_maa_issuer;
  v->maa_audience = cfg->attest_maa_audience;
  v->gcp_audience = cfg->attest_gcp_audience;
  if ((cfg->attest_maa_jwks && !(v->maa_jwks = read_jwks("--attest-maa-jwks", cfg->attest_maa_jwks,
                                                         &v->maa_jwks_len, err))) ||
      (cfg->attest_gcp_jwks && !(v->gcp_jwks = read_jwks("--attest-gcp-jwks", cfg->attest_gcp_jwks,
                                                         &v->gcp_jwks_len, err))) ||
      (cfg->attest_collateral && !(v->dcap = load_collateral(cfg->attest_collateral, err))) ||
      ((cfg->attest_fetch || cfg->attest_offline) && make_fetcher(v, cfg, maa, gcp, err) < 0)) {
    sh_gate_verifier_free(v);
    return NULL;
  }
  sh_log(SH_LOG_INFO, "client attestation keys and collateral:%s%s%s%s%s%s%s%s%s",
         maa ? " maa issuer " : "", maa ? cfg->attest_maa_issuer : "",
         maa ? (v->maa_jwks ? " (JWKS file)" : " (JWKS fetched)") : "", gcp ? " gcp audience " : "",
         gcp ? cfg->attest_gcp_audience : "", cfg->attest_collateral ? " DCAP collateral file" : "",
         v->fetcher ? (cfg->attest_offline ? " fetching OFFLINE (cache dir only)" : " fetching on")
                    : "",
         v->fetcher && cfg->attest_cache_dir ? ", cache " : "",
         v->fetcher && cfg->attest_cache_dir ? cfg->attest_cache_dir : "");
  return v;
}

void sh_gate_verifier_free(sh_gate_verifier *v) {
  if (!v) return;
  sh_attest_fetcher_free(v->fetcher);
  sh_attest_collateral_free(v->dcap);
  free(v->maa_jwks);
  free(v->gcp_jwks);
  free(v);
}

int sh_gate_verify(const sh_gate_verifier *v, const uint8_t *ev, size_t len, int tee,
                   struct sh_attest_options *o, struct sh_attest_result **out) {
  const char *jwks_issuer = NULL;
  switch ((sh_attest_tee)tee) {
    case SH_ATTEST_TEE_MAA:
      o->jwks = v->maa_jwks;
      o->jwks_len = v->maa_jwks_len;
      o->issuer = jwks_issuer = v->maa_issuer;
      o->audience = v->maa_audience;
      break;
    case SH_ATTEST_TEE_GCP:
      o->jwks = v->gcp_jwks;
      o->jwks_len = v->gcp_jwks_len;
      o->issuer = jwks_issuer = GCP_ISSUER;
      o->audience = v->gcp_audience;
      break;
    case SH_ATTEST_TEE_TDX:
    case SH_ATTEST_TEE_AZURE_TDX:
    case SH_ATTEST_TEE_SGX:
      o->dcap_collateral = v->dcap;
      break;
    default:
      break;
  }
  /* the verification time is the fetch cache's clock too (--dev --attest-clock pins both) */
  return sh_attest_verify_fetching(ev, len, (sh_attest_tee)tee, o, v->fetcher, jwks_issuer, o->at,
                                   out);
}
