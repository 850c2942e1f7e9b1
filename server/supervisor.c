/*
 * server/supervisor.c — the parent process of `shield` workers (no Python, no libuv).
 *
 * Before forking it opens the listening socket once (listen_sock.c: every worker inherits the
 * same accept queue, so a worker that restarts never drops a queued connection), maps the
 * shared state table (shmtable.c) and the metrics region (metrics.c), loads or generates
 * the state secret, and prepares TLS (sh_tls_prepare: ticket keys every worker shares; with TLS
 * from memory, the first certificate, see tls_issue).  Then it
 * forks --workers children; each calls worker_main (pyshim: start the interpreter, serve) with the
 * inherited fd.
 *
 * Events, all in one poll() loop on the main thread (signals via signalfd, so no async-signal
 * handlers and no races with the loop):
 *   SIGCHLD   a worker exited.  Expected (it was told to leave) -> forget it.  Otherwise it
 *             crashed: start a new one for its slot with backoff (0.1 s doubling to 5 s; reset
 *             once a worker of that slot is ready); the others keep serving.  A worker that
 *             fails before *any* worker was ever ready (bad app, failed lifespan startup) is
 *             fatal: shut down and exit with its status, as a single process would.
 *   SIGTERM/SIGINT  graceful stop: SIGTERM every worker (they stop accepting, finish in-flight
 *             requests up to --timeout-graceful-shutdown, run lifespan shutdown), SIGKILL what
 *             is left after that plus a margin.  A second signal is forwarded (workers then
 *             stop at once, like a second Ctrl+C).  A worker still starting is told to stop
 *             only once it is ready (at the latest after --timeout-graceful-shutdown): the
 *             listener is open from the start, so clients may already be queued in its backlog,
 *             and a worker killed before it serves would leave them to be reset when the
 *             listener closes.  Ready, it has accepted that backlog (worker.c reports ready
 *             after its first poll) and answers it while it drains.
 *   SIGHUP    rolling restart, one slot at a time: fork the replacement, wait until it reports
 *             ready (a byte on its notify pipe, written when its I/O loop starts, i.e. after
 *             lifespan startup), then SIGTERM the old one, which drains.  No request fails:
 *             the listener never closes and the old worker answers what it accepted.
 *   'M' from a worker  it reached --limit-max-requests: replaced the same way.
 *   --reload  inotify on --reload-dir (default --app-dir): a *.py change rolls the worker; a
 *             replacement that fails to start leaves the old one serving until the next change.
 *   --metrics-port  a small blocking HTTP responder (1 s socket timeouts) serving the summed
 *             counters; scrapes are rare and tiny, and the supervisor has nothing latency-bound
 *             to do, so this costs no thread and no event library.
 * Workers join their own process group (a terminal's Ctrl+C reaches only the supervisor,
 * which forwards one SIGTERM) and get PR_SET_PDEATHSIG so they never outlive it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "server_internal.h"

#define MAX_PROCS 2100
#define SECRET_MAX 4096

typedef struct wk {
  pid_t pid;     /* 0: free entry */
  int slot;      /* worker index 0..workers-1 */
  int shard;     /* metrics row */
  int notify_rd; /* read end of the worker's notify pipe, -1 once closed */
  int ready;
  int leaving;         /* SIGTERM sent: its exit is expected */
  int succ;            /* entry of the replacement being started, -1 */
  int pred;            /* entry this one replaces (rolling), -1 */
  int roll_wanted;     /* SIGHUP: roll this one when it is its turn */
  int stop_when_ready; /* the stop came while it was starting: SIGTERM it once it is ready */
  double term_at;
  double started;
} wk;

