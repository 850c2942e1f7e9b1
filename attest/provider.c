/* attest/provider.c — the server's own evidence: choosing the platform, and the helpers every
 * provider_*.c file shares (paths under the configured root, whole-file reads of configfs
 * attributes and pseudo-files, the ioctl seam).  The simulated TEE lives here too: it is one
 * call to simulated.c.
 *
 * Why detection looks only at paths: each TEE announces itself by a device or a directory
 * the kernel (or Gramine, or the Confidential Space launcher) makes, and touching one costs
 * nothing; reports are made only when evidence is asked for (configfs-tsm's probe makes a
 * report directory but writes no inblob, so no report is generated).  Auto-detection never
 * picks simulated: a server that believed it was in a TEE because nothing was found would
 * hand out evidence anyone can mint (fail closed). */
#include "provider.h"

#include <curl/curl.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

int sh_attest__prov_err(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return -1;
}

int sh_attest__prov_path(const sh_attest_provider *p, const char *rel, char *out, size_t n) {
  int w = snprintf(out, n, "%s%s", p->root, rel);
  return w > 0 && (size_t)w < n ? 0 : -1;
}

int sh_attest__prov_exists(const sh_attest_provider *p, const char *rel) {
  char path[4096];
  struct stat st;
  return sh_attest__prov_path(p, rel, path, sizeof path) == 0 && stat(path, &st) == 0;
}

int sh_attest__prov_read(const char *path, size_t cap, uint8_t **out, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  *out = NULL;
  *len = 0;
  if (fd < 0) return -1;
  /* configfs attributes and pseudo-files have no useful st_size: read until EOF */
  size_t n = 0, sz = 4096;
  uint8_t *b = malloc(sz + 1);
  int e = 0;
  while (b) {
    if (n == sz) {
      if (sz > cap) {
        e = EFBIG;
        break;
      }
      uint8_t *nb = realloc(b, sz * 2 + 1);
      if (!nb) break;
      b = nb;
      sz *= 2;
    }
    ssize_t r = read(fd, b + n, sz - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      e = errno;
      break;
    }
    if (r == 0) {
      if (n > cap) {
        e = EFBIG;
        break;
      }
      close(fd);
      b[n] = 0;
      *out = b;
      *len = n;
      return 0;
    }
    n += (size_t)r;
  }
  close(fd);
  free(b);
  errno = e ? e : ENOMEM;
  return -1;
}

int sh_attest__prov_write(const char *path, const void *d, size_t n) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  /* configfs takes an attribute in one write(2) (the kernel's store handler sees one buffer):
   * a short write is an error, never continued */
  ssize_t w;
  do
    w = write(fd, d, n);
  while (w < 0 && errno == EINTR);
  int e = w < 0 ? errno : EIO;
  if (close(fd) < 0 && w == (ssize_t)n) return -1;
  if (w == (ssize_t)n) return 0;
  errno = e;
  return -1;
}

int sh_attest__prov_ioctl(sh_attest_provider *p, int fd, unsigned long req, void *arg) {
  int r;
  do
    r = p->ioctl ? p->ioctl(p->ctx, fd, req, arg) : ioctl(fd, req, arg);
  while (r < 0 && errno == EINTR);
  return r < 0 ? -1 : 0;
}

static char *dup_or(const char *s, const char *dflt) {
  return strdup(s ? s : dflt);
}

/* sev-snp: configfs-tsm when present (and its provider is sev_guest), else /dev/sev-guest. */
static int open_snp(sh_attest_provider *p, char *err, size_t errlen) {
  int rc = sh_attest__tsm_check(p, SH_TEE_SEV_SNP, err, errlen);
  if (rc <= 0) {
    p->kind = SH_PROV_TSM;
    return rc;
  }
  if (sh_attest__prov_exists(p, SH_PATH_SEV_GUEST)) {
    p->kind = SH_PROV_SEV_GUEST;
    return 0;
  }
  return sh_attest__prov_err(err, errlen,
                             "sev-snp: neither %s%s (configfs-tsm) nor %s%s exists: not an "
                             "SEV-SNP guest, or its sev-guest driver is not loaded",
                             p->root, SH_PATH_TSM_DIR, p->root, SH_PATH_SEV_GUEST);
}

