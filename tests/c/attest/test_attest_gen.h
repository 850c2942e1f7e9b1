/* tests/c/attest/test_attest_gen.h — included by test_attest.c only: policy and cache tests on the
 * real vectors, and a test CA (OpenSSL) with generators of Nitro COSE documents (libcbor) and
 * SNP reports for the negative cases the vectors lack.  Nothing here is trusted by default:
 * the generated roots are passed explicitly through sh_attest_options.extra_roots. */

static void test_policy_and_cache(void) {
  size_t len;
  uint8_t *d = load_nitro("nitro/valid-attestation-doc-bytes", &len);
  if (!d) return;
  int64_t at = T("2022-10-13T08:58:02Z");
  char eb[256];
  sh_attest_policy *p = NULL;
  /* allow-list on PCR0: the right value passes, another fails */
  const char *good =
      "{\"version\":1,\"nitro\":{\"pcrs\":{\"0\":["
      "\"f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150"
      "142d8b\"]}}}";
  CHECK(sh_attest_policy_load(good, strlen(good), &p, eb, sizeof eb) == 0, "%s", eb);
  sh_attest_options o = {.at = at, .policy = p};
  sh_attest_result *r = NULL;
  CHECK(run(d, len, SH_TEE_NITRO, &o, &r) == SH_ATTEST_OK, "pcr0 allowed");
  uint8_t sha[32];
  EVP_Digest(good, strlen(good), sha, NULL, EVP_sha256(), NULL);
  CHECK(r && !memcmp(r->policy_sha256, sha, 32), "policy_sha256");
  sh_attest_result_free(r);
  sh_attest_policy_free(p);
  const char *bad =
      "{\"nitro\":{\"pcrs\":{\"8\":"
      "\"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
      "000000\"}}}";
  CHECK(sh_attest_policy_load(bad, strlen(bad), &p, eb, sizeof eb) == 0, "%s", eb);
  o.policy = p;
  CHECK(run(d, len, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_MEASUREMENT_MISMATCH, "pcr8 mismatch");
  sh_attest_policy_free(p);
  /* timestamp freshness */
  const char *fresh = "{\"freshness\":\"timestamp\",\"max_age\":300}";
  sh_attest_policy_load(fresh, strlen(fresh), &p, eb, sizeof eb);
  o.policy = p;
  o.at = at + 200;
  CHECK(run(d, len, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_OK, "fresh");
  o.at = at + 400;
  CHECK(run(d, len, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_EXPIRED, "too old");
  /* cache: hit, same verdict, tagged hits the same entry, expiry by max_age */
  sh_attest_cache *c = sh_attest_cache_new(64);
  o.cache = c;
  o.at = at;
  CHECK(run(d, len, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_OK, "cache fill");
  CHECK(sh_attest_cache_size(c) == 1, "cache size");
  r = NULL;
  CHECK(run(d, len, SH_TEE_NITRO, &o, &r) == SH_ATTEST_OK && r->cache_hit, "cache hit");
  CHECK(r && json_object_get(r->measurements, "PCR0") && r->raw_evidence_len == len, "hit fields");
  sh_attest_result_free(r);
  uint8_t *t = malloc(len + 1);
  t[0] = 0xD2;
  memcpy(t + 1, d, len);
  r = NULL;
  CHECK(run(t, len + 1, SH_TEE_NITRO, &o, &r) == SH_ATTEST_OK && r->cache_hit, "tagged hit");
  sh_attest_result_free(r);
  free(t);
  o.at = at + 400; /* past max_age: the entry no longer applies */
  r = NULL;
  CHECK(run(d, len, SH_TEE_NITRO, &o, &r) == SH_ATTEST_EXPIRED && !r->cache_hit, "cache expiry");
  sh_attest_result_free(r);
  o.at = NOW; /* past the certificates: expired, never a hit */
  CHECK(run(d, len, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_EXPIRED, "cache cert expiry");
  /* a different nonce is a different key */
  o.at = at;
  o.nonce = (const uint8_t *)"x";
  o.nonce_len = 1;
  CHECK(run(d, len, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_BINDING_MISMATCH, "cache nonce");
  o.nonce = NULL;
  o.nonce_len = 0;
  /* a signature mutation with the same content must not hit */
  d[len - 1] ^= 1;
  CHECK(run(d, len, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_SIGNATURE_INVALID, "cache sig");
  d[len - 1] ^= 1;
  /* bounded */
  sh_attest_cache *small = sh_attest_cache_new(4);
  o.cache = small;
  for (int i = 0; i < 20; i++) {
    o.nonce = (const uint8_t *)&i; /* distinct keys; all mismatch -> not cached */
    o.nonce_len = 0;
    o.nonce = NULL;
    o.at = at + i;
    run(d, len, SH_TEE_NITRO, &o, NULL);
  }
  CHECK(sh_attest_cache_size(small) <= 4, "bounded");
  sh_attest_cache_free(small);
  sh_attest_cache_free(c);
  sh_attest_policy_free(p);
  /* policy parsing: unknown keys, bad hex, freshness none */
  const char *bads[] = {"{\"allow_debgu\":true}",
                        "{\"nitro\":{\"pcrs\":{\"0\":\"zz\"}}}",
                        "{\"freshness\":\"none\"}",
                        "[1]",
                        "{\"sev-snp\":{\"max_vmpl\":7}}",
                        "{\"nitro\":{\"measurement\":[]}}",
                        "{\"a\":1,\"a\":2}"};
  for (size_t i = 0; i < sizeof bads / sizeof *bads; i++) {
    p = NULL;
    CHECK(sh_attest_policy_load(bads[i], strlen(bads[i]), &p, eb, sizeof eb) < 0 && !p, "policy %s",
          bads[i]);
  }
  const char *unf = "{\"freshness\":\"none\",\"allow_unfresh\":true}";
  CHECK(sh_attest_policy_load(unf, strlen(unf), &p, eb, sizeof eb) == 0, "allow_unfresh");
  sh_attest_policy_free(p);
  free(d);
  /* SNP policy: measurement, host_data, min TCB, VMPL, guest SVN, SMT, single socket */
  size_t rl, cl;
  uint8_t *rep = slurp("sev-snp/test-report.bin", &rl), *cert = slurp("sev-snp/test-vcek.der", &cl);
  if (rep && cert) {
    sh_iovec certs[1] = {{.ptr = cert, .len = cl}};
    const struct {
      const char *pol;
      sh_attest_reason want;
    } cases[] = {
        {"{\"sev-snp\":{\"measurement\":\"a1f3930413247bb3"
         "00000000000000000000000000000000000000000000000000000000000000000000000000000000\"}}",
         SH_ATTEST_MEASUREMENT_MISMATCH},
        {"{\"sev-snp\":{\"min_tcb\":{\"ucode\":200}}}", SH_ATTEST_TCB_OUT_OF_DATE},
        {"{\"sev-snp\":{\"min_tcb\":{\"ucode\":115,\"bl\":3}}}", SH_ATTEST_OK},
        {"{\"sev-snp\":{\"min_guest_svn\":5}}", SH_ATTEST_POLICY_DENIED},
        {"{\"sev-snp\":{\"min_guest_svn\":4}}", SH_ATTEST_OK},
        {"{\"sev-snp\":{\"allow_smt\":false}}", SH_ATTEST_POLICY_DENIED},
        {"{\"sev-snp\":{\"require_single_socket\":true}}", SH_ATTEST_POLICY_DENIED},
        {"{\"sev-snp\":{\"host_data\":"
         "\"0000000000000000000000000000000000000000000000000000000000000001\"}}",
         SH_ATTEST_MEASUREMENT_MISMATCH},
        {"{\"azure-snp\":{\"max_vmpl\":0}}", SH_ATTEST_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
      p = NULL;
      int lr = sh_attest_policy_load(cases[i].pol, strlen(cases[i].pol), &p, eb, sizeof eb);
      CHECK(lr == 0, "load %s: %s", cases[i].pol, eb);
      sh_attest_options so = {.at = NOW, .certs = certs, .ncerts = 1, .policy = p};
      sh_attest_reason rs = run(rep, rl, SH_TEE_SEV_SNP, &so, NULL);
      CHECK(rs == cases[i].want, "snp policy %s: %s", cases[i].pol, RN(rs));
      sh_attest_policy_free(p);
    }
    /* the VLEK report is VMPL 1 */
    size_t vl, kl, al;
    uint8_t *vr = slurp("sev-snp/test-vlek-report.bin", &vl),
            *vk = slurp("sev-snp/test-vlek.der", &kl);
    uint8_t *asvk = slurp("roots/amd-milan-asvk-ark.pem", &al);
    const char *v0 = "{\"sev-snp\":{\"max_vmpl\":0}}";
    sh_attest_policy_load(v0, strlen(v0), &p, eb, sizeof eb);
    sh_iovec vc[2] = {{.ptr = vk, .len = kl}, {.ptr = asvk, .len = al}};
    sh_attest_options so = {.at = T("2025-06-01T00:00:00Z"), .certs = vc, .ncerts = 2, .policy = p};
    CHECK(run(vr, vl, SH_TEE_SEV_SNP, &so, NULL) == SH_ATTEST_POLICY_DENIED, "vmpl");
    /* a VCEK given for a VLEK report: wrong key */
    sh_iovec wrong[1] = {{.ptr = cert, .len = cl}};
    so.certs = wrong;
    so.ncerts = 1;
    so.policy = NULL;
    CHECK(run(vr, vl, SH_TEE_SEV_SNP, &so, NULL) == SH_ATTEST_SIGNATURE_INVALID, "vcek for vlek");
    sh_attest_policy_free(p);
    free(vr);
    free(vk);
    free(asvk);
    /* SNP cache: hit, and the same content in a bundle hits too */
    sh_attest_cache *sc = sh_attest_cache_new(16);
    sh_attest_options co = {.at = NOW, .certs = certs, .ncerts = 1, .cache = sc};
    run(rep, rl, SH_TEE_SEV_SNP, &co, NULL);
    r = NULL;
    CHECK(run(rep, rl, SH_TEE_SEV_SNP, &co, &r) == SH_ATTEST_OK && r->cache_hit, "snp hit");
    sh_attest_result_free(r);
    co.at = T("2031-01-01T00:00:00Z"); /* after the VCEK expiry: no hit */
    r = NULL;
    CHECK(run(rep, rl, SH_TEE_SEV_SNP, &co, &r) == SH_ATTEST_EXPIRED && !r->cache_hit,
          "snp expiry");
    sh_attest_result_free(r);
    sh_attest_cache_free(sc);
  }
  free(rep);
  free(cert);
}

/* ---------------- test CA ---------------- */
static EVP_PKEY *p384(void) {
  return EVP_EC_gen("P-384");
}

typedef struct certopt {
  const char *cn;
  int ca;         /* basicConstraints CA:TRUE */
  const char *ku; /* keyUsage value or NULL for none */
  int64_t nb, na;
} certopt;

static void add_raw_ext(X509 *x, const char *oid, const uint8_t *der, int len) {
  ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
  ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
  ASN1_OCTET_STRING_set(os, der, len);
  X509_EXTENSION *e = X509_EXTENSION_create_by_OBJ(NULL, o, 0, os);
  X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
  ASN1_OCTET_STRING_free(os);
  ASN1_OBJECT_free(o);
}

static void add_int_ext(X509 *x, const char *oid, long v) {
  ASN1_INTEGER *ai = ASN1_INTEGER_new();
  ASN1_INTEGER_set(ai, v);
  unsigned char *der = NULL;
  int l = i2d_ASN1_INTEGER(ai, &der);
  add_raw_ext(x, oid, der, l);
  OPENSSL_free(der);
  ASN1_INTEGER_free(ai);
}

static long serial = 1;
static X509 *mkcert(const certopt *c, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                    void (*extra)(X509 *, void *), void *arg) {
  X509 *x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_NAME *n = X509_NAME_new();
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)c->cn, -1, -1, 0);
  X509_set_subject_name(x, n);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
  X509_NAME_free(n);
  ASN1_TIME *t = ASN1_TIME_set(NULL, (time_t)c->nb);
  X509_set1_notBefore(x, t);
  ASN1_TIME_set(t, (time_t)c->na);
  X509_set1_notAfter(x, t);
  ASN1_TIME_free(t);
  X509_set_pubkey(x, key);
  if (c->ca) add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE");
  if (c->ku) add_ext(x, issuer, NID_key_usage, c->ku);
  add_ext(x, issuer, NID_subject_key_identifier, "hash");
  if (issuer) add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
  if (extra) extra(x, arg);
  X509_sign(x, issuer_key ? issuer_key : key, EVP_sha384());
  return x;
}

static uint8_t *der_of(X509 *x, size_t *len) {
  unsigned char *d = NULL;
  int l = i2d_X509(x, &d);
  *len = (size_t)l;
  return d;
}

/* raw r‖s of a P-384 ECDSA signature over msg; high_s: use n - s (also valid) */
static void sign_raw(EVP_PKEY *k, const uint8_t *msg, size_t len, uint8_t r[48], uint8_t s[48],
                     int high_s, int little_endian72, uint8_t *le_out) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  size_t sl = 0;
  EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, k);
  EVP_DigestSign(md, NULL, &sl, msg, len);
  unsigned char *sig = malloc(sl);
  EVP_DigestSign(md, sig, &sl, msg, len);
  const unsigned char *p = sig;
  ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sl);
  const BIGNUM *br, *bs;
  ECDSA_SIG_get0(es, &br, &bs);
  BIGNUM *s2 = BN_dup(bs);
  if (high_s) {
    EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_secp384r1);
    BN_sub(s2, EC_GROUP_get0_order(g), bs);
    EC_GROUP_free(g);
  }
  if (little_endian72) {
    BN_bn2lebinpad(br, le_out, 72);
    BN_bn2lebinpad(s2, le_out + 72, 72);
  } else {
    BN_bn2binpad(br, r, 48);
    BN_bn2binpad(s2, s, 48);
  }
  BN_free(s2);
  ECDSA_SIG_free(es);
  free(sig);
  EVP_MD_CTX_free(md);
}

/* ---- Nitro generator ---- */
typedef struct ngen {
  X509 *leaf, *inter, *root;
  EVP_PKEY *leaf_key;
  int alg; /* COSE alg, -35 normally */
  int dup_key, unknown_key, null_optional, indefinite, tagged, high_s, sig_len;
  int64_t ts_ms;
  const uint8_t *nonce, *user_data;
  size_t nonce_len, user_data_len;
} ngen;

static cbor_item_t *bs(const void *p, size_t n) {
  return cbor_build_bytestring(p, n);
}
static struct cbor_pair kv(const char *k, cbor_item_t *v) {
  return (struct cbor_pair){cbor_move(cbor_build_string(k)), cbor_move(v)};
}

static uint8_t *gen_nitro(const ngen *g, size_t *out_len) {
  size_t n = 9 + (g->dup_key ? 1 : 0) + (g->unknown_key ? 1 : 0);
  cbor_item_t *m = g->indefinite ? cbor_new_indefinite_map() : cbor_new_definite_map(n);
  cbor_map_add(m, kv("module_id", cbor_build_string("i-test-enc0000")));
  cbor_map_add(m, kv("digest", cbor_build_string("SHA384")));
  cbor_map_add(m, kv("timestamp", cbor_build_uint64((uint64_t)g->ts_ms)));
  cbor_item_t *pcrs = cbor_new_definite_map(3);
  uint8_t pcr[48];
  for (int i = 0; i < 3; i++) {
    memset(pcr, 0x11 * (i + 1), 48);
    cbor_map_add(
        pcrs, (struct cbor_pair){cbor_move(cbor_build_uint8((uint8_t)i)), cbor_move(bs(pcr, 48))});
  }
  cbor_map_add(m, kv("pcrs", pcrs));
  size_t l;
  uint8_t *d = der_of(g->leaf, &l);
  cbor_map_add(m, kv("certificate", bs(d, l)));
  OPENSSL_free(d);
  cbor_item_t *cab = cbor_new_definite_array(2);
  d = der_of(g->root, &l);
  cbor_array_push(cab, cbor_move(bs(d, l)));
  OPENSSL_free(d);
  d = der_of(g->inter, &l);
  cbor_array_push(cab, cbor_move(bs(d, l)));
  OPENSSL_free(d);
  cbor_map_add(m, kv("cabundle", cab));
  cbor_map_add(m, kv("public_key", g->null_optional ? cbor_new_null() : bs("pk", 2)));
  cbor_map_add(m, kv("user_data", g->user_data       ? bs(g->user_data, g->user_data_len)
                                  : g->null_optional ? cbor_new_null()
                                                     : bs("ud", 2)));
  cbor_map_add(m, kv("nonce", g->nonce ? bs(g->nonce, g->nonce_len) : cbor_new_null()));
  if (g->dup_key) cbor_map_add(m, kv("digest", cbor_build_string("SHA384")));
  if (g->unknown_key) cbor_map_add(m, kv("extra", cbor_build_uint8(1)));
  unsigned char *payload = NULL;
  size_t psz = 0, plen = cbor_serialize_alloc(m, &payload, &psz);
  cbor_decref(&m);
  /* protected header {1: alg} */
  cbor_item_t *ph = cbor_new_definite_map(1);
  cbor_map_add(ph,
               (struct cbor_pair){cbor_move(cbor_build_uint8(1)),
                                  cbor_move(g->alg < 0 ? cbor_build_negint8((uint8_t)(-1 - g->alg))
                                                       : cbor_build_uint8((uint8_t)g->alg))});
  unsigned char *prot = NULL;
  size_t prsz = 0, prlen = cbor_serialize_alloc(ph, &prot, &prsz);
  cbor_decref(&ph);
  /* Sig_structure */
  cbor_item_t *ss = cbor_new_definite_array(4);
  cbor_array_push(ss, cbor_move(cbor_build_string("Signature1")));
  cbor_array_push(ss, cbor_move(bs(prot, prlen)));
  cbor_array_push(ss, cbor_move(bs("", 0)));
  cbor_array_push(ss, cbor_move(bs(payload, plen)));
  unsigned char *tbs = NULL;
  size_t tsz = 0, tlen = cbor_serialize_alloc(ss, &tbs, &tsz);
  cbor_decref(&ss);
  uint8_t sig[97];
  sign_raw(g->leaf_key, tbs, tlen, sig, sig + 48, g->high_s, 0, NULL);
  sig[96] = 0;
  cbor_item_t *cose = cbor_new_definite_array(4);
  cbor_array_push(cose, cbor_move(bs(prot, prlen)));
  cbor_array_push(cose, cbor_move(cbor_new_definite_map(0)));
  cbor_array_push(cose, cbor_move(bs(payload, plen)));
  cbor_array_push(cose, cbor_move(bs(sig, g->sig_len ? (size_t)g->sig_len : 96)));
  cbor_item_t *top = g->tagged ? cbor_build_tag(18, cose) : cbor_incref(cose);
  cbor_decref(&cose);
  unsigned char *out = NULL;
  size_t osz = 0;
  *out_len = cbor_serialize_alloc(top, &out, &osz);
  cbor_decref(&top);
  free(payload);
  free(prot);
  free(tbs);
  return out;
}

static sh_attest_reason nitro_case(ngen g, int64_t at, int trust, const uint8_t *nonce, size_t nl,
                                   const uint8_t *pk, size_t pkl) {
  size_t len;
  uint8_t *ev = gen_nitro(&g, &len);
  size_t rl;
  uint8_t *rd = der_of(g.root, &rl);
  sh_iovec roots[1] = {{.ptr = rd, .len = rl}};
  sh_attest_options o = {
      .at = at, .nonce = nonce, .nonce_len = nl, .public_key = pk, .public_key_len = pkl};
  if (trust) {
    o.extra_roots = roots;
    o.nextra_roots = 1;
  }
  sh_attest_reason rs = run(ev, len, SH_TEE_NITRO, &o, NULL);
  free(ev);
  OPENSSL_free(rd);
  return rs;
}

/* ---- SNP generator ---- */
typedef struct sgen {
  int version, turin, debug, bad_tcb_ext, bad_hwid, r_ext_nonzero, reserved_nonzero;
  uint8_t report_data[64];
  /* hcl > 0: the report inside an Azure HCL report of that header version (azure-snp), its
   * runtime JSON's user-data the hex (upper case when `upper`) of user_data, REPORT_DATA =
   * SHA-256(runtime) ‖ 0; hcl_type: the IGVM report type (0: 2, SNP) */
  int hcl, hcl_type, upper;
  uint8_t user_data[64];
} sgen;

typedef struct vcek_arg {
  const uint8_t *tcb;
  int turin;
  const uint8_t *chip;
  int bad_tcb, bad_hwid;
} vcek_arg;
static void vcek_exts(X509 *x, void *a) {
  vcek_arg *v = a;
  const uint8_t *t = v->tcb;
  if (v->turin) {
    add_int_ext(x, "1.3.6.1.4.1.3704.1.3.9", t[0]);
    add_int_ext(x, "1.3.6.1.4.1.3704.1.3.1", t[1]);
    add_int_ext(x, "1.3.6.1.4.1.3704.1.3.2", t[2]);
    add_int_ext(x, "1.3.6.1.4.1.3704.1.3.3", t[3]);
  } else {
    add_int_ext(x, "1.3.6.1.4.1.3704.1.3.1", t[0]);
    add_int_ext(x, "1.3.6.1.4.1.3704.1.3.2", t[1]);
    add_int_ext(x, "1.3.6.1.4.1.3704.1.3.3", t[6]);
  }
  add_int_ext(x, "1.3.6.1.4.1.3704.1.3.8", t[7] + (v->bad_tcb ? 1 : 0));
  uint8_t hw[64];
  memcpy(hw, v->chip, 64);
  if (v->bad_hwid) hw[3] ^= 1;
  add_raw_ext(x, "1.3.6.1.4.1.3704.1.4", hw, v->turin ? 8 : 64);
}

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static sh_attest_reason snp_case(const sgen *g, int trust, const uint8_t *nonce, size_t nl,
                                 int64_t at) {
  static EVP_PKEY *ark_k, *ask_k;
  static X509 *ark, *ask;
  int64_t nb = T("2024-01-01T00:00:00Z"), na = T("2030-01-01T00:00:00Z");
  if (!ark) {
    ark_k = p384();
    ask_k = p384();
    certopt ca = {"Test-ARK", 1, "critical,keyCertSign,cRLSign", nb, na};
    ark = mkcert(&ca, ark_k, NULL, NULL, NULL, NULL);
    certopt ia = {"SEV-Test", 1, "critical,keyCertSign", nb, na};
    ask = mkcert(&ia, ask_k, ark, ark_k, NULL, NULL);
  }
  uint8_t rep[1184];
  memset(rep, 0, sizeof rep);
  put32(rep, (uint32_t)g->version);
  put32(rep + 8, 0x30000 | (g->debug ? 0x80000 : 0));
  put32(rep + 0x34, 1);
  uint8_t tcb[8] = {3, 0, 0, 0, 0, 0, 8, 115};
  if (g->turin) {
    uint8_t tt[8] = {1, 2, 3, 4, 0, 0, 0, 9};
    memcpy(tcb, tt, 8);
  }
  memcpy(rep + 0x38, tcb, 8);
  memcpy(rep + 0x180, tcb, 8);
  memcpy(rep + 0x50, g->report_data, 64);
  char rt[256];
  int rtl = 0;
  if (g->hcl) {
    static const char dig[2][17] = {"0123456789abcdef", "0123456789ABCDEF"};
    char hx[129];
    for (int i = 0; i < 64; i++) {
      hx[2 * i] = dig[g->upper][g->user_data[i] >> 4];
      hx[2 * i + 1] = dig[g->upper][g->user_data[i] & 15];
    }
    hx[128] = 0;
    rtl = snprintf(rt, sizeof rt,
                   "{\"keys\":[],\"vm-configuration\":{\"secure-boot\":true},"
                   "\"user-data\":\"%s\"}",
                   hx);
    memset(rep + 0x50, 0, 64);
    EVP_Digest(rt, (size_t)rtl, rep + 0x50, NULL, EVP_sha256(), NULL);
  }
  memset(rep + 0x90, 0xAB, 48);
  uint8_t chip[64];
  for (int i = 0; i < 64; i++)
    chip[i] = (uint8_t)(g->turin && i >= 8 ? 0 : i + 1);
  memcpy(rep + 0x1A0, chip, 64);
  if (g->version >= 3) {
    rep[0x188] = g->turin ? 0x1A : 0x19;
    rep[0x189] = g->turin ? 0x02 : 0x01;
  }
  if (g->reserved_nonzero) rep[0x1F9] = 1;
  EVP_PKEY *vk = p384();
  vcek_arg va = {tcb, g->turin, chip, g->bad_tcb_ext, g->bad_hwid};
  certopt vo = {"SEV-VCEK", 0, NULL, nb, na};
  X509 *vcek = mkcert(&vo, vk, ask, ask_k, vcek_exts, &va);
  sign_raw(vk, rep, 0x2A0, NULL, NULL, 0, 1, rep + 0x2A0);
  if (g->r_ext_nonzero) rep[0x2A0 + 50] = 1;
  size_t l1, l2, l3;
  uint8_t *d1 = der_of(vcek, &l1), *d2 = der_of(ask, &l2), *d3 = der_of(ark, &l3);
  sh_iovec certs[2] = {{.ptr = d1, .len = l1}, {.ptr = d2, .len = l2}},
           roots[1] = {{.ptr = d3, .len = l3}};
  sh_attest_options o = {.at = at, .certs = certs, .ncerts = 2, .nonce = nonce, .nonce_len = nl};
  if (trust) {
    o.extra_roots = roots;
    o.nextra_roots = 1;
  }
  sh_attest_reason rs;
  if (g->hcl) { /* azure.c's layout: header, report, IGVM request data, runtime, padding */
    uint8_t hcl[0x4D4 + sizeof rt + 64];
    size_t rsize = 0x4D4 + (size_t)rtl;
    memset(hcl, 0, sizeof hcl);
    memcpy(hcl, "HCLA", 4);
    put32(hcl + 4, (uint32_t)g->hcl);
    put32(hcl + 8, (uint32_t)rsize);
    put32(hcl + 12, 2);
    memcpy(hcl + 0x20, rep, sizeof rep);
    put32(hcl + 0x4C0, 20 + (uint32_t)rtl);
    put32(hcl + 0x4C4, 1);
    put32(hcl + 0x4C8, g->hcl_type ? (uint32_t)g->hcl_type : 2);
    put32(hcl + 0x4CC, 1);
    put32(hcl + 0x4D0, (uint32_t)rtl);
    memcpy(hcl + 0x4D4, rt, (size_t)rtl);
    rs = run(hcl, rsize + 64, SH_TEE_AZURE_SNP, &o, NULL);
  } else {
    rs = run(rep, sizeof rep, SH_TEE_SEV_SNP, &o, NULL);
  }
  if (trust == 2) { /* also present the untrusted root as a certificate: refused early */
    sh_iovec c3[3] = {{.ptr = d1, .len = l1}, {.ptr = d2, .len = l2}, {.ptr = d3, .len = l3}};
    o.certs = c3;
    o.ncerts = 3;
    o.extra_roots = NULL;
    o.nextra_roots = 0;
    rs = run(rep, sizeof rep, SH_TEE_SEV_SNP, &o, NULL);
  }
  OPENSSL_free(d1);
  OPENSSL_free(d2);
  OPENSSL_free(d3);
  X509_free(vcek);
  EVP_PKEY_free(vk);
  return rs;
}

static void test_generated(void) {
  int64_t nb = T("2024-01-01T00:00:00Z"), na = T("2030-01-01T00:00:00Z");
  int64_t at = T("2025-06-01T00:00:00Z");
  EVP_PKEY *rk = p384(), *ik = p384(), *lk = p384();
  certopt rc = {"test-root", 1, "critical,keyCertSign,cRLSign", nb, na};
  certopt ic = {"test-inter", 1, "critical,keyCertSign", nb, na};
  certopt lc = {"test-leaf", 0, "critical,digitalSignature", nb, na};
  X509 *root = mkcert(&rc, rk, NULL, NULL, NULL, NULL);
  X509 *inter = mkcert(&ic, ik, root, rk, NULL, NULL);
  X509 *leaf = mkcert(&lc, lk, inter, ik, NULL, NULL);
  ngen g = {
      .leaf = leaf, .inter = inter, .root = root, .leaf_key = lk, .alg = -35, .ts_ms = at * 1000};
  sh_attest_reason rs;
  rs = nitro_case(g, at, 0, NULL, 0, NULL, 0);
  CHECK(rs == SH_ATTEST_ROOT_UNTRUSTED, "gen nitro wrong root: %s", RN(rs));
  rs = nitro_case(g, at, 1, NULL, 0, NULL, 0);
  CHECK(rs == SH_ATTEST_OK, "gen nitro with explicit test root: %s", RN(rs));
  ngen h = g;
  h.high_s = 1;
  rs = nitro_case(h, at, 1, NULL, 0, NULL, 0);
  CHECK(rs == SH_ATTEST_OK, "gen nitro high-S valid: %s", RN(rs));
  h = g;
  h.tagged = 1;
  CHECK(nitro_case(h, at, 1, NULL, 0, NULL, 0) == SH_ATTEST_OK, "gen tagged");
  h = g;
  h.null_optional = 1;
  CHECK(nitro_case(h, at, 1, NULL, 0, NULL, 0) == SH_ATTEST_OK, "gen null optional");
  h = g;
  h.alg = -7;
  rs = nitro_case(h, at, 1, NULL, 0, NULL, 0);
  CHECK(rs == SH_ATTEST_MALFORMED, "gen wrong alg ES256: %s", RN(rs));
  h = g;
  h.dup_key = 1;
  rs = nitro_case(h, at, 1, NULL, 0, NULL, 0);
  CHECK(rs == SH_ATTEST_MALFORMED, "gen duplicate key: %s", RN(rs));
  h = g;
  h.unknown_key = 1;
  CHECK(nitro_case(h, at, 1, NULL, 0, NULL, 0) == SH_ATTEST_MALFORMED, "gen unknown key");
  h = g;
  h.indefinite = 1;
  CHECK(nitro_case(h, at, 1, NULL, 0, NULL, 0) == SH_ATTEST_MALFORMED, "gen indefinite map");
  h = g;
  h.sig_len = 97;
  CHECK(nitro_case(h, at, 1, NULL, 0, NULL, 0) == SH_ATTEST_MALFORMED, "gen oversized signature");
  h = g;
  h.ts_ms = (at + 120) * 1000;
  CHECK(nitro_case(h, at, 1, NULL, 0, NULL, 0) == SH_ATTEST_NOT_YET_VALID, "gen future timestamp");
  h = g;
  h.ts_ms = (at + 30) * 1000;
  CHECK(nitro_case(h, at, 1, NULL, 0, NULL, 0) == SH_ATTEST_OK, "gen skew 30 s");
  /* nonce and binding digest */
  uint8_t n[32], D[64];
  memset(n, 7, 32);
  const uint8_t spki[] = {0x30, 0x03, 0x02, 0x01, 0x05};
  sh_attest_binding_digest(n, 32, spki, sizeof spki, D);
  h = g;
  h.nonce = n;
  h.nonce_len = 32;
  h.user_data = D;
  h.user_data_len = 64;
  CHECK(nitro_case(h, at, 1, n, 32, spki, sizeof spki) == SH_ATTEST_OK, "gen binding ok");
  CHECK(nitro_case(h, at, 1, n, 32, NULL, 0) == SH_ATTEST_OK, "gen nonce only");
  CHECK(nitro_case(h, at, 1, n, 32, spki, 3) == SH_ATTEST_BINDING_MISMATCH, "gen wrong key");
  uint8_t n2[32];
  memset(n2, 8, 32);
  CHECK(nitro_case(h, at, 1, n2, 32, NULL, 0) == SH_ATTEST_BINDING_MISMATCH, "gen wrong nonce");
  h = g;
  CHECK(nitro_case(h, at, 1, n, 32, NULL, 0) == SH_ATTEST_BINDING_MISMATCH, "gen no nonce in doc");
  /* expired intermediate, missing keyUsage, leaf without digitalSignature, wrong curve */
  certopt ie = {"test-inter", 1, "critical,keyCertSign", nb, at - 10};
  X509 *inter_exp = mkcert(&ie, ik, root, rk, NULL, NULL);
  h = g;
  h.inter = inter_exp;
  rs = nitro_case(h, at, 1, NULL, 0, NULL, 0);
  CHECK(rs == SH_ATTEST_EXPIRED, "gen expired intermediate: %s", RN(rs));
  certopt inoku = {"test-inter", 1, NULL, nb, na};
  X509 *inter_noku = mkcert(&inoku, ik, root, rk, NULL, NULL);
  h = g;
  h.inter = inter_noku;
  rs = nitro_case(h, at, 1, NULL, 0, NULL, 0);
  CHECK(rs == SH_ATTEST_CHAIN_INVALID, "gen intermediate without keyUsage: %s", RN(rs));
  certopt lnoku = {"test-leaf-noku", 0, NULL, nb, na};
  X509 *leaf_noku = mkcert(&lnoku, lk, inter, ik, NULL, NULL);
  h = g;
  h.leaf = leaf_noku;
  CHECK(nitro_case(h, at, 1, NULL, 0, NULL, 0) == SH_ATTEST_CHAIN_INVALID,
        "gen leaf without keyUsage");
  certopt notca = {"test-inter", 0, "critical,keyCertSign", nb, na};
  X509 *inter_notca = mkcert(&notca, ik, root, rk, NULL, NULL);
  h = g;
  h.inter = inter_notca;
  rs = nitro_case(h, at, 1, NULL, 0, NULL, 0);
  CHECK(rs == SH_ATTEST_CHAIN_INVALID, "gen intermediate not CA: %s", RN(rs));
  CHECK(nitro_case(g, nb - 100, 1, NULL, 0, NULL, 0) != SH_ATTEST_OK, "gen before validity");
  /* truncated and oversized */
  size_t len;
  uint8_t *ev = gen_nitro(&g, &len);
  size_t rl;
  uint8_t *rd = der_of(root, &rl);
  sh_iovec roots[1] = {{.ptr = rd, .len = rl}};
  sh_attest_options o = {.at = at, .extra_roots = roots, .nextra_roots = 1};
  int bad = 0;
  for (size_t cut = 0; cut < len; cut += 1 + cut / 16)
    bad += run(ev, cut, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_OK;
  CHECK(bad == 0, "truncations accepted: %d", bad);
  uint8_t *big = calloc(1, 40000);
  memcpy(big, ev, len);
  CHECK(run(big, 40000, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_MALFORMED, "oversized");
  CHECK(run(ev, len, SH_TEE_UNKNOWN, &o, NULL) == SH_ATTEST_UNSUPPORTED_TYPE, "type");
  CHECK(run(NULL, 0, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_MISSING, "missing");
  /* forged huge CBOR counts never allocate: array of 2^32 items, map of 2^60 */
  const uint8_t huge1[] = {0x9A, 0xFF, 0xFF, 0xFF, 0xFF, 0x00};
  const uint8_t huge2[] = {0x84, 0x40, 0xBB, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
  CHECK(run(huge1, sizeof huge1, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_MALFORMED, "huge array");
  CHECK(run(huge2, sizeof huge2, SH_TEE_NITRO, &o, NULL) == SH_ATTEST_MALFORMED, "huge map");
  /* not cached when extra roots are used */
  sh_attest_cache *c = sh_attest_cache_new(8);
  o.cache = c;
  run(ev, len, SH_TEE_NITRO, &o, NULL);
  CHECK(sh_attest_cache_size(c) == 0, "extra-root results are not cached");
  sh_attest_cache_free(c);
  free(big);
  free(ev);
  OPENSSL_free(rd);
  /* SNP with a test chain (root passed explicitly) */
  sgen s;
  memset(&s, 0, sizeof s);
  s.version = 2;
  rs = snp_case(&s, 0, NULL, 0, at);
  CHECK(rs == SH_ATTEST_ROOT_UNTRUSTED, "gen snp untrusted root: %s", RN(rs));
  rs = snp_case(&s, 2, NULL, 0, at);
  CHECK(rs == SH_ATTEST_ROOT_UNTRUSTED, "gen snp given untrusted ARK: %s", RN(rs));
  rs = snp_case(&s, 1, NULL, 0, at);
  CHECK(rs == SH_ATTEST_OK, "gen snp v2 (test root): %s", RN(rs));
  s.version = 3;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_OK, "gen snp v3");
  s.version = 5;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_OK, "gen snp v5");
  s.version = 4;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_MALFORMED, "gen snp v4");
  s.version = 3;
  s.turin = 1;
  rs = snp_case(&s, 1, NULL, 0, at);
  CHECK(rs == SH_ATTEST_OK, "gen snp Turin layout (fmc, 8-byte hwID): %s", RN(rs));
  s.bad_hwid = 1;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_CHAIN_INVALID, "gen snp Turin bad hwID");
  s.bad_hwid = 0;
  s.bad_tcb_ext = 1;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_CHAIN_INVALID, "gen snp Turin bad TCB");
  s.turin = 0;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_CHAIN_INVALID, "gen snp bad TCB");
  s.bad_tcb_ext = 0;
  s.bad_hwid = 1;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_CHAIN_INVALID, "gen snp bad hwID");
  s.bad_hwid = 0;
  s.r_ext_nonzero = 1;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_MALFORMED, "gen snp oversized R");
  s.r_ext_nonzero = 0;
  s.reserved_nonzero = 1;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_MALFORMED, "gen snp reserved");
  s.reserved_nonzero = 0;
  s.debug = 1;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_DEBUG_NOT_ALLOWED, "gen snp debug");
  s.debug = 0;
  sh_attest_binding_digest(n, 32, NULL, 0, s.report_data);
  CHECK(snp_case(&s, 1, n, 32, at) == SH_ATTEST_OK, "gen snp binding");
  CHECK(snp_case(&s, 1, n2, 32, at) == SH_ATTEST_BINDING_MISMATCH, "gen snp wrong nonce");
  CHECK(snp_case(&s, 1, NULL, 0, T("2031-01-01T00:00:00Z")) == SH_ATTEST_EXPIRED,
        "gen snp expired");
  /* Azure HCL reports (azure-snp) as Azure writes them: header version 1 (the HCL before
   * OpenHCL) and 2 (OpenHCL), user-data hex in either case (the old HCL wrote upper case) */
  memset(&s, 0, sizeof s);
  s.version = 2;
  sh_attest_binding_digest(n, 32, NULL, 0, s.user_data);
  for (int hv = 1; hv <= 2; hv++)
    for (int up = 0; up <= 1; up++) {
      s.hcl = hv;
      s.upper = up;
      rs = snp_case(&s, 1, n, 32, at);
      CHECK(rs == SH_ATTEST_OK, "gen azure hcl v%d, %s-case user-data: %s", hv,
            up ? "upper" : "lower", RN(rs));
      rs = snp_case(&s, 1, n2, 32, at);
      CHECK(rs == SH_ATTEST_BINDING_MISMATCH, "gen azure hcl v%d, wrong nonce: %s", hv, RN(rs));
      CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_OK, "gen azure hcl v%d, no nonce", hv);
    }
  s.hcl = 3;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_MALFORMED, "gen azure hcl v3 (unknown)");
  s.hcl = 0xFFFF;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_MALFORMED, "gen azure hcl v65535");
  s.hcl = 2;
  s.hcl_type = 4; /* a TDX report type with an SNP report: azure-tdx's, refused here */
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_MALFORMED, "gen azure hcl report type 4");
  s.hcl_type = 3;
  CHECK(snp_case(&s, 1, NULL, 0, at) == SH_ATTEST_MALFORMED, "gen azure hcl report type 3");
  s.hcl_type = 0;
  s.user_data[0] ^= 1; /* user-data other than D */
  CHECK(snp_case(&s, 1, n, 32, at) == SH_ATTEST_BINDING_MISMATCH, "gen azure hcl user-data not D");
  X509_free(root);
  X509_free(inter);
  X509_free(leaf);
  X509_free(inter_exp);
  X509_free(inter_noku);
  X509_free(leaf_noku);
  X509_free(inter_notca);
  EVP_PKEY_free(rk);
  EVP_PKEY_free(ik);
  EVP_PKEY_free(lk);
  /* binding digest known answer: recomputed independently with EVP */
  uint8_t D2[64], msg[256];
  size_t ml = 0;
  memcpy(msg, "shield-binding-v1", 18);
  ml = 18;
  msg[ml++] = 0;
  msg[ml++] = 32;
  memcpy(msg + ml, n, 32);
  ml += 32;
  msg[ml++] = 0;
  msg[ml++] = 0;
  EVP_Digest(msg, ml, D2, NULL, EVP_sha512(), NULL);
  sh_attest_binding_digest(n, 32, NULL, 0, D);
  CHECK(!memcmp(D, D2, 64), "binding digest");
  /* input decoding */
  size_t ol;
  uint8_t *o1 = sh_attest_decode_input((const uint8_t *)"0a0B ff\n", 8, &ol);
  CHECK(ol == 3 && o1[0] == 0x0a && o1[2] == 0xff, "hex");
  free(o1);
  o1 = sh_attest_decode_input((const uint8_t *)"aGVsbG8", 7, &ol);
  CHECK(ol == 5 && !memcmp(o1, "hello", 5), "b64 unpadded");
  free(o1);
  o1 = sh_attest_decode_input((const uint8_t *)"_-8=", 4, &ol);
  CHECK(ol == 2 && o1[0] == 0xff && o1[1] == 0xef, "b64url");
  free(o1);
}