static struct {
  sh_config *cfg;
  int (*worker_main)(sh_config *, void *);
  void *arg;
  int lfd;
  int port;
  int sfd; /* signalfd */
  int mfd; /* metrics listener, -1 */
  int ifd; /* inotify, -1 */
  sigset_t oldmask;
  wk w[MAX_PROCS];
  int nw;
  int stopping;
  double kill_at;
  double start_wait_until; /* stopping: starting workers get their SIGTERM by then regardless */
  int ever_ready;
  int exit_code;
  double *restart_at; /* per slot: when to start a crashed slot's replacement (0 = none) */
  int *backoff_ms;
  int hup_rolling;
  double reload_at;  /* debounced reload */
  double roll_after; /* backoff after a failed replacement */
  int shard_used[128];
  unsigned char *secret;
  size_t secret_len;
  sh_shm_table *table;
  sh_tls_slot *tls_slot; /* TLS from memory: where the certificates issued here go */
  double tls_issue_at;   /* when to issue the next one (0: never) */
} S;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- shared state: the secret ---- */

static int load_secret(const sh_config *cfg, sh_error *err) {
  /* Locked and kept out of core dumps: it authenticates nonces and sessions. */
  S.secret = mmap(NULL, SECRET_MAX, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (S.secret == MAP_FAILED) {
    S.secret = NULL;
    SH_ERR(err, SH_ESYS, "cannot allocate the state secret: %s", strerror(errno));
    return SH_ESYS;
  }
  (void)mlock(S.secret, SECRET_MAX);
  (void)madvise(S.secret, SECRET_MAX, MADV_DONTDUMP);
  if (cfg->state_secret_file) {
    int fd = open(cfg->state_secret_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      SH_ERR(err, SH_EINVAL, "--state-secret-file %s: %s", cfg->state_secret_file, strerror(errno));
      return SH_EINVAL;
    }
    size_t n = 0;
    for (;;) {
      ssize_t r = read(fd, S.secret + n, SECRET_MAX - n);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        SH_ERR(err, SH_EINVAL, "--state-secret-file %s: %s", cfg->state_secret_file,
               strerror(errno));
        close(fd);
        return SH_EINVAL;
      }
      if (r == 0 || n + (size_t)r == SECRET_MAX) {
        n += (size_t)r;
        break;
      }
      n += (size_t)r;
    }
    close(fd);
    if (n < 32) {
      SH_ERR(err, SH_EINVAL,
             "--state-secret-file %s holds %zu bytes: at least 32 random bytes are needed "
             "(e.g. head -c 32 /dev/urandom > FILE)",
             cfg->state_secret_file, n);
      return SH_EINVAL;
    }
    S.secret_len = n;
    return 0;
  }
  size_t got = 0;
  while (got < 32) {
    ssize_t r = getrandom(S.secret + got, 32 - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      SH_ERR(err, SH_ESYS, "getrandom: %s", strerror(errno));
      return SH_ESYS;
    }
    got += (size_t)r;
  }
  S.secret_len = 32;
  return 0;
}

/* ---- TLS from memory: the certificate, issued here ----
 *
 * When the certificate is made at run time (cfg->ssl_issue: the gate's attested TLS, whose
 * certificate carries TEE evidence that must be renewed before it or the certificate
 * expires), the supervisor is the one issuer and the workers only serve what it published.
 * Why here and not in each worker:
 *   - one certificate for all workers: a client pinning it sees the same one on any worker,
 *     and the TEE produces one piece of evidence per re-issue, not one per worker;
 *   - the key was generated in this process before the fork (it never touches a file), so
 *     the supervisor has it, and a worker restarted later finds the current certificate in
 *     the slot rather than having to make one before it can serve;
 *   - no I/O thread ever waits on the TEE (a provider call may block: /dev/nsm, the
 *     Confidential Space socket with its 10 s limit), and no worker needs a thread of its own.
 * The supervisor calls ssl_issue synchronously in its poll loop: it is single-threaded on
 * purpose (it forks; a second thread holding an OpenSSL or malloc lock at fork time would
 * deadlock the child), and what waits meanwhile (reaping, signals, metrics scrapes) tolerates
 * a delay of a few seconds once per re-issue.  The certificate is public, so shared memory
 * (sh_tls_slot, mapped before the fork) carries it; workers notice the new generation at
 * their next accept and build the new SSL_CTX before that handshake, while connections
 * already open keep the context they began with (nothing is dropped).  A failed re-issue is
 * logged and retried sooner (a quarter of the interval, at most a minute): the certificate
 * being served stays valid for a margin past the interval (the issuer's business). */
