/*
 * server/include/server.h — the Shield HTTP/1.1 server core (no Python); the one public
 * header of server/ (everything else in the folder is private).
 *
 * What this module owns
 *   Listeners (TCP v4/v6, UNIX sockets, an inherited fd), connections, HTTP/1.1 parsing with
 *   llhttp (strict: no lenient flags), keep-alive, pipelining (one request in flight per
 *   connection, answered in order), request limits and timeouts, response framing
 *   (Content-Length / chunked / close-delimited), and the configuration of all that
 *   (sh_config: defaults and checks; the `shield` command line that fills it is cli/'s).
 *   Production serving: the supervisor that forks workers (supervisor.c), state shared by
 *   all workers (shmtable.c, the state secret), AF_VSOCK listeners, proxy headers, the access
 *   log (common/JSON) and Prometheus metrics (metrics.c).
 *
 * What it never does
 *   Include Python.h or take the GIL.  It knows nothing of ASGI: a *handler* (pyshim's
 *   Python bridge, or a C handler such as the built-in hello) receives requests through the
 *   callbacks of sh_handler and answers through the sh_request_* calls below.  Nor does it
 *   know attestation: the client-attestation gate (gate/) is a handler wrapping the app's,
 *   built on this header alone.
 *
 * Threads
 *   One I/O thread runs the libuv loop (sh_server_run).  Every sh_handler callback is called
 *   on that thread and must not block.  The sh_request_* calls marked "any thread" may be
 *   called from the handler's own thread (pyshim's Python thread): they queue an operation and
 *   wake the loop (uv_async_send, coalesced); called on the I/O thread itself they take effect
 *   at once.  Operations on one request are applied in the order they were made.
 *
 * Memory and ownership
 *   A sh_request is created by the server when a request head is complete and is kept alive
 *   by two references: the server's (dropped when the response is finished or the connection
 *   dies) and the handler's (dropped by sh_request_release, exactly once, after which the
 *   handler must not touch it).  Everything reachable from a sh_request (method, target,
 *   headers, addresses) lives in the request's arena, is immutable once on_request has been
 *   called, and so may be read from any thread until the handler releases it.
 *   Body chunks passed to on_body are malloc'd copies owned by the callee (free() them).
 *   Data passed to sh_request_start / sh_request_write is copied; the caller keeps its own.
 */
#ifndef SHIELD_SERVER_H
#define SHIELD_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common.h" /* sh_iovec: a view of bytes that are not NUL-terminated (wire data) */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sh_header {
  sh_iovec name;  /* lower-cased (request headers); as given (response headers) */
  sh_iovec value; /* surrounding whitespace trimmed */
} sh_header;

/* Error codes: 0 is success, errors are negative. */
enum {
  SH_OK = 0,
  SH_EINVAL = -1, /* bad argument (message says which) */
  SH_ENOMEM = -2,
  SH_ECLOSED = -3,  /* the client went away or the request is already finished */
  SH_ESTATE = -4,   /* call not valid in the request's current state (e.g. body before start) */
  SH_EHEADER = -5,  /* response header name/value would allow response splitting */
  SH_ETOOLONG = -6, /* app wrote more body than its Content-Length */
  SH_ELISTEN = -7,
  SH_ESYS = -8
};

/* Small error report: a code and a human message the user can act on. */
typedef struct sh_error {
  int code;
  char message[256];
} sh_error;
/* Fills *err (when err is not NULL) with `code` and the printf-style message; returns code, so
 * that an error path can `return sh_error_set(err, SH_ESYS, "socket: %s", ...)`. */
