/*
 * server/metrics.c — Prometheus metrics shared by every worker.
 *
 * Where the numbers live: one MAP_SHARED anonymous region mapped by the supervisor before it
 * forks, so each worker adds to the same memory and the supervisor (which serves
 * --metrics-port) sums it; nothing is sent between processes.  Each process writes its own
 * *shard* (a row of counters, assigned by the supervisor), so workers never contend for a
 * cache line on the request path (two relaxed atomic adds per response), and when a worker
 * dies its gauges (in-flight, connections) are zeroed with its row instead of staying stuck.
 *
 * The registry is open: sh_metrics_counter/gauge/histogram(name, labels, help) find or
 * create a metric by (name, labels) from any process (a tiny spinlock guards creation only),
 * so later modules add theirs (attestation verifications by type and result, verification
 * time, encryption failures) without touching this file.  Without a supervisor there is no
 * region and every call is a no-op.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "server_internal.h"

#define M_MAX 192     /* metrics (each label set counts as one) */
#define M_HIST_MAX 16 /* histograms */
#define M_SHARDS 128  /* shard 0: the supervisor; workers get 1..127 */
#define M_NB 15       /* finite buckets */

static const double bucket_le[M_NB] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,   0.5,   1.0,    2.5,   5.0,  10.0,  30.0};

enum { K_COUNTER = 1, K_GAUGE, K_HIST };

typedef struct meta {
  atomic_int ready;
  int kind;
  int hist; /* index into hist rows (K_HIST) */
  char name[80];
  char labels[112];
  char help[128];
} meta;

typedef struct hrow {
  _Atomic int64_t b[M_NB + 1]; /* per bucket (not cumulative); last = +Inf */
  _Atomic int64_t sum_ns;
} hrow;

typedef struct region {
  atomic_flag reg_lock;
  atomic_int n, nh;
  meta m[M_MAX];
  _Atomic int64_t v[M_SHARDS][M_MAX];
  hrow h[M_SHARDS][M_HIST_MAX];
} region;

static region *R;
static int shard; /* this process's row */

static int m_req[5], m_inflight = -1, m_conns = -1, m_conns_total = -1, m_bytes = -1,
                     m_latency = -1, m_restarts = -1;

static int find_or_create(const char *name, const char *labels, const char *help, int kind) {
  if (!R || !name) return -1;
  if (!labels) labels = "";
  int n = atomic_load(&R->n);
  for (int i = 0; i < n; i++)
    if (atomic_load(&R->m[i].ready) && strcmp(R->m[i].name, name) == 0 &&
        strcmp(R->m[i].labels, labels) == 0)
      return R->m[i].kind == kind ? i : -1;
  while (atomic_flag_test_and_set(&R->reg_lock)) {
  }
  int found = -1;
  n = atomic_load(&R->n);
  for (int i = 0; i < n && found < 0; i++)
    if (strcmp(R->m[i].name, name) == 0 && strcmp(R->m[i].labels, labels) == 0) found = i;
  if (found < 0 && n < M_MAX && (kind != K_HIST || atomic_load(&R->nh) < M_HIST_MAX)) {
    meta *m = &R->m[n];
    m->kind = kind;
    if (kind == K_HIST) m->hist = atomic_fetch_add(&R->nh, 1);
    sh_strlcpy(m->name, name, sizeof m->name);
    sh_strlcpy(m->labels, labels, sizeof m->labels);
    sh_strlcpy(m->help, help ? help : "", sizeof m->help);
    atomic_store(&m->ready, 1);
    atomic_store(&R->n, n + 1);
    found = n;
  }
  atomic_flag_clear(&R->reg_lock);
  if (found >= 0 && R->m[found].kind != kind) return -1;
  return found;
}

int sh_metrics_counter(const char *name, const char *labels, const char *help) {
  return find_or_create(name, labels, help, K_COUNTER);
}
int sh_metrics_gauge(const char *name, const char *labels, const char *help) {
  return find_or_create(name, labels, help, K_GAUGE);
}
int sh_metrics_histogram(const char *name, const char *labels, const char *help) {
  return find_or_create(name, labels, help, K_HIST);
}

void sh_metrics_add(int c, int64_t delta) {
  if (!R || c < 0 || c >= M_MAX) return;
  atomic_fetch_add_explicit(&R->v[shard][c], delta, memory_order_relaxed);
}

