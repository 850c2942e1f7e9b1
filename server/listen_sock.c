/*
 * server/listen_sock.c — the listening socket as a plain fd, opened once by the supervisor
 * before it forks (so every worker inherits the same accept queue: restarting a worker never
 * drops a queued connection), or by a single process for AF_VSOCK.
 *
 * Families: TCP v4/v6 (--host/--port), UNIX (--uds, with --uds-perms), AF_VSOCK
 * (--vsock-port/--vsock-cid: a Nitro enclave has no NIC, only vsock), and an inherited --fd
 * (returned as is).  Workers then wrap the fd with libuv (listen.c: open_fd).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/vm_sockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "server_internal.h"

static int finish(int fd, const sh_config *cfg, sh_error *err, const char *what) {
  if (listen(fd, cfg->backlog) < 0) {
    SH_ERR(err, SH_ELISTEN, "listen on %s: %s", what, strerror(errno));
    close(fd);
    return SH_ELISTEN;
  }
  return fd;
}

static int open_vsock(const sh_config *cfg, sh_error *err) {
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    if (errno == EAFNOSUPPORT)
      SH_ERR(err, SH_ELISTEN,
             "--vsock-port: AF_VSOCK is not supported by this kernel (load the vsock / "
             "vhost_vsock module, or run inside an enclave/VM with a vsock device)");
    else
      SH_ERR(err, SH_ELISTEN, "--vsock-port: socket(AF_VSOCK): %s", strerror(errno));
    return SH_ELISTEN;
  }
  struct sockaddr_vm a;
  memset(&a, 0, sizeof a);
  a.svm_family = AF_VSOCK;
  a.svm_cid = cfg->vsock_cid;
  a.svm_port = (unsigned)cfg->vsock_port;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    SH_ERR(err, SH_ELISTEN, "cannot bind vsock cid %u port %d: %s", cfg->vsock_cid, cfg->vsock_port,
           strerror(errno));
    close(fd);
    return SH_ELISTEN;
  }
  return finish(fd, cfg, err, "vsock");
}

static int open_uds(const sh_config *cfg, sh_error *err) {
  struct stat st;
  /* A stale socket file from a previous run makes bind fail: remove it, never anything that
   * is not a socket. */
  if (lstat(cfg->uds, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      SH_ERR(err, SH_ELISTEN, "--uds %s exists and is not a socket", cfg->uds);
      return SH_ELISTEN;
    }
    unlink(cfg->uds);
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    SH_ERR(err, SH_ESYS, "socket(AF_UNIX): %s", strerror(errno));
    return SH_ESYS;
  }
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  sh_strlcpy(a.sun_path, cfg->uds, sizeof a.sun_path);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    SH_ERR(err, SH_ELISTEN, "cannot bind --uds %s: %s", cfg->uds, strerror(errno));
    close(fd);
    return SH_ELISTEN;
  }
  /* Default 0666 so a reverse proxy under another user can connect, as uvicorn does. */
  if (chmod(cfg->uds, (mode_t)cfg->uds_mode) < 0)
    sh_log(SH_LOG_WARNING, "chmod %o %s: %s", cfg->uds_mode, cfg->uds, strerror(errno));
  return finish(fd, cfg, err, cfg->uds);
}

/* getaddrinfo for --host and --port, for a passive TCP socket.  "[::1]" is accepted for IPv6
 * literals, as uvicorn does.  On success *res is the caller's to freeaddrinfo. */
int sh_listen_resolve(const sh_config *cfg, struct addrinfo **res, sh_error *err) {
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char port[16];
  snprintf(port, sizeof port, "%d", cfg->port);
  const char *host = cfg->host;
  char hostbuf[256];
  size_t hl = strlen(host);
  if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof hostbuf) {
    memcpy(hostbuf, host + 1, hl - 2);
    hostbuf[hl - 2] = '\0';
    host = hostbuf;
  }
  *res = NULL;
  int rc = getaddrinfo(host, port, &hints, res);
  if (rc != 0 || !*res) {
    SH_ERR(err, SH_ELISTEN, "cannot resolve --host '%s': %s", cfg->host, gai_strerror(rc));
    return SH_ELISTEN;
  }
  return 0;
}

/* The port of a bound IPv4/IPv6 address (what --port 0 got), or `fallback`. */
int sh_sockaddr_port(const struct sockaddr_storage *ss, int fallback) {
  if (ss->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)ss)->sin_port);
  if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
  return fallback;
}

static int open_tcp(const sh_config *cfg, int *port_out, sh_error *err) {
  struct addrinfo *res = NULL;
  int rc = sh_listen_resolve(cfg, &res, err);
  if (rc < 0) return rc;
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    SH_ERR(err, SH_ESYS, "socket: %s", strerror(errno));
    freeaddrinfo(res);
    return SH_ESYS;
  }
  int one = 1;
  /* As libuv: a restart must not wait out TIME_WAIT. */
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, res->ai_addr, res->ai_addrlen) < 0) {
    SH_ERR(err, SH_ELISTEN, "cannot bind %s:%d: %s", cfg->host, cfg->port,
           errno == EADDRINUSE ? "address already in use" : strerror(errno));
    freeaddrinfo(res);
    close(fd);
    return SH_ELISTEN;
  }
  freeaddrinfo(res);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
    *port_out = sh_sockaddr_port(&ss, *port_out);
  return finish(fd, cfg, err, "TCP");
}

int sh_listen_socket(const sh_config *cfg, int *port_out, sh_error *err) {
  *port_out = cfg->port;
  if (cfg->fd >= 0) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(cfg->fd, (struct sockaddr *)&ss, &len) < 0) {
      SH_ERR(err, SH_ELISTEN, "--fd %d is not a socket: %s", cfg->fd, strerror(errno));
      return SH_ELISTEN;
    }
    return cfg->fd;
  }
  if (cfg->vsock_port >= 0) return open_vsock(cfg, err);
  if (cfg->uds) return open_uds(cfg, err);
  return open_tcp(cfg, port_out, err);
}
