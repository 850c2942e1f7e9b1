/*
 * server/request.c — the sh_request_* calls, the cross-thread operation queue and request
 * lifetime.
 *
 * Any thread may call sh_request_*.  Checks whose result the caller needs at once (closed,
 * state, header syntax, Content-Length overrun) run on the calling thread against atomics or
 * caller-side fields; the effect is an operation applied on the loop thread in call order:
 * called on the loop thread it applies at once (after anything already queued, so order
 * holds), otherwise it joins a mutex-protected FIFO and uv_async_send wakes the loop (libuv
 * coalesces wake-ups).  A request is freed only on the loop thread when its last reference
 * (server, handler, in-flight writes) goes; every queued op was made before the handler's
 * release, so the request is alive whenever an op is applied.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server_internal.h"

#define SH_REQ_POOL_MAX 256

/* ---- lifetime ---- */

sh_req *sh_req_new(sh_server *srv) {
  sh_req *req = srv->free_reqs;
  if (req) {
    srv->free_reqs = req->free_next;
    srv->nfree_reqs--;
  } else {
    req = malloc(sizeof *req);
    if (!req) return NULL;
  }
  /* Clear everything before the arena memory (the inline block needs no zeroing). */
  memset(req, 0, offsetof(sh_req, mem));
  sh_arena_init(&req->arena, req->mem, sizeof req->mem);
  req->srv = srv;
  req->refs = 1;
  req->app_cl = -1;
  req->resp_cl = -1;
  atomic_init(&req->closed, 0);
  atomic_init(&req->app_state, 0);
  atomic_init(&req->out_pending, 0);
  atomic_init(&req->want_writable, 0);
  req->next = srv->live;
  if (srv->live) srv->live->prev = req;
  srv->live = req;
  return req;
}

static void req_destroy(sh_req *req, int recycle) {
  sh_server *srv = req->srv;
  if (req->prev)
    req->prev->next = req->next;
  else
    srv->live = req->next;
  if (req->next) req->next->prev = req->prev;
  free(req->start_op);
  req->start_op = NULL;
  if (req->pub.tls_info) sh_tls_info_unref(req->pub.tls_info);
  sh_arena_reset(&req->arena);
  if (recycle && srv->nfree_reqs < SH_REQ_POOL_MAX) {
    req->free_next = srv->free_reqs;
    srv->free_reqs = req;
    srv->nfree_reqs++;
  } else {
    free(req);
  }
}

void sh_req_unref(sh_req *req) {
  if (--req->refs == 0) req_destroy(req, 1);
}

void sh_req_free_all(sh_server *srv) {
  while (srv->live)
    req_destroy(srv->live, 0);
  while (srv->free_reqs) {
    sh_req *r = srv->free_reqs;
    srv->free_reqs = r->free_next;
    free(r);
  }
  srv->nfree_reqs = 0;
}

/* ---- applying ops (loop thread) ---- */

void sh_req_check_writable(sh_req *req) {
  sh_server *srv = req->srv;
  if (!atomic_load(&req->want_writable) || srv->freeing) return;
  long long pending = atomic_load(&req->out_pending);
  if ((size_t)pending > srv->cfg.write_high_water / 2) return;
  int one = 1;
  if (!atomic_compare_exchange_strong(&req->want_writable, &one, 0)) return;
  if (req->released || req->disconnected || !req->handed) return;
  if (srv->handler->on_writable) {
    sh_server_fired(srv);
    srv->handler->on_writable(srv->handler, &req->pub);
  }
}

/*
 * The handler let go of a request whose response it never finished (a handler bug, or a race
 * in it): nobody can finish the response any more, and without this the connection would wait
 * for it until the client gives up.  Answer as sh_request_fail would: 500 when nothing was
 * sent, otherwise cut the response short and close.
 */
/* 500 when nothing was sent yet; else the response is cut short (abort or close). */
static void fail_response(sh_req *req, int abort) {
  if (!req->head_sent) {
    free(req->start_op);
    req->start_op = NULL;
    static const char body[] = "Internal Server Error";
    sh_http_respond_fixed(req, 500, "text/plain; charset=utf-8", body, sizeof body - 1);
  } else if (abort) {
    sh_conn_abort(req->conn);
  } else {
    sh_conn_close(req->conn, 1);
  }
}