static int tls_issue(sh_error *err) {
  char *pem = NULL;
  size_t len = 0;
  int rc = S.cfg->ssl_issue(S.cfg->ssl_issue_arg, &pem, &len, err);
  if (rc >= 0) rc = sh_tls_slot_put(S.tls_slot, pem, len, err);
  free(pem);
  double every = S.cfg->ssl_reissue_every;
  if (every <= 0)
    S.tls_issue_at = 0;
  else if (rc >= 0)
    S.tls_issue_at = now_s() + every;
  else
    S.tls_issue_at = now_s() + (every / 4 < 60 ? every / 4 : 60);
  return rc < 0 ? rc : 0;
}

static void tls_reissue(void) {
  sh_error err = {0};
  if (tls_issue(&err) < 0)
    sh_log(SH_LOG_ERROR,
           "cannot re-issue the TLS certificate: %s (retrying in %.0f s; the "
           "current one is still served)",
           err.message, S.tls_issue_at - now_s());
  else
    sh_log(SH_LOG_INFO, "TLS certificate re-issued (next in %.0f s)", S.cfg->ssl_reissue_every);
}

/* ---- workers ---- */

static int alloc_shard(void) {
  for (int s = 1; s < 127; s++)
    if (!S.shard_used[s]) {
      S.shard_used[s] = 1;
      return s;
    }
  return 127; /* shared overflow row: its gauges are never reset */
}

static void close_inherited_fds(void) {
  for (int i = 0; i < S.nw; i++)
    if (S.w[i].notify_rd >= 0) close(S.w[i].notify_rd);
  close(S.sfd);
  if (S.mfd >= 0) close(S.mfd);
  if (S.ifd >= 0) close(S.ifd);
}

static int spawn(int slot, int pred) {
  int e = -1;
  for (int i = 0; i < S.nw; i++)
    if (S.w[i].pid == 0) {
      e = i;
      break;
    }
  if (e < 0) {
    if (S.nw == MAX_PROCS) return -1;
    e = S.nw++;
  }
  S.w[e] = (wk){.pid = 0, .notify_rd = -1, .succ = -1, .pred = -1}; /* not closed by the child */
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) {
    sh_log(SH_LOG_ERROR, "pipe: %s", strerror(errno));
    return -1;
  }
  int shard = alloc_shard();
  pid_t sup = getpid();
  sh_log_flush(); /* lines queued so far are the parent's: do not lose or duplicate them */
  pid_t pid = fork();
  if (pid < 0) {
    sh_log(SH_LOG_ERROR, "fork: %s", strerror(errno));
    close(p[0]);
    close(p[1]);
    if (shard < 127) S.shard_used[shard] = 0;
    return -1;
  }
  if (pid == 0) {
    close(p[0]);
    close_inherited_fds();
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != sup) _exit(1); /* the supervisor is already gone */
    signal(SIGHUP, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    sigprocmask(SIG_SETMASK, &S.oldmask, NULL);
    sh_config wcfg = *S.cfg;
    wcfg.listen_fd_inherited = S.lfd;
    wcfg.port = S.port;
    wcfg.notify_fd = p[1];
    wcfg.worker_index = slot;
    wcfg.metrics_shard = shard;
    wcfg.shared_table = S.table;
    wcfg.state_secret = S.secret;
    wcfg.state_secret_len = S.secret_len;
    wcfg.workers = S.cfg->workers;
    exit(S.worker_main(&wcfg, S.arg));
  }
  close(p[1]);
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  S.w[e] = (wk){.pid = pid,
                .slot = slot,
                .shard = shard,
                .notify_rd = p[0],
                .succ = -1,
                .pred = pred,
                .started = now_s()};
  if (pred >= 0) S.w[pred].succ = e;
  sh_log(SH_LOG_INFO, "Started worker %d [%d]%s", slot, (int)pid,
         pred >= 0 ? " (replacing one)" : "");
  return e;
}

