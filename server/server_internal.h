/*
 * server/server_internal.h — private types shared by the .c files of server/.
 *
 * Threading: everything here is touched only on the I/O (loop) thread, except the fields
 * marked "atomic" (read or written by the handler's thread through the sh_request_* calls)
 * and the op queue (guarded by srv->qlock).
 */
#ifndef SHIELD_SERVER_INTERNAL_H
#define SHIELD_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <llhttp.h>
#include <uv.h>

#include "server.h"
#include "tls.h"

/* ---- arena.c: per-request memory pool (h2o style bump allocator) ---- */

typedef struct sh_arena_block {
  struct sh_arena_block *next;
  size_t cap;
} sh_arena_block;

typedef struct sh_arena {
  char *cur;   /* next free byte in the current block */
  size_t left; /* bytes left in the current block */
  char *first; /* the inline first block (owned by the enclosing object) */
  size_t first_cap;
  sh_arena_block *blocks; /* malloc'd overflow blocks, freed on reset */
} sh_arena;

void sh_arena_init(sh_arena *a, char *first, size_t cap);
void *sh_arena_alloc(sh_arena *a, size_t n); /* 16-byte aligned; NULL on ENOMEM */
void sh_arena_reset(sh_arena *a);            /* back to the inline block */

/* ---- request.c ---- */

enum { /* cross-thread operations */
       SH_OP_START = 1,
       SH_OP_WRITE,
       SH_OP_READ,
       SH_OP_CONSUMED,
       SH_OP_FAIL,  /* answer 500 (nothing was started) */
       SH_OP_ABORT, /* close the connection (app broke its framing or failed mid-response);
                       500 instead when nothing reached the wire yet */
       SH_OP_RELEASE
};

/* sh_server_post: a function to run on the loop thread (server.c). */
typedef struct sh_post {
  struct sh_post *next;
  void (*fn)(void *arg);
  void *arg;
} sh_post;

typedef struct sh_op {
  struct sh_op *next;
  int type;
  struct sh_req *req;
  int status;         /* START */
  int more;           /* WRITE */
  int flags;          /* START: SH_APPHDR_* */
  int64_t cl;         /* START: the app's content-length or -1 */
  size_t len;         /* WRITE: body bytes; START: header block bytes; CONSUMED: n */
  char chunk_hdr[24]; /* WRITE: the chunk-size line, alive until written */
  char data[];        /* WRITE: body; START: "name: value\r\n"... */
} sh_op;

enum { SH_APPHDR_CLOSE = 1, SH_APPHDR_SERVER = 2, SH_APPHDR_DATE = 4 };

/* Private request: the public part first so a sh_request * converts. */
typedef struct sh_req {
  sh_request pub;
  struct sh_server *srv;
  struct sh_conn *conn;       /* NULL once the response finished or the connection died */
  struct sh_req *prev, *next; /* server's list of live requests (for sh_server_free) */
  int refs;                   /* loop thread only: server + handler + pending writes */

  /* atomic: read/written by the handler's thread */
  atomic_int closed;        /* ops now return SH_ECLOSED */
  atomic_int app_state;     /* 0 nothing, 1 started, 2 finished (caller's view) */
  atomic_llong out_pending; /* body bytes queued but not yet written */
  atomic_int want_writable;
  int64_t app_cl;       /* caller side: content-length declared at start, or -1 */
  uint64_t app_written; /* caller side: body bytes passed to sh_request_write */

  /* loop-thread state */
  unsigned handed : 1;       /* on_request was called */
  unsigned released : 1;     /* the handler dropped its reference */
  unsigned disconnected : 1; /* on_disconnect was called */
  unsigned read_requested : 1;
  unsigned msg_complete : 1; /* the whole request (body included) was parsed */
  unsigned cont_sent : 1;    /* "100 Continue" written */
  unsigned head_sent : 1;    /* response head written */
  unsigned resp_done : 1;    /* last response byte submitted */
  unsigned chunked_out : 1;
  unsigned no_body_out : 1; /* HEAD, 1xx, 204, 304 */
  unsigned keep_alive : 1;  /* the request allows reuse (RFC 9112 §9.3) */
  unsigned close_after : 1; /* close once this response is done */
  unsigned is_head : 1;
  unsigned counted : 1; /* counts against --limit-concurrency until released */
  unsigned cut : 1;     /* sh_request_cut: the handler's response ops are dropped */
  int status;
  uint64_t conn_id;              /* sh_request_conn_id */
  void *ext[SH_REQUEST_EXT_MAX]; /* sh_request_ext slots */
  sh_op *start_op;               /* header block from sh_request_start, until the head is sent */
  int64_t resp_cl;               /* content-length on the wire, or -1 */
  uint64_t resp_body;            /* body bytes accepted for the wire (access log, CL check) */
  uint64_t body_received;        /* request body bytes parsed */
  uint64_t unconsumed;           /* delivered by on_body but not acknowledged */
  uint64_t t_start;              /* uv_hrtime() at the first byte (access log) */
  sh_arena arena;
  struct sh_req *free_next;
  _Alignas(16) char mem[2048]; /* the arena's first block */
} sh_req;