/* tdx: configfs-tsm when present, else /dev/tdx_guest's TDREPORT quoted by the host's Quote
 * Generation Service (provider_tdx.c).  A TDREPORT is MAC'd for the local platform only, so
 * /dev/tdx_guest without a reachable QGS gives no evidence: refused at open, naming both. */
static int open_tdx(sh_attest_provider *p, char *err, size_t errlen) {
  int rc = sh_attest__tsm_check(p, SH_TEE_TDX, err, errlen);
  if (rc <= 0) {
    p->kind = SH_PROV_TSM;
    return rc;
  }
  if (sh_attest__prov_exists(p, SH_PATH_TDX_GUEST)) {
    char why[512];
    if (sh_attest__qgs_check(p, why, sizeof why) < 0)
      return sh_attest__prov_err(err, errlen,
                                 "tdx: %s%s exists but %s%s does not, and %s: a TD quote needs "
                                 "configfs-tsm (Linux >= 6.7 with the tdx_guest driver) or the "
                                 "host's Quote Generation Service",
                                 p->root, SH_PATH_TDX_GUEST, p->root, SH_PATH_TSM_DIR, why);
    p->kind = SH_PROV_TDX_GUEST;
    return 0;
  }
  return sh_attest__prov_err(err, errlen,
                             "tdx: neither %s%s (configfs-tsm) nor %s%s exists: not a TDX "
                             "guest, or its tdx_guest driver is not loaded",
                             p->root, SH_PATH_TSM_DIR, p->root, SH_PATH_TDX_GUEST);
}

static int open_gcp(sh_attest_provider *p, char *err, size_t errlen) {
  struct stat st;
  if (stat(p->gcp_socket, &st) < 0 || !S_ISSOCK(st.st_mode))
    return sh_attest__prov_err(err, errlen,
                               "gcp: %s is not a socket: not a Confidential Space workload (on a "
                               "plain Confidential VM use sev-snp or tdx)",
                               p->gcp_socket);
  if (!p->gcp_audience || !p->gcp_audience[0])
    return sh_attest__prov_err(err, errlen, "gcp: the token audience is not configured");
  p->kind = SH_PROV_GCP;
  return 0;
}

static int open_nitro(sh_attest_provider *p, char *err, size_t errlen) {
  if (!sh_attest__prov_exists(p, SH_PATH_NSM))
    return sh_attest__prov_err(err, errlen, "nitro: %s%s does not exist: not a Nitro enclave",
                               p->root, SH_PATH_NSM);
  p->kind = SH_PROV_NSM;
  return 0;
}

static int open_simulated(sh_attest_provider *p, char *err, size_t errlen) {
  /* made now, so a dev root that cannot be created stops start-up rather than a request; kept,
   * so no evidence re-reads and re-parses it */
  if (p->now <= 0)
    return sh_attest__prov_err(err, errlen,
                               "simulated: the configuration's `now` (the current time) is "
                               "required to create the dev root");
  p->kind = SH_PROV_SIMULATED;
  return sh_attest__sim_root_load(p->simulated_dir, p->now, &p->sim_root, err, errlen);
}

/* azure-snp, azure-tdx: the vTPM holds an HCL report of the right hardware. */
static int open_azure(sh_attest_provider *p, char *err, size_t errlen) {
  sh_tee tee = p->tee;
  int rc = sh_attest__vtpm_probe(p, &tee, err, errlen);
  if (rc != 0) return -1;
  p->kind = SH_PROV_VTPM;
  return 0;
}

