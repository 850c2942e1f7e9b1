/*
 * server/conn.c — one client connection: reading, the parse driver, timeouts, and closing.
 *
 * Input buffering.  Reads go into one 64 KiB buffer shared by the whole loop (libuv calls
 * alloc_cb and read_cb back to back for one stream, so it is free again when read_cb
 * returns).  Whatever the parser did not consume (a pipelined request, a body not yet asked
 * for) is moved into a per-connection buffer, and the next reads append there.  Idle
 * keep-alive connections therefore hold no input buffer at all.
 *
 * One request in flight (RFC 9112 §9.3.2 pipelining, answered in order): the parser pauses
 * at the end of each message and resumes only once that response has been written.
 *
 * Timers.  A connection has one uv_timer and one deadline.  Moving the deadline later only
 * stores a number; the timer, when it fires early, re-arms for the rest.  So keep-alive
 * traffic costs no timer-heap work per request.
 *
 * Closing.  sh_conn_abort closes now.  sh_conn_close shuts the write side after queued
 * writes; when request bytes may still be in flight it then *lingers* (nginx's lingering
 * close): it reads and discards until the client's FIN, so the client reads our response (an
 * early 401/413, an error) instead of a TCP RST that would destroy it (the close-with-unread-
 * data problem, RFC 9112 §9.6).  A client such as Python's http.client sends its whole body
 * before it reads anything, so lingering is bounded by time, never by bytes.
 *
 * Half-close.  A FIN from the client ends its input, not the exchange: complete requests
 * (the one in flight and pipelined ones already received) are answered, then the connection
 * closes.  Only a request whose message can no longer complete is given up (on_disconnect);
 * a client that went away altogether shows when a write fails.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/vm_sockets.h>

#include "server_internal.h"

#define IB_MIN (16 * 1024)
/* Lingering close, as nginx's lingering_time / lingering_timeout: at most LINGER_MS in all,
 * and LINGER_IDLE_MS without a byte from the client (1 s once the server is stopping). */
#define LINGER_MS 30000
#define LINGER_IDLE_MS 5000
#define LINGER_STOP_MS 1000
/* Bound on flushing our queued writes before the shutdown: a client that never reads. */
#define SHUTDOWN_MS 10000
/* An unread body after a keep-alive response is drained for at most DRAIN_MS (and
 * SH_DRAIN_MAX bytes, server_internal.h); past either, a new connection is cheaper than the
 * rest of the body, and the connection ends with a lingering close. */
#define DRAIN_MS 5000

static size_t ib_max(const sh_server *srv) {
  return srv->cfg.max_header_size + 64 * 1024;
}

/* ---- timers ---- */

static void on_timer(uv_timer_t *t);

void sh_conn_set_deadline(sh_conn *c, int kind, double seconds) {
  c->dl_kind = kind;
  if (kind == DL_NONE || seconds <= 0) {
    c->dl_kind = DL_NONE;
    c->deadline = 0; /* a running timer finds nothing to do */
    return;
  }
  uint64_t now = uv_now(&c->srv->loop);
  uint64_t ms = (uint64_t)(seconds * 1000.0);
  if (ms == 0) ms = 1;
  c->deadline = now + ms;
  if (!uv_is_active((uv_handle_t *)&c->timer) || c->timer_due > c->deadline) {
    uv_timer_start(&c->timer, on_timer, ms, 0);
    c->timer_due = c->deadline;
  }
}

static void on_timer(uv_timer_t *t) {
  sh_conn *c = t->data;
  if (c->closing || c->deadline == 0) return;
  uint64_t now = uv_now(&c->srv->loop);
  if (now < c->deadline) {
    uv_timer_start(&c->timer, on_timer, c->deadline - now, 0);
    c->timer_due = c->deadline;
    return;
  }
  int kind = c->dl_kind;
  c->deadline = 0;
  c->dl_kind = DL_NONE;
  if (kind == DL_HEADER && c->state == CS_HEAD && (c->in_message || c->in_len)) {
    /* Slowloris: the head did not arrive in time.  RFC 9110 §15.5.9: 408, then close. */
    sh_log(SH_LOG_DEBUG, "request head timeout from %s:%d", c->client_host, c->client_port);
    sh_conn_error(c, 408);
    return;
  }
  if (kind == DL_BODY && c->state == CS_BODY && c->req) {
    if (!c->reading) { /* paused by our own backpressure: not the client's stall */
      sh_conn_set_deadline(c, DL_BODY, c->srv->cfg.timeout_body);
      return;
    }
    /* --timeout-body: a body that stalls is cut (on_disconnect for the app; 408 if the
     * response has not started, RFC 9110 §15.5.9). */
    sh_log(SH_LOG_WARNING, "request body stalled for %gs from %s:%d: closing",
           c->srv->cfg.timeout_body, c->client_host, c->client_port);
    sh_conn_error(c, 408);
    return;
  }
  if (kind == DL_BODY) return;
  if (kind == DL_DRAIN && c->state == CS_DRAIN && !c->shutting) {
    /* The unread body did not arrive within DRAIN_MS: give up on reusing the connection, but
     * gently (the client may still be sending, and must read the response it was sent). */
    sh_conn_close(c, 1);
    return;
  }
  sh_conn_abort(c); /* idle keep-alive, header timeout on an idle socket, linger over */
}

