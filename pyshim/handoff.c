/*
 * pyshim/handoff.c — the hand-off between the I/O thread and the Python thread (no Python.h).
 *
 * Why a queue plus an eventfd: the I/O thread must never take the GIL (a slow app would stall
 * every socket), so its callbacks only append small events to a mutex-protected array.  At the
 * end of each libuv loop iteration (on_flush) it writes the eventfd once if anything was
 * queued since the Python side last looked; the asyncio loop watches that fd (add_reader) and
 * takes the whole batch at once.  One wake-up and one lock round-trip per batch, not per event.
 */
#include "handoff.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ---------------------------------------------------------------- I/O thread side */

static void push(sh_handoff *ho, sh_pyreq *pr, sh_handoff_kind kind, char *data, size_t len,
                 int last) {
  pthread_mutex_lock(&ho->mu);
  if (ho->n == ho->cap) {
    size_t cap = ho->cap ? ho->cap * 2 : 256;
    sh_handoff_event *items = realloc(ho->items, cap * sizeof *items);
    if (items == NULL) {
      /* Out of memory on the I/O thread: dropping a body chunk or a request would leave a
       * task waiting forever, so fail the request instead (the server answers 500/closes). */
      pthread_mutex_unlock(&ho->mu);
      free(data);
      if (pr != NULL && kind == SH_HANDOFF_REQUEST) {
        sh_request_fail(pr->req);
        pr->released = 1;
        sh_request_release(pr->req); /* on_release queues pr's own end */
      }
      return;
    }
    ho->items = items;
    ho->cap = cap;
  }
  ho->items[ho->n++] =
      (sh_handoff_event){.kind = kind, .last = last, .pr = pr, .data = data, .len = len};
  pthread_mutex_unlock(&ho->mu);
}

static void wake_python(sh_handoff *ho) {
  uint64_t one = 1;
  ssize_t r;
  do {
    r = write(ho->efd, &one, sizeof one);
  } while (r < 0 && errno == EINTR);
  /* EAGAIN means the counter is saturated: the reader is already due to wake. */
}

static void on_request(sh_handler *h, sh_request *req) {
  sh_pyreq *pr = calloc(1, sizeof *pr);
  if (pr == NULL) {
    sh_request_fail(req);
    sh_request_release(req);
    return;
  }
  pr->req = req;
  req->handler_data = pr;
  push(h->data, pr, SH_HANDOFF_REQUEST, NULL, 0, 0);
}

static void on_body(sh_handler *h, sh_request *req, char *chunk, size_t len, int last) {
  push(h->data, req->handler_data, SH_HANDOFF_BODY, chunk, len, last);
}

static void on_disconnect(sh_handler *h, sh_request *req) {
  push(h->data, req->handler_data, SH_HANDOFF_DISCONNECT, NULL, 0, 0);
}

static void on_writable(sh_handler *h, sh_request *req) {
  push(h->data, req->handler_data, SH_HANDOFF_WRITABLE, NULL, 0, 0);
}

static void on_release(sh_handler *h, sh_request *req) {
  push(h->data, req->handler_data, SH_HANDOFF_RELEASED, NULL, 0, 0);
}

static void on_flush(sh_handler *h) {
  sh_handoff *ho = h->data;
  int need = 0;
  pthread_mutex_lock(&ho->mu);
  if (ho->n > 0 && !ho->woken) {
    ho->woken = 1;
    need = 1;
  }
  pthread_mutex_unlock(&ho->mu);
  if (need) wake_python(ho);
}

static void *io_thread_main(void *arg) {
  sh_handoff *ho = arg;
  ho->io_result = sh_server_run(ho->srv);
  push(ho, NULL, SH_HANDOFF_STOPPED, NULL, 0, 0);
  on_flush(&ho->handler);
  return NULL;
}

/* ---------------------------------------------------------------- Python thread side */

int sh_pyshim__handoff_init(sh_handoff *ho, sh_error *err) {
  memset(ho, 0, sizeof *ho);
  ho->handler = (sh_handler){
      .data = ho,
      .on_request = on_request,
      .on_body = on_body,
      .on_disconnect = on_disconnect,
      .on_writable = on_writable,
      .on_release = on_release,
      .on_flush = on_flush,
  };
  pthread_mutex_init(&ho->mu, NULL);
  ho->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ho->efd < 0) {
    err->code = SH_ESYS;
    snprintf(err->message, sizeof err->message, "eventfd: %s", strerror(errno));
    return SH_ESYS;
  }
  return 0;
}

sh_handler *sh_pyshim__handoff_handler(sh_handoff *ho) {
  return &ho->handler;
}

int sh_pyshim__handoff_fd(const sh_handoff *ho) {
  return ho->efd;
}

size_t sh_pyshim__handoff_take(sh_handoff *ho, sh_handoff_event **items) {
  uint64_t counter;
  while (read(ho->efd, &counter, sizeof counter) < 0 && errno == EINTR) {
  }
  pthread_mutex_lock(&ho->mu);
  *items = ho->items;
  size_t n = ho->n;
  ho->items = NULL;
  ho->n = ho->cap = 0;
  ho->woken = 0;
  pthread_mutex_unlock(&ho->mu);
  return n;
}

/*
 * One CPU: SCHED_BATCH for the Python thread and the I/O thread (created right after this, so
 * it inherits the policy).  Why: on a single CPU the two threads take turns.  With the default
 * policy a thread woken by the other (the eventfd when requests are queued, uv_async_send when
 * a response is) preempts it in the middle of its batch, so batches are cut short: about 0.07
 * context switches per small request.  A SCHED_BATCH thread that wakes up waits until the
 * running one blocks or uses up its time slice (sched(7)), so each side finishes its batch:
 * 0.05 switches per request and a few per cent less CPU per request (bench/RESULTS.md).  The
 * price, on one CPU only: while the app computes without awaiting, queued responses and new
 * connections wait for the end of the Python thread's time slice (milliseconds) instead of
 * preempting it at once; each thread's share of the CPU is unchanged.  With more CPUs the
 * threads run side by side and a wake-up goes to an idle CPU, so nothing is changed there.
 */
static void batch_policy_on_one_cpu(void) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) != 1) return;
  struct sched_param sp = {0};
  int rc = pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
  if (rc != 0) sh_log(SH_LOG_DEBUG, "SCHED_BATCH not set: %s", strerror(rc));
}

int sh_pyshim__handoff_start(sh_handoff *ho, sh_server *srv) {
  if (ho->io_started) return 0;
  ho->srv = srv;
  batch_policy_on_one_cpu();
  /* The I/O thread must not receive process signals: Python's main thread handles them. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int rc = pthread_create(&ho->io_thread, NULL, io_thread_main, ho);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) return rc;
  ho->io_started = 1;
  return 0;
}

int sh_pyshim__handoff_join(sh_handoff *ho) {
  if (ho->io_started) {
    pthread_join(ho->io_thread, NULL);
    ho->io_started = 0;
  }
  return ho->io_result;
}

void sh_pyshim__handoff_destroy(sh_handoff *ho) {
  pthread_mutex_lock(&ho->mu);
  for (size_t i = 0; i < ho->n; i++)
    free(ho->items[i].data);
  free(ho->items);
  ho->items = NULL;
  ho->n = ho->cap = 0;
  pthread_mutex_unlock(&ho->mu);
  if (ho->efd >= 0) close(ho->efd);
  ho->efd = -1;
}
