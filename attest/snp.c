/* attest/snp.c — AMD SEV-SNP attestation reports (SEV-SNP Firmware ABI Specification,
 * #56860, Table "ATTESTATION_REPORT Structure"; versions 2, 3 and 5).
 *
 * Signed region: bytes 0x000-0x29F, ECDSA P-384 with SHA-384; the signature at 0x2A0 holds
 * R and S as 72-byte little-endian integers (only 48 significant: bytes 48-71 must be zero)
 * followed by 368 reserved zero bytes.  Key: VCEK (SIGNING_KEY 0) <- ASK <- ARK, or VLEK
 * (SIGNING_KEY 1) <- ASVK <- ARK, the ARK pinned by SHA-256 (Milan, Genoa, Turin).  The
 * VCEK/VLEK TCB extensions (OIDs 1.3.6.1.4.1.3704.1.3.x, AMD "Versioned Chip Endorsement Key"
 * spec #57230) must equal REPORTED_TCB in the product's TCB_VERSION layout, and hwID
 * (1.3.6.1.4.1.3704.1.4) must equal CHIP_ID unless MASK_CHIP_KEY is set.
 */
#include "internal.h"
#include "amd_certs.h"

#include <cbor.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <string.h>

/* Report offsets (ABI spec Table 23). */
#define R_VERSION 0x000
#define R_GUEST_SVN 0x004
#define R_POLICY 0x008
#define R_FAMILY_ID 0x010
#define R_IMAGE_ID 0x020
#define R_VMPL 0x030
#define R_SIG_ALGO 0x034
#define R_CURRENT_TCB 0x038
#define R_PLATFORM_INFO 0x040
#define R_KEY_INFO 0x048
#define R_REPORT_DATA 0x050
#define R_MEASUREMENT 0x090
#define R_HOST_DATA 0x0C0
#define R_ID_KEY_DIGEST 0x0E0
#define R_AUTHOR_KEY_DIGEST 0x110
#define R_REPORT_ID 0x140
#define R_REPORT_ID_MA 0x160
#define R_REPORTED_TCB 0x180
#define R_CPUID 0x188
#define R_CHIP_ID 0x1A0
#define R_COMMITTED_TCB 0x1E0
#define R_CURRENT_VER 0x1E8
#define R_COMMITTED_VER 0x1EC
#define R_LAUNCH_TCB 0x1F0
#define R_SIG 0x2A0

/* Guest policy bits (ABI spec Table 9). */
#define POL_SMT (1ull << 16)
#define POL_RESERVED_ONE (1ull << 17)
#define POL_MIGRATE_MA (1ull << 18)
#define POL_DEBUG (1ull << 19)
#define POL_SINGLE_SOCKET (1ull << 20)
#define POL_KNOWN_MASK ((1ull << 26) - 1)

enum { P_MILAN, P_GENOA, P_TURIN, P_N };

typedef struct product {
  const char *name;
  uint8_t ark_pin[32];
  const unsigned char *ark, *ask, *asvk;
  const unsigned int *ark_len, *ask_len, *asvk_len;
  uint8_t family, model; /* CPUID family/model of reports v3+ (0x188, 0x189) */
  int turin_layout;
} product;