/* ---- lifetime ---- */

static void on_close(uv_handle_t *h) {
  sh_conn *c = h->data;
  if (--c->handles_open > 0) return;
  sh_server *srv = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  srv->nconns--;
  if (c->tls) sh_tls_conn_free(c);
  sh_metrics_conn(-1);
  free(c->ib);
  free(c->hb);
  free(c->hp);
  free(c->acc);
  free(c);
  sh_server_conn_closed(srv);
}

void sh_conn_deliver_disconnect(sh_conn *c) {
  sh_req *req = c->req;
  if (!req) return;
  c->req = NULL;
  req->conn = NULL;
  atomic_store(&req->closed, 1);
  if (req->handed && !req->released && !req->disconnected && !req->resp_done) {
    req->disconnected = 1;
    sh_server *srv = c->srv;
    if (srv->handler->on_disconnect && !srv->freeing) {
      sh_server_fired(srv);
      srv->handler->on_disconnect(srv->handler, &req->pub);
    }
  }
  sh_req_unref(req); /* the server's reference */
}

void sh_conn_abort(sh_conn *c) {
  if (c->closing) return;
  c->closing = 1;
  c->reading = 0;
  sh_conn_deliver_disconnect(c);
  uv_close(&c->h.handle, on_close);
  uv_close((uv_handle_t *)&c->timer, on_close);
}

/* Bytes arrived while lingering (or it began): wait LINGER_IDLE_MS more for the next ones,
 * never past linger_until. */
static void linger_touch(sh_conn *c) {
  uint64_t now = uv_now(&c->srv->loop);
  uint64_t until = now + LINGER_IDLE_MS;
  if (until > c->linger_until) until = c->linger_until;
  if (until <= now) {
    sh_conn_abort(c);
    return;
  }
  sh_conn_set_deadline(c, DL_LINGER, (double)(until - now) / 1000.0);
}

static void on_shutdown(uv_shutdown_t *s, int status) {
  sh_conn *c = s->handle->data;
  if (c->closing) return;
  if (status < 0 || !c->linger_wanted || c->read_eof) {
    sh_conn_abort(c);
    return;
  }
  c->state = CS_LINGER;
  c->linger_until = uv_now(&c->srv->loop) + (c->srv->stopping ? LINGER_STOP_MS : LINGER_MS);
  linger_touch(c);
  if (!c->closing) sh_conn_update_reading(c);
}

void sh_conn_close(sh_conn *c, int linger) {
  if (c->closing || c->shutting) return;
  sh_conn_deliver_disconnect(c);
  if (c->closing) return;
  c->state = CS_CLOSING;
  c->linger_wanted = linger && !c->read_eof;
  c->in_len = 0;
  if (c->tls) sh_tls_close_notify(c); /* TLS: close_notify goes out before the FIN */
  if (uv_shutdown(&c->shut, &c->h.stream, on_shutdown) < 0) {
    sh_conn_abort(c);
    return;
  }
  c->shutting = 1;
  /* Bound the wait for queued writes: a client that never reads must not pin us. */
  sh_conn_set_deadline(c, DL_LINGER, SHUTDOWN_MS / 1000.0);
  sh_conn_update_reading(c);
}

void sh_conn_error(sh_conn *c, int status) {
  sh_req *req = c->req;
  if (req && (req->head_sent || req->resp_done)) {
    sh_conn_abort(c); /* the response already started: all we can do is cut it */
    return;
  }
  sh_conn_deliver_disconnect(c);
  if (c->closing) return;
  sh_http_error_response(c, status);
  sh_conn_close(c, 1);
}

