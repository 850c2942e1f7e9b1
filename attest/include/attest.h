/*
 * attest/include/attest.h — verification of TEE attestation evidence (the one public header).
 *
 * Owns:   evidence formats (AWS Nitro COSE_Sign1/CBOR, AMD SEV-SNP reports, Azure CVM HCL
 *         reports, Intel TDX/SGX DCAP quotes with their collateral: TCB info, QE identity,
 *         CRLs), X.509 chains to pinned root fingerprints, the binding digest
 *         (docs/protocol.md §1.2), policy (a JSON file, format in policy.c), a bounded
 *         verification cache.  (The `shield verify` command line is cli/'s, on this header.)
 * Never:  reads the clock (the verification time is always an explicit input), fetches
 *         anything from the network while verifying (only sh_attest_fetch_* do, when called,
 *         see below), knows about HTTP or Python, keeps global mutable state,
 *         trusts a root that is not pinned here unless the caller passes it explicitly
 *         (sh_attest_options.extra_roots, meant for test CAs and simulated TEEs).
 * Threads: every function may be called from any thread.  A policy and a cache may be shared
 *         by many threads at once (the cache has its own lock; a policy is immutable once
 *         loaded).  A result belongs to the thread that received it.
 * Memory: sh_attest_verify() returns a result the caller frees with sh_attest_result_free();
 *         policies and caches are freed by their own *_free().  Options and the evidence are
 *         only borrowed for the duration of the call.  JSON members of a result (jansson
 *         objects) are owned by the result: incref them to keep them longer.
 *
 * Fail-closed: `verified` is 1 only when every check passed, policy included; any other
 * outcome carries exactly one reason code (docs/protocol.md §3).  Checks run cheapest first:
 * size caps, structure, binding, root fingerprint, signatures, policy (docs/protocol.md §1.6).
 */
#ifndef SHIELD_ATTEST_H
#define SHIELD_ATTEST_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with -fvisibility=hidden: only what is marked SH_ATTEST_API is exported
 * from a shared object that links it (the Python extension); everything else of attest/ is
 * private to it (internal.h, cross-file names sh_attest__*). */
#define SH_ATTEST_API __attribute__((visibility("default")))

/* TEE types (sh_tee, SH_TEE_*, sh_tee_from_name, sh_tee_name) and byte slices (sh_iovec) are
 * common.h's. */

/* Reason codes of docs/protocol.md §3 (SH_ATTEST_OK: verified). */
typedef enum sh_attest_reason {
  SH_ATTEST_OK = 0,
  SH_ATTEST_MISSING,
  SH_ATTEST_MALFORMED,
  SH_ATTEST_UNSUPPORTED_TYPE,
  SH_ATTEST_SIGNATURE_INVALID,
  SH_ATTEST_CHAIN_INVALID,
  SH_ATTEST_ROOT_UNTRUSTED,
  SH_ATTEST_REVOKED,
  SH_ATTEST_EXPIRED,
  SH_ATTEST_NOT_YET_VALID,
  SH_ATTEST_BINDING_MISMATCH,
  SH_ATTEST_NONCE_INVALID,
  SH_ATTEST_NONCE_EXPIRED,
  SH_ATTEST_NONCE_REPLAYED,
  SH_ATTEST_PROOF_INVALID,
  SH_ATTEST_SESSION_UNKNOWN,
  SH_ATTEST_SESSION_EXPIRED,
  SH_ATTEST_DEBUG_NOT_ALLOWED,
  SH_ATTEST_MEASUREMENT_MISMATCH,
  SH_ATTEST_TCB_OUT_OF_DATE,
  SH_ATTEST_TCB_UNSUPPORTED,
  SH_ATTEST_POLICY_DENIED,
  SH_ATTEST_COLLATERAL_MISSING,
  SH_ATTEST_COLLATERAL_STALE,
  SH_ATTEST_OVERLOADED,
  SH_ATTEST_REASON_COUNT_
} sh_attest_reason;

typedef struct sh_attest_policy sh_attest_policy;         /* immutable once loaded */
typedef struct sh_attest_cache sh_attest_cache;           /* thread-safe, bounded */
typedef struct sh_attest_collateral sh_attest_collateral; /* DCAP collateral, thread-safe */