static void terminate(int e, int sig) {
  if (S.w[e].pid <= 0) return;
  if (!S.w[e].leaving) S.w[e].term_at = now_s();
  S.w[e].leaving = 1;
  kill(S.w[e].pid, sig);
}

static int live_count(void) {
  int n = 0;
  for (int i = 0; i < S.nw; i++)
    n += S.w[i].pid > 0;
  return n;
}

/* Start replacing worker e (rolling): the replacement takes over its slot once ready. */
static void roll(int e) {
  if (S.stopping || S.w[e].pid <= 0 || S.w[e].leaving || S.w[e].succ >= 0) return;
  S.w[e].roll_wanted = 0;
  spawn(S.w[e].slot, e);
}

/* Drain (grace) + lifespan shutdown + interpreter teardown, counted from the SIGTERM. */
static void extend_kill_deadline(void) {
  double at = now_s() + S.cfg->timeout_graceful_shutdown + 10.0;
  if (at > S.kill_at) S.kill_at = at;
}

/* The deferred SIGTERM of a worker that was still starting when the stop came. */
static void stop_started_worker(int e) {
  S.w[e].stop_when_ready = 0;
  kill(S.w[e].pid, SIGTERM);
  extend_kill_deadline();
}

static void begin_stop(int sig) {
  if (S.stopping) {
    sh_log(SH_LOG_INFO, "second %s: stopping workers now", sig == SIGINT ? "SIGINT" : "SIGTERM");
    for (int i = 0; i < S.nw; i++) {
      S.w[i].stop_when_ready = 0;
      if (S.w[i].pid > 0) kill(S.w[i].pid, SIGTERM);
    }
    return;
  }
  S.stopping = 1;
  sh_log(SH_LOG_INFO, "Shutting down (%s): stopping %d worker(s)",
         sig == SIGINT    ? "SIGINT"
         : sig == SIGTERM ? "SIGTERM"
                          : "startup failure",
         live_count());
  /* A failed start-up (sig 0) has nothing to serve: everything stops now. */
  int wait_for_starting = sig != 0;
  for (int i = 0; i < S.nw; i++) {
    wk *w = &S.w[i];
    if (w->pid <= 0) continue;
    if (w->ready || !wait_for_starting) {
      terminate(i, SIGTERM);
      continue;
    }
    w->leaving = 1; /* its exit is expected from now on */
    w->term_at = now_s();
    w->stop_when_ready = 1;
    sh_log(SH_LOG_INFO, "Worker %d [%d] is still starting: it stops once it is ready", w->slot,
           (int)w->pid);
  }
  S.start_wait_until = now_s() + S.cfg->timeout_graceful_shutdown;
  S.kill_at = 0;
  extend_kill_deadline();
}

static void worker_ready(int e) {
  wk *w = &S.w[e];
  if (w->ready) return;
  w->ready = 1;
  S.ever_ready = 1;
  if (w->stop_when_ready) stop_started_worker(e); /* after taking in its backlog */
  if (w->pred >= 0) {
    S.backoff_ms[w->slot] = 0; /* a replacement made it: rolling retries start afresh */
    int old = w->pred;
    w->pred = -1;
    /* (Never a second SIGTERM to one already leaving: that means "stop now" to a worker.) */
    if (S.w[old].pid > 0 && S.w[old].succ == e && !S.w[old].leaving) {
      S.w[old].succ = -1;
      sh_log(SH_LOG_INFO, "Worker %d [%d] ready: stopping the old one [%d]", w->slot, (int)w->pid,
             (int)S.w[old].pid);
      terminate(old, SIGTERM);
    }
  }
}

