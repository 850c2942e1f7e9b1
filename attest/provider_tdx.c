/* attest/provider_tdx.c — TDX quotes where configfs-tsm is absent (kernels before 6.7): the
 * TDREPORT from /dev/tdx_guest, turned into a quote by Intel's Quote Generation Service (QGS)
 * on the host, as Intel's libtdx_attest does on such kernels.
 *
 * TDREPORT: ioctl TDX_CMD_GET_REPORT0 on /dev/tdx_guest (Linux include/uapi/linux/tdx-guest.h,
 * since 6.2; Debian 12's linux-libc-dev predates it, so the ABI is spelt out below):
 *   struct tdx_report_req { __u8 reportdata[64]; __u8 tdreport[1024]; };
 *   #define TDX_CMD_GET_REPORT0 _IOWR('T', 1, struct tdx_report_req)
 * The TDREPORT is MAC'd for this platform only; the QGS has the quoting enclave sign it.
 *
 * The QGS speaks Intel DCAP's qgs_msg_lib messages (QuoteGeneration/quote_wrapper/qgs_msg_lib/
 * inc/qgs_msg_lib.h), packed little-endian structures, each preceded on the stream by its
 * length as 4 big-endian bytes (tdx_attest.c):
 *   header            {u16 major_version (1), u16 minor_version (1), u32 type, u32 size (the
 *                     whole message, header included), u32 error_code (responses only)}
 *   GET_QUOTE_REQ (0) {header, u32 report_size, u32 id_list_size, report[], id_list[]}
 *   GET_QUOTE_RESP(1) {header, u32 selected_id_size, u32 quote_size, id[], quote[]}
 * We send no id list (the QGS picks Intel's TD quoting enclave, as libtdx_attest does).
 * The QGS listens on vsock port 4050 of the host (CID 2) by default (libtdx_attest's
 * /etc/tdx-attest.conf "port="); the address is configurable: "vsock:CID:PORT", "unix:PATH"
 * (a QGS run with -s on a socket shared into the guest, and the tests), "tcp:HOST:PORT". */
#include "provider.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/ioctl.h>
#include <linux/vm_sockets.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct sh_tdx_report_req {
  uint8_t reportdata[64];
  uint8_t tdreport[1024];
};
#define SH_TDX_CMD_GET_REPORT0 _IOWR('T', 1, struct sh_tdx_report_req)
#define TDREPORT_REPORTDATA 0x80 /* REPORTMACSTRUCT.REPORTDATA (TDX Module ABI) */

#define QGS_MAJOR 1
#define QGS_MINOR 1 /* qgs_msg_lib.cpp QGS_MSG_LIB_MINOR_VER; the QGS checks the major only */
#define QGS_GET_QUOTE_REQ 0
#define QGS_GET_QUOTE_RESP 1
#define QGS_HEADER 16
#define QGS_RESP_FIXED (QGS_HEADER + 8)
#define QGS_RESP_MAX (1u << 20) /* a quote is ~5 KB; its certification data a few more */

