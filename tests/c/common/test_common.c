/* tests/c/common/test_common.c — common/: base64 (alphabets, padding rules, whitespace,
 * canonical encoding, bad characters, output bounds), hex (case, odd and wrong lengths),
 * RFC 3339 (offsets, fractions, leap seconds and out-of-range fields refused, Unix seconds,
 * formatting), the TEE table (names, aliases, length-delimited lookup, lists) and the version.
 * Prints "N passed, N failed"; exits non-zero on failure. */
#include "testutil.h"

#include "common.h"

/* ---- base64 ---- */

/* Decodes s under flags; 1 when it decodes to exactly want (wl bytes), 0 otherwise. */
static int dec_is(const char *s, unsigned flags, const char *want, size_t wl) {
  uint8_t out[256];
  size_t n = 999;
  if (sh_b64_decode(s, strlen(s), flags, out, sizeof out, &n) < 0) return 0;
  return n == wl && memcmp(out, want, wl) == 0;
}

static int dec_fails(const char *s, unsigned flags) {
  uint8_t out[256];
  size_t n = 0;
  return sh_b64_decode(s, strlen(s), flags, out, sizeof out, &n) < 0;
}

static void test_b64_encode(void) {
  static const struct {
    const char *in, *std_pad, *url_nopad;
  } v[] = {/* RFC 4648 §10 test vectors, and bytes that differ between the alphabets */
           {"", "", ""},
           {"f", "Zg==", "Zg"},
           {"fo", "Zm8=", "Zm8"},
           {"foo", "Zm9v", "Zm9v"},
           {"foob", "Zm9vYg==", "Zm9vYg"},
           {"fooba", "Zm9vYmE=", "Zm9vYmE"},
           {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
           {"\xfb\xff", "+/8=", "-_8"},
           {"\xfb\xef\xbe", "++++", "----"}};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    char out[64];
    size_t l = strlen(v[i].in);
    size_t n = sh_b64_encode(v[i].in, l, SH_B64_STD | SH_B64_PAD, out);
    CHECK(n == strlen(v[i].std_pad) && !strcmp(out, v[i].std_pad), "std pad \"%s\": %s", v[i].in,
          out);
    n = sh_b64_encode(v[i].in, l, SH_B64_PROTOCOL, out);
    CHECK(n == strlen(v[i].url_nopad) && !strcmp(out, v[i].url_nopad), "url \"%s\": %s", v[i].in,
          out);
    char want[64];
    snprintf(want, sizeof want, "%.*s", (int)strcspn(v[i].std_pad, "="), v[i].std_pad);
    n = sh_b64_encode(v[i].in, l, 0, out); /* 0: standard alphabet, no padding */
    CHECK(n == strlen(want) && !strcmp(out, want), "flags 0 \"%s\": %s", v[i].in, out);
    char *a = sh_b64_encode_alloc(v[i].in, l, SH_B64_URL | SH_B64_PAD);
    CHECK(a && strlen(a) == strlen(v[i].std_pad), "alloc \"%s\": %s", v[i].in, a ? a : "NULL");
    free(a);
  }
  /* was: crypto/b64.c's encoder (tests/c/test_crypto.c) */
  char b[8];
  CHECK(sh_b64_encode((const uint8_t *)"\xfb\xff", 2, SH_B64_PROTOCOL, b) == 3 && !strcmp(b, "-_8"),
        "b64url %s", b);
  /* long inputs cross the chunk boundaries of both directions: round trip */
  static uint8_t big[5000], back[5000];
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (uint8_t)(i * 7 + 3);
  for (size_t l = 0; l <= sizeof big; l += 257) {
    char *e = sh_b64_encode_alloc(big, l, SH_B64_URL);
    size_t n = 0;
    CHECK(e && strlen(e) == (4 * l + 2) / 3, "encoded length %zu", l);
    CHECK(e && sh_b64_decode(e, strlen(e), SH_B64_URL, back, sizeof back, &n) == 0 && n == l &&
              !memcmp(back, big, l),
          "round trip %zu", l);
    free(e);
  }
}

