/*
 * tests/c/server/test_server.c — server/ against real sockets.
 *
 * Two servers run on 127.0.0.1 (port 0), each in its own thread: one with the built-in hello
 * handler, one with a test handler whose "app" runs on another thread (like pyshim's Python
 * thread): on_request/on_body/on_disconnect are queued to it and it answers with the
 * sh_request_* calls from there.  Further servers check limits, a UNIX socket, and a handler
 * that answers from inside the callbacks on the I/O thread (as the attestation gate does).
 * Clients are blocking sockets with receive timeouts.
 * Prints "N passed, N failed" and exits non-zero on failure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "server.h"
#include "testutil.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ test app (other thread) */

typedef struct app_req {
  char path[256];
  char *body;
  size_t body_len;
  int done;
  int big_i, big_waits;
} app_req;

enum { EV_REQ, EV_BODY, EV_DISC, EV_WRITABLE, EV_RELEASED };
typedef struct ev {
  struct ev *next;
  int kind;
  sh_request *req;
  app_req *ar;
  char *data;
  size_t len;
  int last;
} ev;

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  ev *head, *tail;
  int quit;
  int busy;
  atomic_int disconnects;
  atomic_int flushes;
  atomic_int last_start_rc; /* result of the bad-header start */
  atomic_llong last_write_rc;
  atomic_int writables;
} app = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* What the wrapping handler (test_wrapper, below) and the app share: the wrapper's
 * extension-slot key and the steps of the sh_request_cut tests, which the two threads take in
 * turn (each waits for the other's step under W.lock; waits are bounded, never timed). */
static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int key;        /* sh_request_ext_key of the wrapper */
  sh_server *srv; /* learnt in on_start */
  pthread_t loop_thread;
  atomic_int starts;                                                   /* on_start calls */
  int answer_now, app_done, cut_done, app_after, late_done, post_done; /* the steps */
  int start_rc, write_rc, write_after_cut_rc; /* the app's calls (/cutrace) */
  int cut_rc, late_cut_rc, done_cut_rc;       /* sh_request_cut's returns */
  int post_on_loop;                           /* the posted function ran on the loop thread */
  int posted;                                 /* set by the posted function ... */
  atomic_int flush_after_post;                /* ... and seen by the on_flush of that iteration */
} W = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .key = -1};

/* Wait until *flag is set (at most 10 s: a bound on a hang, not a timing assumption). */
static int w_wait(int *flag) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 10;
  pthread_mutex_lock(&W.lock);
  while (!*flag)
    if (pthread_cond_timedwait(&W.cond, &W.lock, &dl) != 0) break;
  int ok = *flag;
  pthread_mutex_unlock(&W.lock);
  return ok;
}

static void w_set(int *flag) {
  pthread_mutex_lock(&W.lock);
  *flag = 1;
  pthread_cond_broadcast(&W.cond);
  pthread_mutex_unlock(&W.lock);
}

static void app_wrapped(sh_request *req, app_req *ar);

static void push(int kind, sh_request *req, char *data, size_t len, int last) {
  ev *e = calloc(1, sizeof *e);
  e->kind = kind;
  e->req = req;
  e->data = data;
  e->len = len;
  e->last = last;
  /* On the loop thread, before the app's release: req is alive here. */
  e->ar = req->handler_data;
  pthread_mutex_lock(&app.lock);
  if (app.tail)
    app.tail->next = e;
  else
    app.head = e;
  app.tail = e;
  pthread_mutex_unlock(&app.lock);
}

static void t_on_request(sh_handler *h, sh_request *req) {
  (void)h;
  req->handler_data = calloc(1, sizeof(app_req));
  push(EV_REQ, req, NULL, 0, 0);
}
static void t_on_body(sh_handler *h, sh_request *req, char *c, size_t n, int last) {
  (void)h;
  push(EV_BODY, req, c, n, last);
}
static void t_on_disconnect(sh_handler *h, sh_request *req) {
  (void)h;
  atomic_fetch_add(&app.disconnects, 1);
  push(EV_DISC, req, NULL, 0, 0);
}
static void t_on_writable(sh_handler *h, sh_request *req) {
  (void)h;
  atomic_fetch_add(&app.writables, 1);
  push(EV_WRITABLE, req, NULL, 0, 0);
}
/* The last event for a request: the app frees its state when it gets here. */
static void t_on_release(sh_handler *h, sh_request *req) {
  (void)h;
  push(EV_RELEASED, req, NULL, 0, 0);
}
/* Wake the app once per batch, as the Python bridge does. */
static void t_on_flush(sh_handler *h) {
  (void)h;
  atomic_fetch_add(&app.flushes, 1);
  pthread_mutex_lock(&app.lock);
  pthread_cond_signal(&app.cond);
  pthread_mutex_unlock(&app.lock);
}

static sh_handler test_handler = {
    .on_request = t_on_request,
    .on_body = t_on_body,
    .on_disconnect = t_on_disconnect,
    .on_writable = t_on_writable,
    .on_release = t_on_release,
    .on_flush = t_on_flush,
};

#define H(n, v)           \
  {                       \
    {n, sizeof(n) - 1}, { \
      v, sizeof(v) - 1    \
    }                     \
  }

static void finish(sh_request *req, app_req *ar) {
  if (ar->done) return;
  ar->done = 1;
  sh_request_release(req);
}

static void respond_text(sh_request *req, int status, const char *text) {
  sh_header hs[] = {H("content-type", "text/plain")};
  sh_request_start(req, status, hs, 1);
  sh_request_write(req, text, strlen(text), 0);
}

/* Write 256 KiB blocks until the server reports more than the high-water mark pending, then
 * wait for on_writable, as the Python bridge does. */
static void big_more(sh_request *req, app_req *ar) {
  static char blk[256 * 1024];
  memset(blk, 'x', sizeof blk);
  while (ar->big_i < 16) {
    ar->big_i++;
    int64_t rc = sh_request_write(req, blk, sizeof blk, ar->big_i < 16);
    if (rc < 0) break;
    if ((size_t)rc > 64 * 1024 && ar->big_i < 16) {
      ar->big_waits++;
      return;
    }
  }
  finish(req, ar);
}

static void app_request(sh_request *req, app_req *ar) {
  snprintf(ar->path, sizeof ar->path, "%.*s", (int)req->path.len, req->path.base);
  const char *p = ar->path;
  if (!strcmp(p, "/echo") || !strcmp(p, "/slow-body")) {
    if (!req->has_body) {
      respond_text(req, 200, "");
      finish(req, ar);
      return;
    }
    sh_request_read(req);
    return;
  }
  if (!strcmp(p, "/path")) { /* answers with the target: proves pipelined order */
    char buf[300];
    snprintf(buf, sizeof buf, "%.*s", (int)req->target.len, req->target.base);
    respond_text(req, 200, buf);
  } else if (!strcmp(p, "/stream")) {
    sh_request_start(req, 200, NULL, 0);
    sh_request_write(req, "hello ", 6, 1);
    sh_request_write(req, "chunked", 7, 1);
    sh_request_write(req, "", 0, 0);
  } else if (!strcmp(p, "/cl-stream")) {
    sh_header hs[] = {H("content-length", "10")};
    sh_request_start(req, 200, hs, 1);
    sh_request_write(req, "01234", 5, 1);
    sh_request_write(req, "56789", 5, 0);
  } else if (!strcmp(p, "/toolong")) {
    sh_header hs[] = {H("content-length", "3")};
    sh_request_start(req, 200, hs, 1);
    atomic_store(&app.last_write_rc, sh_request_write(req, "abcdef", 6, 0));
  } else if (!strcmp(p, "/split")) {
    sh_header bad[] = {H("x-evil", "a\r\nset-cookie: x=1")};
    atomic_store(&app.last_start_rc, sh_request_start(req, 200, bad, 1));
    sh_header badname[] = {H("x evil", "1")};
    int rc2 = sh_request_start(req, 200, badname, 1);
    if (rc2 != SH_EHEADER) atomic_store(&app.last_start_rc, rc2);
    respond_text(req, 200, "safe");
  } else if (!strcmp(p, "/fail")) {
    sh_request_fail(req);
  } else if (!strcmp(p, "/big")) { /* 4 MiB streamed: exercises write backpressure */
    sh_header hs[] = {H("content-length", "4194304")};
    sh_request_start(req, 200, hs, 1);
    big_more(req, ar);
    return;
  } else if (!strcmp(p, "/noread")) {
    respond_text(req, 200, "ignored your body");
  } else if (!strcmp(p, "/custom")) {
    sh_header hs[] = {H("Server", "custom"), H("X-A", "1"), H("Connection", "close")};
    sh_request_start(req, 201, hs, 3);
    sh_request_write(req, "made", 4, 0);
  } else if (!strcmp(p, "/nocontent")) {
    sh_request_start(req, 204, NULL, 0);
    sh_request_write(req, "dropped", 7, 0);
  } else if (!strcmp(p, "/hold")) {
    return; /* answered never: waits for the disconnect */
  } else if (!strcmp(p, "/info") || !strcmp(p, "/")) {
    /* what routing sees: "path|query|host" (absolute-form targets, RFC 9112 §3.2.2) */
    const sh_iovec *host = NULL;
    for (size_t i = 0; i < req->num_headers; i++)
      if (req->headers[i].name.len == 4 && !memcmp(req->headers[i].name.base, "host", 4))
        host = &req->headers[i].value;
    char buf[600];
    snprintf(buf, sizeof buf, "%.*s|%.*s|%.*s", (int)req->path.len, req->path.base,
             (int)req->query.len, req->query.base, host ? (int)host->len : 0,
             host ? host->base : "");
    respond_text(req, 200, buf);
  } else if (!strncmp(p, "/w/", 3)) { /* behind test_wrapper */
    app_wrapped(req, ar);
    return;
  } else if (!strcmp(p, "/start-fail")) {
    /* the app fails after its start, before any body byte: nothing reached the wire */
    sh_header hs[] = {H("x-started", "1")};
    sh_request_start(req, 200, hs, 1);
    sh_request_fail(req);
  } else {
    respond_text(req, 404, "not found");
  }
  finish(req, ar);
}

