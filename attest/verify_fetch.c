/* attest/verify_fetch.c — sh_attest_verify_fetching: verify, and when the verdict is
 * collateral_missing, fetch what that type was missing (fetch.c) and verify once more.
 *
 * Shared by `shield verify --fetch/--offline` (cli_verify.c) and the server's verification pool
 * (server/gate.c).  Why verify first and fetch second: most evidence needs nothing fetched (a
 * bundle carries its VCEK, the server holds the collateral or JWKS), and a first pass rejects
 * malformed, unbound, debug or forged evidence before any network request is made for it
 * (docs/protocol.md §1.6: fetches happen only for configured issuers and products, and only for
 * evidence that got that far).  Only the fetcher's configured bases are contacted, never a URL
 * taken from the evidence.
 *
 * What is fetched per type:
 *   sev-snp, azure-snp  the VCEK by CHIP_ID and REPORTED_TCB of the SNP report (azure-snp: the
 *                       one embedded in the HCL report at 0x20) from the AMD KDS; the product
 *                       from CPUID_FAM_ID/CPUID_MOD_ID (report v3+, SNP ABI table 23, 0x188)
 *                       or, for older reports, Milan, Genoa and Turin in turn; then the
 *                       product's cert_chain (optional: the ASK/ARK are embedded in attest/).
 *   tdx, sgx,           TCB info by the PCK certificate's FMSPC, QE identity, the PCK CRL of
 *   azure-tdx           the PCK's issuing CA, the root CA CRL (Intel PCS v4 or a PCCS), turned
 *                       into the JSON collateral form in memory (exact signed bytes kept);
 *                       azure-tdx: for the bundle's "td_quote", as tdx.
 *   maa, gcp            the JWKS of the issuer (OpenID discovery or a configured jwks_url);
 *                       and when the token's kid is not in it, the JWKS once more past the
 *                       cache (key rotation, see retry_rotated).
 */
#include "dcap.h"
#include "token.h"

#include <cbor.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GCP_ISSUER "https://confidentialcomputing.googleapis.com"
#define HCL_REPORT_OFF 0x20
#define MAX_FETCHED 4