int sh_error_set(sh_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

typedef struct sh_server sh_server;
typedef struct sh_request sh_request;
typedef struct sh_handler sh_handler;

/*
 * TLS facts of a connection (server/tls.c), shared by all requests on it: immutable, valid
 * (any thread) for as long as the request is.  Built once per connection, at its first
 * request.  Strings are NUL-terminated; PEM blocks end in "\n".
 */
typedef struct sh_tls_info {
  int version;              /* wire version: 0x0303 TLS 1.2, 0x0304 TLS 1.3 */
  const char *version_name; /* "TLSv1.3" */
  int cipher_suite;         /* IANA id, e.g. 0x1302 (TLS_AES_256_GCM_SHA384) */
  const char *cipher_name;  /* OpenSSL's name, e.g. "TLS_AES_256_GCM_SHA384" */
  int session_reused;       /* the handshake resumed a session (ticket or session ID) */
  sh_iovec server_cert_pem; /* the server's certificate (leaf) as PEM */
  sh_iovec server_cert_der;
  /* The client's certificate chain as PEM, client certificate first; 0 when the client sent
   * none.  On a resumed session only the client's own certificate is known (n = 1). */
  const sh_iovec *client_chain_pem;
  size_t num_client_certs;
  const char *client_subject;      /* RFC 4514 DN of the client certificate, or NULL */
  const char *client_verify_error; /* NULL when verified (or no certificate) */
  /* DER SubjectPublicKeyInfo of the client certificate's key (i2d_PUBKEY), len 0 when none
   * (what a wrapping handler binds to the connection, e.g. the gate's mutual-TLS mode). */
  sh_iovec client_spki_der;
} sh_tls_info;

/* Which kind of socket a request came in on (decides scope["client"]/["server"]). */
typedef enum sh_addr_kind { SH_ADDR_NONE = 0, SH_ADDR_INET = 1, SH_ADDR_UNIX = 2 } sh_addr_kind;

/* The public, read-only part of a request (the server keeps private state behind it). */
struct sh_request {
  sh_iovec method; /* "GET" */
  sh_iovec target; /* request-target exactly as sent: "/a%20b?x=1" */
  sh_iovec path;   /* target up to '?', still percent-encoded ("raw_path"); for an
                      absolute-form target ("http://host/a?x") the URI's path ("/" when
                      empty), and the Host header holds its authority (RFC 9112 §3.2.2) */
  sh_iovec query;  /* after '?', without it; len 0 when absent */
  int http_major, http_minor;
  sh_header *headers; /* in arrival order, names lower-cased */
  size_t num_headers;
  int64_t content_length; /* -1 when absent (chunked, or no body) */
  int chunked;            /* Transfer-Encoding: chunked */
  int expect_continue;    /* Expect: 100-continue was sent */
  int has_body;           /* a body follows (on_body will be called, last chunk with last=1) */
  int tls;                /* 1 when the connection is TLS ("https") */
  const struct sh_tls_info *tls_info; /* the connection's TLS facts when tls, else NULL */
  sh_addr_kind addr_kind;
  char client_host[64]; /* numeric address, "" when addr_kind != SH_ADDR_INET */
  int client_port;
  char server_host[64]; /* numeric address of the local end, or the UNIX path (truncated) */
  int server_port;
  uint64_t id;         /* unique per server process, for logs */
  void *handler_data;  /* free for the handler's use */
  int forwarded_proto; /* from a trusted proxy (--proxy-headers): 0 none, 1 http, 2 https;
                          client_host/port already hold the forwarded client (port 0) */
};

/*
 * The handler's callbacks, all called on the I/O thread.
 *   on_start      sh_server_run has started on this thread: the loop runs and no request has
 *                 been handed out yet.  Called once per sh_server_run, first of all callbacks;
 *                 the place to learn the server (sh_server_post, sh_server_shared_table).  A
 *                 handler that wraps another forwards it (as every other callback).
 *   on_request    a request head is complete; the handler now holds a reference.
 *   on_body       a body chunk (malloc'd, owned by the callee; may be len 0 with last=1).
 *                 Chunks are only delivered after sh_request_read() was called once, and the
 *                 server stops reading the socket while more than `body_high_water` bytes
 *                 were delivered but not yet acknowledged with sh_request_consumed().
 *   on_disconnect the client went away (or the connection failed) before the response was
 *                 finished; later sh_request_* calls return SH_ECLOSED.  Called at most once.
 *   on_writable   the response buffer drained below the low-water mark after a call to
 *                 sh_request_write returned a pending size above the high-water mark.
 *   on_release    the handler's sh_request_release has been applied: no further callback will
 *                 be made for this request.  The request is still valid during this call
 *                 (the handler may free its own per-request state here).  Lets a handler on
 *                 another thread know when events it queued can no longer be followed by more.
 *   on_flush      the end of one loop iteration in which any of the above was called: the
 *                 place to wake a consumer thread once per batch rather than once per event.
 * Any callback may be NULL.
 *
 * Answering from inside a callback.  A handler on the I/O thread (the attestation gate, the
 * hello handler) may call the sh_request_* calls from inside any callback (in on_disconnect
 * they return SH_ECLOSED): each takes effect at once, so the handler may finish the response
 * and release the request inside on_request or inside on_body, the last chunk's or an earlier
 * one's, with no need to defer to a later loop iteration.
 * After a response finished before the whole request body was read (in on_request, or in an
 * on_body with last=0) no more on_body is delivered: the rest of the body is read and
 * discarded (up to SH_DRAIN_MAX = 1 MiB within 5 s, so the connection carries the next
 * request), or, when it is larger or the client waits for "100 Continue", the response says
 * "connection: close" and the connection ends with a lingering close: the server shuts its
 * write side and discards what the client still sends until its FIN (at most 30 s, 5 s
 * without a byte), so the client reads the response rather than a reset (RFC 9112 §9.3,
 * §9.6).  The rest is never parsed as a request.  A client's FIN (half-close) after complete
 * requests is not a disconnect: they are answered, then the connection closes; on_disconnect
 * comes when a request can no longer complete or a write fails.  After on_release the request
 * must not be touched, even inside the callback that released it.
 *
 * Wrapping a handler.  A handler may sit in front of another (the attestation gate in front of
 * the app): it receives every callback, answers some requests itself and hands the others on
 * by calling the inner handler's callbacks with the same request.  Its own per-request state
 * goes in an extension slot (sh_request_ext), never in handler_data, which stays the inner
 * handler's.  sh_server_free makes no callback: a handler may be freed once sh_server_run has
 * returned (after stopping whatever threads of its own use the server).
 */
struct sh_handler {
  void *data;
  void (*on_start)(sh_handler *h, sh_server *srv);
  void (*on_request)(sh_handler *h, sh_request *req);
  void (*on_body)(sh_handler *h, sh_request *req, char *chunk, size_t len, int last);
  void (*on_disconnect)(sh_handler *h, sh_request *req);
  void (*on_writable)(sh_handler *h, sh_request *req);
  void (*on_release)(sh_handler *h, sh_request *req);
  void (*on_flush)(sh_handler *h);
};

/* ---- Configuration (sh_config_init's defaults, then the command line: cli/) ---- */

typedef struct sh_config {
  const char *app; /* MODULE:ATTR (NULL for --native-hello) */
  int factory;
  const char *app_dir;   /* default "." */
  const char *host;      /* default "127.0.0.1" */
  int port;              /* default 8000 */
  const char *uds;       /* --uds PATH */
  int fd;                /* --fd N, -1 when unset */
  int backlog;           /* default 2048 */
  const char *lifespan;  /* auto|on|off */
  const char *loop;      /* auto|asyncio|uvloop */
  const char *log_level; /* critical|error|warning|info|debug|trace; default info */
  int access_log;        /* default 1 */
  int gc_freeze;         /* gc.freeze() after lifespan start-up; default 1 */
  const char *env_file;
  const char *root_path;     /* default "" */
  size_t max_header_size;    /* default 16 KiB -> 431 beyond */
  uint64_t max_body_size;    /* default 0 = unlimited -> 413 beyond */
  double timeout_header;     /* seconds, default 10 */
  double timeout_keep_alive; /* seconds, default 5 */
  int server_header;         /* "server: shield" on responses, default 1 */
  int date_header;           /* default 1 */
  int native_hello;          /* serve the C hello handler, no Python */
  size_t body_high_water;    /* default 256 KiB */
  size_t write_high_water;   /* default 1 MiB */
  int handle_signals;        /* sh_server_run stops on SIGINT/SIGTERM itself (C-only mode);
                                0 when an embedding program (pyshim) handles signals */

  /* ---- production serving (issue: workers, shared state, proxy headers, limits, logs,
   * metrics).  Filled by the command line, or by the supervisor for its workers. ---- */
  int workers;                        /* --workers N (default $WEB_CONCURRENCY or 1) */
  double timeout_graceful_shutdown;   /* seconds in-flight requests get on stop (default 30) */
  uint64_t limit_max_requests;        /* recycle a worker after N requests (0 = never) */
  uint64_t limit_max_requests_jitter; /* + random 0..J per worker */
  int limit_concurrency;              /* 503 beyond this many requests in flight (0 = off) */
  double timeout_body;                /* a body that stalls this long while read is cut (0=off) */
  int proxy_headers;                  /* honour X-Forwarded-* / Forwarded (default 1) */
  const char *forwarded_allow_ips;    /* "127.0.0.1" default; "*"; comma list of IPs/CIDRs */
  const char *extra_headers[16];      /* --header "name: value" lines, NULL-terminated */
  int num_extra_headers;
  const char *access_log_format; /* "common" (default) | "json" */
  const char *metrics;           /* --metrics-port PORT or a UNIX socket path, or NULL */
  const char *state_secret_file; /* --state-secret-file FILE (>= 32 raw bytes) */
  size_t state_table_size;       /* --state-table-size N entries (default 65536) */
  int vsock_port;                /* --vsock-port PORT (-1 = unset) */
  unsigned vsock_cid;            /* --vsock-cid CID (default VMADDR_CID_ANY) */
  int uds_mode;                  /* --uds-perms octal mode (default 0666) */
  const char *interface;         /* --interface auto|asgi3|asgi2 (pyshim; default auto) */
  int reload;                    /* --reload */
  const char *reload_dirs[16];   /* --reload-dir DIR, NULL-terminated */
  int num_reload_dirs;
  /* Set by the supervisor for its workers (not flags): */
  int listen_fd_inherited;           /* an already listening socket to serve (-1 = none) */
  int notify_fd;                     /* pipe to the supervisor: 'R' ready, 'M' max requests */
  int worker_index;                  /* 0..workers-1 */
  int metrics_shard;                 /* this process's row of the shared counters */
  struct sh_shm_table *shared_table; /* mapped before fork (see sh_shm_table), or NULL */
  const unsigned char *state_secret; /* shared secret bytes, or NULL */
  size_t state_secret_len;

  /* ---- TLS (server/tls.c): on when ssl_certfile is set; uvicorn's flag names ---- */
  const char *ssl_certfile;         /* PEM certificate chain, leaf first */
  const char *ssl_keyfile;          /* PEM private key (default: ssl_certfile) */
  const char *ssl_keyfile_password; /* for an encrypted key */
  const char *ssl_ca_certs;         /* PEM CA bundle that client certificates must chain to */
  int ssl_cert_reqs;                /* 0 none (default), 1 optional, 2 required */
  const char *ssl_ciphers;          /* TLS <= 1.2 cipher list (OpenSSL syntax), NULL = default */
  int ssl_min_version;              /* 0x0303 (default, TLS 1.2) or 0x0304 */

  /* TLS from memory instead of files: on when ssl_issue is set (exclusive with
   * ssl_certfile).  No file ever holds the key: a module that makes its own certificate (the
   * gate's attested TLS, gate.h) generates ssl_key in the process that forks workers, before
   * the fork, so every worker serves the same key from inherited memory.  ssl_issue(arg)
   * returns a new certificate for that key (PEM, leaf first; *pem malloc'd, the callee's
   * until returned: the caller frees it), or a negative code with err set.  It is called by
   * the supervisor before any worker starts (a failure stops the start-up) and again every
   * ssl_reissue_every seconds (0: never); each new certificate is published to the workers
   * (ssl_slot), which serve it to connections accepted from then on, while connections
   * already open keep the one they started with.  A server without a supervisor calls
   * ssl_issue once in sh_server_new; sh_server_set_tls_cert replaces it. */
  struct evp_pkey_st *ssl_key; /* OpenSSL's EVP_PKEY, borrowed (must outlive the server) */
  int (*ssl_issue)(void *arg, char **pem, size_t *pem_len, sh_error *err);
  void *ssl_issue_arg;
  double ssl_reissue_every;
  struct sh_tls_slot *ssl_slot; /* set by the supervisor for its workers (not a flag) */
} sh_config;

void sh_config_init(sh_config *cfg);

/*
 * The checks that need the whole configuration, once it is filled (cli/ runs them after the
 * command line; a program filling sh_config itself should too): --uds/--fd/--vsock-port
 * exclusive, --header lines (a token name, no control characters), --forwarded-allow-ips,
 * the --ssl-* flags that need --ssl-certfile or --ssl-ca-certs; --reload with --workers > 1
 * becomes one worker (a warning on stderr, as uvicorn).  Returns 0, or SH_EINVAL with
 * err->message naming the flag to change (a usage error: exit 2).  Main thread.
 */
int sh_config_check(sh_config *cfg, sh_error *err);

/* ---- Server lifetime ---- */

/* Create a server: opens the listener(s) (so a bad address fails before Python starts). */
int sh_server_new(const sh_config *cfg, sh_handler *handler, sh_server **out, sh_error *err);

/* Run the loop on the calling thread until sh_server_stop; returns 0 or a negative code. */
int sh_server_run(sh_server *srv);

/* Any thread: stop accepting, close idle connections, let in-flight responses finish for at
 * most `grace_seconds`, then close the rest; sh_server_run returns afterwards. */
void sh_server_stop(sh_server *srv, double grace_seconds);

/* After sh_server_run returned: free everything.  Requests the handler has not released are
 * freed too; the handler must not use them afterwards.  No handler callback is made from
 * here, and functions posted (sh_server_post) but not run by then are dropped. */
void sh_server_free(sh_server *srv);

/*
 * Headers added to every response from now on — the handler's, a wrapping handler's and the
 * server's own error responses — after the handler's headers and the --header lines, e.g. a
 * wrapping handler's proof of the server's identity (gate/'s X-Server-Attestation).  Checked
 * as sh_request_start checks a handler's (SH_EHEADER: nothing changes) and copied: the caller
 * keeps its own.  Each call replaces the previous set; n = 0 removes them.  The server adds
 * them as given: a handler that sets one of the same name itself sends it twice.  Before
 * sh_server_run, or on the I/O thread (a handler's callback, or a function it posted);
 * SH_EINVAL on any other thread while the loop runs.  Unset (the default), it costs a
 * response nothing.  0, or the code with err set.
 */
int sh_server_set_response_headers(sh_server *srv, const sh_header *headers, size_t n,
                                   sh_error *err);

/* The actual bound port (useful with --port 0). */
int sh_server_port(const sh_server *srv);

/*
 * Any thread: run fn(arg) on the I/O thread soon (in a later step of the loop, never inside
 * this call, even when called on the I/O thread); on_flush follows at the end of that loop
 * iteration, as after any callback, so fn may call the handler's own callbacks or answer
 * requests.  Posts run in the order they were made.  Every post is one allocation and one
 * wake-up: a caller with many events coalesces them itself (one post per batch).  Returns 0,
 * SH_ECLOSED once the server is stopping for good (fn will never run: the caller keeps
 * whatever arg owns), or SH_ENOMEM.
 */
int sh_server_post(sh_server *srv, void (*fn)(void *arg), void *arg);

/* ---- Workers and state shared across them (supervisor.c, shmtable.c, metrics.c) ---- */

/*
 * Serve as a supervisor: open the listener once, map the shared table and metrics, load or
 * generate the state secret, then fork cfg->workers children that each call
 * worker_main(cfg_copy) with cfg.listen_fd_inherited set and return its exit code.  Restarts
 * crashed workers, SIGHUP = rolling restart, SIGTERM/SIGINT = graceful stop, --reload.
 * Returns the process exit code.  Main thread only, before any interpreter starts.
 */
int sh_supervisor_run(sh_config *cfg, int (*worker_main)(sh_config *cfg, void *arg), void *arg);

/*
 * The shared table (shmtable.c): a fixed-size, lock-protected hash table with expiring
 * entries in shared memory, for state every worker must agree on (another module's consumed
 * nonces, sessions...).  The supervisor maps one before it forks (--state-table-size entries)
 * and every worker gets it from sh_server_shared_table(); a single process makes its own with
 * sh_shm_table_create.  Calls: any thread, any process (a process-shared robust mutex guards
 * each; each is O(cluster) and never blocks on I/O).  Times are the caller's clock in seconds
 * (wall clock, so that every worker agrees).  Keys are 32-byte digests the caller makes.
 */
#define SH_SHM_KEY_LEN 32    /* keys are digests (e.g. SHA-256 of a nonce) */
#define SH_SHM_VALUE_MAX 128 /* bytes of value per entry */

enum { SH_SHM_NOTFOUND = -20, SH_SHM_EXISTS = -21, SH_SHM_FULL = -22 };

typedef struct sh_shm_table sh_shm_table;

/* Map a table for `capacity` live entries; call before fork() so that children share it. */
int sh_shm_table_create(size_t capacity, sh_shm_table **out, sh_error *err);
void sh_shm_table_free(sh_shm_table *t);

/* Insert or replace.  only_if_absent: fail with SH_SHM_EXISTS when a live entry exists
 * (atomic check-and-set: how a nonce is consumed exactly once across workers).  SH_SHM_FULL
 * when the table is at its load limit after sweeping out expired entries. */
int sh_shm_table_put(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN], const void *value,
                     size_t value_len, double expires_at, double now, int only_if_absent);