void sh_req_unref(sh_req *req);
sh_req *sh_req_new(struct sh_server *srv);
void sh_req_free_all(struct sh_server *srv);
void sh_ops_drain(struct sh_server *srv); /* apply queued ops (loop thread) */
void sh_ops_close(struct sh_server *srv); /* no more ops: later calls get ECLOSED */
void sh_req_check_writable(sh_req *req);

/* ---- conn.c ---- */

/* An unread body after a keep-alive response is drained (read and discarded) so the
 * connection can carry the next request, if at most this much of it remains: about a second
 * at 10 Mbit/s.  Beyond it the response says "connection: close" and a lingering close lets
 * the client finish sending and read it (conn.c). */
#define SH_DRAIN_MAX (1024 * 1024)

enum {               /* connection state */
       CS_HEAD = 0,  /* reading a request head (or idle between requests) */
       CS_BODY_WAIT, /* head dispatched, parser paused until sh_request_read */
       CS_BODY,      /* parsing and delivering the body */
       CS_DONE,      /* request fully parsed; waiting for the response to finish */
       CS_DRAIN,     /* response done, discarding the rest of an unread body */
       CS_LINGER,    /* write side shut down, reading and discarding before close */
       CS_CLOSING    /* shutdown/close in progress */
};

enum { DL_NONE = 0, DL_HEADER, DL_KEEPALIVE, DL_LINGER, DL_DRAIN, DL_BODY };

typedef struct sh_hdr_pos {
  uint32_t no, nl, vo, vl;
} sh_hdr_pos;

typedef struct sh_conn {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  uv_timer_t timer;
  uv_shutdown_t shut;
  struct sh_server *srv;
  struct sh_conn *prev, *next;
  llhttp_t parser;
  sh_req *req; /* current request (the server's reference) */
  int state;
  int handles_open; /* handles still to be closed before freeing */
  unsigned reading : 1;
  unsigned closing : 1;  /* uv_close called */
  unsigned shutting : 1; /* uv_shutdown called */
  unsigned read_eof : 1;
  unsigned in_process : 1;
  unsigned reprocess : 1;
  unsigned in_head : 1;    /* between message begin and headers complete */
  unsigned in_message : 1; /* between message begin and message complete */
  unsigned hdr_field_open : 1;
  unsigned no_reuse : 1; /* upgrade/CONNECT: never parse another request */
  unsigned linger_wanted : 1;
  int err_status; /* status chosen by a callback that failed the parse (431, 413, ...) */
  const char *err_reason;

  /* unparsed input: [in_base, in_base+in_len), either in ib or in the shared read buffer */
  char *in_base;
  size_t in_len;
  int in_shared;
  char *ib;
  size_t ib_cap;

  /* head scratch, copied into the request's arena once the head is complete */
  char *hb;
  size_t hb_len, hb_cap;
  sh_hdr_pos *hp;
  size_t hp_n, hp_cap;
  uint32_t method_off, method_len, url_off, url_len;
  size_t head_bytes; /* request line + headers so far (for max_header_size) */
  size_t trailer_bytes;
  uint32_t chunk_ext;       /* chunk extension bytes of the current chunk (http1.c budgets) */
  uint32_t chunk_ext_total; /*   and of the whole message */

  /* body accumulated during one llhttp_execute, delivered after it returns */
  char *acc;
  size_t acc_len, acc_cap;
  uint64_t drain_bytes;
  uint64_t linger_until; /* uv_now() ms: the lingering close ends by then at the latest */
  uint64_t t_start;      /* uv_hrtime() at the first byte of the current request */

  uint64_t deadline; /* uv_now() ms, 0 = none */
  uint64_t timer_due;
  int dl_kind;

  sh_addr_kind addr_kind;
  char client_host[64];
  int client_port;
  char server_host[64];
  int server_port;
  struct sh_tls_conn *tls; /* NULL on a plain connection (tls.c) */
  uint64_t id;             /* sh_request_conn_id: from a process-wide counter, never reused */
} sh_conn;

