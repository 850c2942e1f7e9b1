/* attest/cli_verify.c — `shield verify`: verify one piece of evidence from files.
 *
 *   shield verify --type nitro|sev-snp|azure-snp FILE [--at RFC3339] [--cert FILE]...
 *                 [--policy FILE] [--nonce HEX] [--public-key FILE] [--allow-debug] [--json]
 *   shield verify --type maa|gcp TOKEN [--jwks FILE] [--issuer URL] [--audience VALUE] ...
 *   shield verify --type tdx|sgx QUOTE --collateral FILE|DIR ...   (see collateral.c)
 *
 * maa/gcp: --jwks is the issuer's JWKS document (MAA: the instance's /certs; GCP: OIDC tokens
 * only, PKI tokens chain to the pinned root).  --issuer and --audience are optional here: when
 * absent iss and aud are reported in the claims, not checked (GCP's fixed issuer is always
 * checked).  The server always requires configured ones.
 *
 * FILE: raw bytes, base64 or hex text.  --cert: PEM or DER, bundles too.  --at defaults to
 * the current time (the CLI is where the clock is read; the library never reads it).
 *
 * Fetching (fetch.c; off by default, so verification stays offline and deterministic):
 *   --fetch      when the first verification says collateral_missing, fetch what was missing
 *                and verify again: sev-snp without a VCEK (by CHIP_ID and REPORTED_TCB from
 *                the AMD KDS, product from the report's CPUID or tried Milan, Genoa, Turin,
 *                plus the product's cert_chain); tdx/sgx without --collateral (TCB info by the
 *                PCK certificate's FMSPC, QE identity, PCK CRL, root CA CRL from Intel PCS or a
 *                PCCS); maa/gcp without --jwks (from --jwks-url, else --issuer's OpenID
 *                configuration; gcp's fixed issuer by default).  Only the configured bases are
 *                contacted, never a URL from the evidence.
 *   --offline    the same, from --cache-dir files only (never the network).
 *   --kds-url URL, --pcs-url URL, --jwks-url URL, --fetch-ca FILE (extra TLS anchors, e.g. a
 *   PCCS with a private CA), --cache-dir DIR (default $XDG_CACHE_HOME/shield/collateral).
 *   A failed fetch keeps collateral_missing (exit 1) with the fetcher's message.
 * Exit: 0 verified, 1 rejected (anything wrong with the evidence), 2 usage error.
 */
#include "dcap.h"

#include <cbor.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CLI_MAX_FILE (4u << 20)
#define CLI_MAX_CERTS 16