typedef struct sh_attest_options {
  int64_t at;                     /* verification time, seconds since the epoch (required) */
  const sh_attest_policy *policy; /* NULL: the built-in "production" policy */
  const sh_iovec *certs;          /* extra certificates, PEM or DER, bundles allowed */
  size_t ncerts;                  /*   (SNP VCEK/VLEK, ASK/ASVK, ARK) */
  const uint8_t *nonce;           /* NULL: freshness not checked here (see policy.c) */
  size_t nonce_len;
  const uint8_t *public_key; /* DER SPKI bound with the nonce (k of §1.2); NULL: k empty */
  size_t public_key_len;
  int allow_debug; /* 1: debug TEEs pass whatever the policy says (dev only) */
  /* Extra trust anchors (PEM/DER), used ONLY when given: for test CAs and simulated TEEs.
   * Results verified through them are never cached. */
  const sh_iovec *extra_roots;
  size_t nextra_roots;
  sh_attest_cache *cache; /* NULL: no cache */
  /* JWT types (maa, gcp): the configured issuer's JWKS document (JSON; for gcp only OIDC
   * tokens need it, PKI tokens chain to the pinned Google root), the expected iss and aud.
   * NULL issuer/audience: not checked, only reported (the CLI's default; a server always
   * configures both).  Keys are never taken from a token (jku, x5u). */
  const uint8_t *jwks;
  size_t jwks_len;
  const char *issuer;
  const char *audience;
  /* DCAP types (tdx, sgx, azure-tdx): the collateral as JSON (format in collateral.c; read a
   * file or a directory of Intel PCS responses with sh_attest_collateral_read).  NULL:
   * collateral_missing. */
  const uint8_t *collateral;
  size_t collateral_len;
  /* Simulated TEE (docs/protocol.md §1.7): Nitro-format evidence whose protected header carries
   * kid "shield-simulated" is refused with root_untrusted unless trust_simulated is 1; then
   * its chain must end at simulated_root (PEM or DER; NULL: the local dev root read from the
   * user's data directory, see simulated.c).  Such results are never cached. */
  int trust_simulated;
  const sh_iovec *simulated_root;
  /* DCAP types (tdx, sgx, azure-tdx): preloaded collateral (sh_attest_collateral_new), used
   * instead of collateral/collateral_len when not NULL: its SHA-256 is computed once and its
   * verified form kept in it, so neither is recomputed per quote. */
  const sh_attest_collateral *dcap_collateral;
} sh_attest_options;

typedef struct sh_attest_result {
  int verified; /* 1 only when every check, the policy included, passed */
  sh_tee tee;
  sh_attest_reason reason; /* SH_ATTEST_OK when verified */
  char message[256];       /* human-readable detail, "" when verified */
  double timestamp;        /* the verification time (options.at) */
  int debug;               /* evidence comes from a debug TEE */
  int cache_hit;           /* served from the verification cache */
  const char *tcb_status;  /* static string or NULL */
  json_t *measurements;    /* object: name -> lower-case hex */
  json_t *claims;          /* object */
  json_t *advisories;      /* array of strings */
  uint8_t *public_key;     /* NULL when absent */
  size_t public_key_len;
  uint8_t *user_data;
  size_t user_data_len;
  uint8_t *nonce;
  size_t nonce_len;
  uint8_t evidence_sha256[32]; /* SHA-256 of the signed content (replay key, §1.3) */
  int has_evidence_sha256;
  uint8_t *raw_evidence; /* copy of the evidence bytes as given */
  size_t raw_evidence_len;
  uint8_t policy_sha256[32];
} sh_attest_result;

/* Verify `evidence` of type `tee`.  Returns 0 and *out (never NULL on success) whatever the
 * verdict (read (*out)->verified); returns -1 only when out of memory or `opts` is unusable
 * (opts->at <= 0), with *out NULL. */
SH_ATTEST_API int sh_attest_verify(const uint8_t *evidence, size_t len, sh_tee tee,
                                   const sh_attest_options *opts, sh_attest_result **out);
SH_ATTEST_API void sh_attest_result_free(sh_attest_result *r);
/* A rejected result for evidence the caller refused before it reached sh_attest_verify (e.g.
 * over the caller's size limit): tee and timestamp (the verification time `at`) as given,
 * `reason` (not SH_ATTEST_OK) and `message` (truncated to the message field).  Freed with
 * sh_attest_result_free.  NULL when out of memory. */
SH_ATTEST_API sh_attest_result *sh_attest_result_rejected(sh_tee tee, int64_t at,
                                                          sh_attest_reason reason,
                                                          const char *message);
/* How many X.509 certificates `data` holds as sh_attest_options.certs reads it (PEM, one or
 * several; or DER, one or several concatenated): >= 1, or -1 when it is not certificates.  For
 * a caller that wants to refuse a bad certificate file up front rather than as a verdict. */