static uint32_t le32_at(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The byte string under text key `key` of a definite CBOR map, or NULL. */
static const cbor_item_t *cbor_bstr_at(const cbor_item_t *m, const char *key) {
  if (!m || !cbor_isa_map(m) || !cbor_map_is_definite(m)) return NULL;
  size_t kl = strlen(key);
  struct cbor_pair *pp = cbor_map_handle(m);
  for (size_t i = 0; i < cbor_map_size(m); i++) {
    cbor_item_t *k = pp[i].key, *v = pp[i].value;
    if (cbor_isa_string(k) && cbor_string_is_definite(k) && cbor_string_length(k) == kl &&
        !memcmp(cbor_string_handle(k), key, kl) && cbor_isa_bytestring(v) &&
        cbor_bytestring_is_definite(v))
      return v;
  }
  return NULL;
}

/* The 1184-byte SNP report of sev-snp evidence (raw, or CBOR {"report": bstr, ...}) or of
 * azure-snp evidence (a raw HCL report "HCLA…", or CBOR {"hcl_report": bstr, ...}; the SNP
 * report sits at HCL offset 0x20, see azure.c).  Evidence reaches here only after
 * sh_attest_verify parsed it (collateral_missing comes after the structural checks). */
static int snp_report(sh_tee tee, const uint8_t *ev, size_t len, uint8_t rep[SH_SNP_REPORT_SIZE]) {
  int azure = tee == SH_TEE_AZURE_SNP;
  size_t off = azure ? HCL_REPORT_OFF : 0;
  if (!azure && len == SH_SNP_REPORT_SIZE) {
    memcpy(rep, ev, len);
    return 0;
  }
  if (azure && len >= 4 && !memcmp(ev, "HCLA", 4)) {
    if (len < off + SH_SNP_REPORT_SIZE) return -1;
    memcpy(rep, ev + off, SH_SNP_REPORT_SIZE);
    return 0;
  }
  struct cbor_load_result res;
  cbor_item_t *m = len <= SH_BUNDLE_MAX_EVIDENCE ? cbor_load(ev, len, &res) : NULL;
  const cbor_item_t *b = cbor_bstr_at(m, azure ? "hcl_report" : "report");
  int rc = -1;
  if (b && cbor_bytestring_length(b) >= off + SH_SNP_REPORT_SIZE &&
      (azure || cbor_bytestring_length(b) == SH_SNP_REPORT_SIZE)) {
    memcpy(rep, cbor_bytestring_handle(b) + off, SH_SNP_REPORT_SIZE);
    rc = 0;
  }
  if (m) cbor_decref(&m);
  return rc;
}

/* Fetched blobs handed to the second verification as extra certificates. */
typedef struct fetched_certs {
  sh_attest_fetched f[MAX_FETCHED];
  size_t n;
} fetched_certs;

/* sev-snp / azure-snp: the VCEK (required) and the product's cert_chain (optional). */
static int fetch_snp(sh_attest_fetcher *f, sh_tee tee, const uint8_t *ev, size_t len, int64_t now,
                     fetched_certs *fc, char *msg, size_t ml) {
  uint8_t rp[SH_SNP_REPORT_SIZE];
  static const uint8_t zero[64];
  if (snp_report(tee, ev, len, rp) < 0) return snprintf(msg, ml, "no SEV-SNP report found"), -1;
  /* KEY_INFO (0x48) SIGNING_KEY bits 2-4: 0 VCEK, 1 VLEK (not served by chip id) */
  if (((le32_at(rp + 0x48) >> 2) & 7) != 0)
    return snprintf(msg, ml,
                    "the report is signed by a VLEK, which the AMD KDS does not serve by "
                    "chip: give it with the evidence (or --cert)"),
           -1;
  if (!memcmp(rp + 0x1A0, zero, 64))
    return snprintf(msg, ml, "CHIP_ID is masked: give the VCEK with the evidence (or --cert)"), -1;
  uint64_t tcb = 0; /* REPORTED_TCB (0x180), little-endian */
  for (int i = 7; i >= 0; i--)
    tcb = tcb << 8 | rp[0x180 + i];
  const char *all[] = {"Milan", "Genoa", "Turin"}, *one[1], *const *cands = all;
  size_t nc = 3;
  uint8_t fam = rp[0x188], model = rp[0x189];
  if (le32_at(rp) >= 3 && (fam == 0x19 || fam == 0x1A)) { /* CPUID family/model (v3+) */
    one[0] = fam == 0x1A ? "Turin" : model < 0x10 ? "Milan" : "Genoa";
    cands = one;
    nc = 1;
  }
  sh_attest_fetch_error e;
  memset(&e, 0, sizeof e);
  const char *prod = NULL;
  for (size_t i = 0; i < nc && !prod; i++)
    if (sh_attest_fetch_amd_vcek(f, cands[i], rp + 0x1A0, tcb, now, &fc->f[fc->n], &e) == 0)
      prod = cands[i];
  if (!prod)
    return snprintf(msg, ml, "VCEK%s: %.170s", nc > 1 ? " (Milan, Genoa, Turin)" : "", e.message),
           -1;
  fc->n++;
  if (sh_attest_fetch_amd_chain(f, prod, "vcek", now, &fc->f[fc->n], &e) == 0)
    fc->n++; /* else: the embedded ASK/ARK do */
  return 0;
}

/* tdx / sgx / azure-tdx: the four PCS documents for this quote's PCK -> JSON collateral
 * (malloc'd).  azure-tdx evidence is CBOR {"hcl_report", "td_quote"}: its TD quote's. */
static int fetch_dcap(sh_attest_fetcher *f, sh_tee tee, const uint8_t *ev, size_t len, int64_t now,
                      uint8_t **col, size_t *col_len, char *msg, size_t ml) {
  const char *tn = tee == SH_TEE_SGX ? "sgx" : "tdx";
  cbor_item_t *bundle = NULL;
  if (tee == SH_TEE_AZURE_TDX) {
    struct cbor_load_result res;
    const cbor_item_t *b = len <= SH_BUNDLE_MAX_EVIDENCE && (bundle = cbor_load(ev, len, &res))
                               ? cbor_bstr_at(bundle, "td_quote")
                               : NULL;
    ev = b ? cbor_bytestring_handle(b) : NULL;
    len = b ? cbor_bytestring_length(b) : 0;
  }
  sh_attest_result *tmp = sh_attest__result_new();
  sh_dcap_quote q;
  X509 *pck = NULL;
  sh_pck_ext ext;
  char fmspc[13], iss[256] = "";
  int rc = -1;
  sh_attest_fetched t, qe, pc, root;
  sh_attest_fetch_error e;
  memset(&t, 0, sizeof t);
  memset(&qe, 0, sizeof qe);
  memset(&pc, 0, sizeof pc);
  memset(&root, 0, sizeof root);
  memset(&e, 0, sizeof e);
  if (!tmp || !ev || sh_attest__dcap_parse_quote(tmp, ev, len, &q) < 0 || !q.pck_chain.len) {
    snprintf(msg, ml, "no PCK certificate chain in the quote");
    goto out;
  }
  BIO *b = BIO_new_mem_buf(q.pck_chain.ptr, (int)q.pck_chain.len);
  pck = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  if (!pck || sh_attest__pck_ext_parse(pck, &ext) < 0) {
    snprintf(msg, ml, "the PCK certificate has no readable SGX extensions (FMSPC)");
    goto out;
  }
  sh_hex_encode(ext.fmspc, 6, fmspc);
  /* the PCK CRL of the CA that issued this PCK: "Intel SGX PCK Platform CA" or "... Processor CA"
   */
  X509_NAME_oneline(X509_get_issuer_name(pck), iss, sizeof iss);
  const char *ca = strstr(iss, "Platform") ? "platform" : "processor";
  if (sh_attest_fetch_intel_tcb(f, tn, fmspc, now, &t, &e) < 0 ||
      sh_attest_fetch_intel_qe_identity(f, tn, now, &qe, &e) < 0 ||
      sh_attest_fetch_intel_pck_crl(f, ca, now, &pc, &e) < 0 ||
      sh_attest_fetch_intel_root_crl(f, now, &root, &e) < 0) {
    snprintf(msg, ml, "%.180s", e.message);
    goto out;
  }
  sh_dcap_pcs p = {(const char *)t.data,
                   t.len,
                   t.issuer_chain,
                   t.issuer_chain ? strlen(t.issuer_chain) : 0,
                   (const char *)qe.data,
                   qe.len,
                   qe.issuer_chain,
                   qe.issuer_chain ? strlen(qe.issuer_chain) : 0,
                   root.data,
                   root.len,
                   pc.data,
                   pc.len,
                   pc.issuer_chain};
  char eb[256];
  if (sh_attest__dcap_collateral_from_pcs(&p, col, col_len, eb, sizeof eb) < 0) {
    snprintf(msg, ml, "%.180s", eb);
    goto out;
  }
  rc = 0;
out:
  X509_free(pck);
  sh_attest_result_free(tmp);
  if (bundle) cbor_decref(&bundle);
  sh_attest_fetched_free(&t);
  sh_attest_fetched_free(&qe);
  sh_attest_fetched_free(&pc);
  sh_attest_fetched_free(&root);
  ERR_clear_error();
  return rc;
}

/* The token's kid (malloc'd), or NULL when it has none or does not parse. */
static char *token_kid(const uint8_t *ev, size_t len) {
  sh_attest_result *tmp = sh_attest__result_new();
  sh_jwt j;
  char *kid = NULL;
  memset(&j, 0, sizeof j);
  if (tmp && sh_attest__jwt_parse(tmp, ev, len, &j) == 0 && j.kid) kid = strdup(j.kid);
  sh_attest__jwt_free(&j);
  sh_attest_result_free(tmp);
  return kid;
}

/* 1 when an entry of the JWKS document's "keys" names `kid` (usable or not: a kid the issuer
 * does publish is not a rotation). */
static int jwks_has_kid(const uint8_t *doc, size_t len, const char *kid) {
  json_error_t je;
  json_t *d = json_loadb((const char *)doc, len, 0, &je), *e;
  size_t i;
  int found = 0;
  json_array_foreach(json_object_get(d, "keys"), i, e) {
    const char *k = json_string_value(json_object_get(e, "kid"));
    if (k && !strcmp(k, kid)) {
      found = 1;
      break;
    }
  }
  json_decref(d);
  return found;
}

static void note(sh_attest_result *r, const char *what, const char *detail) {
  size_t l = strlen(r->message);
  snprintf(r->message + l, sizeof r->message - l, "%s%.120s", what, detail);
}

/* maa, gcp: *res refused the token with root_untrusted and the JWKS it was checked against
 * (o->jwks, from the fetch cache, memory or disk) lacks the token's kid.  Issuers rotate keys
 * (a new kid published, then used) while our copy may be up to the fetch ttl old (1 h), so
 * the JWKS is refetched and the token verified once more.  An unknown kid costs no signature
 * check, so anyone can send many: sh_attest_fetch_jwks_refresh allows one refetch per issuer
 * per jwks_refresh_interval (60 s) and refuses the rest at once, which then keep
 * root_untrusted, the same refusal as a kid missing from a JWKS file (`shield verify
 * --jwks`), with a note saying when the keys were last refetched. */
static int retry_rotated(const uint8_t *ev, size_t len, sh_tee tee, sh_attest_options o,
                         sh_attest_fetcher *f, const char *iss, int64_t now,
                         sh_attest_result **res) {
  char *kid = token_kid(ev, len);
  if (!kid || jwks_has_kid(o.jwks, o.jwks_len, kid)) {
    free(kid);
    return 0;
  }
  sh_attest_fetched nf;
  sh_attest_fetch_error fe;
  memset(&fe, 0, sizeof fe);
  int rc = 0;
  if (sh_attest_fetch_jwks_refresh(f, iss, now, &nf, &fe) < 0) {
    note(*res, "; keys not refetched: ", fe.message);
  } else if (nf.stale) { /* the network failed: the same keys again */
    note(*res, "; keys not refetched: ", fe.message);
  } else {
    o.jwks = nf.data;
    o.jwks_len = nf.len;
    sh_attest_result *again = NULL;
    if (sh_attest_verify(ev, len, tee, &o, &again) < 0) {
      rc = -1;
      sh_attest_result_free(*res);
      *res = NULL;
    } else {
      sh_attest_result_free(*res);
      *res = again;
      if (!again->verified && again->reason == SH_ATTEST_ROOT_UNTRUSTED &&
          !jwks_has_kid(nf.data, nf.len, kid))
        note(again, " (the issuer's keys were refetched just now)", "");
    }
  }
  sh_attest_fetched_free(&nf);
  free(kid);
  return rc;
}

static int is_snp(sh_tee t) {
  return t == SH_TEE_SEV_SNP || t == SH_TEE_AZURE_SNP;
}
static int is_dcap(sh_tee t) {
  return t == SH_TEE_TDX || t == SH_TEE_SGX || t == SH_TEE_AZURE_TDX;
}
static int is_token(sh_tee t) {
  return t == SH_TEE_MAA || t == SH_TEE_GCP;
}

int sh_attest_verify_fetching(const uint8_t *ev, size_t len, sh_tee tee,
                              const sh_attest_options *opts, sh_attest_fetcher *fetcher,
                              const char *jwks_issuer, int64_t now, sh_attest_result **out) {
  if (sh_attest_verify(ev, len, tee, opts, out) < 0) return -1;
  sh_attest_result *r = *out;
  /* only what the caller did not configure is fetched: a configured JWKS or collateral that
   * lacks something is the operator's to fix, not the network's */
  int want = fetcher && !r->verified && r->reason == SH_ATTEST_COLLATERAL_MISSING &&
             (is_snp(tee) || (is_dcap(tee) && !sh_attest__dcap_collateral_given(opts)) ||
              (is_token(tee) && !opts->jwks));
  if (!want) return 0;
  sh_attest_options o = *opts;
  fetched_certs fc;
  memset(&fc, 0, sizeof fc);
  sh_iovec certs[64 + MAX_FETCHED];
  uint8_t *col = NULL;
  sh_attest_fetched jf;
  memset(&jf, 0, sizeof jf);
  char why[200] = "";
  const char *iss_used = NULL; /* maa, gcp: whose JWKS was fetched */
  int frc = -1;
  if (is_snp(tee)) {
    if (opts->ncerts > 64) {
      snprintf(why, sizeof why, "too many certificates given");
    } else if ((frc = fetch_snp(fetcher, tee, ev, len, now, &fc, why, sizeof why)) == 0) {
      for (size_t i = 0; i < opts->ncerts; i++)
        certs[i] = opts->certs[i];
      for (size_t i = 0; i < fc.n; i++)
        certs[opts->ncerts + i] = (sh_iovec){.ptr = fc.f[i].data, .len = fc.f[i].len};
      o.certs = certs;
      o.ncerts = opts->ncerts + fc.n;
    }
  } else if (is_dcap(tee)) {
    if ((frc = fetch_dcap(fetcher, tee, ev, len, now, &col, &o.collateral_len, why, sizeof why)) ==
        0)
      o.collateral = col;
  } else {
    const char *iss = iss_used = jwks_issuer         ? jwks_issuer
                                 : opts->issuer      ? opts->issuer
                                 : tee == SH_TEE_GCP ? GCP_ISSUER
                                                     : NULL;
    sh_attest_fetch_error fe;
    memset(&fe, 0, sizeof fe);
    if (!iss) {
      snprintf(why, sizeof why, "no issuer configured to fetch the JWKS from");
    } else if ((frc = sh_attest_fetch_jwks(fetcher, iss, now, &jf, &fe)) == 0) {
      o.jwks = jf.data;
      o.jwks_len = jf.len;
    } else {
      snprintf(why, sizeof why, "%.190s", fe.message);
    }
  }
  int rc = 0;
  if (frc == 0) {
    sh_attest_result *again = NULL;
    if (sh_attest_verify(ev, len, tee, &o, &again) < 0) {
      rc = -1;
      sh_attest_result_free(r);
      *out = NULL;
    } else {
      sh_attest_result_free(r);
      *out = again;
      /* a JWKS this very call took from the network is as new as a refetch would be */
      if (is_token(tee) && jf.from_cache && !again->verified &&
          again->reason == SH_ATTEST_ROOT_UNTRUSTED)
        rc = retry_rotated(ev, len, tee, o, fetcher, iss_used, now, out);
    }
  } else {
    snprintf(r->message, sizeof r->message, "%s failed: %.199s",
             sh_attest__fetch_is_offline(fetcher) ? "offline lookup" : "fetch", why);
  }
  for (size_t i = 0; i < fc.n; i++)
    sh_attest_fetched_free(&fc.f[i]);
  sh_attest_fetched_free(&jf);
  free(col);
  return rc;
}
