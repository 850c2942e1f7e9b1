/*
 * pyshim/handoff.h — private to pyshim: the hand-off of request events from the I/O thread to
 * the Python thread.  This header and handoff.c do not include Python.h: nothing here may
 * touch a Python object, so the I/O thread cannot reach the GIL through this file even by
 * mistake (architecture: "the I/O thread never takes the GIL").
 *
 * Threads
 *   The sh_handler callbacks (sh_pyshim__handoff_handler) run on the I/O thread only.
 *   sh_pyshim__handoff_take and the I/O thread start/join run on the Python thread (the caller
 *   may hold the GIL, except around join, which blocks).  init/destroy on the main thread,
 *   while no I/O thread runs.
 *
 * Ownership
 *   Each request gets one sh_pyreq, allocated here in on_request; the Python side frees it
 *   (free()) when it handles that request's SH_HANDOFF_RELEASED event, which is always the
 *   last event for the request (server.h: nothing follows on_release).  Body chunks in events
 *   are malloc'd and owned by whoever takes the event.
 */
#ifndef SHIELD_PYSHIM_HANDOFF_H
#define SHIELD_PYSHIM_HANDOFF_H

#include <pthread.h>
#include <stddef.h>

#include "server.h"

typedef enum sh_handoff_kind {
  SH_HANDOFF_REQUEST,    /* a request head: pr is new */
  SH_HANDOFF_BODY,       /* data/len: one body chunk (last set on the final one) */
  SH_HANDOFF_DISCONNECT, /* the client went away before the response finished */
  SH_HANDOFF_WRITABLE,   /* the response buffer drained below its low-water mark */
  SH_HANDOFF_RELEASED,   /* the server applied the release: pr's last event */
  SH_HANDOFF_STOPPED     /* the I/O thread has ended (pr is NULL) */
} sh_handoff_kind;

/* The Python thread's object for one request (request.c); opaque here. */
typedef struct sh_asgi_request sh_asgi_request;

/* One request as both threads see it.  Why not the sh_request itself: events for a request can
 * still sit in the queue after the Python side released it, and the server may free an
 * sh_request as soon as the release is applied; queued events point here instead. */
typedef struct sh_pyreq sh_pyreq;
struct sh_pyreq {
  sh_request *req;       /* valid until `released` is set */
  sh_asgi_request *obj;  /* borrowed; NULL before it exists and after its dealloc */
  int released;          /* sh_request_release was called */
  int linked;            /* on the Python side's live list */
  sh_pyreq *prev, *next; /* that live list (Python thread only) */
};

typedef struct sh_handoff_event {
  sh_handoff_kind kind;
  int last;
  sh_pyreq *pr;
  char *data; /* owned by the taker (free()), or NULL */
  size_t len;
} sh_handoff_event;

/* Embedded by value in its owner (module.c's bridge); fields are private to handoff.c. */
typedef struct sh_handoff {
  sh_handler handler; /* .data points back here */
  pthread_mutex_t mu;
  sh_handoff_event *items; /* queued since the last take (mu) */
  size_t n, cap;
  int woken; /* the eventfd was written and nobody has taken the batch since (mu) */
  int efd;
  sh_server *srv;
  pthread_t io_thread;
  int io_started;
  int io_result;
} sh_handoff;

/* Create the queue and the eventfd.  0, or a negative SH_E* with err set. */
int sh_pyshim__handoff_init(sh_handoff *ho, sh_error *err);
/* The handler whose callbacks queue events (hand it, or a wrapper of it, to sh_server_new). */
sh_handler *sh_pyshim__handoff_handler(sh_handoff *ho);
/* The fd that becomes readable when a batch is waiting (the asyncio loop watches it). */
int sh_pyshim__handoff_fd(const sh_handoff *ho);
/* Take every queued event at once (one lock round-trip per batch).  *items is malloc'd (the
 * caller frees it and each event's data); returns the number of events. */
size_t sh_pyshim__handoff_take(sh_handoff *ho, sh_handoff_event **items);
/* Start the I/O thread running sh_server_run(srv): 0 or an errno value. */
int sh_pyshim__handoff_start(sh_handoff *ho, sh_server *srv);
/* Wait for the I/O thread (blocks: release the GIL around it); sh_server_run's result, or 0
 * when it was never started. */
int sh_pyshim__handoff_join(sh_handoff *ho);
/* Free what is still queued and close the eventfd (no I/O thread running). */
void sh_pyshim__handoff_destroy(sh_handoff *ho);

#endif