static const product products[P_N] = {
    {"Milan",
     {0x69, 0xd0, 0x63, 0xb4, 0x53, 0x44, 0xd2, 0x6a, 0x2e, 0x94, 0xe1,
      0xf4, 0x21, 0x0d, 0xe4, 0x9e, 0xf5, 0x55, 0x30, 0x82, 0x87, 0xd4,
      0xc1, 0x74, 0x44, 0x5c, 0x95, 0x63, 0x9a, 0x54, 0x0b, 0xcd},
     sh_attest__amd_milan_ark,
     sh_attest__amd_milan_ask,
     sh_attest__amd_milan_asvk,
     &sh_attest__amd_milan_ark_len,
     &sh_attest__amd_milan_ask_len,
     &sh_attest__amd_milan_asvk_len,
     0x19,
     0x01,
     0},
    {"Genoa",
     {0x4c, 0x65, 0x98, 0xd1, 0x9c, 0x18, 0x71, 0x9c, 0x5d, 0xfd, 0x4a,
      0x7d, 0x33, 0x5f, 0x67, 0x4e, 0x5b, 0xfe, 0x1d, 0x8f, 0x80, 0x0c,
      0xea, 0x2c, 0xf2, 0x70, 0xc1, 0x0d, 0x10, 0x3d, 0xb2, 0xf1},
     sh_attest__amd_genoa_ark,
     sh_attest__amd_genoa_ask,
     sh_attest__amd_genoa_asvk,
     &sh_attest__amd_genoa_ark_len,
     &sh_attest__amd_genoa_ask_len,
     &sh_attest__amd_genoa_asvk_len,
     0x19,
     0x11,
     0},
    {"Turin",
     {0x1f, 0x08, 0x41, 0x61, 0xa4, 0x4b, 0xb6, 0xd9, 0x37, 0x78, 0xa9,
      0x04, 0x87, 0x7d, 0x48, 0x19, 0xca, 0xfa, 0x5d, 0x05, 0xef, 0x41,
      0x93, 0xb2, 0xde, 0xd9, 0xdd, 0x9c, 0x73, 0xdd, 0x3f, 0x6a},
     sh_attest__amd_turin_ark,
     sh_attest__amd_turin_ask,
     NULL,
     &sh_attest__amd_turin_ark_len,
     &sh_attest__amd_turin_ask_len,
     NULL,
     0x1A,
     0x02,
     1},
};

static uint32_t le32(const uint8_t *p) {
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) {
  return le32(p) | (uint64_t)le32(p + 4) << 32;
}

static int all_zero(const uint8_t *p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++)
    acc |= p[i];
  return acc == 0;
}

/* TCB_VERSION (ABI spec: Milan/Genoa "TCB_VERSION"; Turin adds FMC and moves fields). */
typedef struct tcb {
  uint8_t fmc, bl, tee, snp, ucode;
} tcb;
static tcb tcb_decode(const uint8_t *p, int turin) {
  tcb t;
  if (turin)
    t = (tcb){p[0], p[1], p[2], p[3], p[7]};
  else
    t = (tcb){0, p[0], p[1], p[6], p[7]};
  return t;
}

static json_t *tcb_json(const uint8_t *p, int turin) {
  tcb t = tcb_decode(p, turin);
  json_t *o =
      json_pack("{s:i, s:i, s:i, s:i}", "bl", t.bl, "tee", t.tee, "snp", t.snp, "ucode", t.ucode);
  if (o && turin) json_object_set_new(o, "fmc", json_integer(t.fmc));
  return o;
}

/* Structure checks: version, algorithm, key selection, every reserved field zero. */
static int check_structure(sh_vctx *v, const uint8_t *rp) {
  sh_attest_result *r = v->r;
  uint32_t ver = le32(rp + R_VERSION);
  if (ver != 2 && ver != 3 && ver != 5)
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "unsupported report version %u", ver);
  if (le32(rp + R_SIG_ALGO) != 1)
    return sh_attest__fail(r, SH_ATTEST_MALFORMED,
                           "signature algorithm is not ECDSA P-384/SHA-384");
  uint32_t ki = le32(rp + R_KEY_INFO);
  uint32_t sk = (ki >> 2) & 7;
  if ((ki >> 5) != 0 || sk > 1)
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "bad KEY_INFO (signing key %u)", sk);
  if (le32(rp + R_VMPL) > 3) return sh_attest__fail(r, SH_ATTEST_MALFORMED, "VMPL out of range");
  uint64_t pol = le64(rp + R_POLICY);
  if (!(pol & POL_RESERVED_ONE) || (pol & ~POL_KNOWN_MASK))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "guest policy reserved bits");
  /* reserved areas: 0x04C-0x04F, 0x188/0x18B-0x19F, 0x1EB, 0x1EF, 0x1F8/0x208-0x29F */
  size_t cpuid_end = ver >= 3 ? R_CPUID + 3 : R_CPUID;
  size_t tail = ver >= 5 ? 0x208 : 0x1F8;
  if (!all_zero(rp + 0x04C, 4) || !all_zero(rp + cpuid_end, R_CHIP_ID - cpuid_end) || rp[0x1EB] ||
      rp[0x1EF] || !all_zero(rp + tail, R_SIG - tail))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "reserved report bytes are not zero");
  if ((ki & 2) && !all_zero(rp + R_CHIP_ID, 64))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "MASK_CHIP_KEY set but CHIP_ID not zero");
  /* signature area: R[0:48] ‖ 0*24 ‖ S[0:48] ‖ 0*24 ‖ 0*368 */
  const uint8_t *s = rp + R_SIG;
  if (!all_zero(s + 48, 24) || !all_zero(s + 72 + 48, 24) || !all_zero(s + 144, 512 - 144))
    return sh_attest__fail(r, SH_ATTEST_MALFORMED, "signature area has non-zero reserved bytes");
  return 0;
}

