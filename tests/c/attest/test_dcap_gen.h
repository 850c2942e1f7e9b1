/* tests/c/attest/test_dcap_gen.h — included by test_dcap.c and test_provider.c: a test
 * Intel-like PKI and quotes signed with test keys.  The PCK certificate carries the real SGX
 * extensions of the tdx_quote vector's PCK certificate and the collateral the real TCB info /
 * QE identity bytes, re-signed by a test TCB signing key, so every check downstream of the
 * signatures runs for real. */

typedef struct gpki {
  EVP_PKEY *root_k, *ca_k, *pck_k, *tcb_k, *ak;
  X509 *root, *ca, *pck, *tcb;
} gpki;

static long gserial = 100;

static X509 *gcert(const char *cn, int ca, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ik, int64_t at,
                   X509_EXTENSION *sgx) {
  X509 *x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), gserial++);
  X509_NAME *n = X509_NAME_new();
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_subject_name(x, n);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
  X509_NAME_free(n);
  ASN1_TIME *t = ASN1_TIME_set(NULL, (time_t)(at - 365 * 86400));
  X509_set1_notBefore(x, t);
  ASN1_TIME_set(t, (time_t)(at + 365 * 86400));
  X509_set1_notAfter(x, t);
  ASN1_TIME_free(t);
  X509_set_pubkey(x, key);
  if (ca) {
    add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x, issuer, NID_key_usage, "critical,digitalSignature,nonRepudiation");
  }
  add_ext(x, issuer, NID_subject_key_identifier, "hash");
  if (issuer) add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
  if (sgx) X509_add_ext(x, sgx, -1);
  X509_sign(x, ik ? ik : key, EVP_sha256());
  return x;
}

static void gpki_new(gpki *g, int64_t at, X509_EXTENSION *sgx) {
  g->root_k = EVP_EC_gen("P-256");
  g->ca_k = EVP_EC_gen("P-256");
  g->pck_k = EVP_EC_gen("P-256");
  g->tcb_k = EVP_EC_gen("P-256");
  g->ak = EVP_EC_gen("P-256");
  g->root = gcert("Test SGX Root CA", 1, g->root_k, NULL, NULL, at, NULL);
  g->ca = gcert("Test SGX PCK Platform CA", 1, g->ca_k, g->root, g->root_k, at, NULL);
  g->pck = gcert("Test SGX PCK Certificate", 0, g->pck_k, g->ca, g->ca_k, at, sgx);
  g->tcb = gcert("Test SGX TCB Signing", 0, g->tcb_k, g->root, g->root_k, at, NULL);
}

static void gpki_free(gpki *g) {
  EVP_PKEY_free(g->root_k);
  EVP_PKEY_free(g->ca_k);
  EVP_PKEY_free(g->pck_k);
  EVP_PKEY_free(g->tcb_k);
  EVP_PKEY_free(g->ak);
  X509_free(g->root);
  X509_free(g->ca);
  X509_free(g->pck);
  X509_free(g->tcb);
}

/* ECDSA P-256/SHA-256, raw r‖s */
static void gsign(EVP_PKEY *k, const uint8_t *msg, size_t len, uint8_t rs[64]) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned char der[80];
  size_t dl = sizeof der;
  EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k);
  EVP_DigestSign(md, der, &dl, msg, len);
  EVP_MD_CTX_free(md);
  const unsigned char *p = der;
  ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)dl);
  BN_bn2binpad(ECDSA_SIG_get0_r(s), rs, 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(s), rs + 32, 32);
  ECDSA_SIG_free(s);
}

static char *gcrl_hex(X509 *issuer, EVP_PKEY *k, int64_t at, long revoked_serial, int stale) {
  X509_CRL *c = X509_CRL_new();
  X509_CRL_set_version(c, 1);
  X509_CRL_set_issuer_name(c, X509_get_subject_name(issuer));
  ASN1_TIME *t = ASN1_TIME_set(NULL, (time_t)(at - 86400 * (stale ? 40 : 1)));
  X509_CRL_set1_lastUpdate(c, t);
  ASN1_TIME_set(t, (time_t)(at + (stale ? -86400 * 10 : 86400 * 30)));
  X509_CRL_set1_nextUpdate(c, t);
  if (revoked_serial) {
    X509_REVOKED *rv = X509_REVOKED_new();
    ASN1_INTEGER *sn = ASN1_INTEGER_new();
    ASN1_INTEGER_set(sn, revoked_serial);
    X509_REVOKED_set_serialNumber(rv, sn);
    ASN1_TIME_set(t, (time_t)(at - 3600));
    X509_REVOKED_set_revocationDate(rv, t);
    X509_CRL_add0_revoked(c, rv);
    ASN1_INTEGER_free(sn);
  }
  ASN1_TIME_free(t);
  X509_CRL_sort(c);
  X509_CRL_sign(c, k, EVP_sha256());
  unsigned char *der = NULL;
  int dl = i2d_X509_CRL(c, &der);
  char *h = hex_of(der, (size_t)dl);
  OPENSSL_free(der);
  X509_CRL_free(c);
  return h;
}

