/* attest/dcap.h — private to attest/: Intel DCAP (SGX and TDX) quotes and collateral. */
#ifndef SHIELD_ATTEST_DCAP_H
#define SHIELD_ATTEST_DCAP_H

#include "internal.h"

#define SH_DCAP_MAX_QUOTE (64u * 1024u)
#define SH_DCAP_MAX_COLLATERAL (1u << 20)

/* Intel SGX ECDSA Quote Library API (v3), Intel TDX DCAP Quoting Library API (v4, v5). */
#define DQ_HEADER_LEN 48
#define DQ_SGX_BODY_LEN 384  /* sgx_report_body_t */
#define DQ_TD10_BODY_LEN 584 /* TD REPORT body, TDX 1.0 */
#define DQ_TD15_BODY_LEN 648 /* TDX 1.5: + TEE_TCB_SVN2 (16) + MRSERVICETD (48) */
#define DQ_TEE_SGX 0x00000000u
#define DQ_TEE_TDX 0x00000081u

/* sgx_report_body_t offsets (also the QE report) */
#define RB_CPUSVN 0
#define RB_MISCSELECT 16
#define RB_ATTRIBUTES 48
#define RB_MRENCLAVE 64
#define RB_MRSIGNER 128
#define RB_CONFIGID 192
#define RB_ISVPRODID 256
#define RB_ISVSVN 258
#define RB_CONFIGSVN 260
#define RB_ISVFAMILYID 304
#define RB_REPORTDATA 320

/* TD report body offsets */
#define TD_TEE_TCB_SVN 0
#define TD_MRSEAM 16
#define TD_MRSIGNERSEAM 64
#define TD_SEAMATTRIBUTES 112
#define TD_TDATTRIBUTES 120
#define TD_XFAM 128
#define TD_MRTD 136
#define TD_MRCONFIGID 184
#define TD_MROWNER 232
#define TD_MROWNERCONFIG 280
#define TD_RTMR0 328
#define TD_REPORTDATA 520
#define TD_TEE_TCB_SVN2 584
#define TD_MRSERVICETD 600

typedef struct sh_dcap_quote {
  uint16_t version;
  uint32_t tee_type;    /* DQ_TEE_SGX or DQ_TEE_TDX */
  uint16_t body_type;   /* v5: 1 SGX, 2 TDX 1.0, 3 TDX 1.5; v3/v4: derived */
  sh_iovec signed_part; /* header ‖ (v5: type ‖ size ‖) body: what the AK signs */
  const uint8_t *body;
  size_t body_len;
  const uint8_t *sig;       /* 64 bytes r‖s, big-endian */
  const uint8_t *att_key;   /* 64 bytes x‖y, P-256 */
  const uint8_t *qe_report; /* 384 bytes */
  const uint8_t *qe_report_sig;
  sh_iovec qe_auth;
  sh_iovec pck_chain; /* certification data type 5: PEM leaf, intermediate, root */
} sh_dcap_quote;

/* dcap_quote.c: strict parse by lengths; trailing bytes after the signature data must be
 * zero padding.  Returns 0, or fails r with malformed. */
int sh_attest__dcap_parse_quote(sh_attest_result *r, const uint8_t *q, size_t len,
                                sh_dcap_quote *out);

/* dcap.c: a TD quote verified as tdx, with `bind` run where tdx checks REPORT_DATA = D (step 2
 * of dcap.c's order: after the structure, before the chain, signatures and collateral); `bind`
 * fails v->r and returns -1 to refuse.  pol NULL: the built-in defaults.  azure-tdx uses it. */
typedef int (*sh_dcap_bind_fn)(sh_vctx *v, const sh_dcap_quote *q, void *arg);
struct sh_dcap_policy;
int sh_attest__dcap_verify_td(sh_vctx *v, const uint8_t *quote, size_t len,
                              const struct sh_dcap_policy *pol, sh_dcap_bind_fn bind, void *arg);

/* collateral.c */
typedef struct sh_dcap_collateral sh_dcap_collateral;
void sh_attest__dcap_collateral_free(sh_dcap_collateral *c);
/* Parse (JSON form; v->o->dcap_collateral's bytes when given) and verify the collateral:
 * issuer chains to the Intel root (or an explicit extra root), CRL signatures and validity at
 * `at`, TCB info and QE identity signatures over their exact bytes, issueDate <= at <
 * nextUpdate.  Fails v->r and returns NULL. */
