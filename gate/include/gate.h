/*
 * gate/include/gate.h — client attestation verified before the app runs (docs/protocol.md §1-§3),
 * and the server's proof of its own TEE (§4); the one public header of gate/.
 *
 * What this module owns
 *   A handler (server.h's sh_handler) that wraps another one (pyshim's bridge, or any C
 *   handler): it answers the well-known endpoints (GET /.well-known/shield/nonce, POST
 *   /.well-known/shield/attest), verifies the evidence a request presents (header, session
 *   and mutual-TLS modes) with attest/ on a bounded pool of threads of its own, keeps
 *   consumed nonces and sessions in a state store (the server's shared-memory table, or Redis
 *   for several replicas), answers every refusal with the §3 JSON, and hands each accepted
 *   request on to the wrapped handler with the verified result attached
 *   (sh_gate_request_attestation).  With --tee, the server's own TEE (server_evidence.c): the
 *   evidence provider, GET /.well-known/shield/attestation?nonce=, the health endpoint and the
 *   X-Server-Attestation response headers (through sh_server_set_response_headers); with
 *   --tee alone (no --attest-types) every other request is handed on unverified, with no
 *   attestation attached.  Its configuration (sh_gate_config: the `--attest-*` and `--tee`
 *   flags, which cli/ parses) and that configuration's validation.
 *
 * What it never does
 *   Include Python.h, or use anything of the server but server.h (no private structure, no
 *   libuv handle of the server's: completions come back through sh_server_post).
 *
 * Threads
 *   sh_gate_config_*, sh_gate_check_types, sh_gate_new and sh_gate_free: main thread.  The
 *   handler's callbacks run on the server's I/O thread, like any handler's; verification (and,
 *   with Redis, every state-store round trip) and the server's own evidence run on the gate's
 *   own pool threads, never on the I/O thread (sh_gate_new makes the first evidence on the
 *   calling thread).  sh_gate_request_attestation: any thread, while the request is held.
 *
 * Memory and ownership
 *   sh_gate_new copies the config struct; the strings it points to (file names, URLs, the
 *   exclude list, the simulated root) are borrowed and must outlive the gate (argv does).
 *   A gate serves one server at a time.  Several gates may exist in one process (each with
 *   its own pool, sessions and state), but not two on the same server.
 *
 * Lifetime
 *   sh_gate_new -> sh_server_new(cfg, sh_gate_handler(g), ...) -> sh_server_run (the gate
 *   learns the server in on_start) -> sh_server_run returns -> sh_gate_free (joins the pool:
 *   its threads post to the server) -> sh_server_free.
 */
#ifndef SHIELD_GATE_H
#define SHIELD_GATE_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sh_attest_result;

/*
 * The gate's configuration: the `--attest-*` flags (the flag names in comments; error
 * messages name the flags), plus a few fields only a program or a test sets.
 * sh_gate_config_init fills the defaults.
 */
