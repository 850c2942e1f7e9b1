/* attest/cbor_scan.c — allocation-free structural pre-scan of untrusted CBOR.
 *
 * cbor_load() (libcbor 0.8) allocates containers from the count in their header before it
 * has seen the items, so a 9-byte input can ask for gigabytes.  This pass walks the input
 * with libcbor's streaming decoder (no allocation) and rejects, before anything is built:
 * indefinite lengths (strict CBOR for Nitro), counts larger than the bytes left, nesting
 * deeper than SH_CBOR_MAX_DEPTH, trailing bytes after the top item.  As a by-product it
 * reports the byte strings of a top-level array (COSE_Sign1 fields) for the cache fast path.
 */
#include "internal.h"

#include <cbor.h>
#include <string.h>

#define SH_CBOR_MAX_DEPTH 16

typedef struct scan {
  size_t remaining[SH_CBOR_MAX_DEPTH], total[SH_CBOR_MAX_DEPTH];
  int depth, done, err, started;
  size_t left; /* bytes not yet consumed, for count sanity */
  sh_cbor_top *top;
} scan;

static void item(scan *s, int container, size_t count, const uint8_t *bs, size_t bslen) {
  if (s->err) return;
  if (s->done) {
    s->err = 1;
    return;
  }
  if (s->depth > 0) {
    size_t idx = s->total[s->depth - 1] - s->remaining[s->depth - 1];
    if (s->depth == 1 && idx < 4 && bs) {
      s->top->bstr[idx].ptr = bs;
      s->top->bstr[idx].len = bslen;
      s->top->is_bstr[idx] = 1;
    }
    s->remaining[s->depth - 1]--;
  }
  if (container && count > 0) {
    if (s->depth >= SH_CBOR_MAX_DEPTH || count > s->left) {
      s->err = 1;
      return;
    }
    s->remaining[s->depth] = s->total[s->depth] = count;
    s->depth++;
    return;
  }
  while (s->depth > 0 && s->remaining[s->depth - 1] == 0)
    s->depth--;
  if (s->depth == 0) s->done = 1;
}

static void on_scalar(void *c) {
  item(c, 0, 0, NULL, 0);
}
static void on_u8(void *c, uint8_t v) {
  (void)v;
  on_scalar(c);
}
static void on_u16(void *c, uint16_t v) {
  (void)v;
  on_scalar(c);
}
static void on_u32(void *c, uint32_t v) {
  (void)v;
  on_scalar(c);
}
static void on_u64(void *c, uint64_t v) {
  (void)v;
  on_scalar(c);
}
static void on_f(void *c, float v) {
  (void)v;
  on_scalar(c);
}
static void on_d(void *c, double v) {
  (void)v;
  on_scalar(c);
}
static void on_b(void *c, bool v) {
  (void)v;
  on_scalar(c);
}
static void on_bstr(void *c, cbor_data p, size_t n) {
  item(c, 0, 0, p, n);
}
static void on_str(void *c, cbor_data p, size_t n) {
  (void)p;
  (void)n;
  on_scalar(c);
}
static void on_indef(void *c) {
  ((scan *)c)->err = 1;
}
static void on_array(void *c, size_t n) {
  scan *s = c;
  if (s->depth == 0 && !s->done) s->top->nitems = n;
  item(c, 1, n, NULL, 0);
}
static void on_map(void *c, size_t n) {
  if (n > SIZE_MAX / 2) {
    ((scan *)c)->err = 1;
    return;
  }
  item(c, 1, 2 * n, NULL, 0);
}
static void on_tag(void *c, uint64_t v) {
  scan *s = c;
  if (s->depth == 0 && !s->done && !s->top->tagged) {
    s->top->tagged = 1;
    s->top->tag = v;
  } else if (s->depth == 0) {
    s->err = 1; /* nested tags on the top item: never valid for our formats */
  }
}

static const struct cbor_callbacks scan_cb = {
    .uint8 = on_u8,
    .uint16 = on_u16,
    .uint32 = on_u32,
    .uint64 = on_u64,
    .negint8 = on_u8,
    .negint16 = on_u16,
    .negint32 = on_u32,
    .negint64 = on_u64,
    .byte_string_start = on_indef,
    .byte_string = on_bstr,
    .string = on_str,
    .string_start = on_indef,
    .indef_array_start = on_indef,
    .array_start = on_array,
    .indef_map_start = on_indef,
    .map_start = on_map,
    .tag = on_tag,
    .float2 = on_f,
    .float4 = on_f,
    .float8 = on_d,
    .undefined = on_scalar,
    .null = on_scalar,
    .boolean = on_b,
    .indef_break = on_indef,
};

int sh_attest__cbor_scan(const uint8_t *p, size_t len, sh_cbor_top *top) {
  scan s;
  memset(&s, 0, sizeof s);
  memset(top, 0, sizeof *top);
  s.top = top;
  size_t off = 0;
  while (off < len && !s.err && !s.done) {
    s.left = len - off;
    struct cbor_decoder_result res = cbor_stream_decode(p + off, len - off, &scan_cb, &s);
    if (res.status != CBOR_DECODER_FINISHED || res.read == 0) return -1;
    off += res.read;
  }
  return (!s.err && s.done && off == len) ? 0 : -1;
}