sh_dcap_collateral *sh_attest__dcap_collateral_verify(sh_vctx *v, const uint8_t *col, size_t len,
                                                      STACK_OF(X509) * anchors);
/* 1 when the options carry collateral (a preloaded handle, or bytes) */
int sh_attest__dcap_collateral_given(const sh_attest_options *o);
/* Raw Intel PCS v4 responses (as fetched, or as files of a PCS directory) -> the JSON form
 * (malloc'd, NUL-terminated).  The TCB info and QE identity keep their exact signed bytes;
 * CRLs may be DER or PEM; pck_crl_chain (PEM) is optional.  NULL members: "missing".  Returns
 * 0, or -1 with a message. */
typedef struct sh_dcap_pcs {
  const char *tcb; /* {"tcbInfo": {...}, "signature": "..."} */
  size_t tcb_len;
  const char *tcb_chain; /* TCB-Info-Issuer-Chain (PEM) */
  size_t tcb_chain_len;
  const char *qe; /* {"enclaveIdentity": {...}, "signature": "..."} */
  size_t qe_len;
  const char *qe_chain; /* SGX-Enclave-Identity-Issuer-Chain (PEM) */
  size_t qe_chain_len;
  const uint8_t *root_crl;
  size_t root_crl_len;
  const uint8_t *pck_crl;
  size_t pck_crl_len;
  const char *pck_crl_chain; /* SGX-PCK-CRL-Issuer-Chain (PEM, NUL-terminated) or NULL */
} sh_dcap_pcs;
int sh_attest__dcap_collateral_from_pcs(const sh_dcap_pcs *p, uint8_t **out, size_t *len, char *eb,
                                        size_t en);
STACK_OF(X509) * sh_attest__dcap_pem_strict(const char *pem, size_t len);
/* leaf -> untrusted -> anchors at v->o->at by sh_attest__x509_verify_chain (depth <= 4, every
 * given certificate used; failures prefixed with `what`), then, when c is not NULL, every
 * certificate's revocation against the collateral's CRLs (signatures verified once per
 * collateral and issuer; validity and revocation every time). */
int sh_attest__dcap_verify_chain(sh_vctx *v, sh_dcap_collateral *c, X509 *leaf,
                                 STACK_OF(X509) * untrusted, STACK_OF(X509) * anchors,
                                 const char *what);
/* Accessors used by dcap.c */
json_t *sh_attest__dcap_tcb_info(const sh_dcap_collateral *c);          /* borrowed */
json_t *sh_attest__dcap_qe_identity(const sh_dcap_collateral *c);       /* borrowed */
STACK_OF(X509_CRL) * sh_attest__dcap_crls(const sh_dcap_collateral *c); /* borrowed */
STACK_OF(X509) *
    sh_attest__dcap_pck_crl_chain(const sh_dcap_collateral *c); /* borrowed, may be NULL */

/* tcb.c: the index of a TCB status name of Intel's TCB info v3 ("UpToDate" 0, ...
 * "Revoked" 6), or -1 for a name it does not define. */
#define SH_DCAP_TCB_REVOKED 6
int sh_attest__tcb_status_index(const char *name);

/* tcb.c: PCK certificate SGX extensions (OID 1.2.840.113741.1.13.1) */
typedef struct sh_pck_ext {
  uint8_t comp[16];
  uint16_t pcesvn;
  uint8_t cpusvn[16];
  uint8_t pceid[2];
  uint8_t fmspc[6];
} sh_pck_ext;
int sh_attest__pck_ext_parse(X509 *pck, sh_pck_ext *out);
/* Matches; returns 0 with *status (static string) and advisories appended, or fails r
 * (tcb_unsupported when no level matches). */
int sh_attest__dcap_tcb_match(sh_vctx *v, json_t *tcb_info, const sh_pck_ext *pck,
                              const uint8_t *tee_tcb_svn, const uint8_t *td_body,
                              const char **status, json_t *advisories);
int sh_attest__dcap_qe_match(sh_vctx *v, json_t *qe_identity, const uint8_t *qe_report,
                             const char **status);
int sh_attest__dcap_hex(json_t *o, const char *key, uint8_t *out,
                        size_t n); /* exact-length hex field */

#endif