void sh_conn_stop(sh_conn *c) {
  if (c->closing) return;
  if (c->shutting) {
    /* Lingering only helps the client read what it was sent: not for long on a stop. */
    uint64_t limit = uv_now(&c->srv->loop) + LINGER_STOP_MS;
    if (c->state == CS_LINGER && c->linger_until > limit) {
      c->linger_until = limit;
      linger_touch(c);
    }
    return;
  }
  if (!c->req && c->state == CS_HEAD && c->in_len == 0 && !c->in_message) {
    /* Idle (keep-alive, or accepted from the shared queue just before the stop): a request
     * may already be on its way.  Give it a moment (at most 1 s, never past the deadline it
     * had): a request that arrives is answered with "connection: close" (must_close sees
     * srv->stopping), so during a rolling restart no client loses a request it just sent. */
    uint64_t limit = uv_now(&c->srv->loop) + 1000;
    if (c->deadline == 0 || c->deadline > limit)
      sh_conn_set_deadline(c, c->dl_kind != DL_NONE ? c->dl_kind : DL_KEEPALIVE, 1.0);
    return;
  }
  if (!c->req && (c->state == CS_HEAD || c->state == CS_DRAIN))
    sh_conn_close(c, c->in_len > 0 || c->in_message);
  /* else: closes after the response in flight (response_done checks srv->stopping) */
}

/* ---- reading ---- */

void sh_conn_update_reading(sh_conn *c) {
  if (c->closing) return;
  int want;
  if (c->state == CS_LINGER)
    want = !c->read_eof;
  else if (c->shutting)
    want = c->linger_wanted && !c->read_eof; /* discard while flushing */
  else
    want = !c->read_eof && c->in_len < ib_max(c->srv) &&
           !(c->req && c->req->unconsumed > c->srv->cfg.body_high_water);
  if (want == (int)c->reading) return;
  if (want) {
    extern void sh_conn_alloc_cb(uv_handle_t *, size_t, uv_buf_t *);
    extern void sh_conn_read_cb(uv_stream_t *, ssize_t, const uv_buf_t *);
    if (uv_read_start(&c->h.stream, sh_conn_alloc_cb, sh_conn_read_cb) == 0) c->reading = 1;
  } else {
    uv_read_stop(&c->h.stream);
    c->reading = 0;
  }
}

/* Make room for at least IB_MIN more bytes after the unparsed input, in the own buffer. */
static int ib_reserve(sh_conn *c) {
  if (c->in_len && c->in_base != c->ib) memmove(c->ib, c->in_base, c->in_len);
  c->in_base = c->ib;
  size_t need = c->in_len + IB_MIN;
  if (c->ib_cap < need) {
    char *nb = realloc(c->ib, need);
    if (!nb) return -1;
    c->ib = nb;
    c->ib_cap = need;
    c->in_base = nb;
  }
  return 0;
}

void sh_conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  sh_conn *c = h->data;
  sh_server *srv = c->srv;
  if (c->in_len == 0 || c->state == CS_LINGER || c->tls) { /* TLS: ciphertext, see tls.c */
    *buf = uv_buf_init(srv->rbuf, SH_SHARED_RBUF);
    return;
  }
  if (ib_reserve(c) < 0) {
    *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
    return;
  }
  *buf = uv_buf_init(c->ib + c->in_len, (unsigned)(c->ib_cap - c->in_len));
}