/* Events that arrive after the app released the request are dropped without touching it. */
static void app_event(ev *e) {
  sh_request *req = e->req;
  app_req *ar = e->ar;
  if (e->kind == EV_RELEASED) {
    free(ar->body);
    free(ar);
    return;
  }
  if (ar->done) {
    free(e->data);
    return;
  }
  switch (e->kind) {
    case EV_REQ:
      app_request(req, ar);
      break;
    case EV_BODY:
      ar->body = realloc(ar->body, ar->body_len + e->len + 1);
      memcpy(ar->body + ar->body_len, e->data, e->len);
      ar->body_len += e->len;
      free(e->data);
      sh_request_consumed(req, e->len);
      if (e->last) {
        sh_header hs[] = {H("content-type", "application/octet-stream")};
        sh_request_start(req, 200, hs, 1);
        sh_request_write(req, ar->body, ar->body_len, 0);
        finish(req, ar);
      }
      break;
    case EV_DISC:
      finish(req, ar);
      break;
    case EV_WRITABLE:
      if (!strcmp(ar->path, "/big")) big_more(req, ar);
      break;
  }
}

static void *app_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&app.lock);
  for (;;) {
    while (!app.head && !app.quit) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 50 * 1000000;
      if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
      pthread_cond_timedwait(&app.cond, &app.lock, &ts);
    }
    if (!app.head && app.quit) break;
    ev *e = app.head;
    app.head = e->next;
    if (!app.head) app.tail = NULL;
    app.busy = 1;
    pthread_mutex_unlock(&app.lock);
    app_event(e);
    pthread_mutex_lock(&app.lock);
    app.busy = 0;
    free(e);
  }
  pthread_mutex_unlock(&app.lock);
  return NULL;
}

/* ---------------------------------------------------------------- servers and clients */

typedef struct running {
  sh_server *srv;
  pthread_t th;
  int port;
} running;

static void *run_main(void *arg) {
  running *r = arg;
  sh_server_run(r->srv);
  return NULL;
}

static int start(running *r, sh_config *cfg, sh_handler *h) {
  sh_error err;
  int rc = sh_server_new(cfg, h, &r->srv, &err);
  if (rc < 0) {
    fprintf(stderr, "sh_server_new: %s\n", err.message);
    return rc;
  }
  r->port = sh_server_port(r->srv);
  pthread_create(&r->th, NULL, run_main, r);
  return 0;
}

/* Let the app thread finish what it was given before the server (and its requests) go. */
static void app_settle(void) {
  for (int i = 0; i < 200; i++) {
    pthread_mutex_lock(&app.lock);
    int idle = !app.head && !app.busy;
    pthread_mutex_unlock(&app.lock);
    if (idle) return;
    usleep(5000);
  }
}

static void stop(running *r) {
  app_settle();
  sh_server_stop(r->srv, 1.0);
  pthread_join(r->th, NULL);
  sh_server_free(r->srv);
}

static void base_cfg(sh_config *cfg) {
  sh_config_init(cfg);
  cfg->host = "127.0.0.1";
  cfg->port = 0;
  cfg->access_log = 0;
}

static int dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void set_timeout(int fd, double s) {
  struct timeval tv = {.tv_sec = (long)s, .tv_usec = (long)((s - (long)s) * 1e6)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static int send_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    c += w;
    n -= (size_t)w;
  }
  return 0;
}
static int send_str(int fd, const char *s) {
  return send_all(fd, s, strlen(s));
}

/* A connection's received bytes, parsed one response at a time. */
typedef struct client {
  int fd;
  char buf[1 << 16];
  size_t len;
  int eof;
} client;

typedef struct resp {
  int status;
  char head[8192];
  char body[1 << 16];
  size_t body_len;
  int ok;
} resp;

static int fill(client *c) {
  if (c->len == sizeof c->buf) return -1;
  ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
  if (r == 0) c->eof = 1;
  if (r <= 0) return -1;
  c->len += (size_t)r;
  return 0;
}

static void eat(client *c, size_t n) {
  memmove(c->buf, c->buf + n, c->len - n);
  c->len -= n;
}

static const char *hdr(const resp *r, const char *name) {
  static char val[512];
  size_t nl = strlen(name);
  const char *p = strstr(r->head, "\r\n");
  while (p && p[2] != '\r') {
    p += 2;
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      const char *v = p + nl + 1;
      while (*v == ' ')
        v++;
      const char *e = strstr(v, "\r\n");
      snprintf(val, sizeof val, "%.*s", (int)(e - v), v);
      return val;
    }
    p = strstr(p, "\r\n");
  }
  return NULL;
}

/* Read one response; no_body for HEAD/204/304/1xx. */
static int read_resp(client *c, resp *r, int no_body) {
  memset(r, 0, sizeof *r);
  char *end;
  while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
    if (fill(c) < 0) return -1;
  size_t hl = (size_t)(end - c->buf) + 4;
  if (hl >= sizeof r->head) return -1;
  memcpy(r->head, c->buf, hl);
  r->head[hl] = '\0';
  eat(c, hl);
  if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1) return -1;
  if (no_body || r->status < 200 || r->status == 204 || r->status == 304) {
    r->ok = 1;
    return 0;
  }
  const char *cl = hdr(r, "content-length");
  const char *te = hdr(r, "transfer-encoding");
  if (cl) {
    size_t n = strtoul(cl, NULL, 10);
    while (c->len < n)
      if (fill(c) < 0) return -1;
    size_t keep = n < sizeof r->body ? n : sizeof r->body;
    memcpy(r->body, c->buf, keep);
    r->body_len = n;
    eat(c, n);
  } else if (te && strcasecmp(te, "chunked") == 0) {
    for (;;) {
      char *le;
      while (!(le = memmem(c->buf, c->len, "\r\n", 2)))
        if (fill(c) < 0) return -1;
      size_t sz = strtoul(c->buf, NULL, 16);
      size_t need = (size_t)(le - c->buf) + 2 + sz + 2;
      while (c->len < need)
        if (fill(c) < 0) return -1;
      if (r->body_len + sz < sizeof r->body) memcpy(r->body + r->body_len, le + 2, sz);
      r->body_len += sz;
      eat(c, need);
      if (sz == 0) break;
    }
  } else { /* close-delimited */
    while (fill(c) == 0) {
    }
    size_t keep = c->len < sizeof r->body ? c->len : sizeof r->body;
    memcpy(r->body, c->buf, keep);
    r->body_len = c->len;
    eat(c, c->len);
  }
  r->ok = 1;
  return 0;
}

/* True when the server closed the connection (EOF or reset) within `s` seconds. */
static int closed_within(client *c, double s) {
  set_timeout(c->fd, s);
  char tmp[4096];
  for (;;) {
    ssize_t r = recv(c->fd, tmp, sizeof tmp, 0);
    if (r == 0) return 1;
    if (r < 0) return errno == ECONNRESET;
  }
}

static client *connect_client(int port) {
  client *c = calloc(1, sizeof *c);
  c->fd = dial(port);
  return c;
}
static void client_free(client *c) {
  if (c->fd >= 0) close(c->fd);
  free(c);
}

/* One-shot: send raw bytes, read one response. */
static int roundtrip(int port, const char *raw, resp *r) {
  client *c = connect_client(port);
  send_str(c->fd, raw);
  int rc = read_resp(c, r, 0);
  client_free(c);
  return rc;
}

/* ------------------------------------------------------------------------------- tests */

static resp R; /* big: keep off the stack */
static int next_body_is(client *c, const char *want);

typedef struct sender {
  int fd;
  size_t bytes;
  size_t sent; /* how much went out before an error (a reset) stopped it */
} sender;

static void *send_junk(void *arg) {
  sender *s = arg;
  static char junk[16384];
  memset(junk, 'j', sizeof junk);
  s->sent = 0;
  while (s->sent < s->bytes) {
    size_t n = s->bytes - s->sent < sizeof junk ? s->bytes - s->sent : sizeof junk;
    ssize_t w = send(s->fd, junk, n, MSG_NOSIGNAL);
    if (w <= 0) break;
    s->sent += (size_t)w;
  }
  return NULL;
}

/* The client sends a `bytes` body in a thread while the server answers early; it must be
 * able to send all of it (no reset: the server reads and discards) and then read the
 * answer.  Returns the status, or -1. */
