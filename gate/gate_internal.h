/*
 * gate/gate_internal.h — private to gate/: the gate object, the per-request state, and the
 * functions the files of gate/ share (prefix sh_gate__).
 *
 * Files (one concern each):
 *   gate.c      the handler: routing of the well-known endpoints, forwarding, lifetime
 *   nonce.c     GET /.well-known/shield/nonce and the presented nonce's checks (§1.1)
 *   header.c    header mode (§1.4, 1) and the presented type and evidence
 *   establish.c POST /.well-known/shield/attest: a session (§1.4, 2) or mutual TLS (§1.4, 3)
 *   session.c   requests of a session: proof, Content-Digest, the sessions' results
 *   mtls.c      the mutual-TLS identity of a connection and its requests
 *   pool.c      the bounded verification pool, its caps, completions
 *   state.h     the state store (consumed nonces, sessions): state_shm.c, state_redis.c
 *   reply.c     §3 replies from one table
 *   verifier.c  keys, collateral and the fetcher of what verification needs
 *   config.c    sh_gate_config defaults and start-up validation
 *
 * Threads: everything in struct sh_gate is I/O-thread only unless it says otherwise; the
 * pool's queues are under pool.mu; a job (gate_req) on the pool is touched only by the pool
 * thread that took it until it comes back (pool.c).
 */
#ifndef SHIELD_GATE_INTERNAL_H
#define SHIELD_GATE_INTERNAL_H

#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>

#include "attest.h"
#include "crypto.h"
#include "gate.h"
#include "server.h"
#include "state.h"

#define SH_GATE_NONCE_PATH "/.well-known/shield/nonce"
#define SH_GATE_ATTEST_PATH "/.well-known/shield/attest"
#define SH_GATE_MAX_EVIDENCE_HEADER (64 * 1024)
#define SH_GATE_MAX_ATTEST_BODY (256 * 1024)
#define SH_GATE_MAX_STATE_PENDING 1024 /* session requests waiting on Redis, per gate */
#define SH_GATE_SESSION_TTL 3600
#define SH_GATE_PROOF_WINDOW_MS 60000
#define SH_GATE_MAX_SESSIONS 16384 /* results cached by one gate */
#define SH_GATE_RESULT_MAX (32 * 1024)

/* K_EVIDENCE: GET /.well-known/shield/attestation; K_HEALTH: a health request waiting for the
 * cached evidence; K_REFRESH: the cache's refresh (no request).  server_evidence.c. */
enum { K_PLAIN = 0, K_HEADER, K_ESTABLISH, K_SESSION, K_MTLS, K_EVIDENCE, K_HEALTH, K_REFRESH };

/* Outcomes of the state-store step of a job (gate_req.state). */
enum {
  ST_NONE = 0,
  ST_OK,
  ST_REPLAYED,
  ST_STORE,
  ST_SEAL,
  ST_UNKNOWN,
  ST_EXPIRED,
  ST_STALE,
  ST_BADMAC,
  ST_PROOF
};

typedef struct sh_gate__sess sess;

