/*
 * gate/verifier.c — what the gate's verification needs at run time (issue #5): the
 * configured JWKS, issuers and audiences of the token types, the DCAP collateral, and the
 * fetcher of whatever is missing (AMD KDS, Intel PCS/PCCS, OpenID/JWKS), with its cache.
 *
 * Everything is read once, at sh_gate_new (main thread of each worker, before the pool
 * starts): the JWKS files (checked to be a JSON object with a "keys" array), the DCAP
 * collateral (a JSON-form file or a directory of Intel PCS responses, preloaded as one
 * sh_attest_collateral so its SHA-256 and verified form are computed once), and the fetcher.
 * sh_gate_config_check (config.c) already refused missing or malformed settings (the command
 * line exits 2 before any worker forks); what can only be found by reading fails sh_gate_new
 * here.
 *
 * sh_gate__verify runs on the gate's pool threads only: it may block on the network (one
 * request at a time per fetcher, each bounded by --attest-fetch-timeout), never on the libuv
 * I/O thread.  A failed fetch is collateral_missing (docs/protocol.md §3: 503
 * attestation_unavailable), answered like any other verdict.  A maa/gcp token whose kid the
 * cached JWKS lacks makes the fetcher refetch that issuer's JWKS (key rotation), at most once
 * per issuer per 60 s per worker (attest.h sh_attest_fetch_jwks_refresh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gate_internal.h"

#define GCP_ISSUER "https://confidentialcomputing.googleapis.com"
#define MAX_JWKS_FILE (256 * 1024)

struct sh_gate__verifier {
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
    sh_error_set(err, SH_EINVAL, "%s: cannot read '%.150s' (at most 256 KiB)", flag, path);
    return NULL;
  }
  json_error_t je;
  json_t *doc = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &je);
  int ok = json_is_array(json_object_get(doc, "keys"));
  json_decref(doc);
  if (!ok) {
    free(buf);
    sh_error_set(err, SH_EINVAL, "%s: '%.150s' is not a JWKS (a JSON object with a \"keys\" array)",
                 flag, path);
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
    sh_error_set(err, SH_EINVAL, "--attest-collateral: %.200s", msg);
    return NULL;
  }
  json_error_t je;
  json_t *doc = json_loadb((const char *)buf, len, 0, &je);
  int ok = json_is_object(doc);
  json_decref(doc);
  sh_attest_collateral *c = ok ? sh_attest_collateral_new(buf, len) : NULL;
  free(buf);
  if (!c)
    sh_error_set(err, SH_EINVAL,
                 "--attest-collateral: '%.100s' is not DCAP collateral (JSON form, "
                 "at most 1 MiB, or a directory of Intel PCS responses)",
                 path);
  return c;
}

/* The fetcher: only the configured bases, only the issuers of the token types that are on
 * and have no JWKS file. */
static int make_fetcher(sh_gate__verifier *v, const sh_gate_config *gc, unsigned types,
                        sh_error *err) {
  size_t ni = 0;
  if ((types & 1u << SH_TEE_MAA) && !v->maa_jwks)
    v->issuers[ni++] = (sh_attest_fetch_issuer){.issuer = gc->maa_issuer,
                                                .jwks_url = sh_gate__maa_jwks_url(gc, types),
                                                .discovery_url = gc->maa_discovery_url};
  if ((types & 1u << SH_TEE_GCP) && !v->gcp_jwks)
    v->issuers[ni++] = (sh_attest_fetch_issuer){.issuer = GCP_ISSUER,
                                                .jwks_url = sh_gate__gcp_jwks_url(gc, types),
                                                .discovery_url = gc->gcp_discovery_url};
  v->fc.issuers = v->issuers;
  v->fc.nissuers = ni;
  v->fc.cache_dir = gc->cache_dir;
  v->fc.offline = gc->offline;
  v->fc.ca_file = gc->fetch_ca;
  v->fc.timeout_ms = sh_gate__fetch_timeout_ms(gc);
  v->fc.amd_kds_url = gc->kds_url;
  v->fc.intel_pcs_url = gc->pcs_url;
  char msg[256];
  if (!(v->fetcher = sh_attest_fetcher_new(&v->fc, msg, sizeof msg))) {
    sh_error_set(err, SH_EINVAL, "--attest-cache-dir: %.200s", msg);
    return -1;
  }
  return 0;
}