typedef struct sh_gate_config {
  const char *types;       /* --attest-types nitro,sev-snp,... (docs/protocol.md §0 names) */
  const char *policy;      /* --attest-policy FILE (NULL: the built-in production policy) */
  int required;            /* --attest-required: 401 missing without evidence */
  const char *exclude[16]; /* --attest-exclude PATH (path prefixes), NULL-terminated */
  int num_exclude;
  int trust_simulated;   /* --trust-simulated (docs/protocol.md §1.7) */
  int dev;               /* --dev: allows the debugging aids below */
  int64_t clock;         /* --attest-clock RFC3339 (--dev only; 0 = the real clock) */
  const char *state_url; /* --state-url redis://… | unix://… (NULL: the shared table) */
  /* what verification needs at run time (verifier.c; refused at start-up when missing) */
  const char *maa_issuer;        /* --attest-maa-issuer URL (required with maa) */
  const char *maa_audience;      /* --attest-maa-audience VALUE */
  const char *maa_jwks;          /* --attest-maa-jwks FILE */
  const char *maa_jwks_url;      /* --attest-maa-jwks-url URL */
  const char *maa_discovery_url; /* --attest-maa-discovery-url URL */
  const char *gcp_audience;      /* --attest-gcp-audience VALUE (required with gcp) */
  const char *gcp_jwks;          /* --attest-gcp-jwks FILE */
  const char *gcp_jwks_url;      /* --attest-gcp-jwks-url URL */
  const char *gcp_discovery_url; /* --attest-gcp-discovery-url URL */
  const char *jwks_url;          /* --jwks-url URL: the JWKS URL of the one token type on */
  const char *collateral;        /* --attest-collateral FILE|DIR (tdx, sgx, azure-tdx) */
  int fetch;                     /* --attest-fetch: fetch what is missing, cached */
  int offline;                   /* --attest-offline: --attest-cache-dir files only */
  const char *cache_dir;         /* --attest-cache-dir DIR (NULL: memory only) */
  const char *fetch_timeout;     /* --attest-fetch-timeout S, as given (NULL: 10 s) */
  const char *kds_url;           /* --kds-url URL (AMD KDS) */
  const char *pcs_url;           /* --pcs-url URL (Intel PCS or a PCCS) */
  const char *fetch_ca;          /* --fetch-ca FILE (extra TLS anchors for fetching) */
  int client_vcek;               /* --attest-client-vcek (sev-snp/azure-snp) */

  /* The server's own TEE (docs/protocol.md §4): the evidence provider (attest.h) behind GET
   * /.well-known/shield/attestation, the health endpoint, the response headers and the
   * attested TLS certificate.  NULL tee: the server proves nothing (those are off). */
  const char *tee;               /* --tee nitro|sev-snp|tdx|sgx|azure-snp|azure-tdx|gcp|
                                    simulated|auto */
  const char *tee_gcp_audience;  /* --tee-gcp-audience VALUE (the launcher token's aud) */
  const char *health_path;       /* --health-path PATH (NULL: /.well-known/shield/health) */
  int attach_server_attestation; /* --attach-server-attestation */
  int tls_attested;              /* --tls-attested: self-signed certificate with evidence */
  const char *tls_attested_ttl;  /* --tls-attested-ttl S, as given (NULL: 3600) */
  /* Not a flag: seconds the cached evidence of the health endpoint and the response headers
   * is served (0: 300), refreshed from 80 % of it on; --dev only ($SHIELD_TEE_MAX_AGE), for
   * tests of the refresh. */
  int64_t tee_max_age;

  /* Not flags. */
  size_t state_table_size; /* entries of the gate's own table, used when the server has no
                              shared one (no supervisor); default 65536 */
  int pool_threads;        /* verification threads (default 4) */
  int max_pending;         /* verifications queued or running at once (default 64) ... */
  int max_per_client;      /*   ... and from one client address (default 16); 503 beyond */
  /* The dev root simulated evidence must chain to (PEM or DER, borrowed), when
   * trust_simulated; NULL: the one in the user's data directory (attest.h, simulated.c). */
  const uint8_t *simulated_root;
  size_t simulated_root_len;
  /* Tests of the caps: every verification is delayed this long (--dev only, from
   * $SHIELD_ATTEST_VERIFY_DELAY_MS), and on_verify (if set) is called on the pool thread
   * before each verification (it may block, holding that thread). */
  long verify_delay_ms;
  void (*on_verify)(void *arg);
  void *on_verify_arg;
} sh_gate_config;

void sh_gate_config_init(sh_gate_config *gc);

/*
 * Start-up validation: refuses, naming the flag, a configuration that is malformed (a URL,
 * an unreadable or non-JSON file, a bad timeout), inconsistent (a per-type flag without its
 * type, --attest-clock without --dev) or that could never verify one of its accepted types
 * (naming the flag to add); with --tee, opens the evidence provider once: a TEE that is not
 * there is refused naming its missing device.  types and tee NULL with no other attestation
 * setting is valid (no gate).  May create --attest-cache-dir (and, for --tee simulated, the
 * dev root of the user's data directory).  0, or SH_EINVAL with err set.  Main thread.
 */
int sh_gate_config_check(const sh_gate_config *gc, sh_error *err);

/*
 * --attest-types alone (the command line checks it as soon as it is read): a comma list of
 * docs/protocol.md §0 names the gate accepts.  0, or SH_EINVAL with err naming the flag and
 * the accepted names.  sh_gate_config_check checks it again with everything else.
 */
int sh_gate_check_types(const char *list, sh_error *err);

typedef struct sh_gate sh_gate;

/*
 * A gate in front of `inner` (borrowed; it must outlive the gate).  Validates the config
 * (sh_gate_config_check; gc->types or gc->tee is required), loads the policy, reads the keys
 * and collateral, reaches Redis when configured, with --tee opens the provider and makes the
 * first cached evidence (a TEE that cannot produce it fails here), starts the pool.  NULL with
 * err set.
 */