static void on_notify(int e) {
  char buf[16];
  ssize_t n;
  while ((n = read(S.w[e].notify_rd, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] == 'R')
        worker_ready(e);
      else if (buf[i] == 'M')
        roll(e);
    }
  }
  if (n == 0) { /* the worker closed its end (exiting) */
    close(S.w[e].notify_rd);
    S.w[e].notify_rd = -1;
  }
}

static void describe_status(int status, char *out, size_t n) {
  if (WIFEXITED(status))
    snprintf(out, n, "exit status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(out, n, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
  else
    snprintf(out, n, "status %d", status);
}

static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    int e = -1;
    for (int i = 0; i < S.nw; i++)
      if (S.w[i].pid == pid) e = i;
    if (e < 0) continue;
    wk w = S.w[e];
    S.w[e].stop_when_ready = 0; /* reaped: its pid may be reused, never signal it */
    if (w.notify_rd >= 0) {
      on_notify(e); /* a last 'R' may still be in the pipe */
      if (S.w[e].notify_rd >= 0) close(S.w[e].notify_rd);
    }
    w = S.w[e];
    S.w[e].pid = 0;
    S.w[e].notify_rd = -1;
    sh_metrics_reset_shard_gauges(w.shard);
    if (w.shard < 127) S.shard_used[w.shard] = 0;
    char why[96];
    describe_status(status, why, sizeof why);
    if (w.succ >= 0 && S.w[w.succ].pred == e) S.w[w.succ].pred = -1;
    if (w.leaving || S.stopping) {
      sh_log(SH_LOG_INFO, "Worker %d [%d] finished (%s)", w.slot, (int)pid, why);
      continue;
    }
    if (!S.ever_ready) {
      /* Nothing ever served: the app cannot start.  Exit like a single process would. */
      sh_log(SH_LOG_ERROR, "Worker %d [%d] failed to start (%s): exiting", w.slot, (int)pid, why);
      S.exit_code = WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : 1;
      begin_stop(0);
      continue;
    }
    if (w.pred >= 0) {
      /* A replacement died before taking over: the old worker keeps serving. */
      sh_log(SH_LOG_ERROR,
             "Replacement worker %d [%d] failed before ready (%s); the running "
             "worker keeps serving",
             w.slot, (int)pid, why);
      S.w[w.pred].succ = -1;
      if (!S.cfg->reload) S.w[w.pred].roll_wanted = 1; /* --reload: wait for the next edit */
      int *b = &S.backoff_ms[w.slot];
      *b = *b ? (*b * 2 > 5000 ? 5000 : *b * 2) : 100;
      S.roll_after = now_s() + *b / 1000.0;
      continue;
    }
    if (w.succ >= 0 && S.w[w.succ].pid > 0) {
      /* It died while its replacement starts: the replacement takes the slot. */
      sh_log(SH_LOG_WARNING, "Worker %d [%d] exited (%s) during its replacement", w.slot, (int)pid,
             why);
      continue;
    }
    /* Backoff grows while workers keep dying young; one that served 10 s resets it. */
    if (now_s() - w.started > 10.0) S.backoff_ms[w.slot] = 0;
    int *b = &S.backoff_ms[w.slot];
    *b = *b ? (*b * 2 > 5000 ? 5000 : *b * 2) : 100;
    sh_log(SH_LOG_ERROR, "Worker %d [%d] died unexpectedly (%s): restarting in %.1fs", w.slot,
           (int)pid, why, *b / 1000.0);
    sh_metrics_worker_restart();
    S.restart_at[w.slot] = now_s() + *b / 1000.0;
  }
}

/* ---- metrics endpoint ---- */