static void finish_abandoned(sh_req *req) {
  sh_conn *c = req->conn;
  if (!c || req->resp_done || req->cut) return; /* sh_request_cut decided the response */
  char rid[24];
  sh_request_id(req, rid);
  sh_log(SH_LOG_ERROR, "request %s released without a complete response: %s", rid,
         req->head_sent ? "closing the connection" : "answering 500");
  fail_response(req, 0);
}

/* What sh_request_cut leaves of the handler's own ops: its reads, acknowledgements and its
 * release still apply; whatever would answer (start, write, fail, abort) is dropped. */
static int dropped_by_cut(const sh_req *req, const sh_op *op) {
  return req->cut && op->type != SH_OP_RELEASE && op->type != SH_OP_READ &&
         op->type != SH_OP_CONSUMED;
}

static void apply(sh_server *srv, sh_op *op) {
  sh_req *req = op->req;
  sh_conn *c = req->conn;
  if (dropped_by_cut(req, op)) {
    if (op->type == SH_OP_WRITE) atomic_fetch_sub(&req->out_pending, (long long)op->len);
    free(op);
    return;
  }
  switch (op->type) {
    case SH_OP_RELEASE:
      free(op);
      if (req->counted) { /* --limit-concurrency: the app is done with it */
        req->counted = 0;
        srv->inflight--;
        sh_metrics_inflight(-1);
      }
      if (!req->released) {
        req->released = 1;
        /* The last callback for this request: events the handler queued on its own thread can
         * no longer be followed by more. */
        if (req->handed && srv->handler->on_release && !srv->freeing) {
          sh_server_fired(srv);
          srv->handler->on_release(srv->handler, &req->pub);
        }
        finish_abandoned(req); /* the server's reference keeps req alive here */
        sh_req_unref(req);
      }
      return;
    case SH_OP_START:
      if (!c || req->resp_done || req->head_sent || req->start_op) break;
      sh_http_start_applied(req, op); /* keeps op */
      return;
    case SH_OP_WRITE:
      if (!c || req->resp_done) {
        atomic_fetch_sub(&req->out_pending, (long long)op->len);
        break;
      }
      sh_http_send(req, op->data, op->len, op->more, op); /* owns op */
      return;
    case SH_OP_READ:
      if (c && !req->read_requested) {
        req->read_requested = 1;
        sh_conn_request_read(c);
      }
      break;
    case SH_OP_CONSUMED:
      if (c) {
        req->unconsumed = op->len >= req->unconsumed ? 0 : req->unconsumed - op->len;
        sh_conn_update_reading(c);
      }
      break;
    case SH_OP_FAIL:
      if (!c || req->resp_done) break;
      fail_response(req, 1);
      break;
    case SH_OP_ABORT:
      if (!c || req->resp_done) break;
      /* The app failed after its start but before any body byte: the head waits for the first
       * body bytes (http1.c), so nothing reached the wire and the client can still get a
       * proper 500 instead of a closed connection. */
      if (!req->head_sent) {
        fail_response(req, 1);
        break;
      }
      /* What was queued still goes out (the client sees a truncated response, not a reset),
       * then the connection closes: its framing can no longer be trusted. */
      sh_conn_close(c, 1);
      break;
  }
  free(op);
}

void sh_ops_drain(sh_server *srv) {
  for (;;) {
    pthread_mutex_lock(&srv->qlock);
    sh_op *op = srv->qhead;
    srv->qhead = srv->qtail = NULL;
    atomic_store(&srv->qcount, 0);
    pthread_mutex_unlock(&srv->qlock);
    if (!op) return;
    while (op) {
      sh_op *next = op->next;
      apply(srv, op);
      op = next;
    }
  }
}

void sh_ops_close(sh_server *srv) {
  pthread_mutex_lock(&srv->qlock);
  srv->qclosed = 1;
  pthread_mutex_unlock(&srv->qlock);
}

