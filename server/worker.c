/*
 * server/worker.c — the per-process side of workers: what one server process sets up from
 * the production flags (trusted proxies, extra headers, its own --limit-max-requests with
 * jitter) and how it talks to its supervisor.
 *
 * The supervisor gives each worker the write end of a pipe (cfg.notify_fd).  The worker
 * writes 'R' once its loop runs (after lifespan startup: the I/O thread starts only then), so
 * a rolling restart stops the old worker only once the new one serves.  'R' goes out after
 * the loop's first poll, which has accepted every connection queued on the listener while the
 * worker started: a stop that the supervisor held back until 'R' (supervisor.c) then finds
 * those connections in this worker, which answers them while it drains, instead of leaving
 * them in a backlog that nobody serves any more.  And 'M' when it has
 * seen --limit-max-requests requests, so the supervisor replaces it the same way (new one up,
 * then SIGTERM) and no request is refused meanwhile.  Without a supervisor the worker stops
 * itself gracefully at the limit, as uvicorn does.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include "server_internal.h"

static void notify(sh_server *srv, char what) {
  if (srv->cfg.notify_fd < 0) return;
  ssize_t r;
  do {
    r = write(srv->cfg.notify_fd, &what, 1);
  } while (r < 0 && errno == EINTR);
}

int sh_worker_setup(sh_server *srv, sh_error *err) {
  const sh_config *cfg = &srv->cfg;
  uint32_t rnd[2] = {0, 0};
  if (getrandom(rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
    rnd[0] = (uint32_t)getpid() * 2654435761u;
    rnd[1] = (uint32_t)uv_hrtime();
  }
  srv->id_prefix = rnd[0];
  sh_metrics_set_shard(cfg->metrics_shard);
  if (cfg->proxy_headers && cfg->forwarded_allow_ips) {
    int rc = sh_proxy_list_parse(cfg->forwarded_allow_ips, &srv->proxy, err);
    if (rc < 0) return rc;
  }
  if (cfg->num_extra_headers > 0) {
    size_t cap = 0;
    for (int i = 0; i < cfg->num_extra_headers; i++)
      cap += strlen(cfg->extra_headers[i]) + 3;
    srv->extra_hdrs = malloc(cap);
    if (!srv->extra_hdrs) {
      SH_ERR(err, SH_ENOMEM, "out of memory");
      return SH_ENOMEM;
    }
    /* Three passes, three segments: the Server lines, the Date lines, then the others.  A
     * --header Server or Date replaces the server's default one rather than adding a second
     * (http1.c put_server_date); the rest go on every response as given. */
    char *p = srv->extra_hdrs;
    for (int pass = 0; pass < 3; pass++) {
      char *seg = p;
      for (int i = 0; i < cfg->num_extra_headers; i++) {
        /* "Name:Value" or "Name: Value" -> "Name: Value\r\n" (config.c checked the bytes) */
        const char *h = cfg->extra_headers[i];
        const char *colon = strchr(h, ':');
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
          v++;
        size_t nl = (size_t)(colon - h), vl = strlen(v);
        int kind = nl == 6 && strncasecmp(h, "server", 6) == 0 ? 0
                   : nl == 4 && strncasecmp(h, "date", 4) == 0 ? 1
                                                               : 2;
        if (kind != pass) continue;
        memcpy(p, h, nl);
        p += nl;
        memcpy(p, ": ", 2);
        p += 2;
        memcpy(p, v, vl);
        p += vl;
        memcpy(p, "\r\n", 2);
        p += 2;
      }
      if (pass == 0)
        srv->extra_server_len = (size_t)(p - seg);
      else if (pass == 1)
        srv->extra_date_len = (size_t)(p - seg);
    }
    srv->extra_hdrs_len = (size_t)(p - srv->extra_hdrs);
  }
  if (cfg->limit_max_requests) {
    /* uvicorn: limit + randint(0, jitter), per worker, so workers do not all recycle at once */
    uint64_t j = cfg->limit_max_requests_jitter ? rnd[1] % (cfg->limit_max_requests_jitter + 1) : 0;
    srv->max_requests = cfg->limit_max_requests + j;
  }
  return 0;
}

static void on_ready_poll(uv_idle_t *idle) {
  (void)idle;
}

/* Runs right after the first poll (the check phase): the backlog has been accepted. */
static void on_ready_check(uv_check_t *check) {
  sh_server *srv = check->data;
  uv_close((uv_handle_t *)&srv->ready_check, NULL);
  uv_close((uv_handle_t *)&srv->ready_poll, NULL);
  notify(srv, 'R');
}