static void fill_result(sh_vctx *v, const uint8_t *rp) {
  sh_attest_result *r = v->r;
  json_t *m = r->measurements, *c = r->claims;
  sh_attest__json_hex(m, "measurement", rp + R_MEASUREMENT, 48);
  sh_attest__json_hex(m, "host_data", rp + R_HOST_DATA, 32);
  sh_attest__json_hex(m, "id_key_digest", rp + R_ID_KEY_DIGEST, 48);
  sh_attest__json_hex(m, "report_data", rp + R_REPORT_DATA, 64);
  uint64_t pol = le64(rp + R_POLICY);
  uint32_t ki = le32(rp + R_KEY_INFO);
  json_object_set_new(c, "version", json_integer(le32(rp + R_VERSION)));
  json_object_set_new(c, "guest_svn", json_integer(le32(rp + R_GUEST_SVN)));
  json_object_set_new(c, "policy", json_integer((json_int_t)pol));
  json_object_set_new(c, "vmpl", json_integer(le32(rp + R_VMPL)));
  json_object_set_new(c, "signing_key", json_string(((ki >> 2) & 7) ? "vlek" : "vcek"));
  json_object_set_new(c, "mask_chip_key", json_boolean(ki & 2));
  json_object_set_new(c, "author_key_en", json_boolean(ki & 1));
  json_object_set_new(c, "debug", json_boolean(pol & POL_DEBUG));
  json_object_set_new(c, "migrate_ma", json_boolean(pol & POL_MIGRATE_MA));
  json_object_set_new(c, "smt", json_boolean(pol & POL_SMT));
  json_object_set_new(c, "single_socket", json_boolean(pol & POL_SINGLE_SOCKET));
  json_object_set_new(c, "platform_info", json_integer((json_int_t)le64(rp + R_PLATFORM_INFO)));
  sh_attest__json_hex(c, "family_id", rp + R_FAMILY_ID, 16);
  sh_attest__json_hex(c, "image_id", rp + R_IMAGE_ID, 16);
  sh_attest__json_hex(c, "author_key_digest", rp + R_AUTHOR_KEY_DIGEST, 48);
  sh_attest__json_hex(c, "report_id", rp + R_REPORT_ID, 32);
  sh_attest__json_hex(c, "report_id_ma", rp + R_REPORT_ID_MA, 32);
  sh_attest__json_hex(c, "chip_id", rp + R_CHIP_ID, 64);
  r->debug = (pol & POL_DEBUG) != 0;
  sh_attest__set_bytes(&r->user_data, &r->user_data_len, rp + R_REPORT_DATA, 64);
}

/* Integer value of a VCEK extension (an OCTET STRING wrapping a DER INTEGER). */
static int ext_int(X509 *x, const char *oid, int64_t *out) {
  ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
  int idx = o ? X509_get_ext_by_OBJ(x, o, -1) : -1;
  ASN1_OBJECT_free(o);
  if (idx < 0) return 0;
  ASN1_OCTET_STRING *d = X509_EXTENSION_get_data(X509_get_ext(x, idx));
  const unsigned char *p = ASN1_STRING_get0_data(d);
  ASN1_INTEGER *ai = d2i_ASN1_INTEGER(NULL, &p, ASN1_STRING_length(d));
  int ok = ai && p == ASN1_STRING_get0_data(d) + ASN1_STRING_length(d) &&
           ASN1_INTEGER_get_int64(out, ai) == 1;
  ASN1_INTEGER_free(ai);
  return ok ? 1 : -1;
}

static const ASN1_OCTET_STRING *ext_raw(X509 *x, const char *oid) {
  ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
  int idx = o ? X509_get_ext_by_OBJ(x, o, -1) : -1;
  ASN1_OBJECT_free(o);
  return idx < 0 ? NULL : X509_EXTENSION_get_data(X509_get_ext(x, idx));
}