sh_gate *sh_gate_new(const sh_gate_config *gc, sh_handler *inner, sh_error *err);
/* The handler to give the server (valid until sh_gate_free). */
sh_handler *sh_gate_handler(sh_gate *g);
/* After sh_server_run returned, before sh_server_free: stop and join the pool, free the
 * gate and whatever it still held.  NULL is a no-op. */
void sh_gate_free(sh_gate *g);

/*
 * What the wrapped handler reads: for a request the gate handed on, the attestation it
 * carried; NULL for a request that did not come through a gate.  Valid (any thread) until
 * the request is released.
 */
typedef struct sh_gate_attestation {
  const struct sh_attest_result *result; /* verified result; NULL: no evidence (optional) */
  const char *mode;                      /* "header" | "session" | "mtls", NULL without a result */
  const char *session;                   /* session mode: the session id, else NULL */
  const char *policy_sha256; /* lower-case hex SHA-256 of the gate's policy, always set: the
                                scope marker extensions["shield.attestation"] */
} sh_gate_attestation;

const sh_gate_attestation *sh_gate_request_attestation(const sh_request *req);

/*
 * Attested TLS (--tls-attested, docs/protocol.md §4; attested_tls.c).  A P-256 key generated
 * in this process (never written anywhere) and self-signed certificates for it that carry the
 * TEE's evidence in the non-critical extension SH_GATE_TLS_EVIDENCE_OID, bound with n = 32
 * zero bytes and k = the §4 binding CBOR of the key's SPKI.  The server serves them from
 * memory: cli/ puts the key and sh_gate_attested_tls_issue into sh_config (ssl_key,
 * ssl_issue, ssl_reissue_every = the ttl) and the supervisor re-issues (server.h).
 *   _ttl     --tls-attested-ttl checked: a whole number of seconds, 1..SH_GATE_TLS_TTL_MAX
 *            (NULL: 3600); SH_EINVAL naming the flag.
 *   _new     checks the settings (--tee required), opens the evidence provider (attest.h;
 *            `now` dates a simulated dev root made on first use) and generates the key.
 *            Main thread, before workers fork.
 *   _issue   a new certificate (PEM, *pem malloc'd): fresh evidence, notBefore now, notAfter
 *            now + ttl + SH_GATE_TLS_MARGIN.  May block on the TEE: never on an I/O thread.
 *            _issue_at takes the time (tests); _issue has sh_config.ssl_issue's signature.
 *   _extension  the extension's CBOR (the extnValue's content), for tests and other issuers.
 * Returns 0, or a negative code with err set (the flag or the TEE named).
 */
#define SH_GATE_TLS_EVIDENCE_OID "2.23.133.5.4.9"
#define SH_GATE_TLS_MARGIN 300    /* seconds a certificate outlives its re-issue */
#define SH_GATE_TLS_TTL_MAX 10500 /* + margin = 3 h, the life of nitro/simulated evidence */
typedef struct sh_gate_attested_tls sh_gate_attested_tls;
int sh_gate_attested_tls_ttl(const sh_gate_config *gc, int64_t *ttl, sh_error *err);
int sh_gate_attested_tls_new(const sh_gate_config *gc, int64_t now, sh_gate_attested_tls **out,
                             sh_error *err);
struct evp_pkey_st *sh_gate_attested_tls_key(const sh_gate_attested_tls *a);
int64_t sh_gate_attested_tls_every(const sh_gate_attested_tls *a);   /* the ttl, seconds */
const char *sh_gate_attested_tls_tee(const sh_gate_attested_tls *a); /* "simulated" */
int sh_gate_attested_tls_issue(void *a, char **pem, size_t *pem_len, sh_error *err);
int sh_gate_attested_tls_issue_at(sh_gate_attested_tls *a, int64_t now, char **pem, size_t *pem_len,
                                  sh_error *err);
int sh_gate_attested_tls_extension(const char *tee_name, const uint8_t *evidence,
                                   size_t evidence_len, const uint8_t *binding, size_t binding_len,
                                   int64_t issued_at, uint8_t **out,
                                   size_t *out_len); /* 0, or -1 out of memory */
void sh_gate_attested_tls_free(sh_gate_attested_tls *a);

#ifdef __cplusplus
}
#endif
#endif /* SHIELD_GATE_H */