/* Copy up to *value_len bytes of a live entry; *value_len becomes its full length. */
int sh_shm_table_get(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN], void *value,
                     size_t *value_len, double *expires_at, double now);
/* Read-modify-write a live entry atomically: fn runs under the table's lock with the value in
 * place (it may change the bytes, not the length) and its return value is returned.  fn must
 * be short and must not call the table.  SH_SHM_NOTFOUND when there is no live entry. */
int sh_shm_table_update(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN],
                        int (*fn)(void *value, size_t value_len, void *ctx), void *ctx, double now);
int sh_shm_table_del(sh_shm_table *t, const uint8_t key[SH_SHM_KEY_LEN]);
size_t sh_shm_table_count(sh_shm_table *t, double now);

/* The table every worker shares, NULL when serving without a supervisor. */
sh_shm_table *sh_server_shared_table(const sh_server *srv);
/* The secret every worker shares (>= 32 bytes, --state-secret-file or generated by the
 * supervisor), or NULL with *len = 0. */
const unsigned char *sh_server_state_secret(const sh_server *srv, size_t *len);

/*
 * Metrics: counters in shared memory, summed over all workers, served as Prometheus text by
 * the supervisor on --metrics-port.  The registry is open: any module registers a counter by
 * (name, labels) — find-or-create, any process, any thread — and adds to it lock-free.
 * Without a supervisor (no shared region) every call is a cheap no-op returning -1.
 *   name   metric name ("shield_attest_verifications_total"); labels: 'type="nitro"' or "".
 */