/* VCEK/VLEK TCB extensions must equal REPORTED_TCB (0x180), byte for byte in the product's
 * layout; reserved TCB bytes map to the spl_4..spl_7 extensions when present. */
static int check_tcb_ext(sh_vctx *v, X509 *leaf, const uint8_t *rp, const product *pr, int vlek) {
  const uint8_t *t = rp + R_REPORTED_TCB;
  static const char *base = "1.3.6.1.4.1.3704.1.3.";
  /* byte index -> OID suffix (0: none), required? */
  static const int milan[8][2] = {{1, 1}, {2, 1}, {4, 0}, {5, 0}, {6, 0}, {7, 0}, {3, 1}, {8, 1}};
  static const int turin[8][2] = {{9, 1}, {1, 1}, {2, 1}, {3, 1}, {0, 0}, {0, 0}, {0, 0}, {8, 1}};
  const int(*map)[2] = pr->turin_layout ? turin : milan;
  char oid[40];
  for (int i = 0; i < 8; i++) {
    if (!map[i][0]) {
      if (t[i])
        return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "reserved REPORTED_TCB byte %d", i);
      continue;
    }
    snprintf(oid, sizeof oid, "%s%d", base, map[i][0]);
    int64_t val = 0;
    int got = ext_int(leaf, oid, &val);
    if (got < 0 || (got == 0 && map[i][1]))
      return sh_attest__fail(v->r, SH_ATTEST_CHAIN_INVALID, "%s: missing TCB extension %s",
                             vlek ? "VLEK" : "VCEK", oid);
    if (got == 0 ? t[i] != 0 : val != t[i])
      return sh_attest__fail(v->r, SH_ATTEST_CHAIN_INVALID,
                             "certificate TCB (%s) differs from REPORTED_TCB", oid);
  }
  if (vlek) return 0;
  /* hwID: 64 bytes (Milan, Genoa) or 8 bytes (Turin) of CHIP_ID. */
  uint32_t ki = le32(rp + R_KEY_INFO);
  if (ki & 2) return 0; /* MASK_CHIP_KEY: CHIP_ID is zero (checked) and not compared */
  const ASN1_OCTET_STRING *hw = ext_raw(leaf, "1.3.6.1.4.1.3704.1.4");
  size_t want = pr->turin_layout ? 8 : 64;
  if (!hw || (size_t)ASN1_STRING_length(hw) != want ||
      memcmp(ASN1_STRING_get0_data(hw), rp + R_CHIP_ID, want) ||
      !all_zero(rp + R_CHIP_ID + want, 64 - want))
    return sh_attest__fail(v->r, SH_ATTEST_CHAIN_INVALID, "VCEK hwID differs from CHIP_ID");
  return 0;
}

/* The embedded ARK/ASK/ASVK are parsed once per process (pthread_once) and shared read-only:
 * d2i_X509 of an RSA-4096 certificate costs ~150 µs in OpenSSL 3 (provider key decoding),
 * which made eight parses per report the largest cost of a fresh verification.  X509
 * objects are reference-counted and safe to share between threads once parsed; the table is
 * immutable after initialisation (no mutable global state). */
static X509 *embedded[P_N][3]; /* ark, ask, asvk */
static int embedded_ok;
static pthread_once_t embedded_once = PTHREAD_ONCE_INIT;

static void embedded_init(void) {
  int ok = 1;
  for (int p = 0; p < P_N; p++) {
    ok &=
        (embedded[p][0] = sh_attest__x509_from_der(products[p].ark, *products[p].ark_len)) != NULL;
    ok &=
        (embedded[p][1] = sh_attest__x509_from_der(products[p].ask, *products[p].ask_len)) != NULL;
    if (products[p].asvk)
      ok &= (embedded[p][2] = sh_attest__x509_from_der(products[p].asvk, *products[p].asvk_len)) !=
            NULL;
  }
  ERR_clear_error();
  embedded_ok = ok;
}

static int push_shared(STACK_OF(X509) * sk, X509 *x) {
  if (!x || !X509_up_ref(x)) return -1;
  if (!sk_X509_push(sk, x)) {
    X509_free(x);
    return -1;
  }
  return 0;
}

/* A boolean / integer claim the policy needs; absent means the result is not one of ours,
 * which the policy refuses (fail closed). */
static int claim_int(const sh_attest_result *r, const char *k, json_int_t *out) {
  json_t *x = json_object_get(r->claims, k);
  if (!json_is_integer(x)) return -1;
  *out = json_integer_value(x);
  return 0;
}

