/* attest/provider_sev.c — SEV-SNP evidence: the /dev/sev-guest ioctls (where configfs-tsm is
 * absent: kernels before 6.7), and the encoding of a report with the host's certificate table
 * as the sev-snp evidence our verifier reads (docs/protocol.md §1.5, attest/snp.c).
 *
 * ABI: linux/sev-guest.h (Debian's linux-libc-dev has it): SNP_GET_EXT_REPORT returns the
 * report and the certificate table the host supplied (GHCB spec 2.0 §4.1.8.1), SNP_GET_REPORT
 * the report alone.  The response is the firmware's MSG_REPORT_RSP (SEV-SNP Firmware ABI
 * #56860, "MSG_REPORT_RSP Message Structure"): STATUS at 0x00, REPORT_SIZE at 0x04, the
 * report at 0x20. */
#include "provider.h"

#include <cbor.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/ioctl.h>
#include <linux/sev-guest.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RSP_STATUS 0x00
#define RSP_REPORT_SIZE 0x04
#define RSP_REPORT 0x20
#define REPORT_DATA 0x50 /* SNP ABI Table 23 */
#define PAGE 4096u
/* The kernel takes a certificate buffer of whole pages, at most SEV_FW_BLOB_MAX_SIZE (16 KiB)
 * in the kernels that have this ioctl; a host asking for more is refused. */
#define CERTS_INITIAL (4u * PAGE)
#define CERTS_MAX (64u * 1024u)
/* GHCB spec §4.1.8.1: 16-byte GUID, u32 offset, u32 length; an all-zero entry ends the table */
#define ENTRY 24u