SH_ATTEST_API int sh_attest_certs_count(const uint8_t *data, size_t len);

SH_ATTEST_API const char *sh_attest_reason_name(
    sh_attest_reason r); /* "signature_invalid", NULL for OK */
SH_ATTEST_API const char *sh_attest_reason_class(
    sh_attest_reason r); /* "attestation_failed", NULL for OK */
/* The HTTP status of the reason's §3 error class (401, 403 or 503), 0 for OK: docs/protocol.md §3
 * is one table (status, class, reasons), kept here once for the gate's replies and the Python
 * package's errors (shield_asgi._native.REASONS). */
SH_ATTEST_API int sh_attest_reason_status(sh_attest_reason r);

/* Result as JSON: {"verified", "reason", "tee_type", "measurements", "claims", "debug",
 * "tcb_status", "advisories", ...}.  `full` adds message, timestamp, hex byte fields and
 * policy_sha256.  New reference. */
SH_ATTEST_API json_t *sh_attest_result_to_json(const sh_attest_result *r, int full);

/* Policy (format documented at the top of policy.c).  Returns 0, or -1 with a message. */
SH_ATTEST_API int sh_attest_policy_load(const char *json_text, size_t len, sh_attest_policy **out,
                                        char *errbuf, size_t errlen);
SH_ATTEST_API int sh_attest_policy_load_file(const char *path, sh_attest_policy **out, char *errbuf,
                                             size_t errlen);
SH_ATTEST_API sh_attest_policy *sh_attest_policy_production(
    void); /* new copy of the built-in default */
/* The policy step on its own: `policy` applied to the facts of a verified result (measurements,
 * claims, debug, TCB status, advisories) by the same per-type evaluator sh_attest_verify ends
 * with — for a result verified elsewhere (the server verified natively; the app re-checks its
 * own or a route's policy).  The evidence is never re-verified and nothing is consumed; parts
 * of a policy that exist only at verification time (freshness, max_age, JWS algorithms) are not
 * re-checked.  A result lacking a fact the policy constrains is refused (fail closed).  Returns
 * SH_ATTEST_OK, or the §3 reason with msg (may be NULL) set; an unverified result returns its
 * own reason. */
SH_ATTEST_API sh_attest_reason sh_attest_policy_check(const sh_attest_policy *policy,
                                                      const sh_attest_result *result, char *msg,
                                                      size_t msglen);
SH_ATTEST_API const uint8_t *sh_attest_policy_sha256(const sh_attest_policy *p);
SH_ATTEST_API void sh_attest_policy_free(sh_attest_policy *p);

/* Verification cache: at most max_entries results; entries expire at the earliest certificate
 * expiry or at the policy's max age.  Only verified results are stored. */
SH_ATTEST_API sh_attest_cache *sh_attest_cache_new(size_t max_entries);
SH_ATTEST_API void sh_attest_cache_free(sh_attest_cache *c);
SH_ATTEST_API size_t sh_attest_cache_size(sh_attest_cache *c);

/* Binding digest D of docs/protocol.md §1.2 (64 bytes).  Returns 0, or -1 when a length > 65535. */
SH_ATTEST_API int sh_attest_binding_digest(const uint8_t *nonce, size_t nonce_len,
                                           const uint8_t *spki, size_t spki_len, uint8_t out[64]);

/* Decode evidence given as raw bytes, hex text or base64 text (common.h's SH_B64_LENIENT:
 * standard or url alphabet, padding optional, canonical).  Whitespace (space, tab, CR, LF) is
 * ignored in text.  Hex is tried first (hex digits are base64 characters too), then base64;
 * anything else is taken as raw bytes, as given.  Returns a malloc'd buffer (caller frees) or
 * NULL when out of memory. */
SH_ATTEST_API uint8_t *sh_attest_decode_input(const uint8_t *in, size_t len, size_t *out_len);

/* DCAP collateral from `path`: a JSON-form file as is, or a directory of raw Intel PCS v4
 * responses (tcbinfo.json, qeidentity.json, rootcrl.der, pckcrl.der, tcbinfo-issuer-chain.pem,
 * qeidentity-issuer-chain.pem) converted to the JSON form.  *out is malloc'd (caller frees).
 * Returns 0, or -1 with a message. */
SH_ATTEST_API int sh_attest_collateral_read(const char *path, uint8_t **out, size_t *len,
                                            char *errbuf, size_t errlen);