static void test_b64_decode(void) {
  /* padding optional (neither PAD nor NOPAD): absent, or exactly right */
  CHECK(dec_is("Zg", SH_B64_STD, "f", 1), "unpadded");
  CHECK(dec_is("Zg==", SH_B64_STD, "f", 1), "padded");
  CHECK(dec_is("Zm8=", SH_B64_STD, "fo", 2), "padded 1");
  CHECK(dec_is("", SH_B64_STD, "", 0), "empty");
  CHECK(dec_fails("Zg=", SH_B64_STD), "short padding");
  CHECK(dec_fails("Zm9v=", SH_B64_STD), "padding after a full quantum");
  CHECK(dec_fails("Zg===", SH_B64_STD), "three '='");
  CHECK(dec_fails("Z===", SH_B64_STD), "one character and padding");
  CHECK(dec_fails("====", SH_B64_STD), "padding only");
  CHECK(dec_fails("Zg=A", SH_B64_STD), "data after padding");
  CHECK(dec_fails("Zg==Zg==", SH_B64_STD), "two padded quanta");
  /* padding required */
  CHECK(dec_is("Zg==", SH_B64_STD | SH_B64_PAD, "f", 1), "required, present");
  CHECK(dec_is("Zm9v", SH_B64_STD | SH_B64_PAD, "foo", 3), "required, none needed");
  CHECK(dec_fails("Zg", SH_B64_STD | SH_B64_PAD), "required, absent");
  CHECK(dec_fails("Zm8", SH_B64_STD | SH_B64_PAD), "required, absent 2");
  /* padding forbidden */
  CHECK(dec_is("Zg", SH_B64_PROTOCOL, "f", 1), "forbidden, absent");
  CHECK(dec_fails("Zg==", SH_B64_PROTOCOL), "forbidden, present");
  CHECK(dec_fails("Zm8=", SH_B64_PROTOCOL), "forbidden, present 1");
  /* one character in the last quantum never makes a byte */
  CHECK(dec_fails("Z", SH_B64_LENIENT), "1 char");
  CHECK(dec_fails("Zm9vY", SH_B64_LENIENT), "5 chars");
  CHECK(dec_fails("a", SH_B64_LENIENT), "1 char accepted"); /* was: test_crypto.c */
  /* canonical (RFC 4648 §3.5): the unused bits must be zero */
  CHECK(dec_fails("Zh", SH_B64_LENIENT), "non-canonical 2");
  CHECK(dec_fails("Zh==", SH_B64_LENIENT), "non-canonical 2, padded");
  CHECK(dec_fails("Zm9", SH_B64_LENIENT), "non-canonical 3");
  CHECK(dec_fails("-_9", SH_B64_LENIENT), "non-canonical accepted"); /* was: test_crypto.c */
  CHECK(dec_is("Zm8", SH_B64_LENIENT, "fo", 2), "canonical 3");
  /* alphabets */
  CHECK(dec_is("-_8", SH_B64_URL, "\xfb\xff", 2), "url");
  CHECK(dec_fails("+/8", SH_B64_URL), "standard characters under url");
  CHECK(dec_is("+/8=", SH_B64_STD, "\xfb\xff", 2), "standard padded"); /* was: test_crypto.c */
  CHECK(dec_fails("-_8", SH_B64_STD), "url characters under standard");
  CHECK(dec_fails("-_8", 0), "url characters under 0 (standard)");
  CHECK(dec_is("-/8", SH_B64_STD | SH_B64_URL, "\xfb\xff", 2), "both alphabets, mixed");
  CHECK(dec_is("+_8=", SH_B64_LENIENT, "\xfb\xff", 2), "lenient mixed padded");
  /* bad characters, anywhere */
  static const char *const bad[] = {"Zm9v!", "Zm.9v", "Zm9v\x80", "Zm9v\"", "Z\x00g",
                                    "Zm9v*", "Zm 9v", "Zm9v\n",   "\tZm9v", "Zm9v\v"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint8_t out[16];
    size_t n;
    size_t l = i == 4 ? 3 : strlen(bad[i]); /* with an embedded NUL */
    CHECK(sh_b64_decode(bad[i], l, SH_B64_STD | SH_B64_URL, out, sizeof out, &n) < 0,
          "bad character accepted (%zu)", i);
  }
  /* whitespace: refused by default, skipped anywhere with SH_B64_WS */
  CHECK(dec_is(" Zm\r\n9v\t", SH_B64_LENIENT, "foo", 3), "whitespace skipped");
  CHECK(dec_is("Zg= =", SH_B64_LENIENT, "f", 1), "whitespace inside the padding");
  CHECK(dec_is("Zg==\n", SH_B64_LENIENT, "f", 1), "whitespace after the padding");
  CHECK(dec_fails("Zg== A", SH_B64_LENIENT), "data after padding and whitespace");
  CHECK(dec_is(" \n", SH_B64_LENIENT, "", 0), "whitespace only is empty");
  CHECK(dec_fails("Zm9v\v", SH_B64_LENIENT), "vertical tab is not whitespace here");
  /* the x5c rule (RFC 7517 §4.7) and the JWS rule (RFC 7515 §2), as attest/jwt.c had them
   * (these cases and the round trip below were tests/c/test_jwt.c's test_base64) */
  static const struct {
    const char *in;
    int std;
    const char *out;
  } ok[] = {
      {"", 0, ""},        {"Zg", 0, "f"},         {"Zm8", 0, "fo"},
      {"Zm9v", 0, "foo"}, {"-_8", 0, "\xfb\xff"}, {"Zg==", 1, "f"},
      {"Zm8=", 1, "fo"},  {"Zm9v", 1, "foo"},     {"+/8=", 1, "\xfb\xff"},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    unsigned f = ok[i].std ? SH_B64_STD | SH_B64_PAD : SH_B64_PROTOCOL;
    CHECK(dec_is(ok[i].in, f, ok[i].out, strlen(ok[i].out)), "decode %s", ok[i].in);
  }
  static const struct {
    const char *in;
    int std;
  } no[] = {
      {"Zg=", 0},    {"Zg==", 0}, {"Z", 0},    {"Zh", 0},   {"Zm9", 0},  {"+/8", 0},  {"Zm 9v", 0},
      {"Zm9v\n", 0}, {"Zg", 1},   {"Zh==", 1}, {"Zg=A", 1}, {"Z===", 1}, {"-_8=", 1}, {"Zm9v=", 1},
  };
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
    unsigned f = no[i].std ? SH_B64_STD | SH_B64_PAD : SH_B64_PROTOCOL;
    CHECK(dec_fails(no[i].in, f), "accepted bad base64 \"%s\" (std %d)", no[i].in, no[i].std);
  }
  uint8_t all[256];
  for (int i = 0; i < 256; i++)
    all[i] = (uint8_t)i;
  for (size_t l = 0; l < 256; l += 7) {
    char *e = sh_b64_encode_alloc(all, l, SH_B64_PROTOCOL);
    size_t n = 0;
    uint8_t *d = e ? sh_b64_decode_alloc(e, strlen(e), SH_B64_PROTOCOL, &n) : NULL;
    CHECK(d && n == l && !memcmp(d, all, l), "round trip %zu", l);
    free(e);
    free(d);
  }
  /* output bounds: exactly enough is enough, one less is refused (never overrun) */
  uint8_t out[3];
  size_t n = 0;
  CHECK(sh_b64_decode("Zm9v", 4, SH_B64_STD, out, 3, &n) == 0 && n == 3, "cap exact");
  CHECK(sh_b64_decode("Zm9v", 4, SH_B64_STD, out, 2, &n) < 0, "cap short by one");
  CHECK(sh_b64_decode("Zg==", 4, SH_B64_STD, out, 1, &n) == 0 && n == 1 && out[0] == 'f',
        "padded quantum into 1 byte");
  CHECK(sh_b64_decode("Zm8", 3, SH_B64_STD, out, 1, &n) < 0, "partial quantum over cap");
  /* was: crypto/b64.c's decoder (tests/c/test_crypto.c) */
  uint8_t d[8];
  CHECK(sh_b64_decode("-_8", 3, SH_B64_LENIENT, d, sizeof d, &n) == 0 && n == 2 && d[0] == 0xfb &&
            d[1] == 0xff,
        "decode");
  /* the alloc form: empty input is an empty result, not NULL */
  uint8_t *a = sh_b64_decode_alloc("", 0, SH_B64_PROTOCOL, &n);
  CHECK(a && n == 0, "alloc empty");
  free(a);
  CHECK(!sh_b64_decode_alloc("Zh", 2, SH_B64_PROTOCOL, &n), "alloc refuses bad input");
}

