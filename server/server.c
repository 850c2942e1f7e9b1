/*
 * server/server.c — server lifetime: create, run, stop, free; the per-iteration flush hook
 * and the cached Date header.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server_internal.h"

static void run_posts(sh_server *srv);

static void finalize(sh_server *srv) {
  if (srv->finalized) return;
  srv->finalized = 1;
  sh_ops_close(srv);
  sh_ops_drain(srv); /* ops queued before the close (releases) still apply */
  run_posts(srv);    /* and posts made before it still run */
  uv_close((uv_handle_t *)&srv->async, NULL);
  uv_close((uv_handle_t *)&srv->check, NULL);
  uv_close((uv_handle_t *)&srv->idle, NULL);
  uv_close((uv_handle_t *)&srv->grace_timer, NULL);
  uv_close((uv_handle_t *)&srv->sigint, NULL);
  uv_close((uv_handle_t *)&srv->sigterm, NULL);
}

static void on_grace(uv_timer_t *t) {
  sh_server *srv = t->data;
  sh_conn *c = srv->conns;
  if (c)
    sh_log(SH_LOG_WARNING, "shutdown grace period over: closing %zu connection(s)", srv->nconns);
  while (c) {
    sh_conn *next = c->next;
    sh_conn_abort(c);
    c = next;
  }
}

static void begin_stop(sh_server *srv) {
  if (srv->stopping) return;
  srv->stopping = 1;
  double grace = atomic_load(&srv->stop_grace);
  sh_listen_close(srv);
  /* Idle connections close now; busy ones after their response (conn.c checks stopping). */
  sh_conn *c = srv->conns;
  while (c) {
    sh_conn *next = c->next;
    sh_conn_stop(c);
    c = next;
  }
  if (srv->nconns == 0) {
    finalize(srv);
    return;
  }
  uint64_t ms = grace <= 0 ? 0 : (uint64_t)(grace * 1000.0);
  uv_timer_start(&srv->grace_timer, on_grace, ms, 0);
}

void sh_server_conn_closed(sh_server *srv) {
  if (srv->stopping && srv->nconns == 0) finalize(srv);
}

/* Run (loop thread) or, once sh_server_free has begun, drop the posted functions. */
static void run_posts(sh_server *srv) {
  for (;;) {
    pthread_mutex_lock(&srv->qlock);
    sh_post *p = srv->phead;
    srv->phead = srv->ptail = NULL;
    pthread_mutex_unlock(&srv->qlock);
    if (!p) return;
    while (p) {
      sh_post *next = p->next;
      if (!srv->freeing) {
        sh_server_fired(srv); /* on_flush after it, as after a callback */
        p->fn(p->arg);
      }
      free(p);
      p = next;
    }
  }
}

static void on_async(uv_async_t *a) {
  sh_server *srv = a->data;
  sh_ops_drain(srv);
  run_posts(srv);
  if (atomic_load_explicit(&srv->tls_pending, memory_order_relaxed)) sh_tls_apply_pending(srv);
  if (atomic_load(&srv->stop_requested)) begin_stop(srv);
}

static void on_idle(uv_idle_t *i) {
  (void)i;
}

/* on_flush: once per loop iteration in which a handler callback ran.  The check phase runs
 * right after poll; a callback that ran later in the iteration (close callbacks) leaves the
 * idle handle active, which makes the next poll non-blocking, so a flush is never late. */
void sh_server_fired(sh_server *srv) {
  if (srv->fired || !srv->handler->on_flush) return;
  srv->fired = 1;
  uv_idle_start(&srv->idle, on_idle);
}

static void on_check(uv_check_t *ch) {
  sh_server *srv = ch->data;
  if (!srv->fired) return;
  srv->fired = 0;
  uv_idle_stop(&srv->idle);
  srv->handler->on_flush(srv->handler);
}