static int open_tee(sh_attest_provider *p, char *err, size_t errlen) {
  switch (p->tee) {
    case SH_TEE_SIMULATED:
      return open_simulated(p, err, errlen);
    case SH_TEE_NITRO:
      return open_nitro(p, err, errlen);
    case SH_TEE_SEV_SNP:
      return open_snp(p, err, errlen);
    case SH_TEE_TDX:
      return open_tdx(p, err, errlen);
    case SH_TEE_SGX:
      p->kind = SH_PROV_GRAMINE;
      return sh_attest__gramine_check(p, err, errlen);
    case SH_TEE_GCP:
      return open_gcp(p, err, errlen);
    case SH_TEE_AZURE_SNP:
    case SH_TEE_AZURE_TDX:
      return open_azure(p, err, errlen);
    default:
      return sh_attest__prov_err(err, errlen,
                                 "%s: no evidence provider for this TEE (a token type: the server "
                                 "presents the evidence of its platform instead)",
                                 sh_tee_name(p->tee));
  }
}

/* The first TEE whose device is there.  GCP comes before configfs-tsm because Confidential
 * Space runs on SEV or TDX VMs: its token is the evidence a workload there is meant to give.
 * The Azure vTPM comes before configfs-tsm, /dev/sev-guest and /dev/tdx_guest for the same
 * reason: an Azure CVM's guest runs behind the paravisor, whose HCL report (NV index
 * 0x01400001, found on no other TPM) is the evidence Azure's verifiers expect; the guest there
 * normally has no usable /dev/sev-guest (the paravisor holds the VMPL0 keys) and its TDREPORT
 * is quoted through IMDS, not a QGS.  The vTPM is asked only when a TCTI is configured or
 * <root>/dev/tpmrm0 exists; a TPM without the index (any other VM) is passed over. */
static int detect(sh_attest_provider *p, char *err, size_t errlen) {
  char name[32], vwhy[512] = "";
  struct stat st;
  if (sh_attest__prov_exists(p, SH_PATH_NSM)) {
    p->tee = SH_TEE_NITRO;
  } else if (stat(p->gcp_socket, &st) == 0 && S_ISSOCK(st.st_mode)) {
    p->tee = SH_TEE_GCP;
  } else if (sh_attest__prov_exists(p, SH_PATH_GRAMINE "/quote")) {
    p->tee = SH_TEE_SGX;
  } else if ((p->tcti_given || sh_attest__prov_exists(p, SH_PATH_TPMRM)) &&
             sh_attest__vtpm_probe(p, &p->tee, vwhy, sizeof vwhy) == 0) {
    /* p->tee is azure-snp or azure-tdx */
  } else {
    int rc = sh_attest__tsm_provider(p, name, sizeof name, err, errlen);
    if (rc < 0) return -1;
    if (rc == 0 && !strcmp(name, "sev_guest")) {
      p->tee = SH_TEE_SEV_SNP;
    } else if (rc == 0 && !strcmp(name, "tdx_guest")) {
      p->tee = SH_TEE_TDX;
    } else if (rc == 0) {
      return sh_attest__prov_err(err, errlen, "auto: configfs-tsm provider \"%s\" is unknown",
                                 name);
    } else if (sh_attest__prov_exists(p, SH_PATH_SEV_GUEST)) {
      p->tee = SH_TEE_SEV_SNP;
    } else if (sh_attest__prov_exists(p, SH_PATH_TDX_GUEST)) {
      p->tee = SH_TEE_TDX;
    } else {
      return sh_attest__prov_err(
          err, errlen,
          "auto: no TEE found (none of %s%s, %s, %s%s, %s%s, %s%s, %s%s exists%s%s); simulated "
          "is never chosen automatically: name it explicitly for development",
          p->root, SH_PATH_NSM, p->gcp_socket, p->root, SH_PATH_GRAMINE, p->root, SH_PATH_TSM_DIR,
          p->root, SH_PATH_SEV_GUEST, p->root, SH_PATH_TDX_GUEST, vwhy[0] ? "; " : "", vwhy);
    }
  }
  return open_tee(p, err, errlen);
}