static int open_metrics(const sh_config *cfg, sh_error *err) {
  sh_config mc = *cfg;
  mc.fd = -1;
  mc.vsock_port = -1;
  mc.backlog = 64;
  mc.uds = NULL;
  if (cfg->metrics[0] == '/') {
    mc.uds = cfg->metrics;
    mc.uds_mode = 0660;
  } else {
    mc.port = atoi(cfg->metrics);
    if (cfg->vsock_port >= 0 || cfg->uds) mc.host = "127.0.0.1";
  }
  int port;
  int fd = sh_listen_socket(&mc, &port, err);
  if (fd < 0) return fd;
  fcntl(fd, F_SETFL, O_NONBLOCK);
  sh_log(SH_LOG_INFO, "Metrics on %s%s:%d/metrics", mc.uds ? "unix:" : "http://",
         mc.uds ? mc.uds : mc.host, mc.uds ? 0 : port);
  return fd;
}

static void write_all_fd(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= (size_t)w;
  }
}

static void serve_metrics(void) {
  for (int k = 0; k < 16; k++) {
    int c = accept4(S.mfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) return;
    struct timeval tv = {1, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char req[2048];
    size_t n = 0;
    while (n < sizeof req - 1) {
      ssize_t r = read(c, req + n, sizeof req - 1 - n);
      if (r <= 0) break;
      n += (size_t)r;
      req[n] = '\0';
      if (strstr(req, "\r\n\r\n")) break;
    }
    req[n] = '\0';
    char head[256];
    if (strncmp(req, "GET /metrics", 12) == 0 && (req[12] == ' ' || req[12] == '?')) {
      size_t len = 0;
      char *body = sh_metrics_render(&len);
      int hl = snprintf(head, sizeof head,
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; "
                        "charset=utf-8\r\ncontent-length: %zu\r\nconnection: close\r\n\r\n",
                        body ? len : 0);
      write_all_fd(c, head, (size_t)hl);
      if (body) write_all_fd(c, body, len);
      free(body);
    } else {
      static const char nf[] =
          "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n"
          "content-length: 25\r\nconnection: close\r\n\r\n"
          "metrics are at /metrics\r\n";
      write_all_fd(c, nf, sizeof nf - 1);
    }
    close(c);
  }
}

/* ---- --reload ---- */

static int watch_tree(const char *dir, int depth, int *budget) {
  if (depth > 10 || *budget <= 0) return 0;
  if (inotify_add_watch(
          S.ifd, dir,
          IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR) < 0)
    return 0;
  (*budget)--;
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.' || strcmp(de->d_name, "__pycache__") == 0 ||
        strcmp(de->d_name, "node_modules") == 0 || strcmp(de->d_name, "build") == 0)
      continue;
    if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) continue;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path) continue;
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) watch_tree(path, depth + 1, budget);
  }
  closedir(d);
  return 0;
}

static int open_reload(const sh_config *cfg, sh_error *err) {
  S.ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (S.ifd < 0) {
    SH_ERR(err, SH_ESYS, "--reload: inotify: %s", strerror(errno));
    return SH_ESYS;
  }
  int budget = 4096;
  if (cfg->num_reload_dirs == 0) watch_tree(cfg->app_dir ? cfg->app_dir : ".", 0, &budget);
  for (int i = 0; i < cfg->num_reload_dirs; i++)
    watch_tree(cfg->reload_dirs[i], 0, &budget);
  sh_log(SH_LOG_INFO, "Will watch for changes in %d director%s", 4096 - budget,
         4096 - budget == 1 ? "y" : "ies");
  return 0;
}

static void on_inotify(void) {
  _Alignas(struct inotify_event) char buf[8192];
  ssize_t n;
  while ((n = read(S.ifd, buf, sizeof buf)) > 0) {
    for (char *p = buf; p < buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)p;
      size_t nl = ev->len ? strlen(ev->name) : 0;
      if (nl > 3 && strcmp(ev->name + nl - 3, ".py") == 0) {
        if (!S.reload_at) sh_log(SH_LOG_WARNING, "%s changed, reloading...", ev->name);
        S.reload_at = now_s() + 0.2; /* debounce editors' write bursts */
      }
      p += sizeof *ev + ev->len;
    }
  }
}

/* ---- the loop ---- */