/* The "sev-snp" / "azure-snp" policy sections on the result: guest policy bits (claims
 * "policy", ABI Table 9), VMPL, measurement / host_data / id_key_digest allow-lists, guest SVN
 * and the REPORTED_TCB minimum (claims "reported_tcb"; "fmc" only in Turin's layout). */
int sh_attest__snp_policy(const sh_attest_policy *p, sh_attest_result *r, int allow_debug) {
  const sh_policy_tee *t = sh_attest__policy_for(p, r->tee);
  json_int_t pol, vmpl, svn;
  if (claim_int(r, "policy", &pol) < 0 || claim_int(r, "vmpl", &vmpl) < 0 ||
      claim_int(r, "guest_svn", &svn) < 0)
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED,
                           "the result lacks the SNP policy, VMPL or SVN");
  uint64_t bits = (uint64_t)pol;
  if ((bits & POL_DEBUG) && !sh_attest__allow_debug(p, t->allow_debug, allow_debug))
    return sh_attest__fail(r, SH_ATTEST_DEBUG_NOT_ALLOWED, "guest policy allows debugging");
  if ((bits & POL_MIGRATE_MA) && !t->allow_migrate_ma)
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "guest policy allows a migration agent");
  if ((bits & POL_SMT) && !t->allow_smt)
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "guest policy allows SMT");
  if (!(bits & POL_SINGLE_SOCKET) && t->require_single_socket)
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "guest policy is not single-socket");
  if (vmpl < 0 || (uint64_t)vmpl > t->max_vmpl)
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "VMPL %lld above the policy's %u",
                           (long long)vmpl, t->max_vmpl);
  if (!sh_attest__hexlist_allows_json(&t->measurement, r->measurements, "measurement"))
    return sh_attest__fail(r, SH_ATTEST_MEASUREMENT_MISMATCH, "measurement not allowed by policy");
  if (!sh_attest__hexlist_allows_json(&t->host_data, r->measurements, "host_data"))
    return sh_attest__fail(r, SH_ATTEST_MEASUREMENT_MISMATCH, "host_data not allowed by policy");
  if (!sh_attest__hexlist_allows_json(&t->id_key_digest, r->measurements, "id_key_digest"))
    return sh_attest__fail(r, SH_ATTEST_MEASUREMENT_MISMATCH,
                           "id_key_digest not allowed by policy");
  if (svn < t->min_guest_svn)
    return sh_attest__fail(r, SH_ATTEST_POLICY_DENIED, "guest SVN below the policy's minimum");
  if (t->has_min_tcb) {
    json_t *c = json_object_get(r->claims, "reported_tcb"), *fmc = json_object_get(c, "fmc");
    json_t *f[4] = {json_object_get(c, "bl"), json_object_get(c, "tee"), json_object_get(c, "snp"),
                    json_object_get(c, "ucode")};
    const uint8_t min[4] = {t->min_tcb_bl, t->min_tcb_tee, t->min_tcb_snp, t->min_tcb_ucode};
    int low = fmc && json_integer_value(fmc) < t->min_tcb_fmc;
    for (int i = 0; i < 4; i++)
      low |= !json_is_integer(f[i]) || json_integer_value(f[i]) < min[i];
    if (low)
      return sh_attest__fail(r, SH_ATTEST_TCB_OUT_OF_DATE,
                             "REPORTED_TCB below the policy's minimum");
  }
  return 0;
}

int sh_attest__snp_check_structure(sh_vctx *v, const uint8_t *rp) {
  if (check_structure(v, rp) < 0) return -1;
  fill_result(v, rp);
  return 0;
}

