/* attest/result.c — the verification result: reason codes, lifetime, JSON form. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* docs/protocol.md §3 is one table: error class -> HTTP status, each reason in one class.  The
 * strings live here once; the gate's replies and the Python package (_native.REASONS) read
 * them through the three functions below. */
enum { REQUIRED, INVALID, FAILED, POLICY, UNAVAILABLE };
static const struct {
  const char *name;
  int status;
} classes[] = {
    [REQUIRED] = {"attestation_required", 401},       [INVALID] = {"attestation_invalid", 401},
    [FAILED] = {"attestation_failed", 401},           [POLICY] = {"attestation_policy", 403},
    [UNAVAILABLE] = {"attestation_unavailable", 503},
};

static const struct {
  const char *name;
  int cls;
} reasons[SH_ATTEST_REASON_COUNT_] = {
    [SH_ATTEST_OK] = {NULL, -1},
    [SH_ATTEST_MISSING] = {"missing", REQUIRED},
    [SH_ATTEST_MALFORMED] = {"malformed", INVALID},
    [SH_ATTEST_UNSUPPORTED_TYPE] = {"unsupported_type", INVALID},
    [SH_ATTEST_SIGNATURE_INVALID] = {"signature_invalid", FAILED},
    [SH_ATTEST_CHAIN_INVALID] = {"chain_invalid", FAILED},
    [SH_ATTEST_ROOT_UNTRUSTED] = {"root_untrusted", FAILED},
    [SH_ATTEST_REVOKED] = {"revoked", FAILED},
    [SH_ATTEST_EXPIRED] = {"expired", FAILED},
    [SH_ATTEST_NOT_YET_VALID] = {"not_yet_valid", FAILED},
    [SH_ATTEST_BINDING_MISMATCH] = {"binding_mismatch", FAILED},
    [SH_ATTEST_NONCE_INVALID] = {"nonce_invalid", FAILED},
    [SH_ATTEST_NONCE_EXPIRED] = {"nonce_expired", FAILED},
    [SH_ATTEST_NONCE_REPLAYED] = {"nonce_replayed", FAILED},
    [SH_ATTEST_PROOF_INVALID] = {"proof_invalid", FAILED},
    [SH_ATTEST_SESSION_UNKNOWN] = {"session_unknown", FAILED},
    [SH_ATTEST_SESSION_EXPIRED] = {"session_expired", FAILED},
    [SH_ATTEST_DEBUG_NOT_ALLOWED] = {"debug_not_allowed", POLICY},
    [SH_ATTEST_MEASUREMENT_MISMATCH] = {"measurement_mismatch", POLICY},
    [SH_ATTEST_TCB_OUT_OF_DATE] = {"tcb_out_of_date", POLICY},
    [SH_ATTEST_TCB_UNSUPPORTED] = {"tcb_unsupported", POLICY},
    [SH_ATTEST_POLICY_DENIED] = {"policy_denied", POLICY},
    [SH_ATTEST_COLLATERAL_MISSING] = {"collateral_missing", UNAVAILABLE},
    [SH_ATTEST_COLLATERAL_STALE] = {"collateral_stale", UNAVAILABLE},
    [SH_ATTEST_OVERLOADED] = {"overloaded", UNAVAILABLE},
};

/* A value outside the enum (a caller's bug, or a reason from a newer peer) reads as malformed:
 * a refusal, never an accidental OK. */
static sh_attest_reason known(sh_attest_reason r) {
  return (unsigned)r < SH_ATTEST_REASON_COUNT_ ? r : SH_ATTEST_MALFORMED;
}

const char *sh_attest_reason_name(sh_attest_reason r) {
  return reasons[known(r)].name;
}

const char *sh_attest_reason_class(sh_attest_reason r) {
  int c = reasons[known(r)].cls;
  return c < 0 ? NULL : classes[c].name;
}

int sh_attest_reason_status(sh_attest_reason r) {
  int c = reasons[known(r)].cls;
  return c < 0 ? 0 : classes[c].status;
}

/* Record the first failure only: the earliest (cheapest) check decides the reason. */
int sh_attest__fail(sh_attest_result *r, sh_attest_reason reason, const char *fmt, ...) {
  if (r->reason == SH_ATTEST_OK) {
    va_list ap;
    r->reason = reason;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
  }
  r->verified = 0;
  return -1;
}

sh_attest_result *sh_attest__result_new(void) {
  sh_attest_result *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->measurements = json_object();
  r->claims = json_object();
  r->advisories = json_array();
  if (!r->measurements || !r->claims || !r->advisories) {
    sh_attest_result_free(r);
    return NULL;
  }
  return r;
}