/* ---- hex ---- */

static void test_hex(void) {
  char h[16];
  CHECK(sh_hex_encode("\x00\x01\xab\xff", 4, h) == 8 && !strcmp(h, "0001abff"), "encode %s", h);
  CHECK(sh_hex_encode("", 0, h) == 0 && h[0] == 0, "encode empty");
  uint8_t b[4];
  CHECK(sh_hex_decode("0001abff", 8, b, 4) == 0 && !memcmp(b, "\x00\x01\xab\xff", 4), "lower");
  CHECK(sh_hex_decode("0001ABFF", 8, b, 4) == 0 && !memcmp(b, "\x00\x01\xab\xff", 4), "upper");
  CHECK(sh_hex_decode("0001aBfF", 8, b, 4) == 0 && !memcmp(b, "\x00\x01\xab\xff", 4), "mixed");
  CHECK(sh_hex_decode("", 0, b, 0) == 0, "empty");
  CHECK(sh_hex_decode("0001abf", 7, b, 4) < 0, "odd length");
  CHECK(sh_hex_decode("0001abf", 7, b, 3) < 0, "odd length, n = len / 2");
  CHECK(sh_hex_decode("0001ab", 6, b, 4) < 0, "too short");
  CHECK(sh_hex_decode("0001abff00", 10, b, 4) < 0, "too long");
  CHECK(sh_hex_decode("0001abfg", 8, b, 4) < 0, "non-hex");
  CHECK(sh_hex_decode("00:1abff", 8, b, 4) < 0, "separator");
  CHECK(sh_hex_decode(" 001abff", 8, b, 4) < 0, "space");
  CHECK(sh_hex_decode("0x01abff", 8, b, 4) < 0, "0x prefix");
  CHECK(sh_hex_decode("00\0"
                      "01abf",
                      8, b, 4) < 0,
        "embedded NUL");
}