void sh_conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  sh_conn *c = s->data;
  sh_server *srv = c->srv;
  if (nread == 0 || c->closing) return;
  if (nread < 0) {
    if (nread == UV_EOF && c->shutting && c->state != CS_LINGER) {
      /* Our response may still be flushing: let the shutdown callback close. */
      c->read_eof = 1;
      uv_read_stop(&c->h.stream);
      c->reading = 0;
      return;
    }
    if (nread == UV_EOF && c->state != CS_LINGER) {
      /* A half-close (see the top of this file): what was received is still answered.  The
       * request in flight goes on when its message is complete (or may still complete from
       * buffered bytes); sh_conn_process gives up a body cut short and closes once the
       * input runs out, after the responses. */
      c->read_eof = 1;
      uv_read_stop(&c->h.stream);
      c->reading = 0;
      sh_conn_process(c);
      return;
    }
    sh_conn_abort(c); /* reset, ENOBUFS, or EOF while lingering/closing */
    return;
  }
  if (c->state == CS_LINGER || c->shutting) { /* discarded: lingering close */
    if (c->state == CS_LINGER) linger_touch(c);
    return;
  }
  if (c->tls) { /* decrypts into ib, runs the parser, updates reading */
    sh_tls_on_read(c, buf->base, (size_t)nread);
    return;
  }
  if (buf->base == srv->rbuf) {
    c->in_base = srv->rbuf;
    c->in_len = (size_t)nread;
    c->in_shared = 1;
  } else {
    c->in_len += (size_t)nread;
  }
  sh_conn_process(c);
  if (c->closing || c->shutting) {
    c->in_shared = 0;
    return;
  }
  if (c->state == CS_BODY && srv->cfg.timeout_body > 0) /* bytes arrived: not stalled */
    sh_conn_set_deadline(c, DL_BODY, srv->cfg.timeout_body);
  if (c->in_shared) {
    c->in_shared = 0;
    if (c->in_len) {
      /* Keep the unparsed rest: it must outlive the shared buffer. */
      const char *src = c->in_base;
      size_t n = c->in_len;
      c->in_len = 0;
      c->in_base = c->ib;
      if (ib_reserve(c) < 0 || c->ib_cap < n) {
        char *nb = realloc(c->ib, n + IB_MIN);
        if (!nb) {
          sh_conn_abort(c);
          return;
        }
        c->ib = nb;
        c->ib_cap = n + IB_MIN;
      }
      memcpy(c->ib, src, n);
      c->in_base = c->ib;
      c->in_len = n;
    }
  }
  sh_conn_update_reading(c);
}

/* ---- accept ---- */

static void fill_inet(const struct sockaddr_storage *ss, char *host, size_t hl, int *port) {
  host[0] = '\0';
  *port = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    uv_ip4_name(a, host, hl);
    *port = ntohs(a->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      /* A v4 client on a dual-stack socket: report 1.2.3.4, not ::ffff:1.2.3.4. */
      struct sockaddr_in v4;
      memset(&v4, 0, sizeof v4);
      v4.sin_family = AF_INET;
      memcpy(&v4.sin_addr, a->sin6_addr.s6_addr + 12, 4);
      uv_ip4_name(&v4, host, hl);
    } else {
      uv_ip6_name(a, host, hl);
    }
    *port = ntohs(a->sin6_port);
  } else if (ss->ss_family == AF_VSOCK) { /* --vsock-port: the peer's CID as the host */
    const struct sockaddr_vm *a = (const struct sockaddr_vm *)ss;
    snprintf(host, hl, "%u", a->svm_cid);
    *port = (int)a->svm_port;
  }
}

/* sh_request_conn_id: process-wide, so that two servers in one process never share one */
static atomic_uint_fast64_t conn_ids;