int sh_metrics_counter(const char *name, const char *labels, const char *help);
void sh_metrics_add(int counter, int64_t delta); /* counter < 0: ignored */
int sh_metrics_gauge(const char *name, const char *labels, const char *help);
/* Observe a duration (seconds) in a histogram (buckets are fixed; see metrics.c). */
int sh_metrics_histogram(const char *name, const char *labels, const char *help);
void sh_metrics_observe(int histogram, double seconds);

/* ---- TLS (server/tls.c) ---- */

/*
 * Process-wide TLS preparation: generates the session-ticket keys (RAND_bytes) and checks
 * that cfg's certificate, key and CA files load (the error names the file and OpenSSL's
 * reason).  Idempotent.  CONTRACT: call it in the process that forks workers, before the
 * fork, so every worker encrypts and decrypts tickets with the same keys (a client resumes on
 * any worker).  sh_server_new calls it too, so a single-process server needs nothing more.
 * A no-op returning 0 when cfg serves no TLS.  With TLS from memory (ssl_issue) it checks the
 * certificate published in cfg->ssl_slot, if any.  Main thread only.
 */
int sh_tls_prepare(const sh_config *cfg, sh_error *err);

/*
 * Re-read the certificate, key and CA files (SIGHUP): the new context is built on the calling
 * thread (any thread; errors come back here and the old context stays), then handed to the
 * I/O thread, which uses it for connections accepted from then on.  Existing connections keep
 * the context they were made with (refcounted) and are not dropped.  Ticket keys are kept, so
 * sessions resume across a reload.  SH_EINVAL when TLS is off, or from memory without a
 * supervisor (sh_server_set_tls_cert); with a supervisor, 0 (the next connection picks up
 * what it published last).
 */