static void on_signal(uv_signal_t *s, int signum) {
  sh_server *srv = s->data;
  sh_log(SH_LOG_INFO, "received %s, shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
  sh_server_stop(srv, srv->cfg.timeout_graceful_shutdown);
}

/* "date: <IMF-fixdate>\r\n" (RFC 9110 §5.6.7), rebuilt at most once per second. */
const char *sh_server_date(sh_server *srv, size_t *len) {
  uint64_t now = uv_now(&srv->loop);
  if (now >= srv->date_next) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    srv->date_len =
        strftime(srv->date_line, sizeof srv->date_line, "date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    srv->date_next = now + (uint64_t)(1000 - ts.tv_nsec / 1000000);
  }
  *len = srv->date_len;
  return srv->date_line;
}

int sh_server_new(const sh_config *cfg, sh_handler *handler, sh_server **out, sh_error *err) {
  *out = NULL;
  if (!cfg || !handler) {
    SH_ERR(err, SH_EINVAL, "sh_server_new: config and handler are required");
    return SH_EINVAL;
  }
  sh_server *srv = calloc(1, sizeof *srv);
  if (!srv) {
    SH_ERR(err, SH_ENOMEM, "out of memory");
    return SH_ENOMEM;
  }
  srv->cfg = *cfg;
  srv->handler = handler;
  srv->port = cfg->port;
  pthread_mutex_init(&srv->qlock, NULL);
  int rc;
  srv->rbuf = malloc(SH_SHARED_RBUF);
  if (!srv->rbuf) {
    SH_ERR(err, SH_ENOMEM, "out of memory");
    rc = SH_ENOMEM;
    goto fail;
  }
  int r = uv_loop_init(&srv->loop);
  if (r < 0) {
    SH_ERR(err, SH_ESYS, "uv_loop_init: %s", uv_strerror(r));
    rc = SH_ESYS;
    goto fail;
  }
  srv->loop_open = 1;
  srv->loop.data = srv;
  /* A peer that resets mid-write must yield EPIPE, not kill the process. */
  signal(SIGPIPE, SIG_IGN);

  uv_async_init(&srv->loop, &srv->async, on_async);
  srv->async.data = srv;
  uv_check_init(&srv->loop, &srv->check);
  srv->check.data = srv;
  uv_idle_init(&srv->loop, &srv->idle);
  uv_timer_init(&srv->loop, &srv->grace_timer);
  srv->grace_timer.data = srv;
  uv_signal_init(&srv->loop, &srv->sigint);
  uv_signal_init(&srv->loop, &srv->sigterm);
  srv->sigint.data = srv->sigterm.data = srv;
  srv->handles_init = 1;

  rc = sh_worker_setup(srv, err);
  if (rc < 0) goto fail;
  if (sh_tls_on(cfg)) { /* TLS: bad files fail here, before anything is served */
    rc = sh_tls_prepare(cfg, err);
    if (rc < 0) goto fail;
    srv->tls = sh_tls_ctx_first(srv, err);
    if (!srv->tls) {
      rc = err ? err->code : SH_EINVAL;
      goto fail;
    }
  }
  rc = sh_listen_open(srv, err);
  if (rc < 0) goto fail;
  *out = srv;
  return 0;
fail:
  sh_server_free(srv);
  return rc;
}

int sh_server_run(sh_server *srv) {
  srv->loop_thread = pthread_self();
  atomic_store_explicit(&srv->running, 1, memory_order_release);
  uv_check_start(&srv->check, on_check);
  uv_unref((uv_handle_t *)&srv->check);
  if (srv->cfg.handle_signals) {
    uv_signal_start(&srv->sigint, on_signal, SIGINT);
    uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
  }
  /* A stop requested before run (or while the loop was not running) is picked up here. */
  if (atomic_load(&srv->stop_requested)) uv_async_send(&srv->async);
  if (srv->handler->on_start) {
    sh_server_fired(srv);
    srv->handler->on_start(srv->handler, srv);
  }
  sh_worker_ready(srv);
  int r = uv_run(&srv->loop, UV_RUN_DEFAULT);
  atomic_store_explicit(&srv->running, 0, memory_order_release);
  return r < 0 ? SH_ESYS : 0;
}

void sh_server_stop(sh_server *srv, double grace_seconds) {
  if (!srv) return;
  atomic_store(&srv->stop_grace, grace_seconds);
  atomic_store(&srv->stop_requested, 1);
  pthread_mutex_lock(&srv->qlock);
  if (!srv->qclosed) uv_async_send(&srv->async);
  pthread_mutex_unlock(&srv->qlock);
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) {
    /* Connections free themselves in their close callback (conn.c). */
    if (h->type == UV_TCP || h->type == UV_NAMED_PIPE || h->type == UV_TIMER) {
      sh_server *srv = h->loop->data;
      for (sh_conn *c = srv->conns; c; c = c->next) {
        if (h == &c->h.handle || h == (uv_handle_t *)&c->timer) {
          sh_conn_abort(c);
          return;
        }
      }
    }
    uv_close(h, NULL);
  }
}

void sh_server_free(sh_server *srv) {
  if (!srv) return;
  srv->freeing = 1; /* from here on, no handler callback: the handler may be gone already */
  if (srv->loop_open) {
    if (!srv->finalized && srv->handles_init) sh_ops_close(srv);
    uv_walk(&srv->loop, close_any, NULL);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&srv->loop) != 0) sh_log(SH_LOG_WARNING, "libuv loop not fully closed");
  }
  if (srv->handles_init) {
    sh_ops_drain(srv); /* frees queued ops */
    run_posts(srv);    /* drops queued posts (freeing: not run) */
  }
  sh_req_free_all(srv);
  sh_tls_ctx_unref(srv->tls);
  sh_tls_ctx_unref(atomic_load(&srv->tls_pending));
  sh_worker_cleanup(srv);
  pthread_mutex_destroy(&srv->qlock);
  free(srv->rbuf);
  free(srv);
}

int sh_server_port(const sh_server *srv) {
  return srv ? srv->port : -1;
}

/* Posts have their own FIFO (under the op queue's lock) and run from the loop's wake-up, after
 * the ops: never inside a sh_request_* call that drains ops on the loop thread, so a posted
 * function never runs in the middle of a handler's callback. */
int sh_server_post(sh_server *srv, void (*fn)(void *arg), void *arg) {
  if (!srv || !fn) return SH_EINVAL;
  sh_post *p = malloc(sizeof *p);
  if (!p) return SH_ENOMEM;
  *p = (sh_post){NULL, fn, arg};
  pthread_mutex_lock(&srv->qlock);
  if (srv->qclosed) {
    pthread_mutex_unlock(&srv->qlock);
    free(p);
    return SH_ECLOSED;
  }
  if (srv->ptail)
    srv->ptail->next = p;
  else
    srv->phead = p;
  srv->ptail = p;
  uv_async_send(&srv->async);
  pthread_mutex_unlock(&srv->qlock);
  return 0;
}