int sh_attest_provider_open(const sh_attest_provider_config *cfg, sh_attest_provider **out,
                            char *err, size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = 0;
  if (!cfg) return sh_attest__prov_err(err, errlen, "provider: no configuration");
  sh_attest_provider *p = calloc(1, sizeof *p);
  if (!p) return sh_attest__prov_err(err, errlen, "out of memory");
  pthread_mutex_init(&p->mu, NULL);
  p->tee = cfg->tee;
  p->root = dup_or(cfg->root, "");
  p->simulated_dir = cfg->simulated_dir ? strdup(cfg->simulated_dir) : NULL;
  p->now = cfg->now;
  p->gcp_audience = cfg->gcp_audience ? strdup(cfg->gcp_audience) : NULL;
  p->gcp_timeout_ms = cfg->gcp_timeout_ms > 0 ? cfg->gcp_timeout_ms : 10000;
  p->tcti_given = cfg->tpm_tcti != NULL;
  p->azure_imds = dup_or(cfg->azure_imds_url, "http://169.254.169.254");
  p->azure_timeout_ms = cfg->azure_timeout_ms > 0 ? cfg->azure_timeout_ms : 10000;
  p->azure_report_wait_ms = cfg->azure_report_wait_ms > 0 ? cfg->azure_report_wait_ms : 3000;
  p->tdx_qgs = dup_or(cfg->tdx_qgs, "vsock:2:4050");
  p->tdx_qgs_timeout_ms = cfg->tdx_qgs_timeout_ms > 0 ? cfg->tdx_qgs_timeout_ms : 30000;
  p->ioctl = cfg->ioctl;
  p->tsm_mkdir = cfg->tsm_mkdir;
  p->tsm_rmdir = cfg->tsm_rmdir;
  p->ctx = cfg->ctx;
  char sock[4096];
  if (cfg->gcp_socket)
    snprintf(sock, sizeof sock, "%s", cfg->gcp_socket);
  else if (sh_attest__prov_path(p, SH_PATH_GCP_SOCKET, sock, sizeof sock) < 0)
    sock[0] = 0;
  p->gcp_socket = strdup(sock);
  char tcti[4200];
  if (cfg->tpm_tcti)
    snprintf(tcti, sizeof tcti, "%s", cfg->tpm_tcti);
  else
    snprintf(tcti, sizeof tcti, "device:%s" SH_PATH_TPMRM, p->root ? p->root : "");
  p->tpm_tcti = strdup(tcti);
  if (p->azure_imds) { /* "{base}/path": no trailing slash */
    size_t n = strlen(p->azure_imds);
    while (n && p->azure_imds[n - 1] == '/')
      p->azure_imds[--n] = 0;
  }
  if (!p->root || !p->gcp_socket || !p->tpm_tcti || !p->azure_imds || !p->tdx_qgs ||
      (cfg->simulated_dir && !p->simulated_dir) || (cfg->gcp_audience && !p->gcp_audience)) {
    sh_attest_provider_free(p);
    return sh_attest__prov_err(err, errlen, "out of memory");
  }
  int rc = cfg->tee == SH_ATTEST_TEE_AUTO ? detect(p, err, errlen) : open_tee(p, err, errlen);
  if (rc != 0) {
    sh_attest_provider_free(p);
    return -1;
  }
  *out = p;
  return 0;
}

/* simulated: the document binds n and k itself, so D must be theirs (§1.2). */
static int simulated_evidence(sh_attest_provider *p, const uint8_t D[64], const uint8_t *nonce,
                              size_t nonce_len, const uint8_t *pk, size_t pk_len, int64_t at,
                              uint8_t **out, size_t *len, char *err, size_t errlen) {
  uint8_t want[64];
  if (!nonce)
    return sh_attest__prov_err(err, errlen, "simulated: a nonce is required (D is D(n, k))");
  if (sh_attest_binding_digest(nonce, nonce_len, pk, pk ? pk_len : 0, want) < 0 ||
      memcmp(want, D, 64) != 0)
    return sh_attest__prov_err(err, errlen,
                               "simulated: D is not the binding digest of the nonce and key "
                               "(docs/protocol.md §1.2)");
  sh_attest_sim_params sp = {.dir = p->simulated_dir,
                             .at = at,
                             .now = p->now,
                             .nonce = nonce,
                             .nonce_len = nonce_len,
                             .public_key = pk,
                             .public_key_len = pk ? pk_len : 0};
  if (!sh_attest__sim_root_current(&p->sim_root))
    return sh_attest_simulated_evidence(&sp, out, len, err, errlen); /* read it again */
  return sh_attest__simulated_evidence_with(&sp, &p->sim_root, out, len, err, errlen);
}