/* A request the gate holds state for (in its extension slot). */
typedef struct gate_req {
  sh_gate_attestation pub; /* first: the slot's readers see this (sh_gate_request_attestation) */
  struct sh_gate *g;
  sh_request *req;
  struct gate_req *live_prev, *live_next; /* the gate's live list (sh_gate_free) */
  struct gate_req *next;                  /* pool queue / done list */
  int kind;                               /* K_* */
  uint8_t *evidence;
  size_t evidence_len;
  sh_tee tee;
  uint8_t nonce[SH_ATTEST_NONCE_LEN];
  int64_t nonce_issued;
  int64_t at;
  sh_attest_result *result; /* from the pool */
  double seconds;           /* how long the verification took */
  char client[64];
  unsigned disconnected : 1;
  unsigned timestamp : 1; /* no nonce: timestamp freshness (§1.3), replay by content */
  unsigned pending : 1;   /* on the pool */
  unsigned answered : 1;  /* the gate answered (and released) it */
  unsigned inner_disconnected : 1;
  unsigned digest_failed : 1;
  unsigned discard : 1; /* K_ESTABLISH over the size limit: the rest is dropped */
  unsigned mtls : 1;    /* K_ESTABLISH: k is the TLS client certificate's key */
  unsigned has_digest : 1;
  char mtls_id[72]; /* its connection key ("m:" + hex) */
  char *body;       /* K_ESTABLISH: the JSON body so far */
  size_t body_len, body_cap;
  uint8_t *pk; /* K_ESTABLISH: k, DER SPKI */
  size_t pk_len;
  sh_iovec certs[3]; /* K_ESTABLISH: "certs" of the body (each ptr owned) */
  size_t ncerts;
  EVP_MD_CTX *md; /* K_SESSION with Content-Digest: the body's running hash */
  uint8_t want_digest[64];
  size_t want_len;
  sess *sess; /* K_SESSION, K_MTLS: the session's cached result (a reference) */
  /* the state-store step (on the pool with Redis): its outcome for the I/O thread */
  int state;           /* ST_* */
  char state_msg[160]; /* ST_STORE: why */
  char sid[40];        /* K_ESTABLISH: the new session; K_SESSION: the presented one */
  const char *alg;     /* K_ESTABLISH: the session key sealed to k on the pool */
  uint8_t enc[SH_HPKE_ENC_LEN];
  size_t enc_len;
  uint8_t *ct;
  size_t ct_len;
  int64_t proof_t; /* K_SESSION: the proof */
  uint8_t proof_mac[32];
  char *mac_input; /* method, target, Content-Digest (copies) */
  size_t method_len, target_len, digest_len;
  const char *proof_error; /* the proof's own fault, answered once the session is known */
  int need_result;         /* this gate has no cached result for the session */
  char *result_json;       /* ... then the session's result as stored */
  uint8_t sess_tee;
  int64_t sess_expires;
  struct sh_gate__evjob *ev; /* K_EVIDENCE, K_REFRESH: the evidence job (server_evidence.c) */
} gate_req;

typedef struct client_count {
  char host[64];
  int n;
} client_count;

#define SH_GATE_SESS_BUCKETS 256
#define SH_GATE_TEE_SLOTS SH_TEE_COUNT_

typedef struct sh_gate__verifier sh_gate__verifier;
typedef struct sh_gate__tee sh_gate__tee;

struct sh_gate {
  sh_handler h; /* what the server calls (h.data = the gate) */
  sh_handler *inner;
  sh_gate_config cfg; /* a copy; its strings are borrowed */
  unsigned types;     /* bit per sh_tee */
  sh_attest_policy *policy;
  char policy_hex[65];
  sh_attest_cache *cache;
  int timestamp_ok; /* the policy says "freshness": "timestamp" */
  int unfresh_ok;   /* "freshness": "none" + "allow_unfresh" (development, §1.3) */
  int64_t max_age;
  sh_gate__verifier *verifier;
  sh_iovec simulated_root;
  sh_gate_attestation plain; /* the slot of a request handed on without evidence */

  /* state: the store, the table and the secret, resolved in on_start */
  sh_server *srv;
  gate_store *store;
  sh_shm_table *own_table; /* without a server's shared table (no supervisor) */
  uint8_t own_secret[32];
  const uint8_t *secret;
  size_t secret_len;

  /* the pool (pool.c) */
  struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gate_req *qhead, *qtail;   /* to verify */
    gate_req *sqhead, *sqtail; /* Redis state checks of session requests (served first) */
    gate_req *done;            /* back to the I/O thread */
    int post_pending;          /* a sh_server_post of on_done is on its way */
    int stopping;
    pthread_t *threads;
    int nthreads;
  } pool;
  int pending;           /* I/O thread: verifications queued or running */
  int state_pending;     /* session requests waiting on Redis */
  client_count *clients; /* max_pending entries */

  /* sessions' cached results (session.c) and mutual TLS (mtls.c) */
  sess *sess_buckets[SH_GATE_SESS_BUCKETS];
  size_t sess_n;
  int mtls_count; /* attested connections ever: skips the lookup while none */

  /* metrics ids, looked up once per label set (pool.c) */
  int metric_ids[SH_GATE_TEE_SLOTS][2][SH_ATTEST_REASON_COUNT_];
  int metric_hist;

  gate_req live; /* sentinel of the live list */

  /* the server's own TEE (server_evidence.c), NULL without --tee */
  sh_gate__tee *tee;
  /* without --attest-types (--tee alone): the slot of a request handed on, which carries no
   * attestation and no policy marker (sh_gate_request_attestation: NULL) */
  sh_gate_attestation passthru;
};
typedef struct sh_gate sh_gate;