/* Preloaded DCAP collateral (the JSON form, copied): for sh_attest_options.dcap_collateral.
 * Its SHA-256 is computed here, once; the first verification that uses it (without extra
 * roots) parses and verifies it and keeps the verified form (TCB info, QE identity, CRLs,
 * which CRL signatures were checked) for verification times inside its window; every quote's
 * own checks (PCK chain validity and revocation at the verification time) run every time.
 * Shareable between threads; freed by the caller after the last verification using it.
 * Returns NULL when out of memory or `len` is 0 or over 1 MiB. */
SH_ATTEST_API sh_attest_collateral *sh_attest_collateral_new(const uint8_t *json, size_t len);
SH_ATTEST_API void sh_attest_collateral_free(sh_attest_collateral *c);
SH_ATTEST_API const uint8_t *sh_attest_collateral_sha256(
    const sh_attest_collateral *c); /* 32 bytes */

/* ---- Fetching keys and collateral (fetch.c) ----
 * The one part of attest/ that uses the network (libcurl, HTTPS with verified TLS only; plain
 * http:// only for an explicitly configured *_url override whose host is loopback, e.g. a
 * caching proxy or the vsock-proxy forwarder inside a Nitro enclave).  Bounded time and size,
 * no redirects, a per-kind Content-Type check and a parse of what came back; results cached in
 * memory and on disk (cache_dir), failures negative-cached, network requests rate-limited; only
 * configured issuers and AMD products.  Offline mode reads cache_dir files only (the operator
 * provisions them; names in fetch.c).  The clock is never read here either: `now` is an input.
 * Thread-safe: one fetcher may be shared; network requests are serialised (one at a time).
 * Returned bytes belong to the caller (sh_attest_fetched_free). */
/* The URL rule of the fetcher, for every URL it requests and every configured base or
 * override (a caller checks its flags with it, so a bad one stops start-up): printable ASCII
 * (no spaces, no control bytes), at most 2047 bytes, a host, no userinfo ("user@"), a decimal
 * port if any; the scheme https://, or — only when allow_loopback_http (an explicitly
 * configured override) — http:// towards a loopback host: "localhost", an IPv4 address in
 * 127.0.0.0/8, or [::1] (a caching proxy on this host, the vsock forwarder of a Nitro
 * enclave).  Returns 1 when `url` passes, else 0. */
SH_ATTEST_API int sh_attest_url_ok(const char *url, int allow_loopback_http);

typedef struct sh_attest_fetch_issuer {
  const char *issuer;   /* exact iss, e.g. https://sharedwus.wus.attest.azure.net */
  const char *jwks_url; /* NULL: OpenID discovery (issuer/.well-known/openid-configuration) */
  /* NULL: discovery at the issuer itself; else the base URL that serves the issuer's
   * /.well-known/openid-configuration instead (a forwarder, a test server; loopback http://
   * allowed like the other overrides).  The document's "issuer" must still equal `issuer`. */
  const char *discovery_url;
} sh_attest_fetch_issuer;

typedef struct sh_attest_fetch_config {
  const char *cache_dir;     /* NULL: memory only (offline mode then has nothing) */
  int offline;               /* 1: never use the network */
  const char *ca_file;       /* TLS trust anchors (tests, private PCCS); NULL: system store */
  long timeout_ms;           /* whole request; 0: 10000 */
  size_t max_bytes;          /* response body cap; 0: 1 MiB */
  int64_t ttl;               /* seconds a success stays fresh; 0: 3600 */
  int64_t negative_ttl;      /* seconds a failure is remembered; 0: 60 */
  unsigned max_per_minute;   /* network requests per minute, all kinds; 0: 30 */
  const char *amd_kds_url;   /* NULL: https://kdsintf.amd.com */
  const char *intel_pcs_url; /* NULL: https://api.trustedservices.intel.com (PCCS: its URL) */
  const sh_attest_fetch_issuer *issuers; /* JWKS/OpenID fetches only for these */
  size_t nissuers;
  const char *const *amd_products; /* NULL: "Milan", "Genoa", "Turin" */
  size_t namd_products;
  /* seconds between two refetches of one issuer's JWKS for a kid it lacks (key rotation,
   * sh_attest_fetch_jwks_refresh); 0: SH_ATTEST_JWKS_REFRESH_INTERVAL */
  int64_t jwks_refresh_interval;
} sh_attest_fetch_config;

#define SH_ATTEST_JWKS_REFRESH_INTERVAL 60

