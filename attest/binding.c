/* attest/binding.c — the binding digest (protocol.md §1.2) and evidence text decoding. */
#include "internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

/* D = SHA-512("shield-binding-v1" ‖ 0x00 ‖ u16be(len n) ‖ n ‖ u16be(len k) ‖ k) */
int sh_attest_binding_digest(const uint8_t *nonce, size_t nonce_len, const uint8_t *spki,
                             size_t spki_len, uint8_t out[64])
{
    static const char label[] = "shield-binding-v1"; /* sizeof includes the 0x00 */
    if (nonce_len > 0xFFFF || spki_len > 0xFFFF)
        return -1;
    uint8_t ln[2] = {(uint8_t)(nonce_len >> 8), (uint8_t)nonce_len};
    uint8_t lk[2] = {(uint8_t)(spki_len >> 8), (uint8_t)spki_len};
    unsigned int olen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c && EVP_DigestInit_ex(c, EVP_sha512(), NULL) &&
             EVP_DigestUpdate(c, label, sizeof label) && EVP_DigestUpdate(c, ln, 2) &&
             (!nonce_len || EVP_DigestUpdate(c, nonce, nonce_len)) &&
             EVP_DigestUpdate(c, lk, 2) && (!spki_len || EVP_DigestUpdate(c, spki, spki_len)) &&
             EVP_DigestFinal_ex(c, out, &olen) && olen == 64;
    EVP_MD_CTX_free(c);
    return ok ? 0 : -1;
}

static int is_ws(uint8_t c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

static int is_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int is_b64(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/' || c == '-' || c == '_';
}

/* Raw evidence (CBOR, reports) always contains bytes outside these alphabets in practice; a
 * text form is taken only when the whole input fits one alphabet.  Hex is tried first (hex
 * digits are also base64 characters), then base64 (both alphabets, '=' padding optional).
 * Decoding itself is OpenSSL's (OPENSSL_hexstr2buf_ex, EVP_DecodeBlock). */
uint8_t *sh_attest_decode_input(const uint8_t *in, size_t len, size_t *out_len)
{
    size_t n = 0, pad = 0;
    int hex = 1, b64 = 1;
    char *t = malloc(len + 4);
    uint8_t *out = malloc(len ? len : 1);
    if (!t || !out) {
        free(t);
        free(out);
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t c = in[i];
        if (is_ws(c))
            continue;
        if (c == '=') {
            pad++;
            hex = 0;
            continue;
        }
        if (pad)
            b64 = 0;
        hex &= is_hex(c);
        b64 &= is_b64(c);
        t[n++] = (char)(c == '-' ? '+' : c == '_' ? '/' : c);
    }
    *out_len = len;
    if (n && hex && n % 2 == 0) {
        t[n] = 0;
        size_t l = 0;
        if (OPENSSL_hexstr2buf_ex(out, len, &l, t, '\0') == 1) {
            *out_len = l;
            free(t);
            return out;
        }
    }
    if (n && b64 && pad <= 2 && n % 4 != 1 && (!pad || (n + pad) % 4 == 0)) {
        size_t p = (4 - n % 4) % 4;
        for (size_t i = 0; i < p; i++)
            t[n + i] = '=';
        int l = EVP_DecodeBlock(out, (const unsigned char *)t, (int)(n + p));
        if (l >= 0 && (size_t)l >= p) {
            *out_len = (size_t)l - p;
            free(t);
            return out;
        }
    }
    free(t);
    memcpy(out, in, len);
    *out_len = len;
    return out;
}