void sh_conn_accept(sh_server *srv, uv_stream_t *listener) {
  sh_conn *c = calloc(1, sizeof *c);
  if (!c) {
    sh_log(SH_LOG_ERROR, "out of memory accepting a connection");
    return;
  }
  c->srv = srv;
  c->id = atomic_fetch_add(&conn_ids, 1) + 1;
  int r = listener->type == UV_TCP ? uv_tcp_init(&srv->loop, &c->h.tcp)
                                   : uv_pipe_init(&srv->loop, &c->h.pipe, 0);
  if (r < 0) {
    free(c);
    return;
  }
  c->h.handle.data = c;
  uv_timer_init(&srv->loop, &c->timer);
  c->timer.data = c;
  c->handles_open = 2;
  c->next = srv->conns;
  if (srv->conns) srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;
  sh_metrics_conn(1);
  if (uv_accept(listener, &c->h.stream) < 0) {
    c->closing = 1;
    uv_close(&c->h.handle, on_close);
    uv_close((uv_handle_t *)&c->timer, on_close);
    return;
  }
  if (listener->type == UV_TCP) {
    /* Responses go out in one write: Nagle would only delay them. */
    uv_tcp_nodelay(&c->h.tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    c->addr_kind = SH_ADDR_INET;
    if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0)
      fill_inet(&ss, c->client_host, sizeof c->client_host, &c->client_port);
    len = sizeof ss;
    if (uv_tcp_getsockname(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0)
      fill_inet(&ss, c->server_host, sizeof c->server_host, &c->server_port);
  } else {
    c->addr_kind = SH_ADDR_UNIX;
    sh_strlcpy(c->server_host, srv->uds_path, sizeof c->server_host);
  }
  llhttp_init(&c->parser, HTTP_REQUEST, &sh_http1_settings);
  c->parser.data = c;
  c->state = CS_HEAD;
  if (srv->tls && sh_tls_conn_new(c) < 0) {
    sh_log(SH_LOG_ERROR, "out of memory setting up TLS for a connection");
    sh_conn_abort(c);
    return;
  }
  if (srv->stopping) {
    sh_conn_abort(c);
    return;
  }
  sh_conn_set_deadline(c, DL_HEADER, srv->cfg.timeout_header);
  sh_conn_update_reading(c);
}

/* ---- the parse driver ---- */

int sh_conn_drain_ok(const sh_req *req) {
  /* RFC 9110 §10.1.1: a client that expects 100-continue and did not get it may never send
   * the body, or send it later: do not try to resynchronise, close. */
  if (req->pub.expect_continue && !req->cont_sent) return 0;
  if (req->pub.content_length >= 0)
    return (uint64_t)req->pub.content_length - req->body_received <= SH_DRAIN_MAX;
  return 1; /* chunked: drained up to SH_DRAIN_MAX at run time (http1.c cb_body) */
}

/*
 * Hand the body bytes of the last llhttp_execute to the handler (on_body).  Returns 0 when the
 * connection is no longer parseable (closed or closing).
 *
 * The handler may finish the response from inside on_body (an I/O-thread handler such as the
 * attestation gate does, on the last chunk or on an earlier one), and sh_conn_response_done
 * then moves the connection on at once: it must find the connection exactly as it is after
 * this body.  So the state advances *before* the callback: after the last chunk the message is
 * complete (CS_DONE, the parser paused at its end), and response_done resumes the parser for
 * a pipelined or later request; after an earlier chunk it stays CS_BODY and response_done
 * switches to discarding the rest (CS_DRAIN) or closes (RFC 9112 §9.3, §9.6).  Either way the
 * caller just keeps parsing: nothing after the callback depends on the request.
 */
static int deliver_body(sh_conn *c, sh_req *req) {
  sh_server *srv = c->srv;
  int last = req->msg_complete;
  if (last) {
    c->state = CS_DONE;
    if (c->dl_kind == DL_BODY) sh_conn_set_deadline(c, DL_NONE, 0);
  }
  char *chunk = c->acc;
  size_t len = c->acc_len;
  c->acc = NULL;
  c->acc_len = c->acc_cap = 0;
  if (!chunk) chunk = malloc(1); /* a 0-length last chunk: still a real allocation */
  if (!chunk) {
    sh_conn_abort(c);
    return 0;
  }
  if (req->released || req->disconnected || !srv->handler->on_body) {
    free(chunk);
    return 1;
  }
  req->unconsumed += len;
  sh_server_fired(srv);
  srv->handler->on_body(srv->handler, &req->pub, chunk, len, last); /* req may be gone now */
  return !(c->closing || c->shutting);
}

static void dispatch(sh_conn *c, sh_req *req) {
  sh_server *srv = c->srv;
  req->handed = 1;
  req->refs++; /* the handler's reference */
  if (srv->cfg.limit_concurrency > 0 && srv->inflight >= srv->cfg.limit_concurrency) {
    /* --limit-concurrency (uvicorn's): shed load before the app sees the request. */
    req->released = 1;
    req->refs--;
    sh_http_respond_fixed(req, 503, "text/plain; charset=utf-8", "Service Unavailable\n", 20);
    return;
  }
  req->counted = 1;
  srv->inflight++;
  sh_metrics_inflight(1);
  if (!srv->handler->on_request) {
    req->released = 1;
    req->refs--;
    sh_http_respond_fixed(req, 500, "text/plain; charset=utf-8", "no handler\n", 11);
    return;
  }
  sh_server_fired(srv);
  srv->handler->on_request(srv->handler, &req->pub);
}

/* Returns 0 when the connection is no longer parseable (closed, error). */
static int parse_some(sh_conn *c) {
  const char *start = c->in_base;
  size_t len = c->in_len;
  llhttp_errno_t e = llhttp_execute(&c->parser, start, len);
  size_t used = len;
  if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
    used = (size_t)(llhttp_get_error_pos(&c->parser) - start);
  } else if (e != HPE_OK) {
    int status = c->err_status ? c->err_status : 400;
    const char *why = c->err_reason ? c->err_reason : llhttp_get_error_reason(&c->parser);
    c->acc_len = 0;
    c->in_len = 0;
    if (status < 0) {
      /* An unread body too large to drain, after a complete response: close, lingering so
       * the client that is still sending reads that response. */
      sh_conn_close(c, 1);
      return 0;
    }
    if (status == 400)
      sh_log(SH_LOG_WARNING, "Invalid HTTP request received from %s:%d: %s", c->client_host,
             c->client_port, why ? why : llhttp_errno_name(e));
    else
      sh_log(SH_LOG_DEBUG, "request refused with %d: %s", status, why ? why : "");
    sh_conn_error(c, status);
    return 0;
  }
  c->in_base += used;
  c->in_len -= used;
  if (c->in_len == 0 && !c->in_shared) c->in_base = c->ib;

  if (e == HPE_PAUSED_UPGRADE) c->no_reuse = 1;
  sh_req *req = c->req;
  /* In CS_BODY the only pause is the end of the message: deliver_body handles it. */
  if (req && c->state == CS_BODY && (c->acc_len || req->msg_complete)) return deliver_body(c, req);
  if (e == HPE_OK) return 1;

  /* Paused: at the end of a head with a body, or at the end of a message. */
  if (c->state == CS_DRAIN) {
    if (!c->in_message) { /* the unread body is gone: on to the next request */
      llhttp_resume(&c->parser);
      c->state = CS_HEAD;
      sh_conn_set_deadline(c, c->in_len ? DL_HEADER : DL_KEEPALIVE,
                           c->in_len ? c->srv->cfg.timeout_header : c->srv->cfg.timeout_keep_alive);
    }
    return 1;
  }
  if (!req) { /* cannot happen: a pause without a request */
    sh_conn_abort(c);
    return 0;
  }
  if (c->state == CS_HEAD) {
    c->state = req->msg_complete ? CS_DONE : CS_BODY_WAIT;
    dispatch(c, req); /* may answer at once (hello): req may be gone after this */
    return !(c->closing || c->shutting);
  }
  return 1;
}