static void usage(void)
{
    fprintf(stderr,
            "usage: shield verify --type nitro|sev-snp|azure-snp|tdx|sgx|maa|gcp|simulated FILE [--at RFC3339]\n"
            "                     [--cert FILE]... [--policy FILE] [--nonce HEX]\n"
            "                     [--public-key FILE] [--allow-debug] [--json]\n"
            "                     [--trust-simulated]   (simulated: the local dev root)\n"
            "                     [--jwks FILE] [--issuer URL] [--audience VALUE]   (maa, gcp)\n"
            "                     [--collateral FILE|DIR]   (tdx, sgx)\n"
            "                     [--fetch | --offline] [--cache-dir DIR] [--fetch-ca FILE]\n"
            "                     [--kds-url URL] [--pcs-url URL] [--jwks-url URL]\n");
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = !strcmp(path, "-") ? stdin : fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = malloc(CLI_MAX_FILE + 1);
    size_t n = buf ? fread(buf, 1, CLI_MAX_FILE + 1, f) : 0;
    int bad = !buf || ferror(f) || n > CLI_MAX_FILE;
    if (f != stdin)
        fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* RFC 3339: 2022-10-13T08:58:02Z, fractions and numeric offsets accepted; or Unix seconds. */
int sh_cli_parse_time(const char *s, int64_t *out)
{
    char *end;
    long long secs = strtoll(s, &end, 10);
    if (*s && !*end) {
        *out = secs;
        return secs > 0 ? 0 : -1;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        p = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
    if (!p)
        return -1;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    int64_t t = (int64_t)timegm(&tm);
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        int hh = atoi(p + 1), mm = atoi(p + 4);
        int64_t off = hh * 3600 + mm * 60;
        t += *p == '+' ? -off : off;
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    *out = t;
    return t > 0 ? 0 : -1;
}

/* A public key file: PEM (PUBLIC KEY) or DER SubjectPublicKeyInfo -> DER SPKI. */
uint8_t *sh_cli_load_spki(const char *path, size_t *len)
{
    size_t n = 0;
    uint8_t *raw = read_file(path, &n), *der = NULL;
    if (!raw)
        return NULL;
    BIO *b = BIO_new_mem_buf(raw, (int)n);
    EVP_PKEY *pk = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
    if (!pk) {
        const unsigned char *q = raw;
        pk = d2i_PUBKEY(NULL, &q, (long)n);
    }
    if (pk) {
        unsigned char *out = NULL;
        int l = i2d_PUBKEY(pk, &out);
        if (l > 0) {
            der = malloc((size_t)l);
            if (der) {
                memcpy(der, out, (size_t)l);
                *len = (size_t)l;
            }
        }
        OPENSSL_free(out);
    }
    EVP_PKEY_free(pk);
    BIO_free(b);
    free(raw);
    ERR_clear_error();
    return der;
}

static void print_human(const sh_attest_result *r)
{
    if (r->verified)
        printf("verified: %s\n", sh_attest_tee_name(r->tee));
    else
        printf("rejected: %s (%s)\n", sh_attest_reason_name(r->reason), r->message);
    const char *k;
    json_t *v;
    json_object_foreach(r->measurements, k, v)
        printf("  %s: %s\n", k, json_string_value(v));
    printf("  debug: %s\n", r->debug ? "yes" : "no");
}

/* ---- --fetch / --offline (fetch.c) ---- */

#define GCP_ISSUER "https://confidentialcomputing.googleapis.com"

/* A base URL flag: https://, or http:// (fetch.c allows it only towards loopback), no spaces
 * or control bytes, bounded. */
static int url_ok(const char *u)
{
    size_t n = strlen(u);
    if (n > 1800 || (strncmp(u, "https://", 8) && strncmp(u, "http://", 7)) || n <= 8)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)u[i] <= 0x20 || u[i] == 0x7f)
            return 0;
    return 1;
}

/* $XDG_CACHE_HOME/shield/collateral, else ~/.cache/shield/collateral; parents made 0700. */
static char *default_cache_dir(void)
{
    const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char base[3072], *out = malloc(4096);
    if (!out)
        return NULL;
    if (x && x[0] == '/')
        snprintf(base, sizeof base, "%s", x);
    else if (home && home[0] == '/')
        snprintf(base, sizeof base, "%s/.cache", home);
    else {
        free(out);
        return NULL;
    }
    mkdir(base, 0700);
    snprintf(out, 4096, "%s/shield", base);
    mkdir(out, 0700);
    snprintf(out, 4096, "%s/shield/collateral", base);
    return out;
}

