/* attest/tcb.c — PCK certificate SGX extensions and TCB level matching.
 *
 * SGX extensions (Intel "SGX PCK Certificate and CRL Profile", OID 1.2.840.113741.1.13.1):
 * SEQUENCE OF SEQUENCE {OID, value}: .1 PPID, .2 TCB (SEQUENCE OF {OID .2.1-.2.16 INTEGER
 * component SVNs, .2.17 INTEGER PCESVN, .2.18 OCTET STRING CPUSVN}), .3 PCE-ID (2 bytes),
 * .4 FMSPC (6 bytes), .5 SGX type, ...  Decoded with OpenSSL's generic ASN.1
 * (d2i_ASN1_SEQUENCE_ANY), not by scanning bytes.
 *
 * TCB level matching follows Intel's Quote Verification Library (TcbLevelCheck,
 * TdxModuleCheck): levels in the given order, the first level whose every SGX component SVN
 * and PCESVN are <= the PCK certificate's (and for TDX every tdxtcbcomponents SVN <=
 * TEE_TCB_SVN, from index 2 when TEE_TCB_SVN[1] (the module major version) is non-zero)
 * gives the status and advisories; no level -> tcb_unsupported.  For TDX with a module version
 * the module identity "TDX_%02X" must match MRSIGNERSEAM and masked SEAMATTRIBUTES, and its
 * first level with isvsvn <= TEE_TCB_SVN[0] gives the module's status.
 */
#include "dcap.h"

#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#define SGX_EXT_OID "1.2.840.113741.1.13.1"

/* OIDs are compared by their DER content (OBJ_obj2txt per comparison cost ~10% of a
 * verification): SGX_EXT_OID, then `n` (1 or 2) sub-identifiers a[, b], each < 128. */
static const uint8_t sgx_oid_der[9] = {0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01};

static int oid_is_sgx(const ASN1_OBJECT *o, int n, int a, int b) {
  const unsigned char *d = OBJ_get0_data(o);
  size_t len = OBJ_length(o);
  return d && len == sizeof sgx_oid_der + (size_t)n &&
         !memcmp(d, sgx_oid_der, sizeof sgx_oid_der) && (n < 1 || d[9] == a) &&
         (n < 2 || d[10] == b);
}

/* element i of a SEQUENCE { OID, value } list: returns the inner stack or NULL */
static STACK_OF(ASN1_TYPE) * pair(ASN1_TYPE *t) {
  if (!t || t->type != V_ASN1_SEQUENCE) return NULL;
  const unsigned char *p = t->value.sequence->data;
  long n = t->value.sequence->length;
  STACK_OF(ASN1_TYPE) *s = d2i_ASN1_SEQUENCE_ANY(NULL, &p, n);
  if (s && (p != t->value.sequence->data + n || sk_ASN1_TYPE_num(s) != 2 ||
            sk_ASN1_TYPE_value(s, 0)->type != V_ASN1_OBJECT)) {
    sk_ASN1_TYPE_pop_free(s, ASN1_TYPE_free);
    return NULL;
  }
  return s;
}

static int small_int(ASN1_TYPE *t, long max, long *out) {
  long v;
  if (!t || t->type != V_ASN1_INTEGER) return -1;
  v = ASN1_INTEGER_get(t->value.integer);
  if (v < 0 || v > max) return -1;
  *out = v;
  return 0;
}

static int octets(ASN1_TYPE *t, uint8_t *out, int n) {
  if (!t || t->type != V_ASN1_OCTET_STRING || ASN1_STRING_length(t->value.octet_string) != n)
    return -1;
  memcpy(out, ASN1_STRING_get0_data(t->value.octet_string), (size_t)n);
  return 0;
}

