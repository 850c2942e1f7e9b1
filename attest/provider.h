/* attest/provider.h — private to attest/: the evidence providers' shared state and helpers
 * (provider.c) and each platform's entry points (provider_*.c, one file per platform).
 * Public API: attest.h, section "Evidence providers". */
#ifndef SHIELD_ATTEST_PROVIDER_H
#define SHIELD_ATTEST_PROVIDER_H

#include "internal.h"

#include <pthread.h>

typedef enum sh_prov_kind {
  SH_PROV_SIMULATED,
  SH_PROV_TSM,       /* configfs-tsm: sev-snp or tdx */
  SH_PROV_SEV_GUEST, /* /dev/sev-guest */
  SH_PROV_NSM,       /* /dev/nsm */
  SH_PROV_GRAMINE,   /* /dev/attestation */
  SH_PROV_GCP,       /* the Confidential Space launcher's socket */
  SH_PROV_VTPM,      /* Azure: the HCL report from the vTPM (tpm2-tss) */
  SH_PROV_TDX_GUEST, /* /dev/tdx_guest's TDREPORT, quoted by the QGS */
} sh_prov_kind;

struct sh_attest_provider {
  sh_tee tee;
  sh_prov_kind kind;
  char *root; /* "" when none */
  char *simulated_dir;
  sh_attest__sim_root sim_root; /* simulated: the dev root, loaded at open */
  int64_t now;                  /* simulated: dates a dev root made at open */
  char *gcp_socket;
  char *gcp_audience;
  long gcp_timeout_ms;
  char *tpm_tcti;            /* azure: the TCTI configuration string */
  int tcti_given;            /* the configuration named one (auto then always asks it) */
  char *azure_imds;          /* azure: IMDS base URL, no trailing slash */
  long azure_timeout_ms;     /* azure: each IMDS request */
  long azure_report_wait_ms; /* azure: how long the HCL report may take to carry D */
  uint8_t thim_key[72];      /* azure-snp: CHIP_ID ‖ REPORTED_TCB the held certificates are for */
  uint8_t *thim_der[3];      /* azure-snp: VCEK, ASK, ARK from THIM (DER), under mu */
  size_t thim_len[3];
  char *tdx_qgs; /* tdx: the QGS address ("vsock:CID:PORT", "unix:PATH", ...) */
  long tdx_qgs_timeout_ms;
  int (*ioctl)(void *ctx, int fd, unsigned long req, void *arg);
  int (*tsm_mkdir)(void *ctx, const char *path);
  int (*tsm_rmdir)(void *ctx, const char *path);
  void *ctx;
  pthread_mutex_t mu; /* Gramine: the pseudo-files are one per process; Azure: the NV index */
};

/* Device and configfs paths, relative to the configured root. */
#define SH_PATH_TSM_DIR "/sys/kernel/config/tsm/report"
#define SH_PATH_SEV_GUEST "/dev/sev-guest"
#define SH_PATH_TDX_GUEST "/dev/tdx_guest"
#define SH_PATH_NSM "/dev/nsm"
#define SH_PATH_GRAMINE "/dev/attestation"
#define SH_PATH_GCP_SOCKET "/run/container_launcher/teeserver.sock"
#define SH_PATH_TPMRM "/dev/tpmrm0"

/* provider.c */
/* err = the formatted message; returns -1. */
int sh_attest__prov_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* <root><rel> into out; 0, or -1 when it does not fit. */
int sh_attest__prov_path(const sh_attest_provider *p, const char *rel, char *out, size_t n);
/* 1 when <root><rel> exists. */
int sh_attest__prov_exists(const sh_attest_provider *p, const char *rel);
/* The whole of a file (a configfs attribute or a pseudo-file: read to EOF), at most cap bytes,
 * malloc'd with a NUL byte after it.  0; -1 with errno (EFBIG: over cap). */
int sh_attest__prov_read(const char *path, size_t cap, uint8_t **out, size_t *len);
/* Writes n bytes to an existing file (no O_CREAT: configfs attributes exist).  0 or -1/errno. */
int sh_attest__prov_write(const char *path, const void *d, size_t n);
/* The ioctl seam: cfg.ioctl when set, else ioctl(2).  0 or -1 with errno. */
int sh_attest__prov_ioctl(sh_attest_provider *p, int fd, unsigned long req, void *arg);