/* ---- gate.c ---- */
gate_req *sh_gate__attach(sh_gate *g, sh_request *req); /* NULL: failed and released */
gate_req *sh_gate__req_of(const sh_gate *g, const sh_request *req);
void sh_gate__forward(sh_gate *g, sh_request *req, gate_req *gr);
int64_t sh_gate__now(const sh_gate *g);
int64_t sh_gate__now_ms(const sh_gate *g);
void sh_gate__fail(sh_request *req); /* 500, and release */

/* ---- reply.c ---- */
/* Answer the §3 error of `reason` and drop the request (the inner handler never sees it). */
void sh_gate__refuse(sh_gate *g, sh_request *req, sh_attest_reason reason, const char *message);
/* The §3 body with an explicit status (400 for the attestation endpoint's malformed nonce) and,
 * for overloaded, Retry-After: retry_after seconds; drops req. */
void sh_gate__send_error(sh_gate *g, sh_request *req, int status, sh_attest_reason reason,
                         const char *message, int retry_after);
/* Answer a JSON success (never cached) or, with `allow`, a 405; steals body; drops req. */
void sh_gate__send_json(sh_gate *g, sh_request *req, int status, json_t *body, const char *allow);
/* The §3 body of a refusal (malloc'd text, caller frees), or NULL. */
char *sh_gate__error_body(sh_attest_reason reason, const char *message);

/* ---- nonce.c ---- */
void sh_gate__nonce_endpoint(sh_gate *g, sh_request *req);
/* The presented nonce: ours, not expired, not consumed (table).  0, or -1 (answered). */
int sh_gate__check_nonce(sh_gate *g, sh_request *req, const char *s, size_t len,
                         uint8_t out[SH_ATTEST_NONCE_LEN], int64_t *issued);

/* ---- header.c ---- */
void sh_gate__header_mode(sh_gate *g, sh_request *req, const sh_iovec *token);
/* X-Attestation-Type / "type" -> an accepted type, or UNKNOWN (answered). */
sh_tee sh_gate__check_type(sh_gate *g, sh_request *req, const char *s, size_t len);
/* Evidence as sent -> bytes: JWT types as is, binary types base64/base64url.  NULL: bad. */
uint8_t *sh_gate__decode_evidence(sh_tee tee, const char *s, size_t len, size_t *out_len);

/* ---- establish.c ---- */
void sh_gate__establish_start(sh_gate *g, sh_request *req);
void sh_gate__establish_body(sh_gate *g, sh_request *req, gate_req *gr, char *chunk, size_t len,
                             int last);
/* Pool thread, after a verified establishment: seal a session key to k (0, or -1). */
int sh_gate__seal_session_key(gate_req *j, uint8_t skey[32]);
/* Pool thread: store the new session with its key and result (0, or -1 with j->state_msg). */
int sh_gate__store_session(sh_gate *g, gate_req *j, const uint8_t skey[32]);
/* I/O thread: the verified establishment's answer. */
void sh_gate__establish_done(sh_gate *g, sh_request *req, gate_req *gr, sh_attest_result *r);

/* ---- session.c ---- */
struct sh_gate__sess {
  struct sh_gate__sess *next;
  char sid[72]; /* session id, or "m:" + hex of the mutual-TLS connection key */
  char *tcb;    /* tcb_status of a result loaded from the store (owned) */
  sh_attest_result *r;
  int64_t expires;
  int refs; /* 1 for the cache + 1 per request handed on with it */
};
sess *sh_gate__sess_find(sh_gate *g, const char *sid, int64_t now);
sess *sh_gate__sess_add(sh_gate *g, const char *sid, sh_attest_result *r, int64_t expires);
void sh_gate__sess_unref(sess *s);
void sh_gate__sess_free_all(sh_gate *g);
/* What later requests see of a result: no per-establishment bytes. */
void sh_gate__strip_result(sh_attest_result *r);
char *sh_gate__result_to_json(const sh_attest_result *r);
void sh_gate__session_mode(sh_gate *g, sh_request *req, const sh_iovec *sid);
/* Any thread: the session record, the proof MAC and time through the store (j->state). */
void sh_gate__session_check(sh_gate *g, gate_req *j);
/* I/O thread: answer a failed check, or hand the request on with the session's result. */
void sh_gate__session_checked(sh_gate *g, sh_request *req, gate_req *gr);
/* A body chunk of a session request with Content-Digest; 1 when consumed here. */
int sh_gate__session_body(sh_gate *g, sh_request *req, gate_req *gr, char *chunk, size_t len,
                          int last);