int sh_attest_provider_evidence(sh_attest_provider *p, const uint8_t D[64], const uint8_t *nonce,
                                size_t nonce_len, const uint8_t *public_key, size_t public_key_len,
                                int64_t at, uint8_t **out, size_t *len, char *err, size_t errlen) {
  *out = NULL;
  *len = 0;
  if (err && errlen) err[0] = 0;
  if (!p || !D) return sh_attest__prov_err(err, errlen, "provider: no provider or no D");
  /* NSM API: user_data, nonce and public_key are at most 1024 bytes each */
  if ((nonce && nonce_len > 1024) || (public_key && public_key_len > 1024))
    return sh_attest__prov_err(err, errlen, "provider: nonce or public key over 1024 bytes");
  switch (p->kind) {
    case SH_PROV_SIMULATED:
      return simulated_evidence(p, D, nonce, nonce_len, public_key, public_key_len, at, out, len,
                                err, errlen);
    case SH_PROV_TSM:
      return sh_attest__tsm_evidence(p, D, out, len, err, errlen);
    case SH_PROV_SEV_GUEST:
      return sh_attest__sev_guest_evidence(p, D, out, len, err, errlen);
    case SH_PROV_NSM:
      return sh_attest__nsm_evidence(p, D, nonce, nonce_len, public_key, public_key_len, out, len,
                                     err, errlen);
    case SH_PROV_GRAMINE:
      return sh_attest__gramine_evidence(p, D, out, len, err, errlen);
    case SH_PROV_GCP:
      return sh_attest__gcp_token(p, D, out, len, err, errlen);
    case SH_PROV_VTPM:
      return sh_attest__vtpm_evidence(p, D, out, len, err, errlen);
    case SH_PROV_TDX_GUEST:
      return sh_attest__tdx_guest_evidence(p, D, out, len, err, errlen);
  }
  return sh_attest__prov_err(err, errlen, "provider: unknown kind");
}

sh_tee sh_attest_provider_tee(const sh_attest_provider *p) {
  return p ? p->tee : SH_TEE_UNKNOWN;
}

const char *sh_attest_provider_source(const sh_attest_provider *p) {
  static const char *const names[] = {"simulated", "configfs-tsm",     "/dev/sev-guest",
                                      "/dev/nsm",  "/dev/attestation", "teeserver.sock",
                                      "vtpm",      "/dev/tdx_guest"};
  return p ? names[p->kind] : "none";
}

void sh_attest_provider_free(sh_attest_provider *p) {
  if (!p) return;
  pthread_mutex_destroy(&p->mu);
  sh_attest__sim_root_free(&p->sim_root);
  free(p->root);
  free(p->simulated_dir);
  free(p->gcp_socket);
  free(p->gcp_audience);
  free(p->tpm_tcti);
  free(p->azure_imds);
  free(p->tdx_qgs);
  sh_attest__vtpm_free(p);
  free(p);
}

/* ---- HTTP answers read by libcurl (the launcher socket, IMDS) ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

void sh_attest__prov_curl_init(void) {
  pthread_once(&curl_once, curl_init);
}

/* CURLOPT_WRITEFUNCTION: appends to the body (NUL-terminated), stopping the transfer past max
 * (over = 1) so a hostile peer cannot make the provider buffer without bound. */
size_t sh_attest__prov_on_data(char *d, size_t sz, size_t nm, void *arg) {
  sh_attest__prov_body *b = arg;
  size_t n = sz * nm;
  if (b->n + n > b->max) {
    b->over = 1;
    return 0;
  }
  uint8_t *np = realloc(b->p, b->n + n + 1);
  if (!np) return 0;
  memcpy(np + b->n, d, n);
  b->p = np;
  b->n += n;
  b->p[b->n] = 0;
  return n;
}