/* Queue or apply.  Consumes op in every case.  SH_ECLOSED when the server is gone. */
static int submit(sh_req *req, sh_op *op) {
  sh_server *srv = req->srv;
  op->req = req;
  op->next = NULL;
  if (sh_on_loop_thread(srv)) {
    if (atomic_load(&srv->qcount) > 0) sh_ops_drain(srv); /* keep call order */
    apply(srv, op);
    return 0;
  }
  pthread_mutex_lock(&srv->qlock);
  if (srv->qclosed) {
    pthread_mutex_unlock(&srv->qlock);
    free(op);
    return SH_ECLOSED;
  }
  if (srv->qtail)
    srv->qtail->next = op;
  else
    srv->qhead = op;
  srv->qtail = op;
  atomic_fetch_add(&srv->qcount, 1);
  uv_async_send(&srv->async);
  pthread_mutex_unlock(&srv->qlock);
  return 0;
}

static sh_op *op_new(int type, size_t extra) {
  sh_op *op = malloc(sizeof *op + extra);
  if (!op) return NULL;
  memset(op, 0, sizeof *op);
  op->type = type;
  return op;
}

static int simple_op(sh_request *r, int type, size_t n) {
  if (!r) return SH_EINVAL;
  sh_req *req = (sh_req *)r;
  if (atomic_load(&req->closed)) return SH_ECLOSED;
  sh_op *op = op_new(type, 0);
  if (!op) return SH_ENOMEM;
  op->len = n;
  return submit(req, op);
}

/* ---- the public calls ---- */

int sh_request_read(sh_request *r) {
  return simple_op(r, SH_OP_READ, 0);
}

int sh_request_consumed(sh_request *r, size_t n) {
  return simple_op(r, SH_OP_CONSUMED, n);
}

void sh_request_release(sh_request *r) {
  if (!r) return;
  sh_req *req = (sh_req *)r;
  sh_op *op = op_new(SH_OP_RELEASE, 0);
  if (!op) {
    /* Cannot queue: leak rather than free memory another thread may still be reading.
     * sh_server_free reclaims it. */
    return;
  }
  submit(req, op);
}

int sh_request_fail(sh_request *r) {
  if (!r) return SH_EINVAL;
  sh_req *req = (sh_req *)r;
  if (atomic_load(&req->closed)) return SH_ECLOSED;
  int prev = atomic_exchange(&req->app_state, 2);
  if (prev == 2) return SH_ESTATE;
  return simple_op(r, prev == 0 ? SH_OP_FAIL : SH_OP_ABORT, 0);
}

/* RFC 9110 §5.1: field-name = token; §5.5: field-value has no CR, LF or NUL. */
static int header_ok(const sh_header *h) {
  if (!h->name.base || h->name.len == 0) return 0;
  for (size_t i = 0; i < h->name.len; i++)
    if (!sh_http_token_char((unsigned char)h->name.base[i])) return 0;
  if (h->value.len && !h->value.base) return 0;
  for (size_t i = 0; i < h->value.len; i++) {
    unsigned char ch = (unsigned char)h->value.base[i];
    if (ch == '\r' || ch == '\n' || ch == '\0') return 0;
  }
  return 1;
}

static int name_is(const sh_iovec *n, const char *lit) {
  size_t l = strlen(lit);
  return n->len == l && strncasecmp(n->base, lit, l) == 0;
}

/* Does a comma-separated token list contain `tok` (case-insensitive)? */
static int list_has(const sh_iovec *v, const char *tok) {
  size_t tl = strlen(tok), i = 0;
  while (i < v->len) {
    while (i < v->len && (v->base[i] == ' ' || v->base[i] == '\t' || v->base[i] == ','))
      i++;
    size_t s = i;
    while (i < v->len && v->base[i] != ',')
      i++;
    size_t e = i;
    while (e > s && (v->base[e - 1] == ' ' || v->base[e - 1] == '\t'))
      e--;
    if (e - s == tl && strncasecmp(v->base + s, tok, tl) == 0) return 1;
  }
  return 0;
}

static int parse_cl(const sh_iovec *v, int64_t *out) {
  if (v->len == 0 || v->len > 18) return -1;
  int64_t n = 0;
  for (size_t i = 0; i < v->len; i++) {
    if (v->base[i] < '0' || v->base[i] > '9') return -1;
    n = n * 10 + (v->base[i] - '0');
  }
  *out = n;
  return 0;
}

/* The START op of a response (headers checked and formatted), or a negative code and no op:
 * SH_EINVAL, SH_EHEADER, SH_ENOMEM.  Runs on the caller's thread. */