typedef struct sh_attest_fetched {
  uint8_t *data; /* body, malloc'd (+ a NUL byte not counted in len) */
  size_t len;
  char *issuer_chain; /* Intel PCS: the PEM issuer chain header, URL-decoded; or NULL */
  int from_cache;     /* 1 memory, 2 disk, 0 network */
  int stale;          /* served from disk past its ttl because the network failed */
} sh_attest_fetched;

typedef struct sh_attest_fetch_error {
  sh_attest_reason reason; /* collateral_missing (or policy_denied: not configured) */
  char message[256];
} sh_attest_fetch_error;

typedef struct sh_attest_fetcher sh_attest_fetcher;

SH_ATTEST_API sh_attest_fetcher *sh_attest_fetcher_new(const sh_attest_fetch_config *cfg, char *err,
                                                       size_t errlen);
SH_ATTEST_API void sh_attest_fetcher_free(sh_attest_fetcher *f);
SH_ATTEST_API void sh_attest_fetched_free(sh_attest_fetched *out);
/* Each returns 0 with *out filled, or -1 with *e filled. */
SH_ATTEST_API int sh_attest_fetch_openid_config(sh_attest_fetcher *f, const char *issuer,
                                                int64_t now, sh_attest_fetched *out,
                                                sh_attest_fetch_error *e);
SH_ATTEST_API int sh_attest_fetch_jwks(sh_attest_fetcher *f, const char *issuer, int64_t now,
                                       sh_attest_fetched *out, sh_attest_fetch_error *e);
/* Key rotation: the configured issuer's JWKS again, past any cached copy (memory and disk; in
 * offline mode the cache dir's file is re-read), at most once per issuer per
 * jwks_refresh_interval, per fetcher (`now` decides, so a pinned clock never reopens the
 * window; a server has one fetcher per worker process); when
 * refused by that bound, by the negative cache or the rate limit, -1 (collateral_missing) and
 * the copy held before stays in use.  The discovery document is not refetched. */
SH_ATTEST_API int sh_attest_fetch_jwks_refresh(sh_attest_fetcher *f, const char *issuer,
                                               int64_t now, sh_attest_fetched *out,
                                               sh_attest_fetch_error *e);
/* AMD KDS: product "Milan" | "Genoa" | "Turin"; chip_id as in the report (64 bytes; Turin uses
 * the first 8); reported_tcb = REPORTED_TCB (report offset 0x180) as a little-endian u64. */
SH_ATTEST_API int sh_attest_fetch_amd_vcek(sh_attest_fetcher *f, const char *product,
                                           const uint8_t chip_id[64], uint64_t reported_tcb,
                                           int64_t now, sh_attest_fetched *out,
                                           sh_attest_fetch_error *e);
/* signer: "vcek" or "vlek".  cert_chain is PEM (ASK|ASVK then ARK); crl is DER. */
SH_ATTEST_API int sh_attest_fetch_amd_chain(sh_attest_fetcher *f, const char *product,
                                            const char *signer, int64_t now, sh_attest_fetched *out,
                                            sh_attest_fetch_error *e);
SH_ATTEST_API int sh_attest_fetch_amd_crl(sh_attest_fetcher *f, const char *product,
                                          const char *signer, int64_t now, sh_attest_fetched *out,
                                          sh_attest_fetch_error *e);
/* Intel PCS v4 / PCCS: tee "sgx" | "tdx"; fmspc 12 hex digits; ca "processor" | "platform". */
SH_ATTEST_API int sh_attest_fetch_intel_tcb(sh_attest_fetcher *f, const char *tee,
                                            const char *fmspc, int64_t now, sh_attest_fetched *out,
                                            sh_attest_fetch_error *e);
SH_ATTEST_API int sh_attest_fetch_intel_qe_identity(sh_attest_fetcher *f, const char *tee,
                                                    int64_t now, sh_attest_fetched *out,
                                                    sh_attest_fetch_error *e);
SH_ATTEST_API int sh_attest_fetch_intel_pck_crl(sh_attest_fetcher *f, const char *ca, int64_t now,
                                                sh_attest_fetched *out, sh_attest_fetch_error *e);
/* The Intel SGX Root CA CRL (DER): from Intel's certificates host by default, or
 * {pcs_url}/sgx/certification/v4/rootcacrl from a PCCS override.  Cache name
 * "intel-rootcacrl.der". */
SH_ATTEST_API int sh_attest_fetch_intel_root_crl(sh_attest_fetcher *f, int64_t now,
                                                 sh_attest_fetched *out, sh_attest_fetch_error *e);