void sh_conn_process(sh_conn *c) {
  if (c->in_process) {
    c->reprocess = 1;
    return;
  }
  c->in_process = 1;
  for (;;) {
    c->reprocess = 0;
    if (c->closing || c->shutting) break;
    int st = c->state;
    if (st == CS_HEAD || st == CS_BODY || st == CS_DRAIN) {
      if (c->in_len == 0) {
        if (c->read_eof) {
          /* The client is done sending.  A request whose body was cut short can never
           * complete: the client is gone.  Otherwise everything complete was answered (a
           * request still being answered is in CS_DONE or CS_BODY_WAIT, not here): close
           * after the queued writes.  A half-received head is dropped. */
          if (c->req)
            sh_conn_abort(c);
          else
            sh_conn_close(c, 0);
          break;
        }
        if (!c->reprocess) break;
        continue;
      }
      if (!parse_some(c)) break;
      continue;
    }
    if (!c->reprocess) break; /* waiting for the handler */
  }
  c->in_process = 0;
}

void sh_conn_request_read(sh_conn *c) {
  sh_req *req = c->req;
  if (!req) return;
  if (req->pub.expect_continue && !req->cont_sent && !req->head_sent && !req->msg_complete) {
    /* RFC 9110 §10.1.1: the client waits for this before sending the body. */
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
    req->cont_sent = 1;
    sh_conn_write(c, NULL, &b, 1, NULL, 0);
    if (c->closing) return;
  }
  if (c->state == CS_BODY_WAIT) {
    llhttp_resume(&c->parser);
    c->state = CS_BODY;
    if (c->srv->cfg.timeout_body > 0) sh_conn_set_deadline(c, DL_BODY, c->srv->cfg.timeout_body);
  }
  sh_conn_process(c);
  sh_conn_update_reading(c);
}