static int start_op(int status, const sh_header *headers, size_t n, sh_op **out) {
  *out = NULL;
  if (status < 100 || status > 999 || (n && !headers)) return SH_EINVAL;
  /* Validate everything before queuing anything: a rejected start leaves the request
   * untouched, so the app can still answer (say, with a 500). */
  size_t total = 0;
  int flags = 0;
  int64_t cl = -1;
  for (size_t i = 0; i < n; i++) {
    const sh_header *h = &headers[i];
    if (!header_ok(h)) return SH_EHEADER;
    if (name_is(&h->name, "content-length")) {
      int64_t v;
      /* RFC 9110 §8.6: one non-negative decimal; differing duplicates are invalid. */
      if (parse_cl(&h->value, &v) < 0 || (cl >= 0 && v != cl)) return SH_EHEADER;
      cl = v;
    } else if (name_is(&h->name, "connection")) {
      if (list_has(&h->value, "close")) flags |= SH_APPHDR_CLOSE;
      continue; /* the server writes its own connection header */
    } else if (name_is(&h->name, "transfer-encoding")) {
      continue; /* framing is the server's job (chunked when needed) */
    } else if (name_is(&h->name, "server")) {
      flags |= SH_APPHDR_SERVER;
    } else if (name_is(&h->name, "date")) {
      flags |= SH_APPHDR_DATE;
    }
    if (total > SIZE_MAX / 2 - h->name.len - h->value.len - 4) return SH_EINVAL;
    total += h->name.len + 2 + h->value.len + 2;
  }
  sh_op *op = op_new(SH_OP_START, total);
  if (!op) return SH_ENOMEM;
  char *p = op->data;
  int seen_cl = 0;
  for (size_t i = 0; i < n; i++) {
    const sh_header *h = &headers[i];
    if (name_is(&h->name, "connection") || name_is(&h->name, "transfer-encoding")) continue;
    if (name_is(&h->name, "content-length")) {
      if (seen_cl++) continue; /* identical duplicates collapse to one */
    }
    memcpy(p, h->name.base, h->name.len);
    p += h->name.len;
    *p++ = ':';
    *p++ = ' ';
    if (h->value.len) memcpy(p, h->value.base, h->value.len);
    p += h->value.len;
    *p++ = '\r';
    *p++ = '\n';
  }
  op->len = (size_t)(p - op->data);
  op->status = status;
  op->flags = flags;
  op->cl = cl;
  *out = op;
  return 0;
}

int sh_request_start(sh_request *r, int status, const sh_header *headers, size_t n) {
  if (!r) return SH_EINVAL;
  sh_req *req = (sh_req *)r;
  if (atomic_load(&req->closed)) return SH_ECLOSED;
  if (atomic_load(&req->app_state) != 0) return SH_ESTATE;
  sh_op *op;
  int rc = start_op(status, headers, n, &op);
  if (rc < 0) return rc;
  int zero = 0;
  if (!atomic_compare_exchange_strong(&req->app_state, &zero, 1)) {
    free(op);
    return SH_ESTATE;
  }
  req->app_cl = op->cl;
  req->app_written = 0;
  return submit(req, op);
}

int64_t sh_request_write(sh_request *r, const void *data, size_t len, int more) {
  if (!r || (len && !data)) return SH_EINVAL;
  sh_req *req = (sh_req *)r;
  sh_server *srv = req->srv;
  if (atomic_load(&req->closed)) return SH_ECLOSED;
  if (atomic_load(&req->app_state) != 1) return SH_ESTATE;
  if (req->app_cl >= 0 && (uint64_t)req->app_cl - req->app_written < len) {
    /* The app broke its own framing: the response cannot be completed correctly, and a
     * reused connection would be desynchronised.  Nothing of this write goes out: the head
     * (if not yet sent) is flushed alone, so the client sees a short body, then the close. */
    atomic_store(&req->app_state, 2);
    sh_op *head = op_new(SH_OP_WRITE, 0);
    if (head) {
      head->more = 1;
      submit(req, head);
    }
    simple_op(r, SH_OP_ABORT, 0);
    return SH_ETOOLONG;
  }
  req->app_written += len;
  if (!more) atomic_store(&req->app_state, 2);
  sh_op *op = op_new(SH_OP_WRITE, len);
  if (!op) return SH_ENOMEM;
  if (len) memcpy(op->data, data, len);
  op->len = len;
  op->more = more;
  long long pending = atomic_fetch_add(&req->out_pending, (long long)len) + (long long)len;
  /* Set the flag before the op can be applied, so the drain that follows always sees it. */
  if ((size_t)pending > srv->cfg.write_high_water) atomic_store(&req->want_writable, 1);
  int rc = submit(req, op);
  if (rc < 0) return rc;
  long long now = atomic_load(&req->out_pending);
  return now > 0 ? now : 0;
}