/* ---- Verify, fetching what is missing (verify_fetch.c) ----
 * sh_attest_verify; then, only when the verdict is collateral_missing and `fetcher` is not
 * NULL, fetch what the type lacked and verify once more with it:
 *   sev-snp, azure-snp: the VCEK (by CHIP_ID and REPORTED_TCB of the SNP report; azure-snp: the
 *     one embedded in the HCL report) and the product's cert_chain from the AMD KDS, added to
 *     opts->certs;
 *   tdx, sgx, azure-tdx (only when opts carries no collateral): TCB info (the PCK's FMSPC; for
 *     azure-tdx that of the bundle's TD quote), QE identity, PCK CRL and root CA CRL from
 *     Intel PCS / a PCCS;
 *   maa, gcp (only when opts->jwks is NULL): the JWKS of `jwks_issuer` (NULL: opts->issuer, else
 *     for gcp Google's fixed issuer), which must be one of the fetcher's configured issuers.
 *     When the token's kid is not in that JWKS (root_untrusted) and the JWKS came from the
 *     cache (not from the network in this call), the issuer may have rotated its keys: the
 *     JWKS is refetched (sh_attest_fetch_jwks_refresh: at most once per issuer
 *     per jwks_refresh_interval, default 60 s) and the token verified once more; a kid still
 *     unknown, or a refetch refused by that bound, keeps root_untrusted ("kid ... is not in
 *     the configured JWKS", the message saying when the keys were last refetched).
 * A failed fetch keeps collateral_missing with "fetch failed: <why>" ("offline lookup failed"
 * in offline mode) as the message.  `now` is the fetch cache's clock (a server passes its
 * verification time).  This is the one verification call that may block on the network (up
 * to the fetcher's timeout per request, requests serialised): call it off any event loop.
 * Thread-safe; opts is only borrowed.  Returns like sh_attest_verify. */
SH_ATTEST_API int sh_attest_verify_fetching(const uint8_t *evidence, size_t len, sh_tee tee,
                                            const sh_attest_options *opts,
                                            sh_attest_fetcher *fetcher, const char *jwks_issuer,
                                            int64_t now, sh_attest_result **out);

/* ---- Nonces and session proofs (nonce.c, docs/protocol.md §1.1 and §1.4) ---- */
#define SH_ATTEST_NONCE_LEN 32
#define SH_ATTEST_NONCE_TTL 60  /* seconds ("expires_in") */
#define SH_ATTEST_SECRET_MIN 32 /* bytes of the nonce secret */
/* A fresh nonce issued at `now`.  Returns 0, or -1 (secret shorter than 32 bytes, RNG). */
SH_ATTEST_API int sh_attest_nonce_issue(const uint8_t *secret, size_t secret_len, int64_t now,
                                        uint8_t out[SH_ATTEST_NONCE_LEN]);
/* SH_ATTEST_OK when the nonce is ours (MAC, constant time) and at most ttl seconds old
 * (ttl <= 0: SH_ATTEST_NONCE_TTL); else NONCE_INVALID or NONCE_EXPIRED.  "Not consumed" is
 * the caller's shared table, checked after this.  *issued_at (optional) receives the time. */
SH_ATTEST_API sh_attest_reason sh_attest_nonce_check(const uint8_t *secret, size_t secret_len,
                                                     const uint8_t *nonce, size_t len, int64_t now,
                                                     int64_t ttl, int64_t *issued_at);
/* The session proof MAC (X-Attestation-Proof mac=): HMAC-SHA256(key, "shield-proof-v1" ‖ 0 ‖
 * decimal t ‖ 0 ‖ method ‖ 0 ‖ target ‖ 0 ‖ digest).  Returns 0 or -1. */
SH_ATTEST_API int sh_attest_proof_mac(const uint8_t key[32], int64_t t_ms, const char *method,
                                      size_t mlen, const char *target, size_t tlen,
                                      const char *digest, size_t dlen, uint8_t out[32]);
/* SHA-256 of data with a digest fetched once per process (SHA256() fetches on every call);
 * for the callers' replay and table keys.  Returns 0 or -1. */
SH_ATTEST_API int sh_attest_sha256(const void *data, size_t len, uint8_t out[32]);

/* ---- Simulated TEE (simulated.c), for development and tests only ----
 * The dev root (EC P-384 key + self-signed certificate) lives in one PEM file,
 * `dir`/simulated-root.pem (dir NULL: $XDG_DATA_HOME/shield, else ~/.local/share/shield),
 * created on first use (directory 0700, file 0600, atomically: a racing process uses the
 * winner's root).  Evidence is a Nitro-format COSE_Sign1 (protected {1: -35, 4:
 * h'shield-simulated'}), leaf signed by the dev root, cabundle [dev root], user_data = D(n, k)
 * (§1.2), nonce = n, public_key = k.  These functions read and may write files; they never
 * read the clock (`at` dates the evidence, `now` dates a dev root created on first use). */
