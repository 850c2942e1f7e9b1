/*
 * server/listen.c — the listening socket: TCP (v4/v6), a UNIX socket, or an inherited fd.
 *
 * Opened in sh_server_new (so a bad address fails before any Python starts) and started in
 * sh_server_run.  libuv sets SO_REUSEADDR on TCP binds, so a restart does not wait out
 * TIME_WAIT.  One listener per server: --uds or --fd replace --host/--port, as in uvicorn.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "server_internal.h"

static void on_connection(uv_stream_t *listener, int status) {
  sh_server *srv = listener->data;
  if (status < 0) {
    /* EMFILE/ENFILE/ENOMEM: libuv keeps the listener; log and carry on. */
    sh_log(SH_LOG_ERROR, "accept failed: %s", uv_strerror(status));
    return;
  }
  sh_conn_accept(srv, listener);
}

static int open_tcp(sh_server *srv, sh_error *err) {
  struct addrinfo *res = NULL;
  int rc = sh_listen_resolve(&srv->cfg, &res, err);
  if (rc < 0) return rc;
  int r = uv_tcp_init(&srv->loop, &srv->lst.h.tcp);
  if (r < 0) {
    freeaddrinfo(res);
    SH_ERR(err, SH_ESYS, "uv_tcp_init: %s", uv_strerror(r));
    return SH_ESYS;
  }
  srv->lst.open = 1;
  r = uv_tcp_bind(&srv->lst.h.tcp, res->ai_addr, 0);
  freeaddrinfo(res);
  if (r < 0) {
    SH_ERR(err, SH_ELISTEN, "cannot bind %s:%d: %s", srv->cfg.host, srv->cfg.port, uv_strerror(r));
    return SH_ELISTEN;
  }
  struct sockaddr_storage ss;
  int len = sizeof ss;
  r = uv_tcp_getsockname(&srv->lst.h.tcp, (struct sockaddr *)&ss, &len);
  if (r == 0) srv->port = sh_sockaddr_port(&ss, srv->port);
  return 0;
}

static int open_uds(sh_server *srv, sh_error *err) {
  const char *path = srv->cfg.uds;
  struct stat st;
  /* A stale socket file from a previous run makes bind fail with EADDRINUSE: remove it, but
   * never anything that is not a socket. */
  if (lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      SH_ERR(err, SH_ELISTEN, "--uds %s exists and is not a socket", path);
      return SH_ELISTEN;
    }
    unlink(path);
  }
  int r = uv_pipe_init(&srv->loop, &srv->lst.h.pipe, 0);
  if (r < 0) {
    SH_ERR(err, SH_ESYS, "uv_pipe_init: %s", uv_strerror(r));
    return SH_ESYS;
  }
  srv->lst.open = 1;
  r = uv_pipe_bind(&srv->lst.h.pipe, path);
  if (r < 0) {
    SH_ERR(err, SH_ELISTEN, "cannot bind --uds %s: %s", path, uv_strerror(r));
    return SH_ELISTEN;
  }
  sh_strlcpy(srv->uds_path, path, sizeof srv->uds_path);
  /* 0666 so clients under other users (a reverse proxy) can connect, as uvicorn does. */
  if (chmod(path, (mode_t)srv->cfg.uds_mode) < 0)
    sh_log(SH_LOG_WARNING, "chmod %o %s: %s", srv->cfg.uds_mode, path, strerror(errno));
  return 0;
}

static int open_fd(sh_server *srv, int fd, sh_error *err) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
    SH_ERR(err, SH_ELISTEN, "--fd %d is not a socket: %s", fd, strerror(errno));
    return SH_ELISTEN;
  }
  int r;
  if (ss.ss_family == AF_UNIX) {
    r = uv_pipe_init(&srv->loop, &srv->lst.h.pipe, 0);
    if (r == 0) {
      srv->lst.open = 1;
      r = uv_pipe_open(&srv->lst.h.pipe, fd);
    }
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;
    if (len > offsetof(struct sockaddr_un, sun_path))
      sh_strlcpy(srv->uds_path, un->sun_path, sizeof srv->uds_path);
  } else {
    r = uv_tcp_init(&srv->loop, &srv->lst.h.tcp);
    if (r == 0) {
      srv->lst.open = 1;
      r = uv_tcp_open(&srv->lst.h.tcp, fd);
    }
    srv->port = sh_sockaddr_port(&ss, srv->port);
  }
  if (r < 0) {
    SH_ERR(err, SH_ELISTEN, "cannot use listening fd %d: %s", fd, uv_strerror(r));
    return SH_ELISTEN;
  }
  return 0;
}

int sh_listen_open(sh_server *srv, sh_error *err) {
  int r;
  /* A socket the supervisor opened before forking (listen_sock.c), or AF_VSOCK, which libuv
   * cannot bind itself. */
  if (srv->cfg.listen_fd_inherited < 0 && srv->cfg.vsock_port >= 0) {
    int port;
    int fd = sh_listen_socket(&srv->cfg, &port, err);
    if (fd < 0) return fd;
    srv->cfg.listen_fd_inherited = fd;
  }
  if (srv->cfg.listen_fd_inherited >= 0)
    r = open_fd(srv, srv->cfg.listen_fd_inherited, err);
  else if (srv->cfg.fd >= 0)
    r = open_fd(srv, srv->cfg.fd, err);
  else if (srv->cfg.uds)
    r = open_uds(srv, err);
  else
    r = open_tcp(srv, err);
  if (r < 0) return r;
  srv->lst.h.handle.data = srv;
  /* Listen now (not in run): the kernel queues connections from the moment sh_server_new
   * returns, so a client started right after never sees ECONNREFUSED. */
  r = uv_listen(&srv->lst.h.stream, srv->cfg.backlog, on_connection);
  if (r < 0) {
    SH_ERR(err, SH_ELISTEN, "listen: %s", uv_strerror(r));
    return SH_ELISTEN;
  }
  return 0;
}

void sh_listen_close(sh_server *srv) {
  if (srv->lst.open && !uv_is_closing(&srv->lst.h.handle)) {
    uv_close(&srv->lst.h.handle, NULL);
    /* An inherited socket file belongs to the supervisor (other workers still serve it). */
    if (srv->uds_path[0] && srv->cfg.uds && srv->cfg.listen_fd_inherited < 0) unlink(srv->uds_path);
  }
}