/* After structure (and the caller's binding check): root, signatures, TCB, policy. */
int sh_attest__snp_verify_report(sh_vctx *v, const uint8_t *rp, STACK_OF(X509) * given) {
  sh_attest_result *r = v->r;
  STACK_OF(X509) *anchors = sk_X509_new_null(), *untrusted = sk_X509_new_null(), *chain = NULL;
  EVP_MD_CTX *md = NULL;
  uint8_t *der = NULL;
  size_t der_len = 0;
  X509 *leaf = NULL;
  int rc = -1, vlek = ((le32(rp + R_KEY_INFO) >> 2) & 7) == 1;
  if (!anchors || !untrusted) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "out of memory");
    goto fail;
  }
  /* root fingerprint first: a self-signed certificate given to us must be a pinned ARK */
  for (int i = 0; i < sk_X509_num(given); i++) {
    X509 *x = sk_X509_value(given, i);
    if (X509_check_issued(x, x) == X509_V_OK) {
      int pinned = 0;
      for (int p = 0; p < P_N && !pinned; p++)
        pinned = sh_attest__x509_is_pinned(x, (const uint8_t(*)[32])products[p].ark_pin, 1);
      if (!pinned && !sh_attest__x509_is_extra_root(x, v->o)) {
        sh_attest__fail(r, SH_ATTEST_ROOT_UNTRUSTED, "ARK is not a pinned AMD root");
        goto fail;
      }
      continue;
    }
    if (X509_check_ca(x) == 0) {
      if (leaf && !X509_cmp(leaf, x)) continue; /* the same VCEK given twice (bundle and --cert) */
      if (leaf) {
        sh_attest__fail(r, SH_ATTEST_CHAIN_INVALID, "more than one VCEK/VLEK given");
        goto fail;
      }
      leaf = x;
    } else if (!X509_up_ref(x) || !sk_X509_push(untrusted, x)) {
      goto fail;
    }
  }
  if (!leaf) {
    sh_attest__fail(r, SH_ATTEST_COLLATERAL_MISSING, "no %s certificate given",
                    vlek ? "VLEK" : "VCEK");
    goto fail;
  }
  if (pthread_once(&embedded_once, embedded_init) != 0 || !embedded_ok) {
    sh_attest__fail(r, SH_ATTEST_MALFORMED, "embedded AMD certificate");
    goto fail;
  }
  for (int p = 0; p < P_N; p++) {
    if (push_shared(anchors, embedded[p][0]) < 0 || push_shared(untrusted, embedded[p][1]) < 0 ||
        (products[p].asvk && push_shared(untrusted, embedded[p][2]) < 0)) {
      sh_attest__fail(r, SH_ATTEST_MALFORMED, "embedded AMD certificate");
      goto fail;
    }
  }
  if (v->o->nextra_roots) {
    STACK_OF(X509) *extra = sh_attest__x509_parse_many(v->o->extra_roots, v->o->nextra_roots);
    while (extra && sk_X509_num(extra))
      sk_X509_push(anchors, sk_X509_shift(extra));
    sk_X509_pop_free(extra, X509_free);
  }
  /* the report signature (cheapest failure for a tampered report) */
  EVP_PKEY *pk = X509_get0_pubkey(leaf);
  if (!sh_attest__is_p384(pk)) {
    sh_attest__fail(r, SH_ATTEST_CHAIN_INVALID, "VCEK/VLEK key is not P-384");
    goto fail;
  }
  if (sh_attest__ecdsa_raw_to_der(rp + R_SIG, rp + R_SIG + 72, 48, 1, &der, &der_len) < 0 ||
      !(md = EVP_MD_CTX_new()) || EVP_DigestVerifyInit(md, NULL, EVP_sha384(), NULL, pk) != 1 ||
      EVP_DigestVerify(md, der, der_len, rp, SH_SNP_SIGNED_LEN) != 1) {
    sh_attest__fail(r, SH_ATTEST_SIGNATURE_INVALID, "report signature does not verify");
    goto fail;
  }
  /* the embedded ASK/ASVK of every product are offered: the chain uses one of them */
  static const sh_x509_check offered = {NULL, 0, 1};
  if (sh_attest__x509_verify_chain(v, leaf, untrusted, anchors, &offered, &chain) < 0) goto fail;
  /* the product comes from the anchor that verified the chain, never from the report */
  X509 *top = sk_X509_value(chain, sk_X509_num(chain) - 1);
  const product *pr = NULL;
  for (int p = 0; p < P_N && !pr; p++)
    if (sh_attest__x509_is_pinned(top, (const uint8_t(*)[32])products[p].ark_pin, 1))
      pr = &products[p];
  if (!pr) { /* an explicit extra root (tests): product from CPUID, Milan layout for v2 */
    for (int p = 0; p < P_N && !pr; p++)
      if (rp[R_CPUID] == products[p].family && rp[R_CPUID + 1] == products[p].model)
        pr = &products[p];
    if (!pr) pr = &products[P_MILAN];
  }
  if (le32(rp + R_VERSION) >= 3 && (rp[R_CPUID] != pr->family || rp[R_CPUID + 1] != pr->model)) {
    sh_attest__fail(r, SH_ATTEST_CHAIN_INVALID, "report CPUID is not a %s processor", pr->name);
    goto fail;
  }
  /* key role: a VLEK must chain through an ASVK and carry no hwID, a VCEK the opposite */
  int leaf_is_vlek = ext_raw(leaf, "1.3.6.1.4.1.3704.1.5") != NULL;
  if (leaf_is_vlek != vlek) {
    sh_attest__fail(r, SH_ATTEST_CHAIN_INVALID, "report names a %s but the key is a %s",
                    vlek ? "VLEK" : "VCEK", leaf_is_vlek ? "VLEK" : "VCEK");
    goto fail;
  }
  if (check_tcb_ext(v, leaf, rp, pr, vlek) < 0) goto fail;
  json_object_set_new(r->claims, "product", json_string(pr->name));
  json_object_set_new(r->claims, "reported_tcb", tcb_json(rp + R_REPORTED_TCB, pr->turin_layout));
  json_object_set_new(r->claims, "current_tcb", tcb_json(rp + R_CURRENT_TCB, pr->turin_layout));
  json_object_set_new(r->claims, "committed_tcb", tcb_json(rp + R_COMMITTED_TCB, pr->turin_layout));
  json_object_set_new(r->claims, "launch_tcb", tcb_json(rp + R_LAUNCH_TCB, pr->turin_layout));
  if (sh_attest__snp_policy(v->policy, r, v->o->allow_debug) < 0) goto fail;
  rc = 0;