static int parse_tcb(ASN1_TYPE *t, sh_pck_ext *e) {
  if (!t || t->type != V_ASN1_SEQUENCE) return -1;
  const unsigned char *p = t->value.sequence->data;
  long n = t->value.sequence->length;
  STACK_OF(ASN1_TYPE) *s = d2i_ASN1_SEQUENCE_ANY(NULL, &p, n);
  unsigned seen = 0;
  int rc = s && p == t->value.sequence->data + n ? 0 : -1;
  for (int i = 0; rc == 0 && i < sk_ASN1_TYPE_num(s); i++) {
    STACK_OF(ASN1_TYPE) *kv = pair(sk_ASN1_TYPE_value(s, i));
    int k = -1;
    for (int j = 1; kv && j <= 18 && k < 0; j++)
      if (oid_is_sgx(sk_ASN1_TYPE_value(kv, 0)->value.object, 2, 2, j)) k = j;
    long v = 0;
    ASN1_TYPE *val = kv ? sk_ASN1_TYPE_value(kv, 1) : NULL;
    if (k < 0 || (seen & (1u << k)))
      rc = -1;
    else if (k <= 16)
      rc = small_int(val, 255, &v) < 0 ? -1 : (e->comp[k - 1] = (uint8_t)v, 0);
    else if (k == 17)
      rc = small_int(val, 65535, &v) < 0 ? -1 : (e->pcesvn = (uint16_t)v, 0);
    else
      rc = octets(val, e->cpusvn, 16);
    if (k > 0) seen |= 1u << k;
    sk_ASN1_TYPE_pop_free(kv, ASN1_TYPE_free);
  }
  sk_ASN1_TYPE_pop_free(s, ASN1_TYPE_free);
  return rc == 0 && seen == 0x7FFFEu ? 0 : -1; /* all of .2.1 - .2.18 */
}

int sh_attest__pck_ext_parse(X509 *pck, sh_pck_ext *e) {
  memset(e, 0, sizeof *e);
  int idx = -1;
  for (int i = 0; i < X509_get_ext_count(pck) && idx < 0; i++)
    if (oid_is_sgx(X509_EXTENSION_get_object(X509_get_ext(pck, i)), 0, 0, 0)) idx = i;
  if (idx < 0) return -1;
  ASN1_OCTET_STRING *d = X509_EXTENSION_get_data(X509_get_ext(pck, idx));
  const unsigned char *p = ASN1_STRING_get0_data(d);
  long n = ASN1_STRING_length(d);
  STACK_OF(ASN1_TYPE) *s = d2i_ASN1_SEQUENCE_ANY(NULL, &p, n);
  int have_tcb = 0, have_pceid = 0, have_fmspc = 0,
      rc = s && p == ASN1_STRING_get0_data(d) + n ? 0 : -1;
  for (int i = 0; rc == 0 && i < sk_ASN1_TYPE_num(s); i++) {
    STACK_OF(ASN1_TYPE) *kv = pair(sk_ASN1_TYPE_value(s, i));
    if (!kv) {
      rc = -1;
      break;
    }
    const ASN1_OBJECT *k = sk_ASN1_TYPE_value(kv, 0)->value.object;
    ASN1_TYPE *val = sk_ASN1_TYPE_value(kv, 1);
    if (oid_is_sgx(k, 1, 2, 0))
      rc = have_tcb++ ? -1 : parse_tcb(val, e);
    else if (oid_is_sgx(k, 1, 3, 0))
      rc = have_pceid++ ? -1 : octets(val, e->pceid, 2);
    else if (oid_is_sgx(k, 1, 4, 0))
      rc = have_fmspc++ ? -1 : octets(val, e->fmspc, 6);
    sk_ASN1_TYPE_pop_free(kv, ASN1_TYPE_free);
  }
  sk_ASN1_TYPE_pop_free(s, ASN1_TYPE_free);
  return rc == 0 && have_tcb && have_pceid && have_fmspc ? 0 : -1;
}

/* Known statuses (Intel PCS TCB info v3), in the order of their index: the policy (dcap.c)
 * keeps the allowed ones as a bit mask by index.  Returned pointers are static. */
static const char *const statuses[] = {"UpToDate",
                                       "SWHardeningNeeded",
                                       "ConfigurationNeeded",
                                       "ConfigurationAndSWHardeningNeeded",
                                       "OutOfDate",
                                       "OutOfDateConfigurationNeeded",
                                       "Revoked",
                                       NULL};

int sh_attest__tcb_status_index(const char *s) {
  for (int i = 0; s && statuses[i]; i++)
    if (!strcmp(s, statuses[i])) return i;
  return -1;
}

static const char *status_of(json_t *lvl) {
  int i = sh_attest__tcb_status_index(json_string_value(json_object_get(lvl, "tcbStatus")));
  return i < 0 ? NULL : statuses[i];
}

static int svn_of(json_t *comps, size_t i, long *out) {
  json_t *c = json_array_get(comps, i);
  json_t *svn = json_object_get(c, "svn");
  if (!json_is_integer(svn) || json_integer_value(svn) < 0 || json_integer_value(svn) > 255)
    return -1;
  *out = (long)json_integer_value(svn);
  return 0;
}