void sh_conn_accept(struct sh_server *srv, uv_stream_t *listener);
void sh_conn_process(sh_conn *c);           /* run the parser over buffered input */
void sh_conn_abort(sh_conn *c);             /* close now */
void sh_conn_close(sh_conn *c, int linger); /* after queued writes; linger: see conn.c */
void sh_conn_response_done(sh_conn *c);     /* the current response's last byte queued */
void sh_conn_update_reading(sh_conn *c);
void sh_conn_stop(sh_conn *c);              /* server stopping: close if idle */
void sh_conn_error(sh_conn *c, int status); /* error response + lingering close */
void sh_conn_request_read(sh_conn *c);      /* body asked for: resume the parser */
void sh_conn_deliver_disconnect(sh_conn *c);
void sh_conn_set_deadline(sh_conn *c, int kind, double seconds);
int sh_conn_drain_ok(const sh_req *req); /* can an unread body be discarded? */

/* ---- http1.c ---- */

extern const llhttp_settings_t sh_http1_settings;
const char *sh_http_reason(int status);
int sh_http_token_char(unsigned char ch);
/* Write the response head (if not yet) and body bytes; `owned` is free()d once written. */
void sh_http_send(sh_req *req, const char *data, size_t len, int more, void *owned);
void sh_http_start_applied(sh_req *req, sh_op *op);
/* A complete fixed response (hello, 500, errors) in one write; body not copied (static). */
void sh_http_respond_fixed(sh_req *req, int status, const char *ctype, const char *body,
                           size_t len);
void sh_http_error_response(sh_conn *c, int status);
/* Write bufs, trying a synchronous write first; `owned` is freed once written.  On a TLS
 * connection the bytes are encrypted first (tls.c); sh_conn_write_sock writes as they are. */
int sh_conn_write(sh_conn *c, sh_req *req, uv_buf_t *bufs, unsigned n, void *owned,
                  size_t body_bytes);
int sh_conn_write_sock(sh_conn *c, sh_req *req, uv_buf_t *bufs, unsigned n, void *owned,
                       size_t body_bytes);
void sh_http_access_log(sh_req *req);

/* ---- server.c ---- */

#define SH_SHARED_RBUF (64 * 1024)

typedef struct sh_listener {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  int open;
} sh_listener;

struct sh_server {
  sh_config cfg;
  sh_handler *handler;
  uv_loop_t loop;
  int loop_open;
  pthread_t loop_thread;
  atomic_int running;
  sh_listener lst;
  int port;
  char uds_path[108];

  uv_async_t async;
  uv_check_t check;
  uv_idle_t idle;
  uv_timer_t grace_timer;
  uv_signal_t sigint, sigterm;
  int handles_init; /* async/check/idle/grace/signals initialised */
  int fired;        /* a handler callback ran this iteration */

  pthread_mutex_t qlock;
  sh_op *qhead, *qtail;
  sh_post *phead, *ptail; /* sh_server_post, also under qlock (run after the ops) */
  int qclosed;
  atomic_int qcount;
  atomic_int stop_requested;
  _Atomic double stop_grace;
  int stopping;
  int finalized;
  int freeing; /* sh_server_free: no handler callback any more, posts dropped */

  sh_conn *conns;
  size_t nconns;
  sh_req *live;      /* all requests not yet freed */
  sh_req *free_reqs; /* recycled request objects */
  size_t nfree_reqs;
  uint64_t next_id;

  char *rbuf; /* shared read buffer (see conn.c: alloc_cb) */
  int rbuf_busy;

  char date_line[64]; /* "date: Mon, 24 Nov 2025 07:59:00 GMT\r\n" */
  size_t date_len;
  uint64_t date_next; /* uv_now() ms when the cached line goes stale */

  /* TLS (tls.c): the context for new connections, and one queued by a reload */
  struct sh_tls_ctx *tls;
  _Atomic(struct sh_tls_ctx *) tls_pending;
  uint64_t tls_gen; /* TLS from memory: the slot generation served (sh_tls_slot_check) */