fail:
  OPENSSL_free(der);
  EVP_MD_CTX_free(md);
  sk_X509_pop_free(chain, X509_free);
  sk_X509_pop_free(untrusted, X509_free);
  sk_X509_pop_free(anchors, X509_free);
  ERR_clear_error();
  return rc;
}

/* REPORT_DATA = D(n, k) (docs/protocol.md §1.2) when a nonce is presented. */
static int check_binding(sh_vctx *v, const uint8_t *rp) {
  const sh_attest_options *o = v->o;
  if (!o->nonce) return 0;
  uint8_t D[64];
  if (sh_attest__binding_of(o, D) < 0 || CRYPTO_memcmp(rp + R_REPORT_DATA, D, 64))
    return sh_attest__fail(v->r, SH_ATTEST_BINDING_MISMATCH,
                           "REPORT_DATA is not the binding digest");
  return 0;
}

static int bstr_value(const cbor_item_t *it, sh_iovec *out) {
  if (!cbor_isa_bytestring(it) || !cbor_bytestring_is_definite(it)) return -1;
  out->ptr = cbor_bytestring_handle(it);
  out->len = cbor_bytestring_length(it);
  return 0;
}

/* CBOR bundle {"report": bstr, "certs": {"vcek"|"vlek": DER, "ask"|"asvk": DER, "ark": DER}}
 * (docs/protocol.md §1.5).  Strict: known keys only, each once. */
static int parse_bundle(sh_vctx *v, const uint8_t *ev, size_t len, cbor_item_t **item,
                        sh_iovec *report, STACK_OF(X509) * certs) {
  sh_cbor_top top;
  struct cbor_load_result res;
  if (len > SH_BUNDLE_MAX_EVIDENCE || sh_attest__cbor_scan(ev, len, &top) < 0 || top.tagged ||
      !(*item = cbor_load(ev, len, &res)) || res.read != len || !cbor_isa_map(*item))
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "not a 1184-byte report or a CBOR bundle");
  struct cbor_pair *p = cbor_map_handle(*item);
  int have_report = 0, have_certs = 0;
  for (size_t i = 0; i < cbor_map_size(*item); i++) {
    const cbor_item_t *k = p[i].key;
    if (!cbor_isa_string(k) || !cbor_string_is_definite(k))
      return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "bundle: non-text key");
    size_t kl = cbor_string_length(k);
    const char *ks = (const char *)cbor_string_handle(k);
    if (kl == 6 && !memcmp(ks, "report", 6) && !have_report++) {
      if (bstr_value(p[i].value, report) < 0)
        return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "bundle: report is not bytes");
    } else if (kl == 5 && !memcmp(ks, "certs", 5) && !have_certs++ && cbor_isa_map(p[i].value)) {
      struct cbor_pair *c = cbor_map_handle(p[i].value);
      static const char *const names[] = {"vcek", "vlek", "ask", "asvk", "ark"};
      int seen[5] = {0};
      for (size_t j = 0; j < cbor_map_size(p[i].value); j++) {
        sh_iovec der;
        int n = -1;
        for (int q = 0; q < 5 && n < 0; q++)
          if (cbor_isa_string(c[j].key) && cbor_string_is_definite(c[j].key) &&
              cbor_string_length(c[j].key) == strlen(names[q]) &&
              !memcmp(cbor_string_handle(c[j].key), names[q], strlen(names[q])))
            n = q;
        if (n < 0 || seen[n]++ || bstr_value(c[j].value, &der) < 0 ||
            sh_attest__x509_add_blob(certs, der.ptr, der.len) < 0)
          return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "bundle: bad certs entry");
      }
    } else {
      return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "bundle: unknown or duplicate key");
    }
  }
  if (!have_report || report->len != SH_SNP_REPORT_SIZE)
    return sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "bundle: report missing or not 1184 bytes");
  return 0;
}