int sh_server_reload_tls(sh_server *srv, sh_error *err);

/*
 * Any thread: serve a new certificate (PEM, leaf first) for cfg->ssl_key to connections
 * accepted from now on, as sh_server_reload_tls does for files (existing connections keep
 * theirs; not dropped).  The context is built on the calling thread; an error (a certificate
 * that does not parse, or not for ssl_key) comes back here and the old one stays.  SH_EINVAL
 * when the server's TLS is not from memory (cfg->ssl_issue).
 */
int sh_server_set_tls_cert(sh_server *srv, const char *pem, size_t pem_len, sh_error *err);

/* The built-in C handler that answers every request with 200 "Hello, world!" (13 bytes,
 * text/plain).  It runs on the I/O thread: the native ceiling of the server. */
sh_handler *sh_hello_handler(void);

/* ---- Answering a request (any thread unless noted) ---- */

/* Ask for the body: sends "100 Continue" first if the client expects it and no response has
 * started, then delivers on_body chunks.  Idempotent. */
int sh_request_read(sh_request *req);

/* The handler has consumed `n` body bytes delivered by on_body: may resume reading. */
int sh_request_consumed(sh_request *req, size_t n);

/*
 * Start the response.  Headers are checked (token names; no CR, LF or NUL in values) before
 * anything is queued: SH_EHEADER and nothing is sent.  The head is written together with the
 * first body chunk: when that chunk is also the last and the app gave no Content-Length,
 * Content-Length is added; otherwise HTTP/1.1 uses chunked encoding and HTTP/1.0 closes the
 * connection.  For HEAD requests no body bytes are written.  A "connection: close" header from
 * the app closes the connection after this response.
 */