static uint32_t le32_at(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The 1184-byte report of raw evidence or of a CBOR bundle {"report": bstr, ...}; a bundle
 * reaches here only after sh_attest_verify parsed it (collateral_missing comes later). */
static int snp_report(const uint8_t *ev, size_t len, uint8_t rep[SH_SNP_REPORT_SIZE])
{
    if (len == SH_SNP_REPORT_SIZE) {
        memcpy(rep, ev, len);
        return 0;
    }
    struct cbor_load_result res;
    cbor_item_t *m = len <= SH_BUNDLE_MAX_EVIDENCE ? cbor_load(ev, len, &res) : NULL;
    int rc = -1;
    if (m && cbor_isa_map(m)) {
        struct cbor_pair *pp = cbor_map_handle(m);
        for (size_t i = 0; i < cbor_map_size(m); i++) {
            cbor_item_t *k = pp[i].key, *v = pp[i].value;
            if (cbor_isa_string(k) && cbor_string_is_definite(k) && cbor_string_length(k) == 6 &&
                !memcmp(cbor_string_handle(k), "report", 6) && cbor_isa_bytestring(v) &&
                cbor_bytestring_is_definite(v) && cbor_bytestring_length(v) == SH_SNP_REPORT_SIZE) {
                memcpy(rep, cbor_bytestring_handle(v), SH_SNP_REPORT_SIZE);
                rc = 0;
            }
        }
    }
    if (m)
        cbor_decref(&m);
    return rc;
}

/* sev-snp: the VCEK by CHIP_ID and REPORTED_TCB, and the product's cert_chain (optional: the
 * ASK/ARK are embedded).  Appends DER/PEM blobs to bufs/lens (caller frees). */
static int fetch_snp(sh_attest_fetcher *f, const uint8_t *ev, size_t len, int64_t now,
                     uint8_t **bufs, size_t *lens, size_t *nbuf, char *msg, size_t ml)
{
    uint8_t rp[SH_SNP_REPORT_SIZE];
    static const uint8_t zero[64];
    if (snp_report(ev, len, rp) < 0)
        return snprintf(msg, ml, "no SEV-SNP report found"), -1;
    if (((le32_at(rp + 0x48) >> 2) & 7) != 0)
        return snprintf(msg, ml, "the report is signed by a VLEK, which the AMD KDS does not serve by "
                                 "chip: give it with --cert"), -1;
    if (!memcmp(rp + 0x1A0, zero, 64))
        return snprintf(msg, ml, "CHIP_ID is masked: give the VCEK with --cert"), -1;
    uint64_t tcb = 0;
    for (int i = 7; i >= 0; i--)
        tcb = tcb << 8 | rp[0x180 + i];
    const char *all[] = {"Milan", "Genoa", "Turin"}, *one[1], *const *cands = all;
    size_t nc = 3;
    uint8_t fam = rp[0x188], model = rp[0x189];
    if (le32_at(rp) >= 3 && (fam == 0x19 || fam == 0x1A)) { /* CPUID family/model (v3+) */
        one[0] = fam == 0x1A ? "Turin" : model < 0x10 ? "Milan" : "Genoa";
        cands = one;
        nc = 1;
    }
    sh_attest_fetched v, c;
    sh_attest_fetch_error e;
    memset(&e, 0, sizeof e);
    const char *prod = NULL;
    for (size_t i = 0; i < nc && !prod; i++)
        if (sh_attest_fetch_amd_vcek(f, cands[i], rp + 0x1A0, tcb, now, &v, &e) == 0)
            prod = cands[i];
    if (!prod)
        return snprintf(msg, ml, "VCEK%s: %.170s", nc > 1 ? " (Milan, Genoa, Turin)" : "", e.message), -1;
    bufs[*nbuf] = v.data;
    lens[(*nbuf)++] = v.len;
    free(v.issuer_chain);
    if (sh_attest_fetch_amd_chain(f, prod, "vcek", now, &c, &e) == 0) {
        bufs[*nbuf] = c.data;
        lens[(*nbuf)++] = c.len;
        free(c.issuer_chain);
    } else {
        fprintf(stderr, "shield verify: note: %s cert_chain not fetched (%s); using the embedded ASK/ARK\n",
                prod, e.message);
    }
    return 0;
}

static int put_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    int ok = fwrite(p, 1, n, fp) == n;
    return (fclose(fp) == 0 && ok) ? 0 : -1;
}

/* tdx/sgx: TCB info (FMSPC of the PCK certificate in the quote), QE identity, PCK CRL (of the
 * PCK's issuing CA), root CA CRL; assembled as a PCS directory and read by
 * sh_attest_collateral_read (exact signed bytes), plus pck_crl_issuer_chain. */