static void on_signal(void) {
  struct signalfd_siginfo si;
  while (read(S.sfd, &si, sizeof si) == (ssize_t)sizeof si) {
    switch (si.ssi_signo) {
      case SIGCHLD:
        reap();
        break;
      case SIGTERM:
      case SIGINT:
        begin_stop((int)si.ssi_signo);
        break;
      case SIGHUP:
        if (S.stopping) break;
        sh_log(SH_LOG_INFO, "SIGHUP: rolling restart of %d worker(s)", live_count());
        for (int i = 0; i < S.nw; i++)
          if (S.w[i].pid > 0 && !S.w[i].leaving && S.w[i].pred < 0) S.w[i].roll_wanted = 1;
        break;
      default:
        break;
    }
  }
}

static void housekeeping(double now) {
  if (S.stopping) {
    for (int i = 0; i < S.nw; i++)
      if (S.w[i].pid > 0 && S.w[i].stop_when_ready && now >= S.start_wait_until) {
        sh_log(SH_LOG_WARNING, "Worker %d [%d] still not ready: stopping it anyway", S.w[i].slot,
               (int)S.w[i].pid);
        stop_started_worker(i);
      }
    if (S.kill_at && now >= S.kill_at) {
      for (int i = 0; i < S.nw; i++)
        if (S.w[i].pid > 0) {
          sh_log(SH_LOG_WARNING, "Worker %d [%d] did not stop in time: SIGKILL", S.w[i].slot,
                 (int)S.w[i].pid);
          kill(S.w[i].pid, SIGKILL);
        }
      S.kill_at = 0;
    }
    return;
  }
  for (int s = 0; s < S.cfg->workers; s++) {
    if (S.restart_at[s] && now >= S.restart_at[s]) {
      S.restart_at[s] = 0;
      spawn(s, -1);
    }
  }
  if (S.tls_issue_at && now >= S.tls_issue_at) tls_reissue();
  if (S.reload_at && now >= S.reload_at) {
    S.reload_at = 0;
    for (int i = 0; i < S.nw; i++)
      if (S.w[i].pid > 0 && !S.w[i].leaving && S.w[i].pred < 0) roll(i);
  }
  /* Rolling (SIGHUP, or retries): one slot at a time, so capacity never drops below N. */
  int busy = 0;
  for (int i = 0; i < S.nw; i++)
    if (S.w[i].pid > 0 && S.w[i].pred >= 0) busy = 1;
  if (!busy && now >= S.roll_after) {
    for (int i = 0; i < S.nw; i++) {
      if (S.w[i].pid > 0 && S.w[i].roll_wanted && !S.w[i].leaving) {
        roll(i);
        break;
      }
    }
  }
}

