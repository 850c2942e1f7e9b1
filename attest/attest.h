/*
 * attest/attest.h — native verification of TEE attestation evidence (the one public header).
 *
 * Owns:   evidence formats (AWS Nitro COSE_Sign1/CBOR, AMD SEV-SNP reports, Azure CVM HCL
 *         reports), X.509 chains to pinned root fingerprints, the binding digest
 *         (protocol.md §1.2), policy (a JSON file, format in policy.c), a bounded verification
 *         cache, and the `shield verify` command.
 * Never:  reads the clock (the verification time is always an explicit input), fetches
 *         anything from the network, knows about HTTP or Python, keeps global mutable state,
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
 * outcome carries exactly one reason code (protocol.md §3).  Checks run cheapest first:
 * size caps, structure, binding, root fingerprint, signatures, policy (protocol.md §1.6).
 */
#ifndef SHIELD_ATTEST_H
#define SHIELD_ATTEST_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sh_attest_tee {
    SH_ATTEST_TEE_UNKNOWN = 0,
    SH_ATTEST_TEE_NITRO,
    SH_ATTEST_TEE_SEV_SNP,
    SH_ATTEST_TEE_AZURE_SNP,
} sh_attest_tee;

/* Reason codes of protocol.md §3 (SH_ATTEST_OK: verified). */
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

/* A borrowed byte range (never NUL-terminated by contract). */
typedef struct sh_attest_bytes {
    const uint8_t *ptr;
    size_t len;
} sh_attest_bytes;

typedef struct sh_attest_policy sh_attest_policy; /* immutable once loaded */
typedef struct sh_attest_cache sh_attest_cache;   /* thread-safe, bounded */

typedef struct sh_attest_options {
    int64_t at;                       /* verification time, seconds since the epoch (required) */
    const sh_attest_policy *policy;   /* NULL: the built-in "production" policy */
    const sh_attest_bytes *certs;     /* extra certificates, PEM or DER, bundles allowed */
    size_t ncerts;                    /*   (SNP VCEK/VLEK, ASK/ASVK, ARK) */
    const uint8_t *nonce;             /* NULL: freshness not checked here (see policy.c) */
    size_t nonce_len;
    const uint8_t *public_key;        /* DER SPKI bound with the nonce (k of §1.2); NULL: k empty */
    size_t public_key_len;
    int allow_debug;                  /* 1: debug TEEs pass whatever the policy says (dev only) */
    /* Extra trust anchors (PEM/DER), used ONLY when given: for test CAs and simulated TEEs.
     * Results verified through them are never cached. */
    const sh_attest_bytes *extra_roots;
    size_t nextra_roots;
    sh_attest_cache *cache;           /* NULL: no cache */
} sh_attest_options;

typedef struct sh_attest_result {
    int verified;                 /* 1 only when every check, the policy included, passed */
    sh_attest_tee tee;
    sh_attest_reason reason;      /* SH_ATTEST_OK when verified */
    char message[256];            /* human-readable detail, "" when verified */
    double timestamp;             /* the verification time (options.at) */
    int debug;                    /* evidence comes from a debug TEE */
    int cache_hit;                /* served from the verification cache */
    const char *tcb_status;       /* static string or NULL */
    json_t *measurements;         /* object: name -> lower-case hex */
    json_t *claims;               /* object */
    json_t *advisories;           /* array of strings */
    uint8_t *public_key;          /* NULL when absent */
    size_t public_key_len;
    uint8_t *user_data;
    size_t user_data_len;
    uint8_t *nonce;
    size_t nonce_len;
    uint8_t evidence_sha256[32];  /* SHA-256 of the signed content (replay key, §1.3) */
    int has_evidence_sha256;
    uint8_t *raw_evidence;        /* copy of the evidence bytes as given */
    size_t raw_evidence_len;
    uint8_t policy_sha256[32];
} sh_attest_result;

/* Verify `evidence` of type `tee`.  Returns 0 and *out (never NULL on success) whatever the
 * verdict (read (*out)->verified); returns -1 only when out of memory or `opts` is unusable
 * (opts->at <= 0), with *out NULL. */
int sh_attest_verify(const uint8_t *evidence, size_t len, sh_attest_tee tee,
                     const sh_attest_options *opts, sh_attest_result **out);
void sh_attest_result_free(sh_attest_result *r);

/* "nitro", "sev-snp", "azure-snp" (and the aliases of protocol.md §0) -> tee, or UNKNOWN. */
sh_attest_tee sh_attest_tee_from_name(const char *name);
const char *sh_attest_tee_name(sh_attest_tee tee);
const char *sh_attest_reason_name(sh_attest_reason r);   /* "signature_invalid", NULL for OK */
const char *sh_attest_reason_class(sh_attest_reason r);  /* "attestation_failed", NULL for OK */

/* Result as JSON: {"verified", "reason", "tee_type", "measurements", "claims", "debug",
 * "tcb_status", "advisories", ...}.  `full` adds message, timestamp, hex byte fields and
 * policy_sha256.  New reference. */
json_t *sh_attest_result_to_json(const sh_attest_result *r, int full);

/* Policy (format documented at the top of policy.c).  Returns 0, or -1 with a message. */
int sh_attest_policy_load(const char *json_text, size_t len, sh_attest_policy **out,
                          char *errbuf, size_t errlen);
int sh_attest_policy_load_file(const char *path, sh_attest_policy **out, char *errbuf,
                               size_t errlen);
sh_attest_policy *sh_attest_policy_production(void); /* new copy of the built-in default */
const uint8_t *sh_attest_policy_sha256(const sh_attest_policy *p);
void sh_attest_policy_free(sh_attest_policy *p);

/* Verification cache: at most max_entries results; entries expire at the earliest certificate
 * expiry or at the policy's max age.  Only verified results are stored. */
sh_attest_cache *sh_attest_cache_new(size_t max_entries);
void sh_attest_cache_free(sh_attest_cache *c);
size_t sh_attest_cache_size(sh_attest_cache *c);

/* Binding digest D of protocol.md §1.2 (64 bytes).  Returns 0, or -1 when a length > 65535. */
int sh_attest_binding_digest(const uint8_t *nonce, size_t nonce_len, const uint8_t *spki,
                             size_t spki_len, uint8_t out[64]);

/* Decode evidence given as raw bytes, base64 (standard or url, padding optional) or hex text.
 * Text is recognised only when every byte is in the alphabet (whitespace ignored).  Returns a
 * malloc'd buffer (caller frees) or NULL when out of memory. */
uint8_t *sh_attest_decode_input(const uint8_t *in, size_t len, size_t *out_len);

/* `shield verify ...` (argv[0] == "verify").  Returns the exit code: 0 verified, 1 rejected,
 * 2 usage error. */
int sh_attest_cli_verify(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