static char *gpem(X509 *a, X509 *b, X509 *c) {
  BIO *out = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(out, a);
  if (b) PEM_write_bio_X509(out, b);
  if (c) PEM_write_bio_X509(out, c);
  char *p = NULL;
  long n = BIO_get_mem_data(out, &p);
  char *s = malloc((size_t)n + 1);
  memcpy(s, p, (size_t)n);
  s[n] = 0;
  BIO_free(out);
  return s;
}

typedef struct gcase {
  int revoke_pck, stale_pck_crl, bad_qe_data, no_root_crl, other_tcb_key;
} gcase;

/* v4 TDX quote: the real header and body, a test attestation key, the real QE report with
 * its REPORT_DATA recomputed, signed by the test PCK key, and the test PEM chain. */
static uint8_t *gquote(const gpki *g, const uint8_t *real, size_t *len, int bad_qe_data) {
  const size_t hb = 48 + 584, qe = hb + 4 + 64 + 64 + 6;
  uint16_t auth_len = (uint16_t)(real[qe + 448] | real[qe + 449] << 8);
  const uint8_t *auth = real + qe + 450;
  char *pem = gpem(g->pck, g->ca, g->root);
  size_t pl = strlen(pem) + 1;
  size_t inner = 384 + 64 + 2 + auth_len + 6 + pl, sig_len = 64 + 64 + 6 + inner;
  uint8_t *q = calloc(1, hb + 4 + sig_len + 16), *p = q;
  memcpy(p, real, hb);
  p += hb;
  for (int i = 0; i < 4; i++)
    *p++ = (uint8_t)(sig_len >> (8 * i));
  uint8_t *sig = p, *ak = p + 64;
  p += 128;
  unsigned char pub[65];
  size_t publ = sizeof pub;
  EVP_PKEY_get_octet_string_param(g->ak, "pub", pub, sizeof pub, &publ);
  memcpy(ak, pub + 1, 64);
  gsign(g->ak, q, hb, sig);
  *p++ = 6;
  *p++ = 0;
  for (int i = 0; i < 4; i++)
    *p++ = (uint8_t)(inner >> (8 * i));
  uint8_t *rep = p;
  memcpy(rep, real + qe, 384);
  unsigned int hl = 32;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(md, EVP_sha256(), NULL);
  EVP_DigestUpdate(md, ak, 64);
  EVP_DigestUpdate(md, auth, auth_len);
  EVP_DigestFinal_ex(md, rep + 320, &hl);
  EVP_MD_CTX_free(md);
  memset(rep + 352, 0, 32);
  if (bad_qe_data) rep[320] ^= 1;
  p += 384;
  gsign(g->pck_k, rep, 384, p);
  p += 64;
  *p++ = (uint8_t)auth_len;
  *p++ = (uint8_t)(auth_len >> 8);
  memcpy(p, auth, auth_len);
  p += auth_len;
  *p++ = 5;
  *p++ = 0;
  for (int i = 0; i < 4; i++)
    *p++ = (uint8_t)(pl >> (8 * i));
  memcpy(p, pem, pl);
  p += pl;
  free(pem);
  *len = (size_t)(p - q) + 16; /* with zero padding */
  return q;
}

static char *gcollateral(const gpki *g, json_t *real, int64_t at, const gcase *c) {
  json_t *o = json_object();
  static const char *const docs[] = {"tcb_info", "qe_identity"};
  EVP_PKEY *other = c->other_tcb_key ? EVP_EC_gen("P-256") : NULL;
  for (int i = 0; i < 2; i++) {
    const char *s = json_string_value(json_object_get(real, docs[i]));
    uint8_t rs[64];
    gsign(other ? other : g->tcb_k, (const uint8_t *)s, strlen(s), rs);
    char k[64], *h = hex_of(rs, 64), *chain = gpem(g->tcb, g->root, NULL);
    json_object_set_new(o, docs[i], json_string(s));
    snprintf(k, sizeof k, "%s_signature", docs[i]);
    json_object_set_new(o, k, json_string(h));
    snprintf(k, sizeof k, "%s_issuer_chain", docs[i]);
    json_object_set_new(o, k, json_string(chain));
    free(h);
    free(chain);
  }
  EVP_PKEY_free(other);
  char *h;
  if (!c->no_root_crl) {
    h = gcrl_hex(g->root, g->root_k, at, 0, 0);
    json_object_set_new(o, "root_ca_crl", json_string(h));
    free(h);
  }
  h = gcrl_hex(g->ca, g->ca_k, at,
               c->revoke_pck ? ASN1_INTEGER_get(X509_get0_serialNumber(g->pck)) : 0,
               c->stale_pck_crl);
  json_object_set_new(o, "pck_crl", json_string(h));
  free(h);
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}