static uint32_t le32(const uint8_t *p) {
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The table's GUIDs (GHCB spec §4.1.8.1, byte order as written), and the bundle's names. */
static const struct {
  uint8_t guid[16];
  const char *name;
} guids[] = {
    {{0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac,
      0xcd},
     "vcek"},
    {{0xa8, 0x07, 0x4b, 0xc2, 0xa2, 0x5a, 0x48, 0x3e, 0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8,
      0xa1},
     "vlek"},
    {{0x4a, 0xb7, 0xb3, 0x79, 0xbb, 0xac, 0x4f, 0xe4, 0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7,
      0x82},
     "ask"},
    {{0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0,
      0xae},
     "ark"},
};

static int pair(cbor_item_t *m, const char *k, const uint8_t *v, size_t n) {
  cbor_item_t *key = cbor_build_string(k), *val = cbor_build_bytestring(v, n);
  int ok = key && val && cbor_map_add(m, (struct cbor_pair){.key = key, .value = val});
  if (key) cbor_decref(&key);
  if (val) cbor_decref(&val);
  return ok;
}

/* The certificate table into the bundle's "certs" map.  Entries of other GUIDs (a CRL, a
 * vendor's own) are left out: the bundle holds only what the verifier reads. */
static int table_certs(const uint8_t *t, size_t tlen, cbor_item_t *certs, char *err,
                       size_t errlen) {
  int seen[4] = {0};
  for (size_t off = 0;; off += ENTRY) {
    if (off + ENTRY > tlen)
      return sh_attest__prov_err(err, errlen, "sev-snp: certificate table has no terminator");
    const uint8_t *e = t + off;
    uint32_t o = le32(e + 16), n = le32(e + 20);
    static const uint8_t zero[ENTRY];
    if (!memcmp(e, zero, ENTRY)) return 0;
    if (o > tlen || n > tlen - o || o < off + ENTRY)
      return sh_attest__prov_err(
          err, errlen, "sev-snp: certificate table entry %zu is out of bounds", off / ENTRY);
    for (size_t g = 0; g < sizeof guids / sizeof guids[0]; g++) {
      if (memcmp(e, guids[g].guid, 16) != 0) continue;
      if (seen[g]++)
        return sh_attest__prov_err(err, errlen, "sev-snp: certificate table has two %s",
                                   guids[g].name);
      if (!pair(certs, guids[g].name, t + o, n))
        return sh_attest__prov_err(err, errlen, "out of memory");
    }
  }
}

int sh_attest__snp_encode(const uint8_t *report, size_t rlen, const uint8_t *table, size_t tlen,
                          const uint8_t D[64], uint8_t **out, size_t *len, char *err,
                          size_t errlen) {
  *out = NULL;
  *len = 0;
  if (rlen != SH_SNP_REPORT_SIZE)
    return sh_attest__prov_err(err, errlen, "sev-snp: the report is %zu bytes, not %u", rlen,
                               SH_SNP_REPORT_SIZE);
  if (memcmp(report + REPORT_DATA, D, 64) != 0)
    return sh_attest__prov_err(err, errlen, "sev-snp: the report's REPORT_DATA is not D");
  cbor_item_t *top = cbor_new_definite_map(2), *certs = cbor_new_definite_map(4);
  unsigned char *buf = NULL;
  size_t cap = 0, n = 0;
  int rc = -1;
  if (!top || !certs) {
    sh_attest__prov_err(err, errlen, "out of memory");
    goto out;
  }
  if (table && tlen && table_certs(table, tlen, certs, err, errlen) < 0) goto out;
  if (cbor_map_size(certs) == 0) { /* no certificates: the bare report (§1.5) */
    if (!(*out = malloc(rlen))) {
      sh_attest__prov_err(err, errlen, "out of memory");
      goto out;
    }
    memcpy(*out, report, rlen);
    *len = rlen;
    rc = 0;
    goto out;
  }
  cbor_item_t *k = cbor_build_string("certs");
  int ok = pair(top, "report", report, rlen) && k &&
           cbor_map_add(top, (struct cbor_pair){.key = k, .value = certs});
  if (k) cbor_decref(&k);
  if (!ok || !(n = cbor_serialize_alloc(top, &buf, &cap))) {
    sh_attest__prov_err(err, errlen, "out of memory");
    goto out;
  }
  if (n > SH_BUNDLE_MAX_EVIDENCE) {
    sh_attest__prov_err(err, errlen, "sev-snp: the bundle is %zu bytes, over the %u limit", n,
                        SH_BUNDLE_MAX_EVIDENCE);
    goto out;
  }
  *out = buf;
  *len = n;
  buf = NULL;
  rc = 0;
out:
  free(buf);
  if (certs) cbor_decref(&certs);
  if (top) cbor_decref(&top);
  return rc;
}

/* One guest request; 0, or -1 with errno and the firmware/VMM errors in g. */
static int request(sh_attest_provider *p, int fd, unsigned long req, void *data,
                   struct snp_report_resp *resp, struct snp_guest_request_ioctl *g) {
  memset(g, 0, sizeof *g);
  g->msg_version = 1; /* the only MSG_REPORT_REQ version (must be non-zero) */
  g->req_data = (__u64)(uintptr_t)data;
  g->resp_data = (__u64)(uintptr_t)resp;
  return sh_attest__prov_ioctl(p, fd, req, g);
}

static int report_of(const struct snp_report_resp *resp, const uint8_t **rp, char *err,
                     size_t errlen) {
  const uint8_t *r = resp->data;
  if (le32(r + RSP_STATUS) != 0)
    return sh_attest__prov_err(err, errlen, "sev-snp: firmware status 0x%x", le32(r + RSP_STATUS));
  if (le32(r + RSP_REPORT_SIZE) != SH_SNP_REPORT_SIZE)
    return sh_attest__prov_err(err, errlen, "sev-snp: REPORT_SIZE %u, not %u",
                               le32(r + RSP_REPORT_SIZE), SH_SNP_REPORT_SIZE);
  *rp = r + RSP_REPORT;
  return 0;
}

int sh_attest__sev_guest_evidence(sh_attest_provider *p, const uint8_t D[64], uint8_t **out,
                                  size_t *len, char *err, size_t errlen) {
  char path[4096];
  struct snp_ext_report_req ext;
  struct snp_guest_request_ioctl g;
  struct snp_report_resp *resp = calloc(1, sizeof *resp);
  uint8_t *certs = NULL;
  const uint8_t *rp = NULL;
  size_t clen = CERTS_INITIAL;
  int rc = -1, fd = -1;
  if (!resp) return sh_attest__prov_err(err, errlen, "out of memory");
  if (sh_attest__prov_path(p, SH_PATH_SEV_GUEST, path, sizeof path) < 0 ||
      (fd = open(path, O_RDWR | O_CLOEXEC)) < 0) {
    sh_attest__prov_err(err, errlen, "sev-snp: cannot open %s: %s", path, strerror(errno));
    goto out;
  }
  /* VMPL 0: the guest's own level when it runs without an SVSM (the usual case) */
  memset(&ext, 0, sizeof ext);
  memcpy(ext.data.user_data, D, 64);
  for (int tries = 0; tries < 2; tries++) {
    free(certs);
    if (!(certs = aligned_alloc(PAGE, clen))) {
      sh_attest__prov_err(err, errlen, "out of memory");
      goto out;
    }
    memset(certs, 0, clen);
    ext.certs_address = (__u64)(uintptr_t)certs;
    ext.certs_len = (__u32)clen;
    if (request(p, fd, SNP_GET_EXT_REPORT, &ext, resp, &g) == 0) break;
    /* the host's table is larger: the kernel says how large (whole pages) in certs_len */
    if (errno == EINVAL && g.vmm_error == SNP_GUEST_VMM_ERR_INVALID_LEN && tries == 0 &&
        ext.certs_len > clen && ext.certs_len <= CERTS_MAX && ext.certs_len % PAGE == 0) {
      clen = ext.certs_len;
      continue;
    }
    free(certs);
    certs = NULL;
    break;
  }
  if (!certs) { /* no extended report (an old host, or none configured): the report alone */
    struct snp_report_req req;
    memset(&req, 0, sizeof req);
    memcpy(req.user_data, D, 64);
    memset(resp, 0, sizeof *resp);
    if (request(p, fd, SNP_GET_REPORT, &req, resp, &g) < 0) {
      sh_attest__prov_err(err, errlen,
                          "sev-snp: SNP_GET_REPORT on %s: %s (firmware error 0x%x, VMM error "
                          "0x%x)",
                          path, strerror(errno), g.fw_error, g.vmm_error);
      goto out;
    }
    clen = 0;
  }
  if (report_of(resp, &rp, err, errlen) < 0) goto out;
  rc = sh_attest__snp_encode(rp, SH_SNP_REPORT_SIZE, certs, certs ? clen : 0, D, out, len, err,
                             errlen);
out:
  if (fd >= 0) close(fd);
  free(certs);
  free(resp);
  return rc;
}