/* ---- mtls.c ---- */
/* The mutual-TLS key of the request's connection ("m:" + hex): 0, or -1 (no verified client
 * certificate). */
int sh_gate__mtls_id(const sh_request *req, char out[72]);
/* A request on a connection attested by mutual TLS: handed on (1), or 0 (not one). */
int sh_gate__mtls_request(sh_gate *g, sh_request *req);

/* ---- pool.c ---- */
int sh_gate__pool_start(sh_gate *g, sh_error *err);
void sh_gate__pool_stop(sh_gate *g);
/* Queue a verification within the caps (0), or answer 503 and return -1 (gr may be gone). */
int sh_gate__enqueue(sh_gate *g, sh_request *req, gate_req *gr);
/* Queue a job that answers no request (the evidence cache's refresh): never refused. */
void sh_gate__enqueue_refresh(sh_gate *g, gate_req *gr);
/* Queue a session request's Redis checks (0), or answer 503 and return -1. */
int sh_gate__enqueue_state(sh_gate *g, sh_request *req, gate_req *gr);
/* Answer the state step's failure as §3 says: 1 when it answered. */
int sh_gate__state_failed(sh_gate *g, sh_request *req, const gate_req *gr);

/* ---- verifier.c ---- */
sh_gate__verifier *sh_gate__verifier_new(const sh_gate_config *gc, unsigned types, sh_error *err);
void sh_gate__verifier_free(sh_gate__verifier *v);
/* Pool threads: sets o's keys, issuer, audience, collateral for tee, then verifies,
 * fetching what is missing.  Returns like sh_attest_verify. */
int sh_gate__verify(const sh_gate__verifier *v, const uint8_t *ev, size_t len, sh_tee tee,
                    sh_attest_options *o, sh_attest_result **out);

/* ---- server_evidence.c: the server's own TEE (docs/protocol.md §4) ---- */
/* Start-up checks of --tee and its flags, the provider opened once (the TEE must be there):
 * 0, or SH_EINVAL with err naming the flag or the missing device.  Main thread. */
int sh_gate__tee_check(const sh_gate_config *gc, sh_error *err);
/* The provider and the first cached evidence, made now (main thread), its measurements read
 * back through v (borrowed: the gate's verifier, freed after the tee): NULL with err. */
sh_gate__tee *sh_gate__tee_new(const sh_gate_config *gc, const sh_gate__verifier *v, sh_error *err);
void sh_gate__tee_free(sh_gate__tee *t);
/* on_start: the response headers of --attach-server-attestation. */
void sh_gate__tee_start(sh_gate *g);
/* on_request: answers the attestation and health endpoints (1), else 0; refreshes the cache
 * when it is due. */
int sh_gate__tee_request(sh_gate *g, sh_request *req);
/* Pool thread: generate (and read back) evidence for the job. */
void sh_gate__tee_job(sh_gate *g, gate_req *j);
/* I/O thread: a K_EVIDENCE or K_REFRESH job came back (K_REFRESH: frees it). */
void sh_gate__tee_done(sh_gate *g, gate_req *gr);
void sh_gate__evjob_free(struct sh_gate__evjob *j);

/* ---- config.c ---- */
/* The types of a --attest-types list as bits (1u << sh_tee): 0, or -1 with the first
 * name that is not a type in bad. */
int sh_gate__parse_types(const char *list, unsigned *bits, char *bad, size_t badlen);
/* The same, with the message of --attest-types (naming the accepted types): 0 or SH_EINVAL. */
int sh_gate__check_types(const char *list, unsigned *bits, sh_error *err);
/* The JWKS URL of maa / gcp: its own flag, or --jwks-url for the one token type on. */
const char *sh_gate__maa_jwks_url(const sh_gate_config *gc, unsigned types);
const char *sh_gate__gcp_jwks_url(const sh_gate_config *gc, unsigned types);
long sh_gate__fetch_timeout_ms(const sh_gate_config *gc); /* 0: the fetcher's default */

#endif