typedef struct sh_attest_sim_params {
  const char *dir;      /* NULL: the default data directory */
  int64_t at;           /* document timestamp and leaf validity start (required) */
  int64_t now;          /* the current time: a dev root created by this call is valid for 10
                           years from it (its notBefore is 2000-01-01, so evidence for a past
                           `at` still chains); 0: `at` */
  int64_t lifetime;     /* leaf validity in seconds; 0: 3 hours */
  const uint8_t *nonce; /* n (may be NULL) */
  size_t nonce_len;
  const uint8_t *public_key; /* k, DER SPKI (may be NULL) */
  size_t public_key_len;
  int debug;               /* 1: PCR0 = zero (a debug enclave) */
  const uint8_t *pcrs[32]; /* 48-byte values overriding the defaults (NULL: default) */
} sh_attest_sim_params;

/* The dev root certificate (DER, malloc'd, caller frees).  create = 1 makes it when absent,
 * valid for 10 years from `now` (the current time, seconds since the epoch; > 0 when create).
 * Returns 0, or -1 with a message. */
SH_ATTEST_API int sh_attest_simulated_root(const char *dir, int create, int64_t now, uint8_t **der,
                                           size_t *der_len, char *err, size_t errlen);
/* Simulated evidence (malloc'd, caller frees); creates the dev root when absent.  Returns 0,
 * or -1 with a message. */
SH_ATTEST_API int sh_attest_simulated_evidence(const sh_attest_sim_params *p, uint8_t **out,
                                               size_t *out_len, char *err, size_t errlen);
/* ---- Evidence providers: the server's own TEE (provider*.c) ----
 * Evidence that THIS machine is a TEE, binding a caller's 64-byte report data D (the binding
 * digest of docs/protocol.md §1.2), in exactly the encoding sh_attest_verify accepts for the
 * type (docs/protocol.md §1.5):
 *   nitro      /dev/nsm: the NSM's COSE_Sign1 (user_data = D, nonce = n, public_key = k);
 *   sev-snp    configfs-tsm (<root>/sys/kernel/config/tsm/report), else /dev/sev-guest: the
 *              1184-byte report with REPORT_DATA = D, or, when the host supplies its certificate
 *              table, the CBOR bundle {"report", "certs": {"vcek"|"vlek", "ask", "ark"}};
 *   tdx        configfs-tsm, else /dev/tdx_guest's TDREPORT (TDX_CMD_GET_REPORT0) quoted by
 *              Intel's Quote Generation Service on the host (tdx_qgs): the TD quote with
 *              REPORT_DATA = D (neither configfs-tsm nor a reachable QGS: refused at open,
 *              naming both);
 *   sgx        Gramine's /dev/attestation pseudo-files: the DCAP quote, REPORT_DATA = D;
 *   gcp        the Confidential Space launcher's socket: the OIDC token whose eat_nonce holds
 *              base64url(D);
 *   azure-snp  the vTPM (tpm_tcti): D written to NV index 0x01400002, the HCL report read from
 *              0x01400001 once it carries D, as CBOR {"hcl_report", "vcek", "ask", "ark"} with
 *              the certificates from Azure IMDS's THIM endpoint;
 *   azure-tdx  the same HCL report (its hardware report a TDREPORT) and the TD quote IMDS's
 *              /acc/tdquote made from it: CBOR {"hcl_report", "td_quote"};
 *   simulated  sh_attest_simulated_evidence (D must be D(n, k): the simulated TEE derives it).
 * maa is a token type, not a platform: open refuses it.
 * SH_ATTEST_TEE_AUTO detects the TEE from the devices present (nitro, gcp, sgx, the Azure vTPM
 * — asked only when tpm_tcti is set or /dev/tpmrm0 exists, and taken only when it holds the
 * HCL report's index —, configfs-tsm, /dev/sev-guest, /dev/tdx_guest, in that order) and never
 * picks simulated; a TEE named explicitly that is not there fails open with a message naming
 * the missing device or path.
 * Never:  reads the clock (`at` dates simulated evidence), knows about HTTP (the launcher and
 *         Azure IMDS are spoken to through libcurl), keeps global state besides a process-wide
 *         counter that names configfs report directories.
 * Threads: sh_attest_provider_evidence may be called from many threads at once on one provider
 *         (configfs-tsm: one report directory per call; Gramine's process-wide pseudo-files and
 *         the Azure vTPM's one report-data index: serialised per provider).  Each call may
 *         block on the device or socket: call it off any event loop.
 * Memory: the provider copies the configuration's strings; evidence is malloc'd (caller frees). */
