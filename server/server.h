/*
 * server/server.h — the Shield HTTP/1.1 server core (no Python).
 *
 * What this module owns
 *   Listeners (TCP v4/v6, UNIX sockets, an inherited fd), connections, HTTP/1.1 parsing with
 *   llhttp (strict: no lenient flags), keep-alive, pipelining (one request in flight per
 *   connection, answered in order), request limits and timeouts, response framing
 *   (Content-Length / chunked / close-delimited), and the command line of the `shield` binary.
 *
 * What it never does
 *   Include Python.h or take the GIL.  It knows nothing of ASGI: a *handler* (pyshim's
 *   Python bridge, or a C handler such as the built-in hello) receives requests through the
 *   callbacks of sh_handler and answers through the sh_request_* calls below.
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

#ifdef __cplusplus
extern "C" {
#endif

/* A view of bytes that are not NUL-terminated (wire data). */
typedef struct sh_iovec {
  const char *base;
  size_t len;
} sh_iovec;

typedef struct sh_header {
  sh_iovec name;  /* lower-cased (request headers); as given (response headers) */
  sh_iovec value; /* surrounding whitespace trimmed */
} sh_header;

/* Error codes: 0 is success, errors are negative. */
enum {
  SH_OK = 0,
  SH_EINVAL = -1,     /* bad argument (message says which) */
  SH_ENOMEM = -2,
  SH_ECLOSED = -3,    /* the client went away or the request is already finished */
  SH_ESTATE = -4,     /* call not valid in the request's current state (e.g. body before start) */
  SH_EHEADER = -5,    /* response header name/value would allow response splitting */
  SH_ETOOLONG = -6,   /* app wrote more body than its Content-Length */
  SH_ELISTEN = -7,
  SH_ESYS = -8
};

/* Small error report: a code and a human message the user can act on. */
typedef struct sh_error {
  int code;
  char message[256];
} sh_error;

typedef struct sh_server sh_server;
typedef struct sh_request sh_request;
typedef struct sh_handler sh_handler;

/* Which kind of socket a request came in on (decides scope["client"]/["server"]). */
typedef enum sh_addr_kind { SH_ADDR_NONE = 0, SH_ADDR_INET = 1, SH_ADDR_UNIX = 2 } sh_addr_kind;

/* The public, read-only part of a request (the server keeps private state behind it). */
struct sh_request {
  sh_iovec method;       /* "GET" */
  sh_iovec target;       /* request-target exactly as sent: "/a%20b?x=1" */
  sh_iovec path;         /* target up to '?', still percent-encoded ("raw_path") */
  sh_iovec query;        /* after '?', without it; len 0 when absent */
  int http_major, http_minor;
  sh_header *headers;    /* in arrival order, names lower-cased */
  size_t num_headers;
  int64_t content_length; /* -1 when absent (chunked, or no body) */
  int chunked;            /* Transfer-Encoding: chunked */
  int expect_continue;    /* Expect: 100-continue was sent */
  int has_body;           /* a body follows (on_body will be called, last chunk with last=1) */
  int tls;                /* 1 when the connection is TLS ("https") */
  sh_addr_kind addr_kind;
  char client_host[64];   /* numeric address, "" when addr_kind != SH_ADDR_INET */
  int client_port;
  char server_host[64];   /* numeric address of the local end, or the UNIX path (truncated) */
  int server_port;
  uint64_t id;            /* unique per server process, for logs */
  void *handler_data;     /* free for the handler's use */
};

/*
 * The handler's callbacks, all called on the I/O thread.
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
 */
struct sh_handler {
  void *data;
  void (*on_request)(sh_handler *h, sh_request *req);
  void (*on_body)(sh_handler *h, sh_request *req, char *chunk, size_t len, int last);
  void (*on_disconnect)(sh_handler *h, sh_request *req);
  void (*on_writable)(sh_handler *h, sh_request *req);
  void (*on_release)(sh_handler *h, sh_request *req);
  void (*on_flush)(sh_handler *h);
};

/* ---- Configuration (filled by sh_config_init + the command line) ---- */

typedef struct sh_config {
  const char *app;            /* MODULE:ATTR (NULL for --native-hello) */
  int factory;
  const char *app_dir;        /* default "." */
  const char *host;           /* default "127.0.0.1" */
  int port;                   /* default 8000 */
  const char *uds;            /* --uds PATH */
  int fd;                     /* --fd N, -1 when unset */
  int backlog;                /* default 2048 */
  const char *lifespan;       /* auto|on|off */
  const char *loop;           /* auto|asyncio|uvloop */
  const char *log_level;      /* critical|error|warning|info|debug|trace; default info */
  int access_log;             /* default 1 */
  const char *env_file;
  const char *root_path;      /* default "" */
  size_t max_header_size;     /* default 16 KiB -> 431 beyond */
  uint64_t max_body_size;     /* default 0 = unlimited -> 413 beyond */
  double timeout_header;      /* seconds, default 10 */
  double timeout_keep_alive;  /* seconds, default 5 */
  int server_header;          /* "server: shield" on responses, default 1 */
  int date_header;            /* default 1 */
  int native_hello;           /* serve the C hello handler, no Python */
  size_t body_high_water;     /* default 256 KiB */
  size_t write_high_water;    /* default 1 MiB */
  int handle_signals;         /* sh_server_run stops on SIGINT/SIGTERM itself (C-only mode);
                                 0 when an embedding program (pyshim) handles signals */
} sh_config;

void sh_config_init(sh_config *cfg);

/*
 * Parse the `shield` command line (argv[0] is the program).  Returns 0 on success, 1 when
 * --help/--version was printed (exit 0), or a negative code with err->message set for a
 * usage error (exit 2).  Strings in cfg point into argv or static storage.
 */
int sh_config_parse(sh_config *cfg, int argc, char **argv, sh_error *err);
void sh_config_usage(FILE *out);

/* ---- Server lifetime ---- */

/* Create a server: opens the listener(s) (so a bad address fails before Python starts). */
int sh_server_new(const sh_config *cfg, sh_handler *handler, sh_server **out, sh_error *err);

/* Run the loop on the calling thread until sh_server_stop; returns 0 or a negative code. */
int sh_server_run(sh_server *srv);

/* Any thread: stop accepting, close idle connections, let in-flight responses finish for at
 * most `grace_seconds`, then close the rest; sh_server_run returns afterwards. */
void sh_server_stop(sh_server *srv, double grace_seconds);

/* After sh_server_run returned: free everything.  Requests the handler has not released are
 * freed too; the handler must not use them afterwards. */
void sh_server_free(sh_server *srv);

/* The actual bound port (useful with --port 0). */
int sh_server_port(const sh_server *srv);

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
 * if possible; if the response had started, close the connection.
 */
int sh_request_fail(sh_request *req);

/* Drop the handler's reference (exactly once). */
void sh_request_release(sh_request *req);

/* The server the request belongs to (for its config). */
const sh_config *sh_request_config(const sh_request *req);

/* ---- Logging (any thread; level-filtered; never blocks the I/O thread on disk) ---- */
typedef enum sh_log_level {
  SH_LOG_CRITICAL = 50, SH_LOG_ERROR = 40, SH_LOG_WARNING = 30, SH_LOG_INFO = 20,
  SH_LOG_DEBUG = 10, SH_LOG_TRACE = 5
} sh_log_level;
void sh_log_set_level(const char *name);
void sh_log(sh_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Wait (at most ~2 s) until queued log lines reach stderr; also registered with atexit. */
void sh_log_flush(void);

#ifdef __cplusplus
}
#endif
#endif /* SHIELD_SERVER_H */