int sh_attest__snp_signed_content(const uint8_t *ev, size_t len, EVP_MD_CTX *md, sh_iovec *sig) {
  const uint8_t *rp = ev;
  cbor_item_t *item = NULL;
  if (len != SH_SNP_REPORT_SIZE) {
    /* bundle: find "report" the cheap way (strict parsing happens in verify) */
    sh_cbor_top top;
    struct cbor_load_result res;
    if (len > SH_BUNDLE_MAX_EVIDENCE || sh_attest__cbor_scan(ev, len, &top) < 0 ||
        !(item = cbor_load(ev, len, &res)) || !cbor_isa_map(item))
      goto fail;
    rp = NULL;
    struct cbor_pair *p = cbor_map_handle(item);
    for (size_t i = 0; i < cbor_map_size(item); i++)
      if (cbor_isa_string(p[i].key) && cbor_string_length(p[i].key) == 6 &&
          !memcmp(cbor_string_handle(p[i].key), "report", 6) && cbor_isa_bytestring(p[i].value) &&
          cbor_bytestring_length(p[i].value) == SH_SNP_REPORT_SIZE)
        rp = cbor_bytestring_handle(p[i].value);
    if (!rp) goto fail;
  }
  if (!EVP_DigestUpdate(md, rp, SH_SNP_SIGNED_LEN)) goto fail;
  /* The key covers the whole signature area.  `sig` must point into ev (the caller keeps it
   * after this returns), never into libcbor's decoded copy, which dies with `item` below: a
   * definite byte string's content appears verbatim in its encoding, so find it there. */
  if (item && !(rp = memmem(ev, len, rp, SH_SNP_REPORT_SIZE))) goto fail;
  sig->ptr = rp + R_SIG;
  sig->len = SH_SNP_REPORT_SIZE - R_SIG;
  if (item) cbor_decref(&item);
  return 0;
fail:
  if (item) cbor_decref(&item);
  return -1;
}

int sh_attest__snp_verify(sh_vctx *v, const uint8_t *ev, size_t len) {
  cbor_item_t *item = NULL;
  sh_iovec report = {.ptr = ev, .len = len};
  STACK_OF(X509) *certs = sk_X509_new_null();
  int rc = -1;
  if (!certs) {
    sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "out of memory");
    goto fail;
  }
  if (len != SH_SNP_REPORT_SIZE && parse_bundle(v, ev, len, &item, &report, certs) < 0) goto fail;
  if (v->o->ncerts) {
    for (size_t i = 0; i < v->o->ncerts; i++)
      if (sh_attest__x509_add_blob(certs, v->o->certs[i].ptr, v->o->certs[i].len) < 0) {
        sh_attest__fail(v->r, SH_ATTEST_MALFORMED, "a given certificate cannot be parsed");
        goto fail;
      }
  }
  if (sh_attest__snp_check_structure(v, report.ptr) < 0 || check_binding(v, report.ptr) < 0 ||
      sh_attest__snp_verify_report(v, report.ptr, certs) < 0)
    goto fail;
  rc = 0;
fail:
  sk_X509_pop_free(certs, X509_free);
  if (item) cbor_decref(&item);
  return rc;
}