void sh_metrics_observe(int c, double seconds) {
  if (!R || c < 0 || c >= M_MAX || R->m[c].kind != K_HIST) return;
  hrow *h = &R->h[shard][R->m[c].hist];
  int b = 0;
  while (b < M_NB && seconds > bucket_le[b])
    b++;
  atomic_fetch_add_explicit(&h->b[b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum_ns, (int64_t)(seconds * 1e9), memory_order_relaxed);
}

int sh_metrics_init(sh_error *err) {
  if (R) return 0;
  void *mem = mmap(NULL, sizeof(region), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    SH_ERR(err, SH_ESYS, "cannot map %zu bytes for metrics: %s", sizeof(region), strerror(errno));
    return SH_ESYS;
  }
  R = mem; /* zero-filled */
  static const char *const classes[5] = {"class=\"1xx\"", "class=\"2xx\"", "class=\"3xx\"",
                                         "class=\"4xx\"", "class=\"5xx\""};
  for (int i = 0; i < 5; i++)
    m_req[i] = sh_metrics_counter("shield_http_requests_total", classes[i],
                                  "HTTP responses sent, by status class");
  m_inflight = sh_metrics_gauge("shield_http_requests_in_flight", "",
                                "Requests handed to the app and not yet finished");
  m_conns = sh_metrics_gauge("shield_http_connections", "", "Open client connections");
  m_conns_total =
      sh_metrics_counter("shield_http_connections_total", "", "Client connections accepted");
  m_bytes =
      sh_metrics_counter("shield_http_response_body_bytes_total", "", "Response body bytes sent");
  m_latency = sh_metrics_histogram("shield_http_request_duration_seconds", "",
                                   "Time from the first request byte to the last response byte");
  m_restarts = sh_metrics_counter("shield_worker_restarts_total", "",
                                  "Workers restarted after a crash (not rolling restarts)");
  return 0;
}

void sh_metrics_set_shard(int s) {
  shard = (s >= 0 && s < M_SHARDS) ? s : M_SHARDS - 1;
}

/* The supervisor, after a worker exited: its gauges no longer describe anything live. */
void sh_metrics_reset_shard_gauges(int s) {
  if (!R || s <= 0 || s >= M_SHARDS) return;
  int n = atomic_load(&R->n);
  for (int i = 0; i < n; i++)
    if (R->m[i].kind == K_GAUGE) atomic_store(&R->v[s][i], 0);
}

void sh_metrics_response(int status, uint64_t bytes, double seconds) {
  if (!R) return;
  int cls = status / 100 - 1;
  if (cls >= 0 && cls < 5) sh_metrics_add(m_req[cls], 1);
  if (bytes) sh_metrics_add(m_bytes, (int64_t)bytes);
  if (seconds > 0) sh_metrics_observe(m_latency, seconds);
}

void sh_metrics_conn(int delta) {
  if (!R) return;
  sh_metrics_add(m_conns, delta);
  if (delta > 0) sh_metrics_add(m_conns_total, delta);
}

void sh_metrics_inflight(int delta) {
  sh_metrics_add(m_inflight, delta);
}
void sh_metrics_worker_restart(void) {
  sh_metrics_add(m_restarts, 1);
}

typedef struct obuf {
  char *p;
  size_t len, cap;
} obuf;

static void out(obuf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(obuf *o, const char *fmt, ...) {
  if (!o->p) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < o->cap - o->len) {
      o->len += (size_t)n;
      return;
    }
    char *np = realloc(o->p, o->cap * 2 + (size_t)n);
    if (!np) {
      free(o->p);
      o->p = NULL;
      return;
    }
    o->p = np;
    o->cap = o->cap * 2 + (size_t)n;
  }
}

/* name{labels,extra} */
static void series(obuf *o, const char *name, const char *suffix, const char *labels,
                   const char *extra) {
  int l = labels[0] != '\0', e = extra && extra[0];
  out(o, "%s%s", name, suffix);
  if (l || e) out(o, "{%s%s%s}", labels, (l && e) ? "," : "", e ? extra : "");
}

char *sh_metrics_render(size_t *len) {
  obuf o = {malloc(8192), 0, 8192};
  if (!R || !o.p) {
    free(o.p);
    return NULL;
  }
  int n = atomic_load(&R->n);
  for (int i = 0; i < n; i++) {
    meta *m = &R->m[i];
    int first = 1;
    for (int k = 0; k < i; k++)
      if (strcmp(R->m[k].name, m->name) == 0) first = 0;
    if (!first) continue; /* emitted with the first metric of that name */
    static const char *const kinds[] = {"", "counter", "gauge", "histogram"};
    out(&o, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, kinds[m->kind]);
    for (int j = i; j < n; j++) {
      meta *mj = &R->m[j];
      if (strcmp(mj->name, m->name) != 0) continue;
      if (mj->kind != K_HIST) {
        int64_t sum = 0;
        for (int s = 0; s < M_SHARDS; s++)
          sum += atomic_load(&R->v[s][j]);
        series(&o, mj->name, "", mj->labels, NULL);
        out(&o, " %lld\n", (long long)sum);
        continue;
      }
      int64_t b[M_NB + 1] = {0}, sum_ns = 0;
      for (int s = 0; s < M_SHARDS; s++) {
        hrow *h = &R->h[s][mj->hist];
        for (int k = 0; k <= M_NB; k++)
          b[k] += atomic_load(&h->b[k]);
        sum_ns += atomic_load(&h->sum_ns);
      }
      int64_t cum = 0;
      for (int k = 0; k <= M_NB; k++) {
        cum += b[k];
        char le[32];
        if (k < M_NB)
          snprintf(le, sizeof le, "le=\"%g\"", bucket_le[k]);
        else
          snprintf(le, sizeof le, "le=\"+Inf\"");
        series(&o, mj->name, "_bucket", mj->labels, le);
        out(&o, " %lld\n", (long long)cum);
      }
      series(&o, mj->name, "_sum", mj->labels, NULL);
      out(&o, " %.9f\n", (double)sum_ns / 1e9);
      series(&o, mj->name, "_count", mj->labels, NULL);
      out(&o, " %lld\n", (long long)cum);
    }
  }
  if (!o.p) return NULL;
  *len = o.len;
  return o.p;
}
