/*
 * server/log.c — level-filtered logging that never blocks the I/O thread on stderr.
 *
 * Why a thread: a write(2) to a terminal or a full pipe can block for as long as the reader
 * pleases; the loop thread must not.  Callers (any thread) format a line on their own stack
 * and copy it into a bounded ring of fixed-size slots under a mutex; a dedicated logger
 * thread writes batches to stderr.  When the ring is full the line is dropped and counted,
 * and the logger reports the count: losing log lines under overload beats stalling every
 * connection.  The thread starts on first use and drains at exit (atexit).
 */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <limits.h>
#include <unistd.h>

#include "server_internal.h"

#define LOG_SLOTS 1024
#define LOG_LINE 1024

static atomic_int g_level = SH_LOG_INFO;

static struct {
  pthread_once_t once;
  pthread_mutex_t lock;
  pthread_cond_t cond;    /* logger waits for lines */
  pthread_cond_t drained; /* flushers wait for an empty ring */
  unsigned head, count;   /* ring of slots */
  unsigned writing;       /* lines taken by the logger but not yet written */
  uint64_t dropped;
  int started;
  int sleeping; /* the logger waits for a first line: producers must wake it */
  int flushing; /* sh_log_flush callers waiting: do not linger */
  char (*slots)[LOG_LINE];
  unsigned short *lens;
} g = {.once = PTHREAD_ONCE_INIT,
       .lock = PTHREAD_MUTEX_INITIALIZER,
       .cond = PTHREAD_COND_INITIALIZER,
       .drained = PTHREAD_COND_INITIALIZER};

static void write_all(const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, p, n);
    if (w < 0) return; /* stderr gone: nothing sensible left to do */
    p += w;
    n -= (size_t)w;
  }
}

static void *logger_main(void *arg) {
  (void)arg;
  static char batch[LOG_LINE * 16];
  pthread_mutex_lock(&g.lock);
  int linger = 0;
  for (;;) {
    while (g.count == 0 && g.dropped == 0) {
      g.sleeping = 1;
      pthread_cond_wait(&g.cond, &g.lock);
      g.sleeping = 0;
      linger = 1;
    }
    /* Woken by a first line: linger up to 2 ms so a burst (access log lines under load) is
     * written with one wake-up and a few writes, not a context switch per line.  Producers
     * signal a lingering logger only when the ring is a quarter full; flushers always. */
    if (linger && !g.flushing && g.count < LOG_SLOTS / 4) {
      struct timespec until;
      clock_gettime(CLOCK_REALTIME, &until);
      until.tv_nsec += 2000000;
      if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&g.cond, &g.lock, &until);
    }
    linger = 0;
    size_t n = 0;
    unsigned taken = 0;
    /* At most PIPE_BUF bytes per write(2) (whole lines only): workers share one stderr,
     * and writes to a pipe (docker's log driver) are atomic only up to PIPE_BUF, so larger
     * batches from two processes could interleave mid-line. */
    while (g.count > 0 && (taken == 0 || n + g.lens[g.head] <= PIPE_BUF)) {
      memcpy(batch + n, g.slots[g.head], g.lens[g.head]);
      n += g.lens[g.head];
      g.head = (g.head + 1) % LOG_SLOTS;
      g.count--;
      taken++;
    }
    uint64_t dropped = g.dropped;
    g.dropped = 0;
    g.writing = taken;
    pthread_mutex_unlock(&g.lock);
    if (dropped) {
      char msg[96];
      int m = snprintf(msg, sizeof msg, "WARNING:  %llu log lines dropped (stderr too slow)\n",
                       (unsigned long long)dropped);
      write_all(msg, (size_t)m);
    }
    write_all(batch, n);
    pthread_mutex_lock(&g.lock);
    g.writing = 0;
    if (g.count == 0) pthread_cond_broadcast(&g.drained);
  }
  return NULL;
}

/* Wait (bounded) until queued lines are written, so the last lines before exit appear. */
void sh_log_flush(void) {
  if (!g.started) return;
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 2;
  pthread_mutex_lock(&g.lock);
  g.flushing++;
  pthread_cond_signal(&g.cond);
  while (g.count > 0 || g.writing > 0) {
    if (pthread_cond_timedwait(&g.drained, &g.lock, &until) != 0) break;
  }
  g.flushing--;
  pthread_mutex_unlock(&g.lock);
}

/* fork() (the supervisor forking workers) copies only the calling thread: the child has no
 * logger thread, and the lock may have been held by another thread at that instant.  So the
 * lock is taken around fork, and the child starts afresh: lines queued in the parent are the
 * parent's to write; the child's first line starts its own logger thread. */