static int add_advisories(json_t *dst, json_t *lvl) {
  json_t *a = json_object_get(lvl, "advisoryIDs"), *x;
  size_t i;
  if (a && !json_is_array(a)) return -1;
  json_array_foreach(a, i, x) {
    if (!json_is_string(x)) return -1;
    int dup = 0;
    size_t j;
    json_t *y;
    json_array_foreach(dst, j, y) dup |= json_equal(x, y);
    if (!dup) json_array_append(dst, x);
  }
  return 0;
}

/* TDX module identity (TdxModuleCheck): status of the module, or NULL with r failed */
static const char *module_status(sh_vctx *v, json_t *ti, const uint8_t *td, json_t *adv) {
  const uint8_t *svn = td + TD_TEE_TCB_SVN;
  json_t *ids = json_object_get(ti, "tdxModuleIdentities"), *m;
  char want[16];
  size_t i;
  if (svn[1] == 0) return statuses[0];
  snprintf(want, sizeof want, "TDX_%02X", svn[1]);
  json_array_foreach(ids, i, m) {
    const char *id = json_string_value(json_object_get(m, "id"));
    if (!id || strcmp(id, want)) continue;
    uint8_t mrs[48], attr[8], mask[8];
    if (sh_attest__dcap_hex(m, "mrsigner", mrs, 48) < 0 ||
        sh_attest__dcap_hex(m, "attributes", attr, 8) < 0 ||
        sh_attest__dcap_hex(m, "attributesMask", mask, 8) < 0) {
      sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: TDX module identity %s", want);
      return NULL;
    }
    if (memcmp(mrs, td + TD_MRSIGNERSEAM, 48)) {
      sh_attest__fail(v->r, SH_ATTEST_TCB_UNSUPPORTED,
                      "MRSIGNERSEAM differs from module identity %s", want);
      return NULL;
    }
    for (int b = 0; b < 8; b++)
      if ((td[TD_SEAMATTRIBUTES + b] & mask[b]) != attr[b]) {
        sh_attest__fail(v->r, SH_ATTEST_TCB_UNSUPPORTED,
                        "SEAMATTRIBUTES differ from module identity %s", want);
        return NULL;
      }
    json_t *lv;
    size_t j;
    json_array_foreach(json_object_get(m, "tcbLevels"), j, lv) {
      json_t *isv = json_object_get(json_object_get(lv, "tcb"), "isvsvn");
      const char *st = status_of(lv);
      if (!json_is_integer(isv) || !st) {
        sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: TDX module TCB level");
        return NULL;
      }
      if (json_integer_value(isv) <= svn[0]) {
        if (add_advisories(adv, lv) < 0) {
          sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: advisoryIDs");
          return NULL;
        }
        return st;
      }
    }
    sh_attest__fail(v->r, SH_ATTEST_TCB_UNSUPPORTED, "TDX module SVN %u below every level of %s",
                    svn[0], want);
    return NULL;
  }
  sh_attest__fail(v->r, SH_ATTEST_TCB_UNSUPPORTED, "no TDX module identity %s in the TCB info",
                  want);
  return NULL;
}

static int rank(const char *s) {
  if (!strcmp(s, "Revoked")) return 3;
  if (!strncmp(s, "OutOfDate", 9)) return 2;
  return strcmp(s, "UpToDate") ? 1 : 0;
}

/* Platform status converged with a component's (module or QE) status, as Intel's QVL does:
 * an out-of-date or revoked component makes the whole TCB so. */
static const char *converge(const char *platform, const char *comp) {
  if (rank(comp) == 3) return "Revoked";
  if (rank(comp) == 2 && rank(platform) < 2)
    return strstr(platform, "Configuration") ? "OutOfDateConfigurationNeeded" : "OutOfDate";
  return platform;
}