static int fetch_dcap(sh_attest_fetcher *f, sh_attest_tee tee, const uint8_t *ev, size_t len,
                      int64_t now, uint8_t **col, size_t *col_len, char *msg, size_t ml)
{
    const char *tn = tee == SH_ATTEST_TEE_TDX ? "tdx" : "sgx";
    sh_attest_result *tmp = sh_result_new();
    sh_dcap_quote q;
    X509 *pck = NULL;
    sh_pck_ext ext;
    char fmspc[13], ca[16], dir[] = "/tmp/shield-collateral-XXXXXX";
    int rc = -1, made = 0;
    sh_attest_fetched t, qe, pc, rc_;
    sh_attest_fetch_error e;
    memset(&t, 0, sizeof t);
    memset(&qe, 0, sizeof qe);
    memset(&pc, 0, sizeof pc);
    memset(&rc_, 0, sizeof rc_);
    memset(&e, 0, sizeof e);
    if (!tmp || sh_dcap_parse_quote(tmp, ev, len, &q) < 0 || !q.pck_chain.len) {
        snprintf(msg, ml, "no PCK certificate chain in the quote");
        goto out;
    }
    BIO *b = BIO_new_mem_buf(q.pck_chain.ptr, (int)q.pck_chain.len);
    pck = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!pck || sh_pck_ext_parse(pck, &ext) < 0) {
        snprintf(msg, ml, "the PCK certificate has no readable SGX extensions (FMSPC)");
        goto out;
    }
    sh_hex(ext.fmspc, 6, fmspc);
    char iss[256] = "";
    X509_NAME_oneline(X509_get_issuer_name(pck), iss, sizeof iss);
    snprintf(ca, sizeof ca, "%s", strstr(iss, "Platform") ? "platform" : "processor");
    if (sh_attest_fetch_intel_tcb(f, tn, fmspc, now, &t, &e) < 0 ||
        sh_attest_fetch_intel_qe_identity(f, tn, now, &qe, &e) < 0 ||
        sh_attest_fetch_intel_pck_crl(f, ca, now, &pc, &e) < 0 ||
        sh_attest_fetch_intel_root_crl(f, now, &rc_, &e) < 0) {
        snprintf(msg, ml, "%.180s", e.message);
        goto out;
    }
    if (!mkdtemp(dir)) {
        snprintf(msg, ml, "mkdtemp: %s", strerror(errno));
        goto out;
    }
    made = 1;
    char eb[256];
    if (put_file(dir, "tcbinfo.json", t.data, t.len) < 0 ||
        put_file(dir, "tcbinfo-issuer-chain.pem", t.issuer_chain, strlen(t.issuer_chain)) < 0 ||
        put_file(dir, "qeidentity.json", qe.data, qe.len) < 0 ||
        put_file(dir, "qeidentity-issuer-chain.pem", qe.issuer_chain, strlen(qe.issuer_chain)) < 0 ||
        put_file(dir, "pckcrl.der", pc.data, pc.len) < 0 || put_file(dir, "rootcrl.der", rc_.data, rc_.len) < 0) {
        snprintf(msg, ml, "cannot write %s", dir);
        goto out;
    }
    if (sh_attest_collateral_read(dir, col, col_len, eb, sizeof eb) < 0) {
        snprintf(msg, ml, "%.180s", eb);
        goto out;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)*col, *col_len, 0, &je);
    char *s = NULL;
    if (j && pc.issuer_chain)
        json_object_set_new(j, "pck_crl_issuer_chain", json_string(pc.issuer_chain));
    if (!j || !(s = json_dumps(j, JSON_COMPACT))) {
        json_decref(j);
        free(*col);
        *col = NULL;
        snprintf(msg, ml, "out of memory");
        goto out;
    }
    json_decref(j);
    free(*col);
    *col = (uint8_t *)s;
    *col_len = strlen(s);
    rc = 0;
out:
    if (made) {
        static const char *const names[] = {"tcbinfo.json", "tcbinfo-issuer-chain.pem", "qeidentity.json",
                                            "qeidentity-issuer-chain.pem", "pckcrl.der", "rootcrl.der"};
        char path[4200];
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            unlink(path);
        }
        rmdir(dir);
    }
    X509_free(pck);
    sh_attest_result_free(tmp);
    sh_attest_fetched_free(&t);
    sh_attest_fetched_free(&qe);
    sh_attest_fetched_free(&pc);
    sh_attest_fetched_free(&rc_);
    ERR_clear_error();
    return rc;
}