sh_attest_result *sh_attest_result_rejected(sh_tee tee, int64_t at, sh_attest_reason reason,
                                            const char *message) {
  sh_attest_result *r = sh_attest__result_new();
  if (!r) return NULL;
  r->tee = tee;
  r->timestamp = (double)at;
  /* fail closed even when called with SH_ATTEST_OK: a rejection always carries a reason */
  sh_attest__fail(r, reason == SH_ATTEST_OK ? SH_ATTEST_MALFORMED : reason, "%s",
                  message ? message : "");
  return r;
}

void sh_attest_result_free(sh_attest_result *r) {
  if (!r) return;
  json_decref(r->measurements);
  json_decref(r->claims);
  json_decref(r->advisories);
  free(r->public_key);
  free(r->user_data);
  free(r->nonce);
  free(r->raw_evidence);
  free(r);
}

int sh_attest__set_bytes(uint8_t **dst, size_t *dlen, const uint8_t *src, size_t len) {
  free(*dst);
  *dst = malloc(len ? len : 1);
  if (!*dst) {
    *dlen = 0;
    return -1;
  }
  if (len) memcpy(*dst, src, len);
  *dlen = len;
  return 0;
}

/* Cached results are immutable: the clone shares the JSON members (jansson's reference
 * counts are atomic) and copies the small byte fields.  raw_evidence is set by the caller. */
sh_attest_result *sh_attest__result_clone(const sh_attest_result *s) {
  sh_attest_result *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  *r = *s;
  r->public_key = r->user_data = r->nonce = r->raw_evidence = NULL;
  r->public_key_len = r->user_data_len = r->nonce_len = r->raw_evidence_len = 0;
  json_incref(r->measurements);
  json_incref(r->claims);
  json_incref(r->advisories);
  if ((s->public_key && sh_attest__set_bytes(&r->public_key, &r->public_key_len, s->public_key,
                                             s->public_key_len)) ||
      (s->user_data &&
       sh_attest__set_bytes(&r->user_data, &r->user_data_len, s->user_data, s->user_data_len)) ||
      (s->nonce && sh_attest__set_bytes(&r->nonce, &r->nonce_len, s->nonce, s->nonce_len))) {
    sh_attest_result_free(r);
    return NULL;
  }
  return r;
}

/* A new JSON string: lower-case hex of p; json null when p is NULL (absent). */
static json_t *hex_or_null(const uint8_t *p, size_t len) {
  if (!p) return json_null();
  char *h = malloc(2 * len + 1);
  if (!h) return NULL;
  json_t *j = json_stringn(h, sh_hex_encode(p, len, h));
  free(h);
  return j;
}

int sh_attest__json_unhex(json_t *v, uint8_t *out, size_t n) {
  const char *s = json_string_value(v);
  return s ? sh_hex_decode(s, json_string_length(v), out, n) : -1;
}

int sh_attest__json_hex(json_t *obj, const char *key, const uint8_t *in, size_t len) {
  json_t *j = hex_or_null(in, len);
  return j ? json_object_set_new(obj, key, j) : -1;
}

json_t *sh_attest_result_to_json(const sh_attest_result *r, int full) {
  const char *reason = sh_attest_reason_name(r->reason);
  json_t *o = json_pack(
      "{s:b, s:o, s:s, s:O, s:O, s:b, s:o, s:O}", "verified", r->verified, "reason",
      reason ? json_string(reason) : json_null(), "tee_type", sh_tee_name(r->tee), "measurements",
      r->measurements, "claims", r->claims, "debug", r->debug, "tcb_status",
      r->tcb_status ? json_string(r->tcb_status) : json_null(), "advisories", r->advisories);
  if (!o || !full) return o;
  const char *cls = sh_attest_reason_class(r->reason);
  json_object_set_new(o, "error", cls ? json_string(cls) : json_null());
  json_object_set_new(o, "message", reason ? json_string(r->message) : json_null());
  json_object_set_new(o, "timestamp", json_real(r->timestamp));
  json_object_set_new(o, "public_key", hex_or_null(r->public_key, r->public_key_len));
  json_object_set_new(o, "user_data", hex_or_null(r->user_data, r->user_data_len));
  json_object_set_new(o, "nonce", hex_or_null(r->nonce, r->nonce_len));
  json_object_set_new(o, "evidence_sha256",
                      hex_or_null(r->has_evidence_sha256 ? r->evidence_sha256 : NULL, 32));
  json_object_set_new(o, "policy_sha256", hex_or_null(r->policy_sha256, 32));
  json_object_set_new(o, "cache_hit", json_boolean(r->cache_hit));
  return o;
}
