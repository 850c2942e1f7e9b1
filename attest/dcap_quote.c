/* attest/dcap_quote.c — Intel DCAP quote layout (Intel SGX ECDSA Quote Library API, "Quote
 * Format" v3; Intel TDX DCAP Quoting Library API, appendix A.3/A.4, v4 and v5).
 *
 *   header (48): version u16, att_key_type u16 (2: ECDSA-256-with-P-256), tee_type u32
 *                (v3: reserved), qe_svn/pce_svn or reserved (4), qe_vendor_id (16),
 *                user_data (20)
 *   v3/v4 body:  SGX report body (384) or TD report 1.0 (584), by tee_type
 *   v5 body:     body_type u16 (1 SGX, 2 TD 1.0, 3 TD 1.5), body_size u32, body
 *   sig_data_len u32, then
 *   v3:    sig (64) ‖ att_key (64) ‖ QE report (384) ‖ QE report sig (64) ‖ auth_len u16 ‖
 *          auth ‖ cert_type u16 (5) ‖ cert_len u32 ‖ PEM chain
 *   v4/v5: sig (64) ‖ att_key (64) ‖ cert_type u16 (6) ‖ cert_len u32 ‖ [QE report ‖ QE report
 *          sig ‖ auth_len u16 ‖ auth ‖ cert_type u16 (5) ‖ cert_len u32 ‖ PEM chain]
 *
 * Every length is checked against what remains; each nested length must consume its
 * container exactly; bytes after the signature data must be zero (some tools pad quotes).
 */
#include "dcap.h"

#include <string.h>

static uint16_t le16(const uint8_t *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t le32(const uint8_t *p) {
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct cur {
  const uint8_t *p;
  size_t n;
} cur;

static const uint8_t *take(cur *c, size_t n) {
  if (c->n < n) return NULL;
  const uint8_t *p = c->p;
  c->p += n;
  c->n -= n;
  return p;
}

#define MAL(...) sh_attest__fail(r, SH_ATTEST_MALFORMED, __VA_ARGS__)

/* certification data type 5: the PCK chain as PEM, printable, non-empty */
static int cert5(sh_attest_result *r, cur *c, sh_iovec *chain) {
  const uint8_t *h = take(c, 6);
  if (!h || le16(h) != 5)
    return MAL("quote: certification data is not a PCK certificate chain (type 5)");
  uint32_t n = le32(h + 2);
  const uint8_t *d = take(c, n);
  if (!d || n == 0) return MAL("quote: PCK certificate chain length");
  chain->ptr = d;
  chain->len = n;
  return 0;
}

static int qe_part(sh_attest_result *r, cur *c, sh_dcap_quote *q) {
  const uint8_t *a;
  if (!(q->qe_report = take(c, DQ_SGX_BODY_LEN)) || !(q->qe_report_sig = take(c, 64)) ||
      !(a = take(c, 2)))
    return MAL("quote: truncated QE report");
  q->qe_auth.len = le16(a);
  if (!(q->qe_auth.ptr = take(c, q->qe_auth.len)))
    return MAL("quote: QE authentication data length");
  return cert5(r, c, &q->pck_chain);
}

int sh_attest__dcap_parse_quote(sh_attest_result *r, const uint8_t *qb, size_t len,
                                sh_dcap_quote *q) {
  memset(q, 0, sizeof *q);
  if (len > SH_DCAP_MAX_QUOTE) return MAL("quote larger than %u bytes", SH_DCAP_MAX_QUOTE);
  cur c = {qb, len};
  const uint8_t *h = take(&c, DQ_HEADER_LEN);
  if (!h) return MAL("quote shorter than its header");
  q->version = le16(h);
  if (q->version != 3 && q->version != 4 && q->version != 5)
    return MAL("unsupported quote version %u", q->version);
  if (le16(h + 2) != 2) return MAL("attestation key type is not ECDSA-256-with-P-256");
  q->tee_type = q->version == 3 ? DQ_TEE_SGX : le32(h + 4);
  if (q->version == 3 && le32(h + 4) != 0) return MAL("quote v3: reserved header bytes");
  if (q->tee_type != DQ_TEE_SGX && q->tee_type != DQ_TEE_TDX)
    return MAL("unknown TEE type 0x%x", q->tee_type);
  if (q->version == 3 && q->tee_type != DQ_TEE_SGX) return MAL("quote v3 is SGX only");
  size_t body_len;
  if (q->version == 5) {
    const uint8_t *t = take(&c, 6);
    if (!t) return MAL("quote v5: truncated body descriptor");
    q->body_type = le16(t);
    body_len = le32(t + 2);
    size_t want = q->body_type == 1   ? DQ_SGX_BODY_LEN
                  : q->body_type == 2 ? DQ_TD10_BODY_LEN
                  : q->body_type == 3 ? DQ_TD15_BODY_LEN
                                      : 0;
    if (!want || body_len != want)
      return MAL("quote v5: body type %u with size %zu", q->body_type, body_len);
    if ((q->body_type == 1) != (q->tee_type == DQ_TEE_SGX))
      return MAL("quote v5: body type does not match the TEE type");
  } else {
    q->body_type = q->tee_type == DQ_TEE_SGX ? 1 : 2;
    body_len = q->tee_type == DQ_TEE_SGX ? DQ_SGX_BODY_LEN : DQ_TD10_BODY_LEN;
  }
  if (!(q->body = take(&c, body_len))) return MAL("quote: truncated body");
  q->body_len = body_len;
  q->signed_part.ptr = qb;
  q->signed_part.len = (size_t)(q->body + body_len - qb);
  const uint8_t *sl = take(&c, 4);
  if (!sl) return MAL("quote: no signature data length");
  uint32_t sig_len = le32(sl);
  const uint8_t *sd = take(&c, sig_len);
  if (!sd) return MAL("quote: signature data length %u exceeds the quote", sig_len);
  /* trailing padding: zero bytes only */
  uint8_t acc = 0;
  for (size_t i = 0; i < c.n; i++)
    acc |= c.p[i];
  if (acc) return MAL("quote: non-zero bytes after the signature data");
  cur s = {sd, sig_len};
  if (!(q->sig = take(&s, 64)) || !(q->att_key = take(&s, 64)))
    return MAL("quote: truncated signature data");
  if (q->version == 3) {
    if (qe_part(r, &s, q) < 0) return -1;
  } else {
    const uint8_t *t = take(&s, 6);
    if (!t || le16(t) != 6) return MAL("quote: certification data is not QE report data (type 6)");
    uint32_t n = le32(t + 2);
    const uint8_t *d = take(&s, n);
    if (!d) return MAL("quote: QE report certification data length");
    cur in = {d, n};
    if (qe_part(r, &in, q) < 0) return -1;
    if (in.n) return MAL("quote: bytes after the PCK chain in the QE certification data");
  }
  if (s.n) return MAL("quote: bytes after the certification data");
  return 0;
}