int sh_attest_cli_verify(int argc, char **argv)
{
    const char *type = NULL, *file = NULL, *at_s = NULL, *policy_path = NULL, *nonce_hex = NULL,
               *pk_path = NULL, *jwks_path = NULL, *issuer = NULL, *audience = NULL,
               *collateral_path = NULL, *kds_url = NULL, *pcs_url = NULL, *jwks_url = NULL,
               *cache_dir = NULL, *fetch_ca = NULL;
    const char *cert_paths[CLI_MAX_CERTS];
    size_t ncert = 0;
    int as_json = 0, allow_debug = 0, trust_simulated = 0, code = 2, do_fetch = 0, offline = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (!strcmp(a, "--json")) { as_json = 1; continue; }
        if (!strcmp(a, "--allow-debug")) { allow_debug = 1; continue; }
        if (!strcmp(a, "--trust-simulated")) { trust_simulated = 1; continue; } /* §1.7 */
        if (!strcmp(a, "--fetch")) { do_fetch = 1; continue; }
        if (!strcmp(a, "--offline")) { offline = 1; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 2; }
        if (!strcmp(a, "--type")) dst = &type;
        else if (!strcmp(a, "--at")) dst = &at_s;
        else if (!strcmp(a, "--policy")) dst = &policy_path;
        else if (!strcmp(a, "--nonce")) dst = &nonce_hex;
        else if (!strcmp(a, "--public-key")) dst = &pk_path;
        else if (!strcmp(a, "--jwks")) dst = &jwks_path;
        else if (!strcmp(a, "--issuer")) dst = &issuer;
        else if (!strcmp(a, "--audience")) dst = &audience;
        else if (!strcmp(a, "--collateral")) dst = &collateral_path;
        else if (!strcmp(a, "--kds-url")) dst = &kds_url;
        else if (!strcmp(a, "--pcs-url")) dst = &pcs_url;
        else if (!strcmp(a, "--jwks-url")) dst = &jwks_url;
        else if (!strcmp(a, "--cache-dir")) dst = &cache_dir;
        else if (!strcmp(a, "--fetch-ca")) dst = &fetch_ca;
        else if (!strcmp(a, "--cert")) {
            if (i + 1 >= argc || ncert == CLI_MAX_CERTS) { usage(); return 2; }
            cert_paths[ncert++] = argv[++i];
            continue;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "shield verify: unknown option %s\n", a);
            usage();
            return 2;
        } else if (!file) { file = a; continue; }
        else { fprintf(stderr, "shield verify: more than one FILE\n"); return 2; }
        if (i + 1 >= argc || *dst) { usage(); return 2; }
        *dst = argv[++i];
    }
    sh_attest_tee tee = sh_attest_tee_from_name(type);
    if (!type || !file) { usage(); return 2; }
    if (tee == SH_ATTEST_TEE_UNKNOWN) {
        fprintf(stderr, "shield verify: unsupported --type %s\n", type);
        return 2;
    }
    if (do_fetch && offline) {
        fprintf(stderr, "shield verify: --fetch and --offline exclude each other\n");
        return 2;
    }
    if (!do_fetch && !offline && (kds_url || pcs_url || jwks_url || cache_dir || fetch_ca)) {
        fprintf(stderr, "shield verify: --kds-url, --pcs-url, --jwks-url, --cache-dir and --fetch-ca "
                        "need --fetch or --offline\n");
        return 2;
    }
    const char *urls[3] = {kds_url, pcs_url, jwks_url}, *url_flags[3] = {"--kds-url", "--pcs-url", "--jwks-url"};
    for (int i = 0; i < 3; i++)
        if (urls[i] && !url_ok(urls[i])) {
            fprintf(stderr, "shield verify: %s: not an https:// (or loopback http://) URL: %s\n", url_flags[i], urls[i]);
            return 2;
        }
    if (fetch_ca && access(fetch_ca, R_OK) < 0) {
        fprintf(stderr, "shield verify: --fetch-ca: cannot read %s\n", fetch_ca);
        return 2;
    }
    sh_attest_options o;
    memset(&o, 0, sizeof o);
    o.allow_debug = allow_debug;
    if (at_s) {
        if (sh_cli_parse_time(at_s, &o.at) < 0) {
            fprintf(stderr, "shield verify: --at: not an RFC 3339 time: %s\n", at_s);
            return 2;
        }
    } else {
        o.at = (int64_t)time(NULL);
    }
    uint8_t *raw = NULL, *ev = NULL, *nonce = NULL, *spki = NULL, *certbuf[CLI_MAX_CERTS] = {0},
            *jwks = NULL, *collateral = NULL, *fbuf[2] = {0};
    size_t flen[2] = {0}, nfbuf = 0;
    sh_attest_bytes certs[CLI_MAX_CERTS + 2];
    sh_attest_fetcher *fetcher = NULL;
    char *cache_owned = NULL;
    sh_attest_policy *pol = NULL;
    sh_attest_result *r = NULL;
    size_t rawlen = 0, evlen = 0;
    char eb[256];
    if (!(raw = read_file(file, &rawlen))) {
        fprintf(stderr, "shield verify: cannot read %s\n", file);
        goto out;
    }
    for (size_t i = 0; i < ncert; i++) {
        size_t n = 0;
        if (!(certbuf[i] = read_file(cert_paths[i], &n))) {
            fprintf(stderr, "shield verify: cannot read %s\n", cert_paths[i]);
            goto out;
        }
        STACK_OF(X509) *sk = sk_X509_new_null();
        int ok = sk && sh_x509_add_blob(sk, certbuf[i], n) == 0;
        sk_X509_pop_free(sk, X509_free);
        if (!ok) {
            fprintf(stderr, "shield verify: %s: not a PEM or DER certificate\n", cert_paths[i]);
            goto out;
        }
        certs[i] = (sh_attest_bytes){certbuf[i], n};
    }
    o.certs = certs;
    o.ncerts = ncert;
    if (policy_path && sh_attest_policy_load_file(policy_path, &pol, eb, sizeof eb) < 0) {
        fprintf(stderr, "shield verify: %s\n", eb);
        goto out;
    }
    o.policy = pol;
    o.issuer = issuer;
    o.audience = audience;
    if (jwks_path && !(jwks = read_file(jwks_path, &o.jwks_len))) {
        fprintf(stderr, "shield verify: cannot read %s\n", jwks_path);
        goto out;
    }
    o.jwks = jwks;
    if (collateral_path &&
        sh_attest_collateral_read(collateral_path, &collateral, &o.collateral_len, eb, sizeof eb) < 0) {
        fprintf(stderr, "shield verify: %s\n", eb);
        goto out;
    }
    o.collateral = collateral;
    if (tee == SH_ATTEST_TEE_MAA || tee == SH_ATTEST_TEE_GCP) { /* a token file's final newline */
        while (rawlen && (raw[rawlen - 1] == '\n' || raw[rawlen - 1] == '\r' || raw[rawlen - 1] == ' '))
            rawlen--;
    }
    if (nonce_hex) {
        long n = 0;
        if (!*nonce_hex || !(nonce = OPENSSL_hexstr2buf(nonce_hex, &n)) || n > 0xFFFF) {
            fprintf(stderr, "shield verify: --nonce: not hex\n");
            goto out;
        }
        o.nonce = nonce;
        o.nonce_len = (size_t)n;
    }
    if (pk_path) {
        if (!nonce_hex) {
            fprintf(stderr, "shield verify: --public-key needs --nonce\n");
            goto out;
        }
        if (!(spki = sh_cli_load_spki(pk_path, &o.public_key_len))) {
            fprintf(stderr, "shield verify: %s: not a PEM or DER public key\n", pk_path);
            goto out;
        }
        o.public_key = spki;
    }
    o.trust_simulated = trust_simulated;
    sh_attest_fetch_issuer fiss = {NULL, NULL};
    if (do_fetch || offline) {
        sh_attest_fetch_config fc;
        memset(&fc, 0, sizeof fc);
        if (!cache_dir && !(cache_dir = cache_owned = default_cache_dir())) {
            fprintf(stderr, "shield verify: no cache directory ($XDG_CACHE_HOME and $HOME unset): use --cache-dir\n");
            goto out;
        }
        fc.cache_dir = cache_dir;
        fc.offline = offline;
        fc.ca_file = fetch_ca;
        fc.amd_kds_url = kds_url;
        fc.intel_pcs_url = pcs_url;
        /* the one issuer whose JWKS may be fetched: --jwks-url (keyed by --issuer when given),
         * else --issuer's OpenID configuration, else (gcp) Google's fixed issuer */
        fiss.issuer = issuer ? issuer : jwks_url ? jwks_url : tee == SH_ATTEST_TEE_GCP ? GCP_ISSUER : NULL;
        fiss.jwks_url = jwks_url;
        fc.issuers = &fiss;
        fc.nissuers = fiss.issuer ? 1 : 0;
        if (!(fetcher = sh_attest_fetcher_new(&fc, eb, sizeof eb))) {
            fprintf(stderr, "shield verify: --cache-dir: %s\n", eb);
            goto out;
        }
    }
    if (!(ev = sh_attest_decode_input(raw, rawlen, &evlen)) ||
        sh_attest_verify(ev, evlen, tee, &o, &r) < 0) {
        fprintf(stderr, "shield verify: out of memory\n");
        goto out;
    }
    /* --fetch / --offline: fetch what was missing, then verify once more */
    int snp = tee == SH_ATTEST_TEE_SEV_SNP, dcap = tee == SH_ATTEST_TEE_TDX || tee == SH_ATTEST_TEE_SGX,
        tok = tee == SH_ATTEST_TEE_MAA || tee == SH_ATTEST_TEE_GCP;
    if (fetcher && !r->verified && r->reason == SH_ATTEST_COLLATERAL_MISSING &&
        (snp || (dcap && !collateral_path) || (tok && !jwks_path))) {
        char fm[200] = "";
        int64_t now = (int64_t)time(NULL); /* cache freshness: the real clock, not --at */
        int frc = -1;
        if (snp) {
            frc = fetch_snp(fetcher, ev, evlen, now, fbuf, flen, &nfbuf, fm, sizeof fm);
            for (size_t i = 0; frc == 0 && i < nfbuf; i++)
                certs[o.ncerts++] = (sh_attest_bytes){fbuf[i], flen[i]};
        } else if (dcap) {
            frc = fetch_dcap(fetcher, tee, ev, evlen, now, &collateral, &o.collateral_len, fm, sizeof fm);
            o.collateral = collateral;
        } else if (!fiss.issuer) {
            snprintf(fm, sizeof fm, "no --jwks-url or --issuer to fetch the JWKS from");
        } else {
            sh_attest_fetched jf;
            sh_attest_fetch_error fe;
            memset(&fe, 0, sizeof fe);
            if ((frc = sh_attest_fetch_jwks(fetcher, fiss.issuer, now, &jf, &fe)) == 0) {
                free(jf.issuer_chain);
                o.jwks = jwks = jf.data;
                o.jwks_len = jf.len;
            } else {
                snprintf(fm, sizeof fm, "%.190s", fe.message);
            }
        }
        if (frc == 0) {
            sh_attest_result_free(r);
            r = NULL;
            if (sh_attest_verify(ev, evlen, tee, &o, &r) < 0) {
                fprintf(stderr, "shield verify: out of memory\n");
                goto out;
            }
        } else {
            snprintf(r->message, sizeof r->message, "%s failed: %.199s", offline ? "offline lookup" : "fetch", fm);
        }
    }
    if (as_json) {
        json_t *j = sh_attest_result_to_json(r, 0);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(j);
    } else {
        print_human(r);
    }
    code = r->verified ? 0 : 1;
out:
    sh_attest_result_free(r);
    sh_attest_policy_free(pol);
    for (size_t i = 0; i < ncert; i++)
        free(certbuf[i]);
    free(raw);
    free(jwks);
    free(collateral);
    for (size_t i = 0; i < nfbuf; i++)
        free(fbuf[i]);
    sh_attest_fetcher_free(fetcher);
    free(cache_owned);
    free(ev);
    OPENSSL_free(nonce);
    free(spki);
    fflush(stdout);
    return code;
}