static void put_le16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static void put_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t le32(const uint8_t *p) {
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A stream socket whose connect, sends and receives are bounded by the QGS time limit
 * (SO_SNDTIMEO bounds connect(2) too on Linux: socket(7)). */
static int timed_socket(sh_attest_provider *p, int family, int type, int proto) {
  int fd = socket(family, type | SOCK_CLOEXEC, proto);
  struct timeval tv = {.tv_sec = p->tdx_qgs_timeout_ms / 1000,
                       .tv_usec = (p->tdx_qgs_timeout_ms % 1000) * 1000};
  if (fd >= 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  return fd;
}

/* A connected stream socket to the QGS address, with send and receive time limits. */
static int qgs_connect(sh_attest_provider *p, char *err, size_t errlen) {
  const char *a = p->tdx_qgs;
  int fd = -1;
  if (!strncmp(a, "vsock:", 6)) {
    char *end;
    unsigned long cid = strtoul(a + 6, &end, 10), port = 0;
    if (*end == ':') port = strtoul(end + 1, &end, 10);
    if (end == a + 6 || *end || cid > 0xFFFFFFFFul || port == 0 || port > 0xFFFFFFFFul)
      return sh_attest__prov_err(err, errlen, "tdx: QGS address \"%s\" is not vsock:CID:PORT", a);
    struct sockaddr_vm sa = {
        .svm_family = AF_VSOCK, .svm_cid = (unsigned)cid, .svm_port = (unsigned)port};
    fd = timed_socket(p, AF_VSOCK, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
      int e = errno;
      close(fd);
      fd = -1;
      errno = e;
    }
  } else if (!strncmp(a, "unix:", 5)) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(a + 5) == 0 || strlen(a + 5) >= sizeof sa.sun_path)
      return sh_attest__prov_err(err, errlen, "tdx: QGS socket path \"%s\" is empty or too long",
                                 a + 5);
    memcpy(sa.sun_path, a + 5, strlen(a + 5) + 1);
    fd = timed_socket(p, AF_UNIX, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
      int e = errno;
      close(fd);
      fd = -1;
      errno = e;
    }
  } else if (!strncmp(a, "tcp:", 4)) {
    char host[256];
    const char *colon = strrchr(a + 4, ':');
    size_t hl = colon ? (size_t)(colon - (a + 4)) : 0;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (!colon || hl == 0 || hl >= sizeof host || !colon[1])
      return sh_attest__prov_err(err, errlen, "tdx: QGS address \"%s\" is not tcp:HOST:PORT", a);
    memcpy(host, a + 4, hl);
    host[hl] = 0;
    int g = getaddrinfo(host, colon + 1, &hints, &ai);
    if (g != 0)
      return sh_attest__prov_err(err, errlen, "tdx: QGS address \"%s\": %s", a, gai_strerror(g));
    for (struct addrinfo *i = ai; i && fd < 0; i = i->ai_next) {
      fd = timed_socket(p, i->ai_family, i->ai_socktype, i->ai_protocol);
      if (fd >= 0 && connect(fd, i->ai_addr, i->ai_addrlen) < 0) {
        int e = errno;
        close(fd);
        fd = -1;
        errno = e;
      }
    }
    freeaddrinfo(ai);
  } else {
    return sh_attest__prov_err(err, errlen,
                               "tdx: QGS address \"%s\" is none of vsock:CID:PORT, unix:PATH, "
                               "tcp:HOST:PORT",
                               a);
  }
  if (fd < 0)
    return sh_attest__prov_err(err, errlen,
                               "tdx: cannot connect to the Quote Generation Service at %s: %s", a,
                               strerror(errno));
  return fd;
}

int sh_attest__qgs_check(sh_attest_provider *p, char *err, size_t errlen) {
  int fd = qgs_connect(p, err, errlen);
  if (fd < 0) return -1;
  close(fd);
  return 0;
}