static int early_answer(client *c, size_t bytes, sender *s) {
  s->fd = c->fd;
  s->bytes = bytes;
  pthread_t th;
  pthread_create(&th, NULL, send_junk, s);
  pthread_join(th, NULL); /* the whole body first, as http.client does */
  return read_resp(c, &R, 0) == 0 ? R.status : -1;
}

static void test_hello(int port) {
  client *c = connect_client(port);
  send_str(c->fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200, "hello status %d", R.status);
  CHECK(R.body_len == 13 && memcmp(R.body, "Hello, world!", 13) == 0, "hello body");
  CHECK(hdr(&R, "date") != NULL, "date header");
  CHECK(hdr(&R, "server") && !strcmp(hdr(&R, "server"), "shield"), "server header");
  CHECK(hdr(&R, "content-type") && !strcmp(hdr(&R, "content-type"), "text/plain"), "ctype");
  /* keep-alive: a second request on the same connection */
  send_str(c->fd, "GET /again HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200, "keep-alive second response");
  /* pipelining: three requests in one segment, three responses */
  send_str(c->fd,
           "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
           "HEAD /3 HTTP/1.1\r\nHost: x\r\n\r\n");
  int okc = 0;
  for (int i = 0; i < 3; i++)
    if (read_resp(c, &R, i == 2) == 0 && R.status == 200) okc++;
  CHECK(okc == 3, "pipelined hello %d/3", okc);
  CHECK(hdr(&R, "content-length") && !strcmp(hdr(&R, "content-length"), "13"), "HEAD CL 13");
  /* HEAD wrote no body: the next response starts right after the head */
  send_str(c->fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200 && R.body_len == 13, "after HEAD");
  client_free(c);

  /* HTTP/1.0: closes after the response; with keep-alive stays open and says so. */
  c = connect_client(port);
  send_str(c->fd, "GET / HTTP/1.0\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200, "1.0 response");
  CHECK(hdr(&R, "connection") && !strcasecmp(hdr(&R, "connection"), "close"), "1.0 close hdr");
  CHECK(closed_within(c, 2), "1.0 connection closed");
  client_free(c);
  c = connect_client(port);
  send_str(c->fd, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && hdr(&R, "connection") &&
            !strcasecmp(hdr(&R, "connection"), "keep-alive"),
        "1.0 keep-alive");
  send_str(c->fd, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200, "1.0 keep-alive second");
  client_free(c);
  /* 1.1 with Connection: close */
  c = connect_client(port);
  send_str(c->fd, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200, "1.1 close");
  CHECK(closed_within(c, 2), "1.1 close closes");
  client_free(c);
  /* POST with a small unread body: drained, connection reused */
  c = connect_client(port);
  send_str(c->fd,
           "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n"
           "Host: x\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200, "post to hello");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200, "request after drained body");
  client_free(c);
}

static void test_errors(int port) {
  CHECK(roundtrip(port, "GARBAGE\r\n\r\n", &R) == 0 && R.status == 400, "garbage %d", R.status);
  CHECK(hdr(&R, "connection") && !strcmp(hdr(&R, "connection"), "close"), "400 closes");
  CHECK(roundtrip(port,
                  "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                  &R) == 0 &&
            R.status == 400,
        "CL+TE %d", R.status);
  CHECK(roundtrip(port,
                  "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
                  "abcd",
                  &R) == 0 &&
            R.status == 400,
        "dup CL %d", R.status);
  {
    /* The hello handler answers before reading the body; the bad chunk then shows up while
     * the server drains it: 200 followed by 400 and close.  A reading app gets 400. */
    client *c = connect_client(port);
    send_str(c->fd,
             "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             "zz\r\nab\r\n0\r\n\r\n");
    int st = read_resp(c, &R, 0) == 0 ? R.status : -1;
    if (st == 200) st = read_resp(c, &R, 0) == 0 ? R.status : -1;
    CHECK(st == 400, "bad chunk size %d", st);
    CHECK(closed_within(c, 2), "bad chunk closes");
    client_free(c);
  }
  CHECK(roundtrip(port, "GET / HTTP/1.1\r\n\r\n", &R) == 0 && R.status == 400, "no Host %d",
        R.status);
  CHECK(roundtrip(port, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &R) == 0 && R.status == 400,
        "two Hosts %d", R.status);
  CHECK(roundtrip(port, "GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", &R) == 0 &&
            R.status == 400,
        "space in name %d", R.status);
  CHECK(roundtrip(port, "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", &R) == 0 && R.status == 400,
        "bare LF %d", R.status);
  CHECK(roundtrip(port, "GET / HTTP/2.0\r\nHost: x\r\n\r\n", &R) == 0 &&
            (R.status == 505 || R.status == 400),
        "HTTP/2.0 line %d", R.status);
  /* 431: a head over max_header_size (16 KiB) */
  static char big[24 * 1024];
  int n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
  memset(big + n, 'a', 20000);
  strcpy(big + n + 20000, "\r\n\r\n");
  CHECK(roundtrip(port, big, &R) == 0 && R.status == 431, "431 got %d", R.status);
  /* many small headers also count */
  n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: x\r\n");
  for (int i = 0; i < 2000 && n < (int)sizeof big - 64; i++)
    n += snprintf(big + n, sizeof big - (size_t)n, "X-%d: v\r\n", i);
  strcpy(big + n, "\r\n");
  CHECK(roundtrip(port, big, &R) == 0 && R.status == 431, "431 many headers got %d", R.status);
}

static void test_app(int port) {
  /* echo a Content-Length body */
  CHECK(roundtrip(port, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
                  &R) == 0 &&
            R.status == 200 && R.body_len == 11 && !memcmp(R.body, "hello world", 11),
        "echo CL body (%d, %zu)", R.status, R.body_len);
  CHECK(hdr(&R, "content-length") && !strcmp(hdr(&R, "content-length"), "11"),
        "single write -> content-length");
  /* chunked request body */
  CHECK(roundtrip(port,
                  "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
                  &R) == 0 &&
            R.status == 200 && R.body_len == 11 && !memcmp(R.body, "hello world", 11),
        "echo chunked body (%d, %zu)", R.status, R.body_len);
  /* streamed response -> chunked */
  CHECK(roundtrip(port, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", &R) == 0 && R.status == 200,
        "stream");
  CHECK(hdr(&R, "transfer-encoding") && !strcmp(hdr(&R, "transfer-encoding"), "chunked") &&
            !hdr(&R, "content-length"),
        "stream is chunked");
  CHECK(R.body_len == 13 && !memcmp(R.body, "hello chunked", 13), "stream body");
  /* HTTP/1.0 streamed -> close-delimited */
  CHECK(roundtrip(port, "GET /stream HTTP/1.0\r\n\r\n", &R) == 0 && R.status == 200 &&
            !hdr(&R, "transfer-encoding") && R.body_len == 13,
        "1.0 stream close-delimited");
  /* app content-length, streamed in two writes */
  CHECK(roundtrip(port, "GET /cl-stream HTTP/1.1\r\nHost: x\r\n\r\n", &R) == 0 &&
            R.body_len == 10 && !memcmp(R.body, "0123456789", 10) && !hdr(&R, "transfer-encoding"),
        "cl-stream");
  /* HEAD on a streamed response: headers only */
  client *c = connect_client(port);
  send_str(c->fd,
           "HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /path?after-head HTTP/1.1\r\n"
           "Host: x\r\n\r\n");
  CHECK(read_resp(c, &R, 1) == 0 && R.status == 200 && !hdr(&R, "transfer-encoding"),
        "HEAD stream");
  CHECK(read_resp(c, &R, 0) == 0 && R.body_len == 16 && !memcmp(R.body, "/path?after-head", 16),
        "after HEAD: %.*s", (int)R.body_len, R.body);
  client_free(c);
  /* pipelined cross-thread requests answered in order */
  c = connect_client(port);
  send_str(c->fd,
           "GET /path?a HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\n"
           "Content-Length: 3\r\n\r\nbbbGET /path?c HTTP/1.1\r\nHost: x\r\n\r\n");
  int a = read_resp(c, &R, 0) == 0 && R.body_len == 7 && !memcmp(R.body, "/path?a", 7);
  int b = read_resp(c, &R, 0) == 0 && R.body_len == 3 && !memcmp(R.body, "bbb", 3);
  int cc = read_resp(c, &R, 0) == 0 && R.body_len == 7 && !memcmp(R.body, "/path?c", 7);
  CHECK(a && b && cc, "pipelined order %d %d %d", a, b, cc);
  client_free(c);
  /* response splitting refused */
  CHECK(roundtrip(port, "GET /split HTTP/1.1\r\nHost: x\r\n\r\n", &R) == 0 && R.status == 200 &&
            !hdr(&R, "set-cookie") && !hdr(&R, "x-evil"),
        "split response");
  CHECK(atomic_load(&app.last_start_rc) == SH_EHEADER, "SH_EHEADER (%d)",
        atomic_load(&app.last_start_rc));
  /* body longer than content-length */
  c = connect_client(port);
  send_str(c->fd, "GET /toolong HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(closed_within(c, 3), "toolong closes");
  CHECK(atomic_load(&app.last_write_rc) == SH_ETOOLONG, "SH_ETOOLONG (%lld)",
        (long long)atomic_load(&app.last_write_rc));
  client_free(c);
  /* fail -> 500, connection kept */
  c = connect_client(port);
  send_str(c->fd, "GET /fail HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 500 && R.body_len == 21, "fail 500");
  send_str(c->fd, "GET /path?x HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200, "after 500 keep-alive");
  client_free(c);
  /* app headers: own server header, connection: close honoured; 204 has no body */
  c = connect_client(port);
  send_str(c->fd,
           "GET /nocontent HTTP/1.1\r\nHost: x\r\n\r\nGET /custom HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 204 && !hdr(&R, "content-length") &&
            !hdr(&R, "transfer-encoding"),
        "204");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 201 && !strcmp(hdr(&R, "server"), "custom") &&
            !strcmp(hdr(&R, "connection"), "close"),
        "custom headers");
  CHECK(strstr(R.head, "server: shield") == NULL, "no duplicate server header");
  CHECK(closed_within(c, 2), "app connection: close");
  client_free(c);
  /* 100-continue */
  c = connect_client(port);
  send_str(c->fd,
           "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n"
           "\r\n");
  CHECK(read_resp(c, &R, 1) == 0 && R.status == 100, "100 Continue (%d)", R.status);
  send_str(c->fd, "data");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200 && R.body_len == 4, "after continue");
  client_free(c);
  /* big response with backpressure: read slowly after a pause */
  c = connect_client(port);
  send_str(c->fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
  usleep(200 * 1000);
  size_t total = 0;
  char *end = NULL;
  static char tmp[65536];
  size_t hl = 0;
  while (total < 4194304 + hl) {
    ssize_t r = recv(c->fd, tmp, sizeof tmp, 0);
    if (r <= 0) break;
    if (!hl && (end = memmem(tmp, (size_t)r, "\r\n\r\n", 4))) hl = (size_t)(end - tmp) + 4;
    total += (size_t)r;
  }
  CHECK(hl && total == 4194304 + hl, "big body %zu", total - hl);
  CHECK(atomic_load(&app.writables) > 0, "on_writable fired");
  client_free(c);
  /* client disconnect mid-body -> on_disconnect */
  int before = atomic_load(&app.disconnects);
  c = connect_client(port);
  send_str(c->fd, "POST /slow-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc");
  usleep(200 * 1000);
  client_free(c);
  double t0 = now_s();
  while (atomic_load(&app.disconnects) == before && now_s() - t0 < 3)
    usleep(10000);
  CHECK(atomic_load(&app.disconnects) == before + 1, "on_disconnect mid-body");
  /* client reset while the app holds the request (a FIN alone is a half-close: the request
   * is still answered, see test_half_close) */
  before = atomic_load(&app.disconnects);
  c = connect_client(port);
  send_str(c->fd, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  usleep(100 * 1000);
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  client_free(c);
  t0 = now_s();
  while (atomic_load(&app.disconnects) == before && now_s() - t0 < 3)
    usleep(10000);
  CHECK(atomic_load(&app.disconnects) == before + 1, "on_disconnect while held");
  CHECK(atomic_load(&app.flushes) > 0, "on_flush called");
  /* app answers without reading a big body: connection closes, response intact */
  c = connect_client(port);
  send_str(c->fd, "POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200 &&
            !strcmp(hdr(&R, "connection") ? hdr(&R, "connection") : "", "close"),
        "noread big body -> close");
  client_free(c);
  /* ... and the client that sends that body anyway can, then reads the answer */
  c = connect_client(port);
  set_timeout(c->fd, 30);
  send_str(c->fd, "POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n");
  sender s;
  int st = early_answer(c, 10000000, &s);
  CHECK(s.sent == 10000000 && st == 200, "noread 10 MB sent (%zu), answer read (%d)", s.sent, st);
  CHECK(closed_within(c, 5), "noread 10 MB: closed after the answer");
  client_free(c);
  /* a small unread body is drained: the connection carries the next request */
  c = connect_client(port);
  static char mid[100 * 1024 + 128];
  int n = snprintf(mid, sizeof mid,
                   "POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 100 * 1024);
  memset(mid + n, 'm', 100 * 1024);
  send_all(c->fd, mid, (size_t)n + 100 * 1024);
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200 && !hdr(&R, "connection"),
        "noread 100 KiB: drained, kept");
  send_str(c->fd, "GET /path?after-drain HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(next_body_is(c, "/path?after-drain"), "request after a drained body");
  client_free(c);
  /* the app fails after its start, before any body: 500, and the connection is reused */
  c = connect_client(port);
  send_str(c->fd, "GET /start-fail HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 500 && !hdr(&R, "x-started"),
        "fail after start, before the body: 500 (%d)", R.status);
  send_str(c->fd, "GET /path?after-start-fail HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(next_body_is(c, "/path?after-start-fail"), "reuse after the 500");
  client_free(c);
}

/* The server answered with `want` and then closed, with nothing after that response. */
static int refused(int port, const char *raw, int want) {
  client *c = connect_client(port);
  send_str(c->fd, raw);
  int ok = read_resp(c, &R, 0) == 0 && R.status == want;
  if (ok) {
    int more = c->len > 0 || fill(c) == 0; /* bytes after the response */
    ok = !more && c->eof;
  }
  client_free(c);
  return ok;
}

/* Request framing and targets (RFC 9112 §3.2, §6.3, §7.1.1), on the cross-thread app. */
static void test_framing(int port) {
  static const char *const bad_te[] = {
      "Transfer-Encoding:\r\nContent-Length: 0\r\n",
      "Content-Length: 0\r\nTransfer-Encoding:\r\n",
      "Transfer-Encoding:   \r\n",
      "Transfer-Encoding:\r\nTransfer-Encoding: chunked\r\n",
      "Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n",
      "Transfer-Encoding: gzip, chunked\r\n",
      "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
      "Transfer-Encoding: chunked, gzip\r\n",
      "Transfer-Encoding: identity\r\n",
      "Transfer-Encoding: xchunked\r\n",
      "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
  };
  char buf[1024];
  for (size_t i = 0; i < sizeof bad_te / sizeof bad_te[0]; i++) {
    snprintf(buf, sizeof buf,
             "POST /echo HTTP/1.1\r\nHost: x\r\n%s\r\n0\r\n\r\nGET /path HTTP/1.1\r\n"
             "Host: x\r\n\r\n",
             bad_te[i]);
    CHECK(refused(port, buf, 400), "TE case %zu: 400 and close (%d)", i, R.status);
  }
  CHECK(roundtrip(port,
                  "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked \r\n\r\n"
                  "3\r\nabc\r\n0\r\n\r\n",
                  &R) == 0 &&
            R.status == 200 && R.body_len == 3,
        "'Chunked ' is chunked (%d)", R.status);

  /* chunk extensions: per chunk and per request budgets (CVE-2024-22019's class) */
  static char big[128 * 1024];
  int n = snprintf(big, sizeof big,
                   "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;x=");
  memset(big + n, 'e', 64 * 1024);
  n += 64 * 1024;
  n += snprintf(big + n, sizeof big - (size_t)n, "\r\nz\r\n0\r\n\r\n");
  CHECK(refused(port, big, 400), "64 KiB chunk extension: 400 and close (%d)", R.status);
  n = snprintf(big, sizeof big,
               "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 100; i++) {
    n += snprintf(big + n, sizeof big - (size_t)n, "1;");
    memset(big + n, 'e', 300);
    n += 300;
    n += snprintf(big + n, sizeof big - (size_t)n, "\r\nz\r\n");
  }
  n += snprintf(big + n, sizeof big - (size_t)n, "0\r\n\r\n");
  CHECK(refused(port, big, 400), "100 chunks x 300-byte extensions: 400 and close (%d)", R.status);

  /* request targets */
  CHECK(roundtrip(port, "GET http://example.com:8080/info?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
                  &R) == 0 &&
            R.status == 200 && !strcmp(R.body, "/info|q=1|example.com:8080"),
        "absolute-form: path, query, authority as Host (%d %s)", R.status, R.body);
  CHECK(roundtrip(port, "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", &R) == 0 &&
            R.status == 200 && !strcmp(R.body, "/||example.com"),
        "absolute-form without a path is / (%d %s)", R.status, R.body);
  CHECK(roundtrip(port, "GET HTTPS://Example.COM/info?a HTTP/1.0\r\n\r\n", &R) == 0 &&
            R.status == 200 && !strcmp(R.body, "/info|a|Example.COM"),
        "absolute-form on HTTP/1.0 without Host (%d %s)", R.status, R.body);
  static const char *const bad_targets[] = {
      "GET /info#frag HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /info?a#frag HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET http://u@example.com/info HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET http:///info HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET ftp://example.com/info HTTP/1.1\r\nHost: x\r\n\r\n",
      "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
      "GET /info HTTP/1.1\r\nHost: x/y@z\r\n\r\n",
      "GET /info HTTP/1.1\r\nHost: [::1\r\n\r\n",
      "GET /info HTTP/1.1\r\nHost: a b\r\n\r\n",
      "GET /info HTTP/1.1\r\nHost: x:8o\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad_targets / sizeof bad_targets[0]; i++)
    CHECK(refused(port, bad_targets[i], 400), "bad target/Host %zu: 400 and close (%d)", i,
          R.status);
  CHECK(roundtrip(port, "GET /info HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", &R) == 0 &&
            R.status == 200 && !strcmp(R.body, "/info||[::1]:80"),
        "IPv6 literal Host (%d %s)", R.status, R.body);
  CHECK(roundtrip(port, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", &R) == 0 && R.status == 404,
        "OPTIONS * reaches the app (%d)", R.status);
}

/* A client that shuts down its write side after complete requests gets every answer. */
static void test_half_close(int port) {
  for (int i = 0; i < 20; i++) {
    client *c = connect_client(port);
    send_str(c->fd,
             "GET /path?hc HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\n"
             "Host: x\r\nContent-Length: 3\r\n\r\nabc");
    shutdown(c->fd, SHUT_WR);
    int a = next_body_is(c, "/path?hc");
    int b = next_body_is(c, "abc");
    int closed = closed_within(c, 3);
    client_free(c);
    if (!(a && b && closed)) {
      CHECK(0, "half-close round %d: %d %d %d", i, a, b, closed);
      return;
    }
  }
  CHECK(1, "half-close: 20/20 answered");
  /* a body cut short by the FIN can never complete: the app sees a disconnect */
  int before = atomic_load(&app.disconnects);
  client *c = connect_client(port);
  send_str(c->fd, "POST /slow-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc");
  usleep(100 * 1000);
  shutdown(c->fd, SHUT_WR);
  double t0 = now_s();
  while (atomic_load(&app.disconnects) == before && now_s() - t0 < 3)
    usleep(10000);
  CHECK(atomic_load(&app.disconnects) == before + 1, "truncated body + FIN: on_disconnect");
  CHECK(closed_within(c, 3), "truncated body + FIN: closed");
  client_free(c);
}

/* --header replaces the default Server and Date headers, on app and error responses. */
static int count_lines(const char *head, const char *name) {
  int n = 0;
  size_t nl = strlen(name);
  for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n"))
    if (strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':') n++;
  return n;
}

static void test_header_flags(void) {
  sh_config cfg;
  base_cfg(&cfg);
  cfg.extra_headers[0] = "Server: edge-1";
  cfg.extra_headers[1] = "date:Thu, 01 Jan 2026 00:00:00 GMT";
  cfg.extra_headers[2] = "X-A: 1";
  cfg.num_extra_headers = 3;
  running r;
  if (start(&r, &cfg, sh_hello_handler()) < 0) {
    CHECK(0, "start --header server");
    return;
  }
  CHECK(roundtrip(r.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", &R) == 0 && R.status == 200,
        "--header hello");
  CHECK(count_lines(R.head, "server") == 1 && !strcmp(hdr(&R, "server"), "edge-1"),
        "one server header, the flag's: %s", R.head);
  CHECK(
      count_lines(R.head, "date") == 1 && !strcmp(hdr(&R, "date"), "Thu, 01 Jan 2026 00:00:00 GMT"),
      "one date header, the flag's: %s", R.head);
  CHECK(count_lines(R.head, "x-a") == 1, "other --header kept");
  CHECK(roundtrip(r.port, "GARBAGE\r\n\r\n", &R) == 0 && R.status == 400 &&
            count_lines(R.head, "server") == 1 && !strcmp(hdr(&R, "server"), "edge-1") &&
            count_lines(R.head, "date") == 1,
        "server's own 400 uses the flag's headers: %s", R.head);
  stop(&r);
}

/* sh_server_set_response_headers: a wrapping handler sets them in on_start and on a request
 * (the I/O thread), in front of the hello handler. */
static int path_is(const sh_request *req, const char *p);
static int hook_rc_start = -99, hook_rc_bad = -99;

static void hook_set(sh_server *srv, const char *value) {
  sh_error err;
  sh_header h[2] = {{{"X-Server-Proof", 14}, {value, value ? strlen(value) : 0}},
                    {{"X-Server-Kind", 13}, {"test", 4}}};
  hook_rc_start = sh_server_set_response_headers(srv, value ? h : NULL, value ? 2 : 0, &err);
}

static sh_server *hook_srv;

static void hook_on_start(sh_handler *h, sh_server *srv) {
  (void)h;
  hook_srv = srv;
  sh_error err;
  sh_header bad = {{"X-Bad", 5}, {"a\r\nInjected: 1", 14}};
  hook_rc_bad = sh_server_set_response_headers(srv, &bad, 1, &err);
  hook_set(srv, "first");
}

static void hook_on_request(sh_handler *h, sh_request *req) {
  (void)h;
  sh_handler *hello = sh_hello_handler();
  if (path_is(req, "/replace")) hook_set(hook_srv, "second");
  if (path_is(req, "/clear")) hook_set(hook_srv, NULL);
  hello->on_request(hello, req);
}

static sh_handler hook_handler = {.on_start = hook_on_start, .on_request = hook_on_request};

static void test_response_hook(void) {
  sh_config cfg;
  base_cfg(&cfg);
  cfg.extra_headers[0] = "X-Flag: 1";
  cfg.num_extra_headers = 1;
  running r;
  if (start(&r, &cfg, &hook_handler) < 0) {
    CHECK(0, "start hook server");
    return;
  }
  CHECK(roundtrip(r.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", &R) == 0 && R.status == 200,
        "hook: hello");
  CHECK(hook_rc_bad == SH_EHEADER, "hook: a value with CR LF is refused (%d)", hook_rc_bad);
  CHECK(hook_rc_start == 0 && count_lines(R.head, "x-server-proof") == 1 &&
            !strcmp(hdr(&R, "x-server-proof"), "first") &&
            !strcmp(hdr(&R, "x-server-kind"), "test") && count_lines(R.head, "x-flag") == 1 &&
            count_lines(R.head, "injected") == 0,
        "hook: set in on_start, on the response with the --header lines: %s", R.head);
  sh_error err;
  sh_header h = {{"X-Other", 7}, {"thread", 6}};
  CHECK(sh_server_set_response_headers(r.srv, &h, 1, &err) == SH_EINVAL,
        "hook: refused off the I/O thread while running");
  CHECK(roundtrip(r.port, "GET /replace HTTP/1.1\r\nHost: x\r\n\r\n", &R) == 0 &&
            !strcmp(hdr(&R, "x-server-proof"), "second") &&
            count_lines(R.head, "x-server-proof") == 1 && count_lines(R.head, "x-other") == 0,
        "hook: replaced on the I/O thread, the response that replaced them has the new set: %s",
        R.head);
  CHECK(roundtrip(r.port, "GARBAGE\r\n\r\n", &R) == 0 && R.status == 400 &&
            !strcmp(hdr(&R, "x-server-proof"), "second"),
        "hook: on the server's own error responses too: %s", R.head);
  CHECK(roundtrip(r.port, "GET /clear HTTP/1.1\r\nHost: x\r\n\r\n", &R) == 0 && R.status == 200 &&
            count_lines(R.head, "x-server-proof") == 0 && count_lines(R.head, "x-flag") == 1,
        "hook: n = 0 removes them: %s", R.head);
  stop(&r);
}

static void test_limits(void) {
  sh_config cfg;
  base_cfg(&cfg);
  cfg.max_body_size = 1000;
  cfg.timeout_header = 0.5;
  cfg.timeout_keep_alive = 0.5;
  running r;
  if (start(&r, &cfg, &test_handler) < 0) {
    CHECK(0, "start limits server");
    return;
  }
  /* 413 up front from Content-Length; the client keeps sending and still reads the 413
   * (lingering close, no RST) */
  client *c = connect_client(r.port);
  send_str(c->fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n");
  sender s = {c->fd, 200000, 0};
  pthread_t th;
  pthread_create(&th, NULL, send_junk, &s);
  usleep(100 * 1000);
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 413, "413 CL with lingering (%d)", R.status);
  pthread_join(th, NULL);
  client_free(c);
  /* the same with 10 MB: the lingering close discards until the client's FIN (bounded by
   * time, not bytes), so the client sends everything and then reads the 413 */
  c = connect_client(r.port);
  set_timeout(c->fd, 30);
  send_str(c->fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n");
  int st = early_answer(c, 10000000, &s);
  CHECK(s.sent == 10000000, "413: the client could send its whole 10 MB body (%zu)", s.sent);
  CHECK(st == 413, "413 read after sending 10 MB (%d)", st);
  CHECK(closed_within(c, 5), "closed after the 413");
  client_free(c);
  /* 413 counted on a chunked body, sent in one go (client still sending) */
  c = connect_client(r.port);
  static char body[64 * 1024];
  int n = snprintf(body, sizeof body,
                   "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 40; i++)
    n += snprintf(body + n, sizeof body - (size_t)n, "40\r\n%064d\r\n", i);
  send_all(c->fd, body, (size_t)n);
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 413, "413 chunked (%d)", R.status);
  client_free(c);
  /* a small body is fine */
  CHECK(roundtrip(r.port, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", &R) ==
                0 &&
            R.status == 200,
        "small body under limit");
  /* header timeout: partial head -> 408 then close */
  c = connect_client(r.port);
  double t0 = now_s();
  send_str(c->fd, "GET / HTTP/1.1\r\nHost: x\r\n");
  int got = read_resp(c, &R, 0) == 0 && R.status == 408;
  double dt = now_s() - t0;
  CHECK(got && dt < 2.0, "408 after header timeout (%.2fs)", dt);
  CHECK(closed_within(c, 2), "closed after 408");
  client_free(c);
  /* silent client closed at the header timeout */
  c = connect_client(r.port);
  t0 = now_s();
  CHECK(closed_within(c, 3) && now_s() - t0 < 2.0, "idle connection closed");
  client_free(c);
  /* keep-alive timeout */
  c = connect_client(r.port);
  send_str(c->fd, "GET /path HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200, "ka request");
  t0 = now_s();
  CHECK(closed_within(c, 3), "keep-alive timeout closes");
  dt = now_s() - t0;
  CHECK(dt > 0.3 && dt < 2.0, "keep-alive timeout %.2fs", dt);
  client_free(c);
  stop(&r);
}

static void test_uds(void) {
  sh_config cfg;
  base_cfg(&cfg);
  char path[64];
  snprintf(path, sizeof path, "/tmp/shield-test-%d.sock", (int)getpid());
  cfg.uds = path;
  running r;
  if (start(&r, &cfg, sh_hello_handler()) < 0) {
    CHECK(0, "uds start");
    return;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
  CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "uds connect");
  client *c = calloc(1, sizeof *c);
  c->fd = fd;
  set_timeout(fd, 5);
  send_str(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200, "uds hello");
  client_free(c);
  stop(&r);
  CHECK(access(path, F_OK) != 0, "uds socket removed");
}

/* ------------------------------------------------- a handler that answers inside callbacks
 * Like the attestation gate (and hello), this handler runs on the I/O thread and finishes
 * responses from inside the server's callbacks, so each sh_request_* call takes effect while
 * the server is still in the middle of delivering the event:
 *   /last   read the body and echo it from the on_body call that has last=1
 *   /first  read the body and answer "early" from the first on_body (last or not): the rest
 *           of the body must be discarded, never parsed as a request
 *   /head   answer "head" from on_request without reading the body
 *   /abandon[-body|-started]  release without finishing the response: from on_request, from
 *           the last on_body, or after a started response (a handler bug the server covers)
 *   other   answer the target from on_request (shows which request a response belongs to)
 * Every answer also releases the request, at once (on_release frees the state). */

typedef struct inl_req {
  char *body;
  size_t len;
} inl_req;

static atomic_int inl_bodies_after_answer; /* on_body for a request already answered */

static void inl_answer(sh_request *req, const char *data, size_t len) {
  sh_header hs[] = {H("content-type", "text/plain")};
  sh_request_start(req, 200, hs, 1);
  sh_request_write(req, data, len, 0); /* copied: the caller may free data afterwards */
  sh_request_release(req);             /* on the I/O thread: on_release runs inside this */
}

static int path_is(const sh_request *req, const char *p) {
  return req->path.len == strlen(p) && memcmp(req->path.base, p, req->path.len) == 0;
}

static void inl_on_request(sh_handler *h, sh_request *req) {
  (void)h;
  req->handler_data = calloc(1, sizeof(inl_req));
  if ((path_is(req, "/last") || path_is(req, "/first") || path_is(req, "/abandon-body")) &&
      req->has_body) {
    sh_request_read(req);
    return;
  }
  if (path_is(req, "/abandon")) {
    sh_request_release(req);
    return;
  }
  if (path_is(req, "/abandon-started")) {
    sh_request_start(req, 200, NULL, 0);
    sh_request_write(req, "partial", 7, 1);
    sh_request_release(req);
    return;
  }
  if (path_is(req, "/head")) {
    inl_answer(req, "head", 4);
    return;
  }
  inl_answer(req, req->target.base, req->target.len);
}

static void inl_on_body(sh_handler *h, sh_request *req, char *chunk, size_t n, int last) {
  (void)h;
  inl_req *ir = req->handler_data;
  if (!ir) { /* released: the server must not deliver more */
    atomic_fetch_add(&inl_bodies_after_answer, 1);
    free(chunk);
    return;
  }
  if (path_is(req, "/first")) {
    free(chunk);
    inl_answer(req, "early", 5);
    return;
  }
  if (path_is(req, "/abandon-body")) {
    free(chunk);
    if (last) sh_request_release(req);
    return;
  }
  ir->body = realloc(ir->body, ir->len + n + 1);
  memcpy(ir->body + ir->len, chunk, n);
  ir->len += n;
  free(chunk);
  sh_request_consumed(req, n);
  if (last) inl_answer(req, ir->body, ir->len);
}

static void inl_on_release(sh_handler *h, sh_request *req) {
  (void)h;
  inl_req *ir = req->handler_data;
  req->handler_data = NULL;
  if (ir) free(ir->body);
  free(ir);
}

static sh_handler inline_handler = {
    .on_request = inl_on_request,
    .on_body = inl_on_body,
    .on_release = inl_on_release,
};

/* The next response on c has status 200 and exactly this body. */
static int next_body_is(client *c, const char *want) {
  return read_resp(c, &R, 0) == 0 && R.status == 200 && R.body_len == strlen(want) &&
         memcmp(R.body, want, R.body_len) == 0;
}

/* Send the parts of a request with pauses in between, so the server reads them separately. */
static void send_parts(client *c, const char *const *parts, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (i) usleep(50 * 1000);
    send_str(c->fd, parts[i]);
  }
}

static void test_inline_last(int port) {
  /* Content-Length body in one segment, then the connection is reused. */
  client *c = connect_client(port);
  send_str(c->fd, "POST /last HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  CHECK(next_body_is(c, "hello"), "last on_body: CL answer (%d, %zu)", R.status, R.body_len);
  send_str(c->fd, "GET /path?reuse HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(next_body_is(c, "/path?reuse"), "last on_body: keep-alive reuse (%d, %.*s)", R.status,
        (int)R.body_len, R.body);
  /* the same again on the reused connection */
  send_str(c->fd, "POST /last HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
  CHECK(next_body_is(c, "abc"), "last on_body: second body on the same connection");
  client_free(c);

  /* chunked body in one segment */
  c = connect_client(port);
  send_str(c->fd,
           "POST /last HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  CHECK(next_body_is(c, "hello world"), "last on_body: chunked (%d, %zu)", R.status, R.body_len);
  send_str(c->fd, "GET /path?after-chunked HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(next_body_is(c, "/path?after-chunked"), "last on_body: chunked then reuse");
  client_free(c);

  /* body split across several reads (Content-Length, then chunked with a 0-length end) */
  c = connect_client(port);
  const char *cl_parts[] = {"POST /last HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", "01234",
                            "567", "89"};
  send_parts(c, cl_parts, 4);
  CHECK(next_body_is(c, "0123456789"), "last on_body: CL split (%d, %zu)", R.status, R.body_len);
  const char *ch_parts[] = {"POST /last HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                            "3\r\nabc\r\n", "2\r\nde\r\n", "0\r\n\r\n"};
  send_parts(c, ch_parts, 4);
  CHECK(next_body_is(c, "abcde"), "last on_body: chunked split (%d, %zu)", R.status, R.body_len);
  send_str(c->fd, "GET /path?after-split HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(next_body_is(c, "/path?after-split"), "last on_body: split then reuse");
  client_free(c);

  /* pipelined: the next requests are already buffered when the answer is made */
  c = connect_client(port);
  send_str(c->fd,
           "POST /last HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
           "GET /path?p2 HTTP/1.1\r\nHost: x\r\n\r\n"
           "POST /last HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           "2\r\nxy\r\n0\r\n\r\n"
           "GET /path?p4 HTTP/1.1\r\nHost: x\r\n\r\n");
  int p1 = next_body_is(c, "abc");
  int p2 = next_body_is(c, "/path?p2");
  int p3 = next_body_is(c, "xy");
  int p4 = next_body_is(c, "/path?p4");
  CHECK(p1 && p2 && p3 && p4, "last on_body: pipelined %d %d %d %d", p1, p2, p3, p4);
  client_free(c);
}

static void test_inline_early(int port) {
  /* Answered at the first of several body reads: the rest (which looks like a request) is
   * discarded, and the request after it is answered. */
  client *c = connect_client(port);
  static const char evil[] = "GET /path?evil HTTP/1.1\r\nHost: x\r\n\r\n";
  char head[128];
  snprintf(head, sizeof head, "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\nab",
           2 + sizeof evil - 1);
  send_str(c->fd, head);
  CHECK(next_body_is(c, "early"), "early on_body: answer (%d, %zu)", R.status, R.body_len);
  CHECK(!hdr(&R, "connection"), "early on_body: small rest is drained, connection kept");
  usleep(50 * 1000);
  send_str(c->fd, evil);
  send_str(c->fd, "GET /path?after-early HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(next_body_is(c, "/path?after-early"), "early on_body: body discarded, not parsed (%.*s)",
        (int)R.body_len, R.body);
  client_free(c);

  /* the same with a chunked body; the rest and the next request arrive together */
  c = connect_client(port);
  const char *parts[] = {
      "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n",
      "24\r\nGET /path?evil HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n"
      "GET /path?after-chunks HTTP/1.1\r\nHost: x\r\n\r\n"};
  send_parts(c, parts, 2);
  int e1 = next_body_is(c, "early");
  int e2 = next_body_is(c, "/path?after-chunks");
  CHECK(e1 && e2, "early on_body: chunked rest discarded %d %d", e1, e2);
  client_free(c);

  /* a rest too large to drain: the answer arrives and the connection closes */
  c = connect_client(port);
  const char *big[] = {"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\nab"};
  send_parts(c, big, 1);
  CHECK(next_body_is(c, "early"), "early on_body, huge body: answer");
  CHECK(hdr(&R, "connection") && !strcmp(hdr(&R, "connection"), "close"),
        "early on_body, huge body: connection: close");
  CHECK(closed_within(c, 3), "early on_body, huge body: closed");
  client_free(c);

  /* answered in on_request, the body not read: pipelined and split arrivals */
  c = connect_client(port);
  send_str(c->fd,
           "POST /head HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
           "GET /path?after-head HTTP/1.1\r\nHost: x\r\n\r\n");
  int h1 = next_body_is(c, "head");
  int h2 = next_body_is(c, "/path?after-head");
  CHECK(h1 && h2, "on_request answer, body unread: pipelined %d %d", h1, h2);
  send_str(c->fd, "POST /head HTTP/1.1\r\nHost: x\r\nContent-Length: 36\r\n\r\n");
  CHECK(next_body_is(c, "head"), "on_request answer before the body arrives");
  usleep(50 * 1000);
  send_str(c->fd, evil);
  send_str(c->fd, "GET /path?after-late-body HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(next_body_is(c, "/path?after-late-body"), "late body discarded (%.*s)", (int)R.body_len,
        R.body);
  client_free(c);

  /* the client waits for "100 Continue", which never comes: no reuse, the connection closes */
  c = connect_client(port);
  send_str(c->fd,
           "POST /head HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
           "Expect: 100-continue\r\n\r\n");
  CHECK(next_body_is(c, "head") && hdr(&R, "connection") && !strcmp(hdr(&R, "connection"), "close"),
        "on_request answer, 100-continue not sent: connection: close");
  CHECK(closed_within(c, 3), "on_request answer, 100-continue not sent: closed");
  client_free(c);
}

static void test_inline_abandoned(int port) {
  /* released unanswered: 500, and the connection still carries the next request */
  client *c = connect_client(port);
  send_str(c->fd, "GET /abandon HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 500, "abandoned in on_request: 500 (%d)", R.status);
  send_str(c->fd, "POST /abandon-body HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 500, "abandoned in the last on_body: 500 (%d)",
        R.status);
  send_str(c->fd, "GET /path?after-abandon HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(next_body_is(c, "/path?after-abandon"), "after abandoned requests: reuse");
  client_free(c);
  /* released mid-response: what was sent goes out, then the connection closes */
  c = connect_client(port);
  send_str(c->fd, "GET /abandon-started HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(closed_within(c, 3), "abandoned mid-response: connection closed");
  client_free(c);
}

static void test_inline(void) {
  sh_config cfg;
  base_cfg(&cfg);
  running r;
  if (start(&r, &cfg, &inline_handler) < 0) {
    CHECK(0, "start inline server");
    return;
  }
  test_inline_last(r.port);
  test_inline_early(r.port);
  test_inline_abandoned(r.port);
  CHECK(atomic_load(&inl_bodies_after_answer) == 0, "no on_body after the answer (%d)",
        atomic_load(&inl_bodies_after_answer));
  stop(&r);
}

/* ------------------------------------------ a handler wrapping another (server.h, "Wrapping")
 * test_wrapper runs on the I/O thread in front of test_handler (whose app runs on its own
 * thread), as the attestation gate does in front of the Python bridge.  It keeps its own
 * per-request state in an extension slot (the request header X-Probe and the connection id),
 * forwards every callback, and takes some responses over with sh_request_cut:
 *   /w/probe    the app answers what it reads of the wrapper's slot and of the request
 *   /w/cutrace  the app queues a whole answer while the I/O thread is inside the wrapper's
 *               last on_body, which then cuts: the cut's answer must be the response, the
 *               app's queued one dropped, and the app's later calls refused (SH_ECLOSED)
 *   /w/cutlate  the app's response is on the wire (head and a first chunk) when the wrapper
 *               cuts: the response is cut short and the connection closed (SH_ESTATE)
 *   /w/cutdone  the app's response is complete; a function the app posts (sh_server_post)
 *               cuts from the loop thread: nothing happens (SH_ECLOSED), the connection
 *               stays usable, and on_flush follows the posted function */

typedef struct wrap_state {
  char probe[64];
  uint64_t conn;
} wrap_state;

static sh_header cut_hdrs[] = {H("content-type", "text/plain")};

static void wr_on_start(sh_handler *h, sh_server *srv) {
  (void)h;
  atomic_fetch_add(&W.starts, 1);
  W.srv = srv;
  W.loop_thread = pthread_self();
  if (test_handler.on_start) test_handler.on_start(&test_handler, srv);
}

static void wr_on_request(sh_handler *h, sh_request *req) {
  (void)h;
  wrap_state *ws = calloc(1, sizeof *ws);
  const sh_iovec *v = sh_request_header(req, "x-probe");
  if (v) snprintf(ws->probe, sizeof ws->probe, "%.*s", (int)v->len, v->base);
  ws->conn = sh_request_conn_id(req);
  sh_request_set_ext(req, W.key, ws);
  test_handler.on_request(&test_handler, req);
}

static void wr_on_body(sh_handler *h, sh_request *req, char *chunk, size_t n, int last) {
  (void)h;
  if (last && path_is(req, "/w/cutrace")) {
    free(chunk);
    w_set(&W.answer_now); /* the app answers now, while this thread is busy here */
    w_wait(&W.app_done);
    W.cut_rc = sh_request_cut(req, 401, cut_hdrs, 1, "cut", 3);
    w_set(&W.cut_done);
    test_handler.on_disconnect(&test_handler, req); /* tell the app, as the gate does */
    return;
  }
  if (last && path_is(req, "/w/cutlate")) {
    free(chunk);
    W.late_cut_rc = sh_request_cut(req, 401, cut_hdrs, 1, "cut", 3);
    w_set(&W.late_done);
    test_handler.on_disconnect(&test_handler, req);
    return;
  }
  test_handler.on_body(&test_handler, req, chunk, n, last);
}

static void wr_on_disconnect(sh_handler *h, sh_request *req) {
  (void)h;
  test_handler.on_disconnect(&test_handler, req);
}

static void wr_on_writable(sh_handler *h, sh_request *req) {
  (void)h;
  test_handler.on_writable(&test_handler, req);
}

static void wr_on_release(sh_handler *h, sh_request *req) {
  (void)h;
  test_handler.on_release(&test_handler, req);
  free(sh_request_ext(req, W.key));
  sh_request_set_ext(req, W.key, NULL);
}

static void wr_on_flush(sh_handler *h) {
  (void)h;
  if (W.posted) {
    W.posted = 0;
    atomic_store(&W.flush_after_post, 1);
  }
  test_handler.on_flush(&test_handler);
}

static sh_handler test_wrapper = {
    .on_start = wr_on_start,
    .on_request = wr_on_request,
    .on_body = wr_on_body,
    .on_disconnect = wr_on_disconnect,
    .on_writable = wr_on_writable,
    .on_release = wr_on_release,
    .on_flush = wr_on_flush,
};

/* Posted by the app (its thread) once its /w/cutdone response is complete. */
static void cut_done_response(void *arg) {
  sh_request *req = arg;
  W.post_on_loop = pthread_equal(pthread_self(), W.loop_thread);
  W.done_cut_rc = sh_request_cut(req, 401, cut_hdrs, 1, "cut", 3);
  W.posted = 1;
  w_set(&W.post_done);
}

/* The app's side of the /w/ paths (app thread). */
static void app_wrapped(sh_request *req, app_req *ar) {
  const char *p = ar->path;
  if (!strcmp(p, "/w/probe")) {
    const wrap_state *ws = sh_request_ext(req, W.key); /* any thread, after the hand-on */
    const sh_iovec *v = sh_request_header(req, "x-probe");
    char buf[256];
    snprintf(buf, sizeof buf, "slot=%s;header=%.*s;conn=%llu", ws ? ws->probe : "(none)",
             v ? (int)v->len : 0, v ? v->base : "", ws ? (unsigned long long)ws->conn : 0ULL);
    respond_text(req, 200, buf);
    finish(req, ar);
  } else if (!strcmp(p, "/w/cutrace")) {
    sh_request_read(req);
    w_wait(&W.answer_now);
    sh_header hs[] = {H("content-type", "text/plain")};
    W.start_rc = sh_request_start(req, 200, hs, 1); /* queued: the I/O thread is busy */
    W.write_rc = (int)sh_request_write(req, "app", 3, 0);
    w_set(&W.app_done);
    w_wait(&W.cut_done);
    W.write_after_cut_rc = (int)sh_request_write(req, "more", 4, 0);
    w_set(&W.app_after);
    finish(req, ar);
  } else if (!strcmp(p, "/w/cutlate")) {
    sh_request_start(req, 200, NULL, 0);
    sh_request_write(req, "partial", 7, 1); /* chunked: the head and a chunk go out */
    sh_request_read(req);                   /* then the body, which the wrapper cuts */
  } else if (!strcmp(p, "/w/cutdone")) {
    respond_text(req, 200, "done");
    sh_server_post(W.srv, cut_done_response, req);
    w_wait(&W.post_done);
    finish(req, ar);
  } else {
    respond_text(req, 404, "not found");
    finish(req, ar);
  }
}

/* Everything c receives until the server closes it (at most `s` seconds). */
static size_t read_to_close(client *c, char *out, size_t cap, double s) {
  set_timeout(c->fd, s);
  size_t n = c->len < cap ? c->len : cap;
  memcpy(out, c->buf, n);
  c->len = 0;
  for (;;) {
    ssize_t r = recv(c->fd, out + n, cap - n, 0);
    if (r <= 0) break;
    n += (size_t)r;
  }
  return n;
}

static void test_wrapper_api(void) {
  W.key = sh_request_ext_key();
  CHECK(W.key >= 0, "an extension key");
  sh_config cfg;
  base_cfg(&cfg);
  running r;
  if (start(&r, &cfg, &test_wrapper) < 0) {
    CHECK(0, "start the wrapper server");
    return;
  }
  /* on_start before the first request; header, slot and connection id on any thread */
  client *c = connect_client(r.port);
  send_str(c->fd, "GET /w/probe HTTP/1.1\r\nHost: x\r\nX-Probe: abc\r\n\r\n");
  unsigned long long id1 = 0, id2 = 0, id3 = 0;
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200 &&
            sscanf(R.body, "slot=abc;header=abc;conn=%llu", &id1) == 1 && id1 != 0,
        "probe: %d %.*s", R.status, (int)R.body_len, R.body);
  CHECK(atomic_load(&W.starts) == 1 && W.srv == r.srv, "on_start once, with the server");
  send_str(c->fd, "GET /w/probe HTTP/1.1\r\nHost: x\r\nX-Probe: def\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200 &&
            sscanf(R.body, "slot=def;header=def;conn=%llu", &id2) == 1 && id2 == id1,
        "same connection, same id: %.*s", (int)R.body_len, R.body);
  client_free(c);
  c = connect_client(r.port);
  send_str(c->fd, "GET /w/probe HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200 &&
            sscanf(R.body, "slot=;header=;conn=%llu", &id3) == 1 && id3 != id1,
        "another connection, another id: %.*s", (int)R.body_len, R.body);
  client_free(c);

  /* /w/cutrace: the app's whole answer is queued, not applied, when the wrapper cuts */
  c = connect_client(r.port);
  send_str(c->fd, "POST /w/cutrace HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  static char all[65536];
  size_t n = read_to_close(c, all, sizeof all - 1, 10);
  all[n] = '\0';
  CHECK(w_wait(&W.cut_done) && W.start_rc == 0 && W.write_rc >= 0,
        "the app's calls were queued (%d, %d)", W.start_rc, W.write_rc);
  CHECK(W.cut_rc == 0, "cut with nothing on the wire: 0 (%d)", W.cut_rc);
  CHECK(strncmp(all, "HTTP/1.1 401 ", 13) == 0 && strstr(all, "\r\nconnection: close\r\n") &&
            n >= 3 && !strcmp(all + n - 3, "cut") && strstr(all, "HTTP/1.1 200") == NULL,
        "only the cut's answer, then the close: %s", all);
  CHECK(w_wait(&W.app_after) && W.write_after_cut_rc == SH_ECLOSED,
        "the app's calls after the cut: SH_ECLOSED (%d)", W.write_after_cut_rc);
  client_free(c);

  /* /w/cutlate: the app's response is on the wire: cut short, connection closed */
  c = connect_client(r.port);
  send_str(c->fd, "POST /w/cutlate HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  n = read_to_close(c, all, sizeof all - 1, 10);
  all[n] = '\0';
  CHECK(w_wait(&W.late_done) && W.late_cut_rc == SH_ESTATE,
        "cut after the head went out: SH_ESTATE (%d)", W.late_cut_rc);
  CHECK(strncmp(all, "HTTP/1.1 200 ", 13) == 0 && strstr(all, "partial") &&
            !strstr(all, "\r\n0\r\n\r\n") && !strstr(all, "401"),
        "the app's response cut short, no terminating chunk: %s", all);
  client_free(c);

  /* /w/cutdone: nothing to cut; the post ran on the loop thread, on_flush after it */
  c = connect_client(r.port);
  send_str(c->fd, "GET /w/cutdone HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(next_body_is(c, "done"), "the complete response stands");
  CHECK(w_wait(&W.post_done) && W.post_on_loop, "posted function ran on the loop thread");
  CHECK(W.done_cut_rc == SH_ECLOSED, "cut after the response: SH_ECLOSED (%d)", W.done_cut_rc);
  for (int i = 0; i < 200 && !atomic_load(&W.flush_after_post); i++)
    usleep(10000);
  CHECK(atomic_load(&W.flush_after_post), "on_flush after the posted function");
  send_str(c->fd, "GET /w/probe HTTP/1.1\r\nHost: x\r\nX-Probe: again\r\n\r\n");
  CHECK(read_resp(c, &R, 0) == 0 && R.status == 200 && strstr(R.body, "slot=again"),
        "the connection is still usable");
  client_free(c);
  stop(&r);
  CHECK(sh_server_post(NULL, cut_done_response, NULL) == SH_EINVAL, "post without a server");

  /* the keys are a process-wide, bounded resource */
  int more = 0;
  while (sh_request_ext_key() >= 0)
    more++;
  CHECK(more == SH_REQUEST_EXT_MAX - 1, "%d keys in all", more + 1);
}

/* The command line is cli/'s (tests/c/cli); the checks that need the whole config are here. */
static void test_config_check(void) {
  sh_config cfg;
  sh_error err;
  sh_config_init(&cfg);
  CHECK(sh_config_check(&cfg, &err) == 0 && cfg.port == 8000 && cfg.max_header_size == 16384 &&
            cfg.timeout_keep_alive == 5.0,
        "defaults: %s", err.message);
  cfg.uds = "/tmp/x";
  cfg.fd = 3;
  CHECK(sh_config_check(&cfg, &err) < 0 && strstr(err.message, "--uds"), "uds+fd");
  sh_config_init(&cfg);
  cfg.extra_headers[cfg.num_extra_headers++] = "X-Ok: yes";
  CHECK(sh_config_check(&cfg, &err) == 0, "good --header: %s", err.message);
  const char *bad[] = {"NoColon", "Bad Name: x", ":x", "X-Ctl: a\001b"};
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    sh_config_init(&cfg);
    cfg.extra_headers[cfg.num_extra_headers++] = bad[k];
    CHECK(sh_config_check(&cfg, &err) < 0 && strstr(err.message, "--header"), "--header '%s'",
          bad[k]);
  }
  sh_config_init(&cfg);
  cfg.forwarded_allow_ips = "not-an-ip";
  CHECK(sh_config_check(&cfg, &err) < 0 && strstr(err.message, "not-an-ip"),
        "--forwarded-allow-ips: %s", err.message);
  sh_config_init(&cfg);
  cfg.ssl_keyfile = "k.pem";
  CHECK(sh_config_check(&cfg, &err) < 0 && strstr(err.message, "--ssl-certfile"), "ssl key alone");
  sh_config_init(&cfg);
  cfg.ssl_certfile = "c.pem";
  cfg.ssl_cert_reqs = 2;
  CHECK(sh_config_check(&cfg, &err) < 0 && strstr(err.message, "--ssl-ca-certs"),
        "cert reqs without CAs");
  sh_config_init(&cfg);
  cfg.reload = 1;
  cfg.workers = 4;
  CHECK(sh_config_check(&cfg, &err) == 0 && cfg.workers == 1, "--reload serves one worker");
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  sh_log_set_level(getenv("SHIELD_TEST_LOG") ? "debug" : "critical");
  double t0 = now_s();
  test_config_check();

  sh_config cfg;
  base_cfg(&cfg);
  running hello;
  if (start(&hello, &cfg, sh_hello_handler()) == 0) {
    CHECK(hello.port > 0, "port 0 -> bound port %d", hello.port);
    test_hello(hello.port);
    test_errors(hello.port);
    stop(&hello);
  } else {
    CHECK(0, "start hello server");
  }

  pthread_t app_th;
  pthread_create(&app_th, NULL, app_main, NULL);
  base_cfg(&cfg);
  cfg.write_high_water = 64 * 1024;
  cfg.body_high_water = 16 * 1024;
  running tr;
  if (start(&tr, &cfg, &test_handler) == 0) {
    test_app(tr.port);
    test_errors(tr.port);
    test_framing(tr.port);
    test_half_close(tr.port);
    stop(&tr);
  } else {
    CHECK(0, "start test server");
  }
  test_limits();
  test_wrapper_api();
  pthread_mutex_lock(&app.lock);
  app.quit = 1;
  pthread_cond_signal(&app.cond);
  pthread_mutex_unlock(&app.lock);
  pthread_join(app_th, NULL);
  test_uds();
  test_inline();
  test_header_flags();
  test_response_hook();

  sh_log_flush();
  fprintf(stderr, "(%.1fs)\n", now_s() - t0);
  return test_summary();
}
