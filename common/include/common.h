/*
 * common/include/common.h — the small helpers every Shield module shares (the one public
 * header of common/).
 *
 * Owns:   the byte-slice type (sh_iovec); base64 (RFC 4648) with explicit alphabet, padding
 *         and whitespace rules, always canonical; lower-case hex; RFC 3339 times; the TEE type
 *         table (names and the aliases of docs/protocol.md §0); the version string.
 * Never:  allocates except in the *_alloc functions, keeps mutable state, reads the clock,
 *         knows about HTTP, attestation or Python.  Depends on libc and OpenSSL's libcrypto
 *         only: base64 is OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock underneath (a primitive
 *         a library provides is never hand-rolled), with the alphabet, padding, whitespace and
 *         canonical-encoding rules on top, because EVP_DecodeBlock has none of them (it takes
 *         any trailing bits, and whitespace around the input).
 * Threads: every function may be called from any thread.
 * Memory: inputs are borrowed for the call; outputs go to caller buffers (sizes documented)
 *         or, for *_alloc, are malloc'd and freed by the caller with free().
 * Errors: 0 on success, -1 on bad input (nothing written to the output is meaningful then).
 */
#ifndef SHIELD_COMMON_H
#define SHIELD_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- The byte slice ----
 * A view of bytes that belong to someone else and are not NUL-terminated (wire data, evidence,
 * certificates).  `base` and `ptr` are the same pointer, as text or as bytes.  A positional
 * initializer sets `base` ({"abc", 3}); with byte data write {.ptr = p, .len = n}. */
typedef struct sh_iovec {
  union {
    const char *base;
    const uint8_t *ptr;
  };
  size_t len;
} sh_iovec;

/* ---- Base64 (RFC 4648) ----
 * Flags.  Alphabet: SH_B64_URL encodes with '-' '_' (§5), else '+' '/' (§4); decoding accepts
 * the alphabets whose flags are set, character by character (none set: the standard one).
 * Padding: encoding writes '=' padding only with SH_B64_PAD; decoding requires it with
 * SH_B64_PAD, refuses any '=' with SH_B64_NOPAD, and otherwise takes it as optional: absent,
 * or exactly what completes the last quantum ("Zg==" or "Zg", never "Zg=" or "Zm9v=").
 * Whitespace (space, tab, CR, LF) is refused unless SH_B64_WS, then skipped anywhere.
 * Decoding is always canonical (RFC 4648 §3.5): the bits below the last full byte must be
 * zero, so one byte string has exactly one encoding per flag set; data after '=' is refused,
 * and so is a length that leaves one character in the last quantum. */
#define SH_B64_STD 0x01u
#define SH_B64_URL 0x02u
#define SH_B64_PAD 0x04u
#define SH_B64_NOPAD 0x08u
#define SH_B64_WS 0x10u
/* The protocol's byte strings and JWS segments (RFC 7515 §2): base64url without padding. */
#define SH_B64_PROTOCOL (SH_B64_URL | SH_B64_NOPAD)
/* Evidence and values from clients (headers, JSON bodies): either alphabet, padding optional,
 * whitespace ignored. */
#define SH_B64_LENIENT (SH_B64_STD | SH_B64_URL | SH_B64_WS)

/* Characters for n bytes, padded (the unpadded length is at most this); add 1 for the NUL. */
#define SH_B64_ENCODED_LEN(n) (((n) + 2) / 3 * 4)
/* Bytes at most decoded from n characters. */
#define SH_B64_DECODED_MAX(n) ((n) / 4 * 3 + 2)

/* Encodes n bytes into out (SH_B64_ENCODED_LEN(n) + 1 bytes), NUL-terminated; returns the
 * length written without the NUL. */
size_t sh_b64_encode(const void *in, size_t n, unsigned flags, char *out);
/* The same, malloc'd; NULL when out of memory. */
char *sh_b64_encode_alloc(const void *in, size_t n, unsigned flags);
/* Decodes n characters into out (cap bytes; SH_B64_DECODED_MAX(n) always suffice).  Returns 0
 * with *out_len set, or -1 (not base64 under `flags`, or more than cap bytes). */
int sh_b64_decode(const char *in, size_t n, unsigned flags, uint8_t *out, size_t cap,
                  size_t *out_len);
