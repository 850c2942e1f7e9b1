/*
 * server/tls.h — private to server/: TLS termination with OpenSSL 3 on the I/O thread.
 *
 * See tls.c for the design.  Everything here runs on the I/O (loop) thread, except
 * sh_tls_ctx_new / sh_tls_ctx_unref (any thread: a context is immutable once built and its
 * reference count is atomic) and sh_server_reload_tls (server.h, any thread).
 */
#ifndef SHIELD_SERVER_TLS_H
#define SHIELD_SERVER_TLS_H

#include <uv.h>

#include "server.h"

struct sh_server;
struct sh_conn;
struct sh_req;

/* A server-side SSL_CTX plus what every connection made from it shares (the server
 * certificate as PEM and DER).  Refcounted: the server holds one reference for new
 * connections, each connection and each sh_tls_info one more, so a reload never pulls a
 * context from under a live connection. */
typedef struct sh_tls_ctx sh_tls_ctx;

/* Per-connection TLS state (the SSL object and its BIOs). */
typedef struct sh_tls_conn sh_tls_conn;

/* Build a context from cfg (files are read now).  NULL with err filled on failure. */
sh_tls_ctx *sh_tls_ctx_new(const sh_config *cfg, sh_error *err);
/* The same from a certificate held in memory (PEM, leaf first) for cfg->ssl_key. */
sh_tls_ctx *sh_tls_ctx_new_mem(const sh_config *cfg, const char *pem, size_t pem_len,
                               sh_error *err);

/* The context a new server starts with: the files, the supervisor's slot, or
 * cfg->ssl_issue called once. */
sh_tls_ctx *sh_tls_ctx_first(struct sh_server *srv, sh_error *err);

/* Whether cfg serves TLS at all (certificate files, or a certificate from memory). */
int sh_tls_on(const sh_config *cfg);

/*
 * The certificate slot (TLS from memory with a supervisor): one page range of shared memory,
 * mapped by the supervisor before it forks, where it publishes each certificate it issues
 * (cfg->ssl_issue) with a generation number.  Workers compare the generation with the one
 * they serve when they accept a connection (one atomic load) and, when it moved, build the
 * new context from the slot before that connection's handshake.  A process-shared robust
 * mutex guards the bytes (held for one memcpy on either side).
 */
typedef struct sh_tls_slot sh_tls_slot;
#define SH_TLS_SLOT_MAX (256 * 1024) /* PEM bytes: evidence with its certificates fits */
int sh_tls_slot_create(sh_tls_slot **out, sh_error *err);
/* Supervisor: publish a certificate (a new generation).  SH_EINVAL when too large. */
int sh_tls_slot_put(sh_tls_slot *s, const char *pem, size_t len, sh_error *err);
void sh_tls_slot_free(sh_tls_slot *s);
/* Loop thread: serve the slot's certificate when it is newer than the one served. */
void sh_tls_slot_check(struct sh_server *srv);
void sh_tls_ctx_unref(sh_tls_ctx *t);

/* Loop thread: install a context queued by sh_server_reload_tls, if any. */
void sh_tls_apply_pending(struct sh_server *srv);

/* Loop thread: a new connection on a TLS server.  Returns 0 or -1 (out of memory). */
int sh_tls_conn_new(struct sh_conn *c);
void sh_tls_conn_free(struct sh_conn *c);

/* Ciphertext arrived (nread > 0): decrypt into the connection's input buffer and run the
 * parser; handles the handshake and plain HTTP on the TLS port. */
void sh_tls_on_read(struct sh_conn *c, const char *data, size_t len);

/* Encrypt bufs and write the ciphertext (one socket write per call); same contract as
 * sh_conn_write. */
int sh_tls_write(struct sh_conn *c, struct sh_req *req, uv_buf_t *bufs, unsigned n, void *owned,
                 size_t pend);

/* Before the write side is shut down: queue a close_notify alert (RFC 8446 §6.1). */
void sh_tls_close_notify(struct sh_conn *c);

/* The connection's TLS facts for a request: a new reference (NULL on out of memory). */
const sh_tls_info *sh_tls_conn_info(struct sh_conn *c);
void sh_tls_info_unref(const sh_tls_info *info);

#endif /* SHIELD_SERVER_TLS_H */