int sh_request_start(sh_request *req, int status, const sh_header *headers, size_t n);

/*
 * Append body bytes (copied); more=0 finishes the response.  Returns the number of bytes
 * queued for this connection but not yet written (>= 0), or a negative code:
 * SH_ECLOSED when the client went away, SH_ESTATE before sh_request_start or after the last
 * chunk, SH_ETOOLONG when the body exceeds the declared Content-Length (the connection is
 * then closed).  When the returned size exceeds cfg.write_high_water, on_writable will be
 * called once it has drained.
 */
int64_t sh_request_write(sh_request *req, const void *data, size_t len, int more);

/*
 * Abort: if nothing was sent yet, answer 500 (with a small text body) and keep the connection
 * if possible -- also after sh_request_start, as long as no body byte was written (the head
 * goes out with the first body bytes); once bytes were sent, close the connection.
 */
int sh_request_fail(sh_request *req);

/* Drop the handler's reference (exactly once).  Finish (or fail) the response first: one
 * still unfinished at the release can never be finished, so the server then answers as
 * sh_request_fail does (500 if nothing was sent, else it closes the connection) and logs an
 * error, rather than leave the client waiting. */
void sh_request_release(sh_request *req);

/* The server the request belongs to (for its config). */
const sh_config *sh_request_config(const sh_request *req);