void sh_conn_response_done(sh_conn *c) {
  sh_server *srv = c->srv;
  sh_req *req = c->req;
  if (srv->cfg.access_log) sh_http_access_log(req);
  sh_metrics_response(req->status, req->no_body_out ? 0 : req->resp_body,
                      req->t_start ? (double)(uv_hrtime() - req->t_start) / 1e9 : 0.0);
  int keep = !req->close_after && !srv->stopping && !c->no_reuse && req->keep_alive &&
             srv->cfg.timeout_keep_alive > 0;
  int linger = 0;
  if (!req->msg_complete) {
    if (keep && sh_conn_drain_ok(req)) {
      /* The app answered without reading the whole body: discard the rest (bounded) so
       * the connection can carry the next request. */
      if (c->state == CS_BODY_WAIT) llhttp_resume(&c->parser);
      c->state = CS_DRAIN;
      c->drain_bytes = 0;
    } else {
      keep = 0;
      linger = 1;
    }
  }
  c->req = NULL;
  req->conn = NULL;
  atomic_store(&req->closed, 1);
  sh_req_unref(req); /* the server's reference; in-flight writes hold their own */
  if (!keep) {
    sh_conn_close(c, linger || c->in_len > 0);
    return;
  }
  if (c->state == CS_DONE) {
    llhttp_resume(&c->parser);
    c->state = CS_HEAD;
  }
  if (c->state == CS_DRAIN)
    sh_conn_set_deadline(c, DL_DRAIN, DRAIN_MS / 1000.0);
  else if (c->in_len)
    sh_conn_set_deadline(c, DL_HEADER, srv->cfg.timeout_header);
  else
    sh_conn_set_deadline(c, DL_KEEPALIVE, srv->cfg.timeout_keep_alive);
  sh_conn_process(c);
  sh_conn_update_reading(c);
}

/* ---- writing ---- */

typedef struct sh_wreq {
  uv_write_t w;
  sh_conn *c;
  sh_req *req;
  void *owned;
  size_t pend;
} sh_wreq;

static void on_write(uv_write_t *w, int status) {
  sh_wreq *wr = (sh_wreq *)w;
  sh_conn *c = wr->c;
  sh_req *req = wr->req;
  free(wr->owned);
  if (req) {
    atomic_fetch_sub(&req->out_pending, (long long)wr->pend);
    if (req->conn) sh_req_check_writable(req);
    sh_req_unref(req);
  }
  free(wr);
  if (status < 0 && status != UV_ECANCELED && !c->closing) sh_conn_abort(c);
}

int sh_conn_write(sh_conn *c, sh_req *req, uv_buf_t *bufs, unsigned n, void *owned, size_t pend) {
  if (c->tls) return sh_tls_write(c, req, bufs, n, owned, pend);
  return sh_conn_write_sock(c, req, bufs, n, owned, pend);
}

int sh_conn_write_sock(sh_conn *c, sh_req *req, uv_buf_t *bufs, unsigned n, void *owned,
                       size_t pend) {
  if (c->closing || c->shutting) goto dropped;
  size_t total = 0;
  for (unsigned i = 0; i < n; i++)
    total += bufs[i].len;
  int r = 0;
  if (uv_stream_get_write_queue_size(&c->h.stream) == 0) {
    /* Fast path: the socket usually takes the whole response now, with no request object
     * and no callback. */
    r = uv_try_write(&c->h.stream, bufs, n);
    if (r == UV_EAGAIN)
      r = 0;
    else if (r < 0)
      goto failed;
  }
  if ((size_t)r == total) {
    free(owned);
    if (req) {
      atomic_fetch_sub(&req->out_pending, (long long)pend);
      sh_req_check_writable(req);
    }
    return 0;
  }
  unsigned i = 0;
  size_t skip = (size_t)r;
  while (skip >= bufs[i].len)
    skip -= bufs[i++].len;
  bufs[i].base += skip;
  bufs[i].len -= skip;
  sh_wreq *wr = malloc(sizeof *wr);
  if (!wr) goto failed;
  wr->c = c;
  wr->req = req;
  wr->owned = owned;
  wr->pend = pend;
  if (req) req->refs++; /* the bytes may point into the request's arena */
  if (uv_write(&wr->w, &c->h.stream, bufs + i, n - i, on_write) < 0) {
    if (req) req->refs--;
    free(wr);
    goto failed;
  }
  return 0;
failed:
  /* Account first: the abort may drop the last reference to req. */
  free(owned);
  if (req) atomic_fetch_sub(&req->out_pending, (long long)pend);
  sh_conn_abort(c);
  return SH_ECLOSED;
dropped:
  free(owned);
  if (req) atomic_fetch_sub(&req->out_pending, (long long)pend);
  return SH_ECLOSED;
}