/* test_provider.c includes the generators above without this suite (it defines
 * SHIELD_DCAP_GEN_ONLY): its fake configfs-tsm answers quotes made by gquote. */
#ifndef SHIELD_DCAP_GEN_ONLY
static void test_generated(void) {
  size_t ql, cl;
  uint8_t *real = slurp("tdx/tdx_quote", &ql), *rc = slurp("tdx/tdx_quote_collateral.json", &cl);
  json_t *rj = json_loadb((const char *)rc, cl, 0, NULL);
  int64_t at = T("2025-06-20T00:00:00Z");
  /* the real PCK certificate's SGX extension */
  const uint8_t *b = memmem(real, ql, "-----BEGIN", 10);
  BIO *bio = BIO_new_mem_buf(b, (int)(ql - (size_t)(b - real)));
  X509 *rpck = PEM_read_bio_X509(bio, NULL, NULL, NULL);
  BIO_free(bio);
  ASN1_OBJECT *oid = OBJ_txt2obj("1.2.840.113741.1.13.1", 1);
  X509_EXTENSION *sgx = X509_get_ext(rpck, X509_get_ext_by_OBJ(rpck, oid, -1));
  gpki g, other;
  gpki_new(&g, at, sgx);
  gpki_new(&other, at, sgx);
  struct {
    const char *name;
    gcase c;
    int trust; /* 0: none, 1: the test root, 2: another test root */
    sh_attest_reason want;
  } cases[] = {
      {"test PKI, trusted explicitly", {0}, 1, SH_ATTEST_OK},
      {"test PKI on the production path", {0}, 0, SH_ATTEST_ROOT_UNTRUSTED},
      {"test PKI, another root trusted", {0}, 2, SH_ATTEST_ROOT_UNTRUSTED},
      {"revoked PCK serial", {.revoke_pck = 1}, 1, SH_ATTEST_REVOKED},
      {"stale PCK CRL", {.stale_pck_crl = 1}, 1, SH_ATTEST_COLLATERAL_STALE},
      {"bad QE report data", {.bad_qe_data = 1}, 1, SH_ATTEST_SIGNATURE_INVALID},
      {"no root CA CRL", {.no_root_crl = 1}, 1, SH_ATTEST_COLLATERAL_MISSING},
      {"TCB info signed by another key", {.other_tcb_key = 1}, 1, SH_ATTEST_SIGNATURE_INVALID},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    size_t gl;
    uint8_t *q = gquote(&g, real, &gl, cases[i].c.bad_qe_data);
    char *col = gcollateral(&g, rj, at, &cases[i].c);
    unsigned char *der = NULL;
    int dl = i2d_X509(cases[i].trust == 2 ? other.root : g.root, &der);
    sh_iovec root = {.ptr = der, .len = (size_t)dl};
    sh_attest_options o = {.at = at,
                           .collateral = (const uint8_t *)col,
                           .collateral_len = strlen(col),
                           .extra_roots = cases[i].trust ? &root : NULL,
                           .nextra_roots = cases[i].trust ? 1 : 0};
    sh_attest_result *r = NULL;
    sh_attest_reason got = run(q, gl, SH_TEE_TDX, &o, &r);
    CHECK(got == cases[i].want, "%s: got %s (%s), want %s", cases[i].name, RN(got),
          r ? r->message : "", RN(cases[i].want));
    if (got == SH_ATTEST_OK)
      CHECK(r->tcb_status && !strcmp(r->tcb_status, "UpToDate"), "generated tcb_status");
    sh_attest_result_free(r);
    /* the same through a preloaded handle and a cache, twice (memoised CRL signatures) */
    sh_attest_collateral *h = sh_attest_collateral_new((const uint8_t *)col, strlen(col));
    sh_attest_cache *cache = sh_attest_cache_new(0);
    o.collateral = NULL;
    o.dcap_collateral = h;
    o.cache = cache;
    for (int k = 0; k < 2; k++) {
      got = run(q, gl, SH_TEE_TDX, &o, &r);
      CHECK(got == cases[i].want, "%s (handle %d): got %s (%s), want %s", cases[i].name, k, RN(got),
            r ? r->message : "", RN(cases[i].want));
      sh_attest_result_free(r);
    }
    sh_attest_cache_free(cache);
    sh_attest_collateral_free(h);
    OPENSSL_free(der);
    free(q);
    free(col);
  }
  ASN1_OBJECT_free(oid);
  X509_free(rpck);
  gpki_free(&g);
  gpki_free(&other);
  json_decref(rj);
  free(real);
  free(rc);
}
#endif