/* ---- For handlers that wrap another (see "Wrapping a handler" above) ---- */

/* The value of the first request header named `lower_name` (lower-case; names are stored
 * lower-cased), or NULL.  Any thread, while the request is held. */
const sh_iovec *sh_request_header(const sh_request *req, const char *lower_name);

/*
 * Extension slots: per-request pointers for modules other than the handler (which has
 * handler_data).  A module takes a key once per process (main thread, before it serves);
 * there are SH_REQUEST_EXT_MAX keys in all, so a module takes one key however many instances
 * of it exist.  Every slot of a new request is NULL; the server never frees what is in one
 * (the module does, in on_release).  Set on the I/O thread; read on any thread, while the
 * request is held, after the handler to which it was handed got it.
 */
#define SH_REQUEST_EXT_MAX 4
int sh_request_ext_key(void); /* a key >= 0, or SH_ENOMEM when all are taken */
void *sh_request_ext(const sh_request *req, int key);
void sh_request_set_ext(sh_request *req, int key, void *value);

/* A number for the connection the request came in on, unique in this process for its whole
 * life (connections never share one, even when a closed one's memory is reused): an identity
 * to bind state to the connection, e.g. a mutual-TLS client key.  Never 0.  Any thread. */
uint64_t sh_request_conn_id(const sh_request *req);