/* provider_tsm.c: configfs-tsm (Linux Documentation/ABI/testing/configfs-tsm) */
/* Checks that configfs-tsm is there and that its provider is tee's ("sev_guest",
 * "tdx_guest"): one report directory made and removed.  0; 1 when configfs-tsm is absent
 * (err names it); -1 with err. */
int sh_attest__tsm_check(sh_attest_provider *p, sh_tee tee, char *err, size_t errlen);
/* The provider ("sev_guest", "tdx_guest") of a probe report into name; 0, 1 absent, -1. */
int sh_attest__tsm_provider(sh_attest_provider *p, char *name, size_t n, char *err, size_t errlen);
int sh_attest__tsm_evidence(sh_attest_provider *p, const uint8_t D[64], uint8_t **out, size_t *len,
                            char *err, size_t errlen);

/* provider_sev.c: /dev/sev-guest, and the SNP evidence encoding shared with configfs-tsm */
int sh_attest__sev_guest_evidence(sh_attest_provider *p, const uint8_t D[64], uint8_t **out,
                                  size_t *len, char *err, size_t errlen);
/* report (1184 bytes, REPORT_DATA checked against D) and the host's certificate table (GHCB
 * spec §4.1.8.1; NULL or empty: none) -> the sev-snp evidence of docs/protocol.md §1.5. */
int sh_attest__snp_encode(const uint8_t *report, size_t rlen, const uint8_t *table, size_t tlen,
                          const uint8_t D[64], uint8_t **out, size_t *len, char *err,
                          size_t errlen);
/* A DCAP quote's REPORT_DATA equals D: 0, or -1 with err (provider_tsm.c, provider_gramine.c). */
int sh_attest__quote_binds(const uint8_t *q, size_t len, int tdx, const uint8_t D[64], char *err,
                           size_t errlen);

/* provider_nsm.c */
int sh_attest__nsm_evidence(sh_attest_provider *p, const uint8_t D[64], const uint8_t *nonce,
                            size_t nonce_len, const uint8_t *pk, size_t pk_len, uint8_t **out,
                            size_t *len, char *err, size_t errlen);
/* provider_gramine.c */
int sh_attest__gramine_check(sh_attest_provider *p, char *err, size_t errlen);
int sh_attest__gramine_evidence(sh_attest_provider *p, const uint8_t D[64], uint8_t **out,
                                size_t *len, char *err, size_t errlen);
/* provider_gcp.c */
int sh_attest__gcp_token(sh_attest_provider *p, const uint8_t D[64], uint8_t **out, size_t *len,
                         char *err, size_t errlen);

/* provider_vtpm.c: Azure CVMs through the vTPM */
/* Is the vTPM's NV index 0x01400001 an HCL report, and of which hardware?  *tee: the type
 * asked for (SH_ATTEST_TEE_AUTO: any), set to azure-snp or azure-tdx.  0; 1 when the index is
 * absent (err says so); -1 with err (the TPM unreachable, the index not an HCL report, or one
 * of the other type). */
int sh_attest__vtpm_probe(sh_attest_provider *p, sh_tee *tee, char *err, size_t errlen);
int sh_attest__vtpm_evidence(sh_attest_provider *p, const uint8_t D[64], uint8_t **out, size_t *len,
                             char *err, size_t errlen);
void sh_attest__vtpm_free(sh_attest_provider *p);

/* provider_tdx.c: /dev/tdx_guest and the Quote Generation Service */
int sh_attest__tdx_guest_evidence(sh_attest_provider *p, const uint8_t D[64], uint8_t **out,
                                  size_t *len, char *err, size_t errlen);
/* Can the QGS be connected to?  0, or -1 with err. */
int sh_attest__qgs_check(sh_attest_provider *p, char *err, size_t errlen);

/* provider.c: an HTTP answer read by libcurl, at most max bytes (the launcher, IMDS). */
typedef struct sh_attest__prov_body {
  uint8_t *p; /* NUL-terminated, malloc'd (the caller frees) */
  size_t n, max;
  int over; /* the answer was longer than max */
} sh_attest__prov_body;
size_t sh_attest__prov_on_data(char *d, size_t sz, size_t nm, void *arg);
void sh_attest__prov_curl_init(void); /* curl_global_init, once per process */

#endif
