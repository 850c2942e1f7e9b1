/*
 * gate/reply.c — the gate's answers: §3 refusals from one table, JSON successes, 405.
 *
 * docs/protocol.md §3: {"error": <class>, "reason": <code>, "message": <text>}.  The reason codes,
 * their classes and statuses are attest's (sh_attest_reason_name, _class, _status): the one
 * table of §3.  A 401 carries WWW-Authenticate, an overloaded 503 Retry-After.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gate_internal.h"

/* A reason code a refusal can carry (never OK): an out-of-range one is malformed. */
static sh_attest_reason refusal(sh_attest_reason r) {
  return r > SH_ATTEST_OK && r < SH_ATTEST_REASON_COUNT_ ? r : SH_ATTEST_MALFORMED;
}

char *sh_gate__error_body(sh_attest_reason reason, const char *message) {
  reason = refusal(reason);
  const char *name = sh_attest_reason_name(reason);
  json_t *body = json_pack("{s:s, s:s, s:s}", "error", sh_attest_reason_class(reason), "reason",
                           name, "message", (message && *message) ? message : name);
  char *text = body ? json_dumps(body, JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII) : NULL;
  json_decref(body);
  return text;
}

/* Send status + JSON text with the headers a reply needs, then drop the request.  retry_after:
 * the seconds of an overloaded 503's Retry-After (RFC 9110 §10.2.3; 0: 1). */
static void send_text(sh_request *req, int status, const char *text, sh_attest_reason reason,
                      const char *allow, int retry_after) {
  sh_header h[5];
  size_t n = 0;
  char ra[16];
  h[n++] = (sh_header){{"content-type", 12}, {"application/json", 16}};
  if (allow) h[n++] = (sh_header){{"allow", 5}, {allow, strlen(allow)}};
  if (reason == SH_ATTEST_OK) {
    h[n++] = (sh_header){{"cache-control", 13}, {"no-store", 8}}; /* nonces, session keys */
  } else {
    if (status == 401) /* RFC 9110 §11.6.1: a 401 names its authentication scheme */
      h[n++] = (sh_header){{"www-authenticate", 16}, {"Attestation realm=\"shield\"", 26}};
    if (reason == SH_ATTEST_OVERLOADED) {
      int l = snprintf(ra, sizeof ra, "%d", retry_after > 0 ? retry_after : 1);
      h[n++] = (sh_header){{"retry-after", 11}, {ra, (size_t)l}};
    }
    if (status == 400 || status == 503) /* the server-attestation endpoints' refusals */
      h[n++] = (sh_header){{"cache-control", 13}, {"no-store", 8}};
  }
  if (sh_request_start(req, status, h, n) == 0) sh_request_write(req, text, strlen(text), 0);
  sh_request_release(req);
}

/* The gate answers this request itself: its state knows (establish_body drops the rest). */
static void mark_answered(sh_gate *g, sh_request *req) {
  gate_req *gr = sh_gate__req_of(g, req);
  if (gr) gr->answered = 1;
}

void sh_gate__refuse(sh_gate *g, sh_request *req, sh_attest_reason reason, const char *message) {
  reason = refusal(reason);
  mark_answered(g, req);
  char *text = sh_gate__error_body(reason, message);
  sh_log(SH_LOG_INFO, "attestation refused (request %llu, %s): %s: %s", (unsigned long long)req->id,
         req->client_host, sh_attest_reason_name(reason), message ? message : "");
  if (!text) {
    sh_gate__fail(req);
    return;
  }
  send_text(req, sh_attest_reason_status(reason), text, reason, NULL, 0);
  free(text);
}

void sh_gate__send_error(sh_gate *g, sh_request *req, int status, sh_attest_reason reason,
                         const char *message, int retry_after) {
  reason = refusal(reason);
  mark_answered(g, req);
  char *text = sh_gate__error_body(reason, message);
  if (!text) {
    sh_gate__fail(req);
    return;
  }
  send_text(req, status, text, reason, NULL, retry_after);
  free(text);
}

void sh_gate__send_json(sh_gate *g, sh_request *req, int status, json_t *body, const char *allow) {
  mark_answered(g, req);
  char *text = body ? json_dumps(body, JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII) : NULL;
  json_decref(body);
  if (!text) {
    sh_gate__fail(req);
    return;
  }
  send_text(req, status, text, SH_ATTEST_OK, allow, 0);
  free(text);
}