/*
 * I/O thread only: a wrapping handler takes the response over, e.g. when a streamed body
 * fails a check after the request was handed on.  From this call on, every sh_request_start /
 * _write / _fail for this request returns SH_ECLOSED on any thread, and whatever the inner
 * handler queued from its own thread but the I/O thread has not applied yet is dropped; the
 * connection is never reused.  Then:
 *   - nothing of a response reached the wire yet (a start that was applied but whose head
 *     waits for the first body bytes counts as nothing): status, headers and body (a complete
 *     response, Content-Length framed, with "connection: close") are sent instead.  Returns 0;
 *   - a response is on the wire but unfinished: it is cut short (the connection closes after
 *     what was queued, so the client sees a truncated response).  Returns SH_ESTATE;
 *   - the response is complete, or the client is gone: SH_ECLOSED.
 * Headers are checked as sh_request_start does (SH_EHEADER, SH_EINVAL: nothing happens).
 * The caller still tells the inner handler (on_disconnect) and the handler's reference is
 * released as usual.
 */
int sh_request_cut(sh_request *req, int status, const sh_header *headers, size_t n,
                   const void *body, size_t len);

/* ---- Logging (any thread; level-filtered; never blocks the I/O thread on disk) ---- */
typedef enum sh_log_level {
  SH_LOG_CRITICAL = 50,
  SH_LOG_ERROR = 40,
  SH_LOG_WARNING = 30,
  SH_LOG_INFO = 20,
  SH_LOG_DEBUG = 10,
  SH_LOG_TRACE = 5
} sh_log_level;
void sh_log_set_level(const char *name);
void sh_log(sh_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Wait (at most ~2 s) until queued log lines reach stderr; also registered with atexit. */
void sh_log_flush(void);

#ifdef __cplusplus
}
#endif
#endif /* SHIELD_SERVER_H */