/* ---- RFC 3339 ---- */

static int t_is(const char *s, unsigned flags, int64_t want) {
  int64_t t = 0;
  return sh_rfc3339_parse(s, strlen(s), flags, &t) == 0 && t == want;
}

static int t_fails(const char *s, unsigned flags) {
  int64_t t = 0;
  return sh_rfc3339_parse(s, strlen(s), flags, &t) < 0;
}

static void test_rfc3339(void) {
  const int64_t T0 = 1665651482; /* 2022-10-13T08:58:02Z */
  CHECK(t_is("2022-10-13T08:58:02Z", 0, T0), "Z");
  CHECK(t_is("2022-10-13t08:58:02z", 0, T0), "lower case t and z (RFC 3339 §5.6 note)");
  CHECK(t_is("2022-10-13 08:58:02Z", 0, T0), "space separator (§5.6 note)");
  CHECK(t_is("2022-10-13T08:58:02.5Z", 0, T0), "fraction");
  CHECK(t_is("2022-10-13T08:58:02.123456789Z", 0, T0), "long fraction");
  CHECK(t_is("2022-10-13T10:58:02+02:00", 0, T0), "positive offset");
  CHECK(t_is("2022-10-13T03:28:02-05:30", 0, T0), "negative offset");
  CHECK(t_is("2022-10-13T08:58:02+00:00", 0, T0), "+00:00");
  CHECK(t_is("2022-10-13T08:58:02-00:00", 0, T0), "-00:00 (§4.3: UTC, local offset unknown)");
  CHECK(t_is("2022-10-14T00:58:02.25+16:00", 0, T0), "fraction and offset");
  CHECK(t_is("1970-01-01T00:00:00Z", 0, 0), "epoch");
  CHECK(t_is("1969-12-31T23:59:59Z", 0, -1), "before the epoch");
  CHECK(t_is("2024-02-29T00:00:00Z", 0, 1709164800), "leap day");
  CHECK(t_is("2000-02-29T12:00:00Z", 0, 951825600), "leap day, year divisible by 400");
  CHECK(t_is("9999-12-31T23:59:59Z", 0, 253402300799), "last second of 9999");
  /* refused */
  static const char *const bad[] = {
      "2022-10-13T08:58:60Z",      /* leap second: Unix time has none */
      "2016-12-31T23:59:60Z",      /* a real one */
      "2022-13-13T08:58:02Z",      /* month 13 */
      "2022-00-13T08:58:02Z",      /* month 0 */
      "2022-10-00T08:58:02Z",      /* day 0 */
      "2022-10-32T08:58:02Z",      /* day 32 */
      "2023-02-29T08:58:02Z",      /* not a leap year */
      "1900-02-29T08:58:02Z",      /* divisible by 100, not by 400 */
      "2022-04-31T08:58:02Z",      /* April has 30 days */
      "2022-10-13T24:00:00Z",      /* hour 24 */
      "2022-10-13T08:60:02Z",      /* minute 60 */
      "2022-10-13T08:58:02",       /* no offset */
      "2022-10-13T08:58:02+0200",  /* offset without colon */
      "2022-10-13T08:58:02+24:00", /* offset hour 24 */
      "2022-10-13T08:58:02+02:60", /* offset minute 60 */
      "2022-10-13T08:58:02+ab:cd", /* offset not digits */
      "2022-10-13T08:58:02.Z",     /* fraction without digits */
      "2022-10-13T08:58:02,5Z",    /* comma fraction */
      "2022-10-13T08:58:02ZZ",     /* trailing data */
      "2022-10-13T08:58:02Z ",     /* trailing space */
      " 2022-10-13T08:58:02Z",     /* leading space */
      "2022-1-13T08:58:02Z",       /* one-digit month */
      "22-10-13T08:58:02Z",        /* two-digit year */
      "2022-10-13X08:58:02Z",      /* separator */
      "2022-10-13T8:58:02Z",       /* one-digit hour */
      "2022/10/13T08:58:02Z",      /* slashes */
      "",                          /* empty */
      "1665651482",                /* Unix seconds without SH_RFC3339_UNIX */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK(t_fails(bad[i], 0), "accepted \"%s\"", bad[i]);
  /* Unix seconds, with the flag: digits only */
  CHECK(t_is("1665651482", SH_RFC3339_UNIX, T0), "unix");
  CHECK(t_is("0", SH_RFC3339_UNIX, 0), "unix 0");
  CHECK(t_is("2022-10-13T08:58:02Z", SH_RFC3339_UNIX, T0), "RFC 3339 with the unix flag");
  CHECK(t_fails("-5", SH_RFC3339_UNIX), "negative unix");
  CHECK(t_fails("+5", SH_RFC3339_UNIX), "signed unix");
  CHECK(t_fails(" 5", SH_RFC3339_UNIX), "unix with a space");
  CHECK(t_fails("5s", SH_RFC3339_UNIX), "unix with a suffix");
  CHECK(t_fails("1234567890123456789", SH_RFC3339_UNIX), "unix, 19 digits");
  CHECK(t_fails("", SH_RFC3339_UNIX), "unix empty");
  /* length-delimited: the bytes after len are not read */
  int64_t t = 0;
  CHECK(sh_rfc3339_parse("2022-10-13T08:58:02Zjunk", 20, 0, &t) == 0 && t == T0, "len");
  CHECK(sh_rfc3339_parse("2022-10-13T08:58:02Z", 19, 0, &t) < 0, "cut before Z");
  CHECK(sh_rfc3339_parse(NULL, 0, 0, &t) < 0, "NULL");
  /* format, and the round trip */
  char out[SH_RFC3339_LEN + 1];
  CHECK(sh_rfc3339_format(T0, out) == 0 && !strcmp(out, "2022-10-13T08:58:02Z"), "format %s", out);
  CHECK(sh_rfc3339_format(0, out) == 0 && !strcmp(out, "1970-01-01T00:00:00Z"), "format 0");
  CHECK(sh_rfc3339_format(-1, out) == 0 && !strcmp(out, "1969-12-31T23:59:59Z"), "format -1");
  CHECK(sh_rfc3339_format(253402300799, out) == 0 && !strcmp(out, "9999-12-31T23:59:59Z"),
        "format 9999");
  CHECK(sh_rfc3339_format(253402300800, out) < 0, "format 10000 refused");
  for (int64_t x = -86400 * 400; x < 4102444800; x += 86400 * 37 + 3607) {
    int64_t y = 0;
    CHECK(
        sh_rfc3339_format(x, out) == 0 && sh_rfc3339_parse(out, strlen(out), 0, &y) == 0 && y == x,
        "round trip %lld: %s", (long long)x, out);
  }
}

/* ---- TEE types ---- */

static void test_tee(void) {
  static const struct {
    const char *name;
    sh_tee tee;
  } v[] = {{"nitro", SH_TEE_NITRO},
           {"sev-snp", SH_TEE_SEV_SNP},
           {"azure-snp", SH_TEE_AZURE_SNP},
           {"azure-tdx", SH_TEE_AZURE_TDX},
           {"maa", SH_TEE_MAA},
           {"gcp", SH_TEE_GCP},
           {"tdx", SH_TEE_TDX},
           {"sgx", SH_TEE_SGX},
           {"simulated", SH_TEE_SIMULATED},
           /* docs/protocol.md §0 aliases */
           {"aws_nitro", SH_TEE_NITRO},
           {"sev", SH_TEE_SEV_SNP},
           {"gcp_sev", SH_TEE_SEV_SNP},
           {"azure_maa", SH_TEE_MAA},
           {"intel_sgx", SH_TEE_SGX}};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    CHECK(sh_tee_from_name(v[i].name) == v[i].tee, "%s", v[i].name);
    char buf[32];
    snprintf(buf, sizeof buf, "%s,rest", v[i].name);
    CHECK(sh_tee_from_namen(buf, strlen(v[i].name)) == v[i].tee, "length-delimited %s", v[i].name);
  }
  /* canonical names round-trip, every value has one */
  for (int t = 1; t < SH_TEE_COUNT_; t++) {
    const char *n = sh_tee_name((sh_tee)t);
    CHECK(strcmp(n, "unknown") && sh_tee_from_name(n) == (sh_tee)t, "name of %d: %s", t, n);
    CHECK(!strchr(n, '_'), "canonical name %s is not an alias", n);
  }
  CHECK(!strcmp(sh_tee_name(SH_TEE_SEV_SNP), "sev-snp"), "sev-snp");
  CHECK(!strcmp(sh_tee_name(SH_TEE_UNKNOWN), "unknown"), "unknown");
  CHECK(!strcmp(sh_tee_name((sh_tee)99), "unknown"), "out of range");
  /* the stored values never change */
  CHECK(SH_TEE_NITRO == 1 && SH_TEE_SEV_SNP == 2 && SH_TEE_AZURE_SNP == 3 && SH_TEE_MAA == 4 &&
            SH_TEE_GCP == 5 && SH_TEE_TDX == 6 && SH_TEE_SGX == 7 && SH_TEE_SIMULATED == 8 &&
            SH_TEE_AZURE_TDX == 9 && SH_TEE_COUNT_ == 10,
        "enum values");
  static const char *const unknown[] = {"",       "NITRO",  "Nitro",   "sev_snp", "azure",
                                        "nitro ", " nitro", "unknown", "sev-snp2"};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
    CHECK(sh_tee_from_name(unknown[i]) == SH_TEE_UNKNOWN, "\"%s\" is not a type", unknown[i]);
  CHECK(sh_tee_from_name(NULL) == SH_TEE_UNKNOWN, "NULL");
  CHECK(sh_tee_from_namen("nitro", 4) == SH_TEE_UNKNOWN, "prefix");
  CHECK(sh_tee_from_namen(NULL, 3) == SH_TEE_UNKNOWN, "NULL with a length");

  /* lists */
  unsigned m = 0;
  sh_iovec bad = {NULL, 0};
  const char *l = "nitro,sev-snp,maa";
  CHECK(sh_tee_parse_list(l, strlen(l), &m, &bad) == 0 &&
            m == (SH_TEE_BIT(SH_TEE_NITRO) | SH_TEE_BIT(SH_TEE_SEV_SNP) | SH_TEE_BIT(SH_TEE_MAA)),
        "list %x", m);
  l = "aws_nitro,nitro,gcp_sev";
  CHECK(sh_tee_parse_list(l, strlen(l), &m, &bad) == 0 &&
            m == (SH_TEE_BIT(SH_TEE_NITRO) | SH_TEE_BIT(SH_TEE_SEV_SNP)),
        "aliases and duplicates %x", m);
  l = "simulated";
  CHECK(sh_tee_parse_list(l, strlen(l), &m, NULL) == 0 && m == SH_TEE_BIT(SH_TEE_SIMULATED),
        "one item, bad not wanted");
  l = "nitro,bogus,tdx";
  CHECK(sh_tee_parse_list(l, strlen(l), &m, &bad) < 0 && bad.len == 5 &&
            !memcmp(bad.base, "bogus", 5) && m == 0,
        "bad item reported: %.*s", (int)bad.len, bad.base);
  l = "nitro, tdx";
  CHECK(sh_tee_parse_list(l, strlen(l), &m, &bad) < 0 && bad.len == 4 && bad.base == l + 6,
        "space is part of the item: '%.*s'", (int)bad.len, bad.base);
  l = "nitro,,tdx";
  CHECK(sh_tee_parse_list(l, strlen(l), &m, &bad) < 0 && bad.len == 0 && bad.base == l + 6,
        "empty item");
  l = "nitro,";
  CHECK(sh_tee_parse_list(l, strlen(l), &m, &bad) < 0 && bad.len == 0, "trailing comma");
  l = ",nitro";
  CHECK(sh_tee_parse_list(l, strlen(l), &m, &bad) < 0 && bad.len == 0 && bad.base == l,
        "leading comma");
  CHECK(sh_tee_parse_list("", 0, &m, &bad) < 0 && bad.len == 0, "empty list");
  CHECK(sh_tee_parse_list(NULL, 0, &m, &bad) < 0, "NULL list");
  l = "tdx,sgxjunk";
  CHECK(sh_tee_parse_list(l, 7, &m, &bad) == 0 &&
            m == (SH_TEE_BIT(SH_TEE_TDX) | SH_TEE_BIT(SH_TEE_SGX)),
        "length-delimited list");
  l = "tdx,unknown";
  CHECK(sh_tee_parse_list(l, strlen(l), &m, &bad) < 0 && bad.len == 7, "'unknown' is not a type");
}

static void test_version(void) {
  const char *v = sh_version(), *want = getenv("SHIELD_PROJECT_VERSION"); /* meson.build */
  CHECK(v && *v && strchr(v, '.') && strspn(v, "0123456789.") > 0, "version %s", v ? v : "NULL");
  CHECK(!want || !strcmp(v, want), "version %s, meson.project_version() %s", v, want);
}

static void test_iovec(void) {
  const uint8_t bytes[3] = {1, 2, 3};
  sh_iovec a = {"abc", 3}, b = {.ptr = bytes, .len = 3};
  CHECK((const void *)a.base == (const void *)a.ptr && a.len == 3, "one pointer, two views");
  CHECK(b.base == (const char *)bytes, "ptr and base alias");
}

int main(void) {
  test_b64_encode();
  test_b64_decode();
  test_hex();
  test_rfc3339();
  test_tee();
  test_version();
  test_iovec();
  return test_summary();
}