int sh_supervisor_run(sh_config *cfg, int (*worker_main)(sh_config *, void *), void *arg) {
  sh_error errbuf = {0};
  sh_error *err = &errbuf;
  memset(&S, 0, sizeof S);
  S.cfg = cfg;
  S.worker_main = worker_main;
  S.arg = arg;
  S.mfd = S.ifd = S.sfd = -1;
  S.restart_at = calloc((size_t)cfg->workers, sizeof(double));
  S.backoff_ms = calloc((size_t)cfg->workers, sizeof(int));
  if (!S.restart_at || !S.backoff_ms) {
    fprintf(stderr, "shield: out of memory\n");
    return 1;
  }
  int code = 1;
  S.lfd = sh_listen_socket(cfg, &S.port, err);
  if (S.lfd < 0) goto fail;
  if (sh_shm_table_create(cfg->state_table_size, &S.table, err) < 0) goto fail;
  if (load_secret(cfg, err) < 0) goto fail;
  /* TLS from memory: the first certificate, before any worker needs it (see tls_issue). */
  if (cfg->ssl_issue && !cfg->ssl_certfile) {
    if (sh_tls_slot_create(&S.tls_slot, err) < 0) goto fail;
    if (tls_issue(err) < 0) goto fail;
    cfg->ssl_slot = S.tls_slot;
  }
  /* TLS session-ticket keys: generated once here so a client resumes on any worker. */
  if (sh_tls_prepare(cfg, err) < 0) goto fail;
  /* Counters cost a few atomic adds per response: only when someone can read them. */
  if (cfg->metrics && sh_metrics_init(err) < 0) goto fail;
  sh_metrics_set_shard(0);
  if (cfg->metrics && (S.mfd = open_metrics(cfg, err)) < 0) goto fail;
  if (cfg->reload && open_reload(cfg, err) < 0) goto fail;

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &mask, &S.oldmask);
  S.sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (S.sfd < 0) {
    SH_ERR(err, SH_ESYS, "signalfd: %s", strerror(errno));
    goto fail;
  }
  signal(SIGPIPE, SIG_IGN);
  sh_log(SH_LOG_INFO, "Started parent process [%d]", (int)getpid());
  for (int s = 0; s < cfg->workers; s++)
    spawn(s, -1);

  struct pollfd *pfd = calloc(MAX_PROCS + 3, sizeof *pfd);
  int *who = calloc(MAX_PROCS + 3, sizeof *who);
  if (!pfd || !who) {
    free(pfd);
    free(who);
    SH_ERR(err, SH_ENOMEM, "out of memory");
    goto fail;
  }
  for (;;) {
    if (S.stopping && live_count() == 0) break;
    int n = 0;
    pfd[n] = (struct pollfd){.fd = S.sfd, .events = POLLIN};
    who[n++] = -1;
    if (S.mfd >= 0) {
      pfd[n] = (struct pollfd){.fd = S.mfd, .events = POLLIN};
      who[n++] = -2;
    }
    if (S.ifd >= 0) {
      pfd[n] = (struct pollfd){.fd = S.ifd, .events = POLLIN};
      who[n++] = -3;
    }
    for (int i = 0; i < S.nw; i++)
      if (S.w[i].pid > 0 && S.w[i].notify_rd >= 0) {
        pfd[n] = (struct pollfd){.fd = S.w[i].notify_rd, .events = POLLIN};
        who[n++] = i;
      }
    int r = poll(pfd, (nfds_t)n, 100);
    if (r < 0 && errno != EINTR) break;
    for (int k = 0; r > 0 && k < n; k++) {
      if (!pfd[k].revents) continue;
      if (who[k] == -1)
        on_signal();
      else if (who[k] == -2)
        serve_metrics();
      else if (who[k] == -3)
        on_inotify();
      else if (S.w[who[k]].pid > 0 && S.w[who[k]].notify_rd == pfd[k].fd)
        on_notify(who[k]);
    }
    housekeeping(now_s());
  }
  free(pfd);
  free(who);
  code = S.exit_code;
  sh_log(SH_LOG_INFO, "Stopping parent process [%d]", (int)getpid());
  goto done;
fail:
  fprintf(stderr, "shield: %s\n", err->message);
  code = 1;
  for (int i = 0; i < S.nw; i++)
    if (S.w[i].pid > 0) kill(S.w[i].pid, SIGKILL);
done:
  if (cfg->uds && S.lfd >= 0 && cfg->fd < 0) unlink(cfg->uds);
  if (cfg->metrics && cfg->metrics[0] == '/' && S.mfd >= 0) unlink(cfg->metrics);
  if (S.lfd >= 0 && cfg->fd < 0) close(S.lfd);
  if (S.mfd >= 0) close(S.mfd);
  if (S.ifd >= 0) close(S.ifd);
  if (S.sfd >= 0) close(S.sfd);
  sh_shm_table_free(S.table);
  if (S.tls_slot) cfg->ssl_slot = NULL;
  sh_tls_slot_free(S.tls_slot);
  if (S.secret) {
    explicit_bzero(S.secret, SECRET_MAX);
    munmap(S.secret, SECRET_MAX);
  }
  free(S.restart_at);
  free(S.backoff_ms);
  sh_log_flush();
  return code;
}