int sh_attest__dcap_tcb_match(sh_vctx *v, json_t *ti, const sh_pck_ext *pck,
                              const uint8_t *tee_tcb_svn, const uint8_t *td, const char **status,
                              json_t *advisories) {
  json_t *levels = json_object_get(ti, "tcbLevels"), *lvl;
  size_t i;
  if (!json_is_array(levels))
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: TCB info without tcbLevels");
  int off = tee_tcb_svn && tee_tcb_svn[1] ? 2 : 0;
  json_array_foreach(levels, i, lvl) {
    json_t *tcb = json_object_get(lvl, "tcb");
    json_t *sgx = json_object_get(tcb, "sgxtcbcomponents");
    json_t *tdx = json_object_get(tcb, "tdxtcbcomponents");
    json_t *pce = json_object_get(tcb, "pcesvn");
    const char *st = status_of(lvl);
    if (!json_is_array(sgx) || json_array_size(sgx) != 16 || !json_is_integer(pce) || !st ||
        (tee_tcb_svn && (!json_is_array(tdx) || json_array_size(tdx) != 16)))
      return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: TCB level %zu", i);
    int match = json_integer_value(pce) <= pck->pcesvn;
    for (size_t k = 0; k < 16; k++) {
      long s = 0;
      if (svn_of(sgx, k, &s) < 0)
        return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: TCB level %zu SVN", i);
      match &= s <= pck->comp[k];
      if (tee_tcb_svn) {
        if (svn_of(tdx, k, &s) < 0)
          return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: TCB level %zu TDX SVN", i);
        if ((int)k >= off) match &= s <= tee_tcb_svn[k];
      }
    }
    if (!match) continue;
    if (add_advisories(advisories, lvl) < 0)
      return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: advisoryIDs");
    *status = st;
    if (td) {
      const char *ms = module_status(v, ti, td, advisories);
      if (!ms) return -1;
      json_object_set_new(v->r->claims, "tdx_module_tcb_status", json_string(ms));
      *status = converge(st, ms);
    }
    return 0;
  }
  return sh_attest__fail(v->r, SH_ATTEST_TCB_UNSUPPORTED, "no TCB level matches the platform");
}

/* QE identity (Intel "Enclave Identity" v2): MRSIGNER, ISVPRODID, masked MISCSELECT and
 * ATTRIBUTES must match; the first level with isvsvn <= the QE's ISVSVN gives its status. */
int sh_attest__dcap_qe_match(sh_vctx *v, json_t *qi, const uint8_t *qe, const char **status) {
  uint8_t mrs[32], misc[4], miscm[4], attr[16], attrm[16];
  json_t *prod = json_object_get(qi, "isvprodid");
  if (sh_attest__dcap_hex(qi, "mrsigner", mrs, 32) < 0 ||
      sh_attest__dcap_hex(qi, "miscselect", misc, 4) < 0 ||
      sh_attest__dcap_hex(qi, "miscselectMask", miscm, 4) < 0 ||
      sh_attest__dcap_hex(qi, "attributes", attr, 16) < 0 ||
      sh_attest__dcap_hex(qi, "attributesMask", attrm, 16) < 0 || !json_is_integer(prod))
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: QE identity fields");
  if (memcmp(mrs, qe + RB_MRSIGNER, 32))
    return sh_attest__fail(v->r, SH_ATTEST_CHAIN_INVALID,
                           "QE MRSIGNER differs from the QE identity");
  if (json_integer_value(prod) != (qe[RB_ISVPRODID] | qe[RB_ISVPRODID + 1] << 8))
    return sh_attest__fail(v->r, SH_ATTEST_CHAIN_INVALID,
                           "QE ISVPRODID differs from the QE identity");
  /* MISCSELECT is a little-endian u32 in the report and big-endian hex in the identity */
  for (int b = 0; b < 4; b++)
    if ((qe[RB_MISCSELECT + b] & miscm[3 - b]) != misc[3 - b])
      return sh_attest__fail(v->r, SH_ATTEST_CHAIN_INVALID,
                             "QE MISCSELECT differs from the QE identity");
  for (int b = 0; b < 16; b++)
    if ((qe[RB_ATTRIBUTES + b] & attrm[b]) != attr[b])
      return sh_attest__fail(v->r, SH_ATTEST_CHAIN_INVALID,
                             "QE ATTRIBUTES differ from the QE identity");
  unsigned isvsvn = qe[RB_ISVSVN] | qe[RB_ISVSVN + 1] << 8;
  json_t *lv;
  size_t j;
  json_array_foreach(json_object_get(qi, "tcbLevels"), j, lv) {
    json_t *isv = json_object_get(json_object_get(lv, "tcb"), "isvsvn");
    const char *st = status_of(lv);
    if (!json_is_integer(isv) || !st)
      return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "collateral: QE identity TCB level");
    if (json_integer_value(isv) <= isvsvn) {
      *status = st;
      return 0;
    }
  }
  return sh_attest__fail(v->r, SH_ATTEST_TCB_UNSUPPORTED,
                         "QE ISVSVN %u below every QE identity level", isvsvn);
}