  /* production serving (proxy.c, metrics.c, supervisor.c) */
  struct sh_proxy_list *proxy; /* --forwarded-allow-ips, NULL when proxy headers are off */
  int inflight;                /* requests handed out and not yet released */
  uint64_t max_requests;       /* --limit-max-requests + this worker's jitter (0 = off) */
  int max_requests_hit;
  char *extra_hdrs;      /* --header lines, "name: value\r\n"..., or NULL: the Server */
  size_t extra_hdrs_len; /*   lines, then the Date lines, then the others (worker.c) */
  size_t extra_server_len, extra_date_len;
  char *hook_hdrs;        /* sh_server_set_response_headers: "name: value\r\n"..., or NULL */
  size_t hook_hdrs_len;   /*   (I/O thread; 0 when unset: nothing on the hot path) */
  uint32_t id_prefix;     /* random per process: request ids unique across workers */
  uv_check_t ready_check; /* worker.c: 'R' to the supervisor after the first poll */
  uv_idle_t ready_poll;   /* keeps that first poll from blocking */
};

static inline int sh_on_loop_thread(const struct sh_server *srv) {
  return atomic_load_explicit(&((struct sh_server *)srv)->running, memory_order_acquire) &&
         pthread_equal(pthread_self(), srv->loop_thread);
}
void sh_server_fired(struct sh_server *srv); /* a handler callback is about to run */
void sh_server_conn_closed(struct sh_server *srv);
const char *sh_server_date(struct sh_server *srv, size_t *len);

/* ---- listen.c ---- */
int sh_listen_open(struct sh_server *srv, sh_error *err);
void sh_listen_close(struct sh_server *srv);

/* ---- log.c ---- */
int sh_log_enabled(sh_log_level level);
void sh_log_raw(sh_log_level level, const char *line, size_t len); /* no prefix; ends in \n */

/* ---- listen_sock.c: a listening fd opened without libuv (supervisor, vsock) ---- */
int sh_listen_socket(const sh_config *cfg, int *port_out, sh_error *err);
struct addrinfo;
struct sockaddr_storage;
int sh_listen_resolve(const sh_config *cfg, struct addrinfo **res, sh_error *err);
int sh_sockaddr_port(const struct sockaddr_storage *ss, int fallback);

/* ---- proxy.c: --proxy-headers / --forwarded-allow-ips ---- */
typedef struct sh_proxy_list sh_proxy_list;
int sh_proxy_list_parse(const char *spec, sh_proxy_list **out, sh_error *err);
void sh_proxy_list_free(sh_proxy_list *l);
int sh_proxy_trusted(const sh_proxy_list *l, const char *host);
/* Apply X-Forwarded-For/-Proto or Forwarded (RFC 7239) to req from a trusted peer. */
void sh_proxy_apply(const sh_proxy_list *l, sh_request *r);

/* ---- metrics.c (server side hooks) ---- */
int sh_metrics_init(sh_error *err); /* supervisor, before fork */
void sh_metrics_response(int status, uint64_t bytes, double seconds);
void sh_metrics_conn(int delta);
void sh_metrics_inflight(int delta);
void sh_metrics_worker_restart(void);
void sh_metrics_set_shard(int shard);
void sh_metrics_reset_shard_gauges(int shard);
/* Prometheus text exposition of every registered metric (malloc'd, *len set). */
char *sh_metrics_render(size_t *len);

/* ---- worker.c: per-process parts of workers (sh_server_new/run/free call these) ---- */
int sh_worker_setup(struct sh_server *srv, sh_error *err);
void sh_worker_ready(struct sh_server *srv);         /* loop running: tell the supervisor */
void sh_worker_request_limit(struct sh_server *srv); /* --limit-max-requests reached */
void sh_worker_cleanup(struct sh_server *srv);

/* ---- accesslog.c ---- */
void sh_access_log_json(sh_req *req, uint64_t us);
void sh_request_id(const sh_req *req, char out[24]);

/* Copy a C string, truncating to fit (addresses, socket paths). */
static inline void sh_strlcpy(char *dst, const char *src, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap && src[n]) {
    dst[n] = src[n];
    n++;
  }
  if (cap) dst[n] = '\0';
}

#define SH_ERR(err, c, ...) ((void)sh_error_set((err), (c), __VA_ARGS__))

#endif /* SHIELD_SERVER_INTERNAL_H */