sh_gate__verifier *sh_gate__verifier_new(const sh_gate_config *gc, unsigned types, sh_error *err) {
  sh_gate__verifier *v = calloc(1, sizeof *v);
  if (!v) {
    sh_error_set(err, SH_ENOMEM, "out of memory");
    return NULL;
  }
  int maa = (types & 1u << SH_TEE_MAA) != 0, gcp = (types & 1u << SH_TEE_GCP) != 0;
  v->maa_issuer = gc->maa_issuer;
  v->maa_audience = gc->maa_audience;
  v->gcp_audience = gc->gcp_audience;
  if ((gc->maa_jwks &&
       !(v->maa_jwks = read_jwks("--attest-maa-jwks", gc->maa_jwks, &v->maa_jwks_len, err))) ||
      (gc->gcp_jwks &&
       !(v->gcp_jwks = read_jwks("--attest-gcp-jwks", gc->gcp_jwks, &v->gcp_jwks_len, err))) ||
      (gc->collateral && !(v->dcap = load_collateral(gc->collateral, err))) ||
      ((gc->fetch || gc->offline) && make_fetcher(v, gc, types, err) < 0)) {
    sh_gate__verifier_free(v);
    return NULL;
  }
  if (types) /* none: --tee alone, no client attestation to verify */
    sh_log(SH_LOG_INFO, "client attestation keys and collateral:%s%s%s%s%s%s%s%s%s",
           maa ? " maa issuer " : "", maa ? gc->maa_issuer : "",
           maa ? (v->maa_jwks ? " (JWKS file)" : " (JWKS fetched)") : "",
           gcp ? " gcp audience " : "", gcp ? gc->gcp_audience : "",
           gc->collateral ? " DCAP collateral file" : "",
           v->fetcher ? (gc->offline ? " fetching OFFLINE (cache dir only)" : " fetching on") : "",
           v->fetcher && gc->cache_dir ? ", cache " : "",
           v->fetcher && gc->cache_dir ? gc->cache_dir : "");
  return v;
}

void sh_gate__verifier_free(sh_gate__verifier *v) {
  if (!v) return;
  sh_attest_fetcher_free(v->fetcher);
  sh_attest_collateral_free(v->dcap);
  free(v->maa_jwks);
  free(v->gcp_jwks);
  free(v);
}

int sh_gate__verify(const sh_gate__verifier *v, const uint8_t *ev, size_t len, sh_tee tee,
                    sh_attest_options *o, sh_attest_result **out) {
  const char *jwks_issuer = NULL;
  switch (tee) {
    case SH_TEE_MAA:
      o->jwks = v->maa_jwks;
      o->jwks_len = v->maa_jwks_len;
      o->issuer = jwks_issuer = v->maa_issuer;
      o->audience = v->maa_audience;
      break;
    case SH_TEE_GCP:
      o->jwks = v->gcp_jwks;
      o->jwks_len = v->gcp_jwks_len;
      o->issuer = jwks_issuer = GCP_ISSUER;
      o->audience = v->gcp_audience;
      break;
    case SH_TEE_TDX:
    case SH_TEE_AZURE_TDX:
    case SH_TEE_SGX:
      o->dcap_collateral = v->dcap;
      break;
    default:
      break;
  }
  /* the verification time is the fetch cache's clock too (--dev --attest-clock pins both) */
  return sh_attest_verify_fetching(ev, len, tee, o, v->fetcher, jwks_issuer, o->at, out);
}