/* Called on the loop thread just before uv_run.  The two handles are unreferenced: they never
 * keep the loop alive, and sh_server_free closes them if the loop ended first. */
void sh_worker_ready(sh_server *srv) {
  if (srv->cfg.notify_fd < 0) return;
  if (uv_check_init(&srv->loop, &srv->ready_check) < 0) {
    notify(srv, 'R');
    return;
  }
  srv->ready_check.data = srv;
  if (uv_idle_init(&srv->loop, &srv->ready_poll) < 0) {
    uv_close((uv_handle_t *)&srv->ready_check, NULL);
    notify(srv, 'R');
    return;
  }
  uv_idle_start(&srv->ready_poll, on_ready_poll); /* the first poll must not block */
  uv_check_start(&srv->ready_check, on_ready_check);
  uv_unref((uv_handle_t *)&srv->ready_poll);
  uv_unref((uv_handle_t *)&srv->ready_check);
}

void sh_worker_request_limit(sh_server *srv) {
  if (srv->max_requests_hit) return;
  srv->max_requests_hit = 1;
  sh_log(SH_LOG_INFO, "Maximum request limit of %llu exceeded. Terminating process.",
         (unsigned long long)srv->max_requests);
  if (srv->cfg.notify_fd >= 0)
    notify(srv, 'M'); /* the supervisor replaces us, then stops us */
  else
    sh_server_stop(srv, srv->cfg.timeout_graceful_shutdown);
}

void sh_worker_cleanup(sh_server *srv) {
  sh_proxy_list_free(srv->proxy);
  srv->proxy = NULL;
  free(srv->extra_hdrs);
  srv->extra_hdrs = NULL;
  free(srv->hook_hdrs);
  srv->hook_hdrs = NULL;
  srv->hook_hdrs_len = 0;
}

/* Checked as sh_request_start checks a handler's headers (RFC 9110 §5.1, §5.5), then copied
 * as ready-made lines: the response head only appends them (http1.c put_server_date). */
int sh_server_set_response_headers(sh_server *srv, const sh_header *headers, size_t n,
                                   sh_error *err) {
  if (!srv || (n && !headers)) return sh_error_set(err, SH_EINVAL, "no server or no headers");
  if (atomic_load(&srv->running) && !sh_on_loop_thread(srv))
    return sh_error_set(err, SH_EINVAL,
                        "sh_server_set_response_headers: call it on the I/O thread");
  size_t cap = 0;
  for (size_t i = 0; i < n; i++) {
    const sh_header *h = &headers[i];
    int ok = h->name.base && h->name.len && (!h->value.len || h->value.base);
    for (size_t k = 0; ok && k < h->name.len; k++)
      ok = sh_http_token_char((unsigned char)h->name.base[k]);
    for (size_t k = 0; ok && k < h->value.len; k++)
      ok = h->value.base[k] != '\r' && h->value.base[k] != '\n' && h->value.base[k] != '\0';
    if (!ok)
      return sh_error_set(err, SH_EHEADER,
                          "response header %zu: the name must be a token and the value must "
                          "not hold CR, LF or NUL",
                          i);
    cap += h->name.len + h->value.len + 4;
  }
  char *buf = NULL;
  if (cap) {
    if (!(buf = malloc(cap))) return sh_error_set(err, SH_ENOMEM, "out of memory");
    char *p = buf;
    for (size_t i = 0; i < n; i++) {
      memcpy(p, headers[i].name.base, headers[i].name.len);
      p += headers[i].name.len;
      memcpy(p, ": ", 2);
      p += 2;
      if (headers[i].value.len) memcpy(p, headers[i].value.base, headers[i].value.len);
      p += headers[i].value.len;
      memcpy(p, "\r\n", 2);
      p += 2;
    }
  }
  /* Heads are built and written on this thread: no response in the making holds the old one */
  free(srv->hook_hdrs);
  srv->hook_hdrs = buf;
  srv->hook_hdrs_len = cap;
  return 0;
}

sh_shm_table *sh_server_shared_table(const sh_server *srv) {
  return srv ? srv->cfg.shared_table : NULL;
}

const unsigned char *sh_server_state_secret(const sh_server *srv, size_t *len) {
  if (!srv || !srv->cfg.state_secret) {
    if (len) *len = 0;
    return NULL;
  }
  if (len) *len = srv->cfg.state_secret_len;
  return srv->cfg.state_secret;
}