/* The same, malloc'd (at least 1 byte, so an empty result is not NULL); NULL on bad input or
 * when out of memory. */
uint8_t *sh_b64_decode_alloc(const char *in, size_t n, unsigned flags, size_t *out_len);

/* ---- Hex ---- */
/* Lower-case hex of n bytes into out (2n + 1 bytes), NUL-terminated; returns 2n. */
size_t sh_hex_encode(const void *in, size_t n, char *out);
/* Exactly 2n hex digits (either case, nothing else: no separators, no whitespace, no "0x")
 * into n bytes.  Returns 0, or -1 (another length or a non-hex character). */
int sh_hex_decode(const char *in, size_t len, uint8_t *out, size_t n);

/* ---- RFC 3339 times ----
 * Parses "2022-10-13T08:58:02Z": RFC 3339 §5.6 date-time, four-digit year and two-digit fields,
 * 'T', 't' or a space between date and time (the §5.6 note), an optional fraction of one or
 * more digits (ignored: the result is in whole seconds), then 'Z', 'z' or a numeric offset
 * ±HH:MM (HH <= 23, MM <= 59).  Every field is checked against its range, the day against the
 * month's length (leap years included); a leap second (second 60) is refused, because Unix
 * time has none and rolling it into the next second would move the instant silently.  With
 * SH_RFC3339_UNIX, a string of decimal digits only is taken as Unix seconds.  Returns 0 with
 * *out in seconds since the epoch (negative before 1970), or -1. */
#define SH_RFC3339_UNIX 0x01u
int sh_rfc3339_parse(const char *s, size_t len, unsigned flags, int64_t *out);
/* "YYYY-MM-DDTHH:MM:SSZ" (UTC) into out (SH_RFC3339_LEN + 1 bytes).  Returns 0, or -1 for a
 * time outside the years 0000..9999. */
#define SH_RFC3339_LEN 20
int sh_rfc3339_format(int64_t t, char out[SH_RFC3339_LEN + 1]);

/* ---- TEE types (docs/protocol.md §0) ----
 * The values are stored (session records, metrics slots): never renumber, only append. */
typedef enum sh_tee {
  SH_TEE_UNKNOWN = 0,
  SH_TEE_NITRO,
  SH_TEE_SEV_SNP,
  SH_TEE_AZURE_SNP,
  SH_TEE_MAA,       /* Azure Attestation token (JWT) */
  SH_TEE_GCP,       /* Confidential Space token (JWT) */
  SH_TEE_TDX,       /* Intel TDX DCAP quote (v4, v5) */
  SH_TEE_SGX,       /* Intel SGX DCAP quote (v3) */
  SH_TEE_SIMULATED, /* Nitro-format COSE from a local dev root (docs/protocol.md §1.7) */
  SH_TEE_AZURE_TDX, /* Azure TDX CVM: CBOR {"hcl_report", "td_quote"} (docs/protocol.md §1.5) */
  SH_TEE_COUNT_     /* number of values, for tables indexed by type */
} sh_tee;

/* The bit of type t in a mask of accepted types. */
#define SH_TEE_BIT(t) (1u << (unsigned)(t))

/* "nitro", "sev-snp", "azure-snp", "azure-tdx", "maa", "gcp", "tdx", "sgx", "simulated", and
 * the Shield library's spellings "aws_nitro", "sev", "gcp_sev", "azure_maa", "intel_sgx"
 * (exact, case-sensitive) -> the type, or SH_TEE_UNKNOWN (also for NULL). */
sh_tee sh_tee_from_name(const char *name);
sh_tee sh_tee_from_namen(const char *name, size_t len);
/* The canonical name ("sev-snp"); "unknown" for SH_TEE_UNKNOWN or a value out of range. */
const char *sh_tee_name(sh_tee t);
/* A comma-separated list of names ("nitro,sev-snp,maa"; no spaces, no empty item, duplicates
 * harmless) -> *mask of SH_TEE_BIT()s.  Returns 0, or -1 with *bad (optional) the offending
 * item as a view into `list` (len 0: an empty item, or an empty list). */
int sh_tee_parse_list(const char *list, size_t len, unsigned *mask, sh_iovec *bad);

/* ---- Version ---- */
/* The project's version (meson.project_version(), e.g. "0.1.0"). */
const char *sh_version(void);

#ifdef __cplusplus
}
#endif
#endif