#define SH_ATTEST_TEE_AUTO SH_TEE_UNKNOWN

typedef struct sh_attest_provider sh_attest_provider;

typedef struct sh_attest_provider_config {
  sh_tee tee;                /* SH_ATTEST_TEE_AUTO: detect */
  const char *root;          /* prefix of every device and configfs path (tests); NULL: none */
  const char *simulated_dir; /* simulated: the dev root's directory (NULL: the default) */
  int64_t now; /* simulated: the current time, dating a dev root created at open (required) */
  /* gcp: the launcher's socket (NULL: <root>/run/container_launcher/teeserver.sock) and the
   * token's audience (required for gcp); the request's time limit (0: 10000 ms) */
  const char *gcp_socket;
  const char *gcp_audience;
  long gcp_timeout_ms;
  /* azure-snp, azure-tdx: the vTPM's TCTI (tpm2-tss's Tss2_TctiLdr_Initialize syntax; NULL:
   * "device:<root>/dev/tpmrm0"; tests: "swtpm:host=127.0.0.1,port=N"), the Azure IMDS base
   * URL (NULL: "http://169.254.169.254"; THIM and the TD quote are fetched from it), the time
   * limit of each IMDS request (0: 10000 ms) and how long the HCL report may take to carry D
   * after it is written (0: 3000 ms, the wait of Azure's own tooling). */
  const char *tpm_tcti;
  const char *azure_imds_url;
  long azure_timeout_ms;
  long azure_report_wait_ms;
  /* tdx without configfs-tsm: the Quote Generation Service's address, "vsock:CID:PORT" (NULL:
   * "vsock:2:4050", the host's QGS), "unix:PATH" or "tcp:HOST:PORT", and the time limit of a
   * quote request (0: 30000 ms). */
  const char *tdx_qgs;
  long tdx_qgs_timeout_ms;
  /* Seams for tests; NULL: the system call.  ioctl drives /dev/nsm, /dev/sev-guest,
   * /dev/tdx_guest; tsm_mkdir
   * and tsm_rmdir stand in for configfs, which makes a report's attribute files on mkdir and
   * drops them on rmdir (a plain directory tree does neither).  Each returns 0 or -1 with
   * errno set, like the call it replaces; ctx is passed to each. */
  int (*ioctl)(void *ctx, int fd, unsigned long req, void *arg);
  int (*tsm_mkdir)(void *ctx, const char *path);
  int (*tsm_rmdir)(void *ctx, const char *path);
  void *ctx;
} sh_attest_provider_config;

/* Detects or checks the TEE.  Returns 0 and *out, or -1 with the reason in err (the TEE
 * absent, its device unusable, a required setting missing). */
SH_ATTEST_API int sh_attest_provider_open(const sh_attest_provider_config *cfg,
                                          sh_attest_provider **out, char *err, size_t errlen);
/* Fresh evidence binding D (64 bytes).  nonce (n) and public_key (k) go into the document
 * itself for nitro and simulated (each at most 1024 bytes; may be NULL), and are ignored by
 * the other types, whose evidence holds only D.  at: seconds since the epoch (simulated only;
 * the others are dated by the TEE).  Returns 0 with *out (malloc'd) and *len, or -1 with err. */
SH_ATTEST_API int sh_attest_provider_evidence(sh_attest_provider *p, const uint8_t D[64],
                                              const uint8_t *nonce, size_t nonce_len,
                                              const uint8_t *public_key, size_t public_key_len,
                                              int64_t at, uint8_t **out, size_t *len, char *err,
                                              size_t errlen);
/* The TEE type of the evidence (never SH_ATTEST_TEE_AUTO). */
SH_ATTEST_API sh_tee sh_attest_provider_tee(const sh_attest_provider *p);
/* Where the evidence comes from: "configfs-tsm", "/dev/sev-guest", "/dev/tdx_guest" (with the
 * QGS), "/dev/nsm", "/dev/attestation", "teeserver.sock", "vtpm", "simulated" (static
 * string). */
SH_ATTEST_API const char *sh_attest_provider_source(const sh_attest_provider *p);
SH_ATTEST_API void sh_attest_provider_free(sh_attest_provider *p);

#ifdef __cplusplus
}
#endif
#endif