/* ---- for handlers that wrap another ---- */

const sh_iovec *sh_request_header(const sh_request *r, const char *lower_name) {
  size_t n = strlen(lower_name);
  for (size_t i = 0; i < r->num_headers; i++)
    if (r->headers[i].name.len == n && memcmp(r->headers[i].name.base, lower_name, n) == 0)
      return &r->headers[i].value;
  return NULL;
}

static atomic_int ext_keys; /* keys handed out, process-wide */

int sh_request_ext_key(void) {
  int k = atomic_fetch_add(&ext_keys, 1);
  if (k >= SH_REQUEST_EXT_MAX) {
    atomic_fetch_sub(&ext_keys, 1);
    return SH_ENOMEM;
  }
  return k;
}

void *sh_request_ext(const sh_request *r, int key) {
  if (!r || key < 0 || key >= SH_REQUEST_EXT_MAX) return NULL;
  return ((const sh_req *)r)->ext[key];
}

void sh_request_set_ext(sh_request *r, int key, void *value) {
  if (r && key >= 0 && key < SH_REQUEST_EXT_MAX) ((sh_req *)r)->ext[key] = value;
}

uint64_t sh_request_conn_id(const sh_request *r) {
  return r ? ((const sh_req *)r)->conn_id : 0;
}

/*
 * Why the decision is made here, on the I/O thread, from what reached the wire: the handler's
 * thread may be between its own checks (closed, app_state) and queuing its ops at this very
 * moment.  Judging by app_state would race with it (an answer could be refused by a start the
 * handler is about to make, or two answers could go out).  Instead `closed` refuses every later
 * call, `cut` drops every op applied from now on (apply: queued before or after this call,
 * they were not applied, so nothing of them is on the wire), and only the loop thread's own
 * state — head_sent, resp_done — decides whether our answer can still be the response.
 */
int sh_request_cut(sh_request *r, int status, const sh_header *headers, size_t n, const void *body,
                   size_t len) {
  if (!r || (len && !body)) return SH_EINVAL;
  sh_req *req = (sh_req *)r;
  sh_server *srv = req->srv;
  if (!sh_on_loop_thread(srv)) return SH_EINVAL;
  sh_op *op, *wop;
  int rc = start_op(status, headers, n, &op);
  if (rc < 0) return rc;
  if (op->cl >= 0 && (uint64_t)op->cl != len) { /* the response is exactly `body` */
    free(op);
    return SH_EINVAL;
  }
  if (!(wop = op_new(SH_OP_WRITE, len))) {
    free(op);
    return SH_ENOMEM;
  }
  atomic_store(&req->closed, 1);
  atomic_store(&req->app_state, 2);
  req->cut = 1;
  sh_conn *c = req->conn;
  if (!c || req->resp_done) {
    free(op);
    free(wop);
    return SH_ECLOSED;
  }
  req->close_after = 1; /* the handler's exchange never ended for it: never reuse */
  if (req->head_sent) {
    free(op);
    free(wop);
    sh_conn_close(c, 1); /* what was queued goes out, then the close ends the response */
    return SH_ESTATE;
  }
  free(req->start_op); /* an applied start with nothing on the wire: ours replaces it */
  req->start_op = NULL;
  op->flags |= SH_APPHDR_CLOSE;
  sh_http_start_applied(req, op); /* framed by the body's length: it is all there */
  if (len) memcpy(wop->data, body, len);
  wop->len = len;
  atomic_fetch_add(&req->out_pending, (long long)len);
  sh_http_send(req, wop->data, len, 0, wop);
  return 0;
}