static void atfork_prepare(void) {
  pthread_mutex_lock(&g.lock);
}
static void atfork_parent(void) {
  pthread_mutex_unlock(&g.lock);
}
static void atfork_child(void) {
  pthread_mutex_init(&g.lock, NULL);
  pthread_cond_init(&g.cond, NULL);
  pthread_cond_init(&g.drained, NULL);
  g.head = g.count = g.writing = 0;
  g.dropped = 0;
  g.started = 0;
  g.sleeping = g.flushing = 0;
  g.once = (pthread_once_t)PTHREAD_ONCE_INIT;
}

static void log_init(void) {
  static int atfork_done;
  if (!atfork_done) {
    atfork_done = 1;
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    atexit(sh_log_flush);
  }
  if (!g.slots) g.slots = calloc(LOG_SLOTS, LOG_LINE);
  if (!g.lens) g.lens = calloc(LOG_SLOTS, sizeof(*g.lens));
  if (!g.slots || !g.lens) return;
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  /* The logger must not take signals meant for the process (SIGINT/SIGTERM handling). */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  if (pthread_create(&t, &attr, logger_main, NULL) == 0) g.started = 1;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
}

static const char *level_prefix(sh_log_level level) {
  /* uvicorn's "%(levelprefix)s": the name and a colon, padded to 10 columns. */
  if (level >= SH_LOG_CRITICAL) return "CRITICAL: ";
  if (level >= SH_LOG_ERROR) return "ERROR:    ";
  if (level >= SH_LOG_WARNING) return "WARNING:  ";
  if (level >= SH_LOG_INFO) return "INFO:     ";
  if (level >= SH_LOG_DEBUG) return "DEBUG:    ";
  return "TRACE:    ";
}

int sh_log_enabled(sh_log_level level) {
  return (int)level >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

void sh_log_set_level(const char *name) {
  static const struct {
    const char *n;
    int l;
  } t[] = {{"critical", SH_LOG_CRITICAL}, {"error", SH_LOG_ERROR}, {"warning", SH_LOG_WARNING},
           {"info", SH_LOG_INFO},         {"debug", SH_LOG_DEBUG}, {"trace", SH_LOG_TRACE}};
  if (!name) return;
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (strcasecmp(name, t[i].n) == 0) atomic_store(&g_level, t[i].l);
}

/* Long messages (Python tracebacks) are formatted on the heap and queued as consecutive slots
 * under one lock, so they come out whole and never interleaved with other lines. */
#define LOG_MESSAGE_MAX (64 * 1024)

static void enqueue(const char *msg, size_t len) {
  size_t pieces = (len + LOG_LINE - 1) / LOG_LINE;
  pthread_mutex_lock(&g.lock);
  if (g.count + pieces > LOG_SLOTS) {
    g.dropped++;
  } else {
    for (size_t i = 0; i < pieces; i++) {
      size_t n = len - i * LOG_LINE < LOG_LINE ? len - i * LOG_LINE : LOG_LINE;
      unsigned slot = (g.head + g.count) % LOG_SLOTS;
      memcpy(g.slots[slot], msg + i * LOG_LINE, n);
      g.lens[slot] = (unsigned short)n;
      g.count++;
    }
  }
  if (g.sleeping || g.count >= LOG_SLOTS / 4 || g.flushing) pthread_cond_signal(&g.cond);
  pthread_mutex_unlock(&g.lock);
}

void sh_log(sh_log_level level, const char *fmt, ...) {
  if (!sh_log_enabled(level)) return;
  char stackline[LOG_LINE];
  char *line = stackline;
  size_t cap = sizeof stackline;
  size_t p = strlen(level_prefix(level));
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line + p, cap - p - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= cap - p - 1) { /* does not fit one slot: format again on the heap */
    cap = (size_t)n + p + 2 < LOG_MESSAGE_MAX ? (size_t)n + p + 2 : LOG_MESSAGE_MAX;
    char *heap = malloc(cap);
    if (heap != NULL) {
      line = heap;
      va_start(ap, fmt);
      vsnprintf(line + p, cap - p - 1, fmt, ap);
      va_end(ap);
    }
  }
  memcpy(line, level_prefix(level), p);
  size_t len = p + (size_t)n;
  if (len > cap - 2) len = cap - 2; /* truncated at LOG_MESSAGE_MAX */
  line[len++] = '\n';

  pthread_once(&g.once, log_init);
  if (!g.started) { /* no thread (ENOMEM): write directly rather than lose the line */
    write_all(line, len);
  } else {
    enqueue(line, len);
  }
  if (line != stackline) free(line);
}

/* One pre-formatted line without the level prefix (JSON access log lines). */
void sh_log_raw(sh_log_level level, const char *line, size_t len) {
  if (!sh_log_enabled(level) || len == 0) return;
  pthread_once(&g.once, log_init);
  if (!g.started)
    write_all(line, len);
  else
    enqueue(line, len);
}