static int send_all(int fd, const uint8_t *d, size_t n) {
  while (n) {
    ssize_t w = send(fd, d, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    d += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Exactly n bytes; -1 with errno (0 bytes at EOF: ECONNRESET; a time limit: EAGAIN). */
static int recv_all(int fd, uint8_t *d, size_t n) {
  while (n) {
    ssize_t r = recv(fd, d, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) errno = ECONNRESET;
    if (r <= 0) return -1;
    d += r;
    n -= (size_t)r;
  }
  return 0;
}

/* GET_QUOTE_REQ for the TDREPORT; the quote out of GET_QUOTE_RESP.  0, or -1 with err. */
static int qgs_quote(sh_attest_provider *p, const uint8_t tdreport[1024], uint8_t **q, size_t *ql,
                     char *err, size_t errlen) {
  uint8_t req[4 + QGS_HEADER + 8 + 1024], pre[4];
  uint32_t size = QGS_HEADER + 8 + 1024;
  req[0] = (uint8_t)(size >> 24); /* the stream's length prefix is big-endian */
  req[1] = (uint8_t)(size >> 16);
  req[2] = (uint8_t)(size >> 8);
  req[3] = (uint8_t)size;
  put_le16(req + 4, QGS_MAJOR);
  put_le16(req + 6, QGS_MINOR);
  put_le32(req + 8, QGS_GET_QUOTE_REQ);
  put_le32(req + 12, size);
  put_le32(req + 16, 0);    /* error_code */
  put_le32(req + 20, 1024); /* report_size */
  put_le32(req + 24, 0);    /* id_list_size */
  memcpy(req + 28, tdreport, 1024);
  int fd = qgs_connect(p, err, errlen);
  if (fd < 0) return -1;
  uint8_t *m = NULL;
  int rc = -1;
  if (send_all(fd, req, sizeof req) < 0 || recv_all(fd, pre, 4) < 0) {
    sh_attest__prov_err(err, errlen, "tdx: the Quote Generation Service at %s: %s", p->tdx_qgs,
                        errno == EAGAIN ? "no answer in time" : strerror(errno));
    goto out;
  }
  uint32_t n = (uint32_t)pre[0] << 24 | (uint32_t)pre[1] << 16 | (uint32_t)pre[2] << 8 | pre[3];
  if (n < QGS_RESP_FIXED || n > QGS_RESP_MAX) {
    sh_attest__prov_err(err, errlen, "tdx: the QGS answered a message of %u bytes (%u to %u)", n,
                        QGS_RESP_FIXED, QGS_RESP_MAX);
    goto out;
  }
  if (!(m = malloc(n))) {
    sh_attest__prov_err(err, errlen, "out of memory");
    goto out;
  }
  if (recv_all(fd, m, n) < 0) {
    sh_attest__prov_err(err, errlen, "tdx: reading the QGS's answer: %s",
                        errno == EAGAIN ? "no answer in time" : strerror(errno));
    goto out;
  }
  uint32_t major = (uint32_t)(m[0] | m[1] << 8), type = le32(m + 4), msize = le32(m + 8);
  uint32_t code = le32(m + 12), idl = le32(m + 16), qsz = le32(m + 20);
  if (major != QGS_MAJOR || type != QGS_GET_QUOTE_RESP || msize != n) {
    sh_attest__prov_err(err, errlen,
                        "tdx: the QGS's answer is not a GET_QUOTE_RESP of version 1 (version "
                        "%u, type %u, size %u of %u)",
                        major, type, msize, n);
  } else if (code != 0) {
    sh_attest__prov_err(err, errlen, "tdx: the QGS could not make a quote: error 0x%x", code);
  } else if (qsz == 0 || idl > n - QGS_RESP_FIXED || qsz != n - QGS_RESP_FIXED - idl) {
    sh_attest__prov_err(err, errlen,
                        "tdx: the QGS's answer has inconsistent sizes (id %u, quote %u, message "
                        "%u)",
                        idl, qsz, n);
  } else if (!(*q = malloc(qsz))) {
    sh_attest__prov_err(err, errlen, "out of memory");
  } else {
    memcpy(*q, m + QGS_RESP_FIXED + idl, qsz);
    *ql = qsz;
    rc = 0;
  }
out:
  free(m);
  close(fd);
  return rc;
}

int sh_attest__tdx_guest_evidence(sh_attest_provider *p, const uint8_t D[64], uint8_t **out,
                                  size_t *len, char *err, size_t errlen) {
  char path[4096];
  struct sh_tdx_report_req req;
  if (sh_attest__prov_path(p, SH_PATH_TDX_GUEST, path, sizeof path) < 0)
    return sh_attest__prov_err(err, errlen, "tdx: path too long");
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) return sh_attest__prov_err(err, errlen, "tdx: open %s: %s", path, strerror(errno));
  memset(&req, 0, sizeof req);
  memcpy(req.reportdata, D, 64);
  int rc = sh_attest__prov_ioctl(p, fd, SH_TDX_CMD_GET_REPORT0, &req);
  int e = errno;
  close(fd);
  if (rc < 0)
    return sh_attest__prov_err(err, errlen, "tdx: TDX_CMD_GET_REPORT0 on %s: %s", path,
                               strerror(e));
  if (memcmp(req.tdreport + TDREPORT_REPORTDATA, D, 64) != 0)
    return sh_attest__prov_err(err, errlen, "tdx: the TDREPORT's REPORTDATA is not D");
  uint8_t *q = NULL;
  size_t ql = 0;
  if (qgs_quote(p, req.tdreport, &q, &ql, err, errlen) < 0) return -1;
  if (sh_attest__quote_binds(q, ql, 1, D, err, errlen) < 0) {
    free(q);
    return -1;
  }
  *out = q;
  *len = ql;
  return 0;
}
