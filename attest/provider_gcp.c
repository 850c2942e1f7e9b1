/* attest/provider_gcp.c — Google Confidential Space: an attestation token from the launcher.
 *
 * The Confidential Space launcher serves the workload a local HTTP API on a unix socket
 * (/run/container_launcher/teeserver.sock; Google's "Create a custom attestation token"):
 * POST /v1/token with {"audience", "token_type": "OIDC", "nonces": [...]} answers the token
 * (a JWT, as the body) whose eat_nonce holds the nonces.  The nonce is base64url(D)
 * (docs/protocol.md §1.2), which attest/gcp.c looks for.  libcurl speaks HTTP over the socket
 * (CURLOPT_UNIX_SOCKET_PATH); the host in the URL is only the Host header. */
#include "provider.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_MAX (64u * 1024u) /* tokens are ~11 KB (docs/protocol.md §1.4) */

/* A compact JWS (RFC 7515 §7.1): three base64url segments, the first two non-empty. */
static int jwt_shaped(const uint8_t *s, size_t n) {
  int dots = 0;
  size_t seg = 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    if (c == '.') {
      if (seg == 0 || ++dots > 2) return 0;
      seg = 0;
    } else if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_') {
      seg++;
    } else {
      return 0;
    }
  }
  return dots == 2 && seg > 0;
}

int sh_attest__gcp_token(sh_attest_provider *p, const uint8_t D[64], uint8_t **out, size_t *len,
                         char *err, size_t errlen) {
  char nonce[SH_B64_ENCODED_LEN(64) + 1];
  sh_b64_encode(D, 64, SH_B64_PROTOCOL, nonce);
  json_t *req = json_pack("{s:s, s:s, s:[s]}", "audience", p->gcp_audience, "token_type", "OIDC",
                          "nonces", nonce);
  char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
  json_decref(req);
  if (!text) return sh_attest__prov_err(err, errlen, "out of memory");
  sh_attest__prov_curl_init();
  CURL *c = curl_easy_init();
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  sh_attest__prov_body b = {.max = TOKEN_MAX};
  long status = 0;
  int rc = -1;
  CURLcode cr = CURLE_OUT_OF_MEMORY;
  if (c && h) {
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, p->gcp_socket);
    curl_easy_setopt(c, CURLOPT_URL, "http://localhost/v1/token");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, p->gcp_timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM-based DNS timeouts */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sh_attest__prov_on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    cr = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  }
  if (b.over) {
    sh_attest__prov_err(err, errlen, "gcp: the launcher's answer is over %u bytes", TOKEN_MAX);
  } else if (cr != CURLE_OK) {
    sh_attest__prov_err(err, errlen, "gcp: POST /v1/token on %s: %s", p->gcp_socket,
                        curl_easy_strerror(cr));
  } else if (status != 200) {
    sh_attest__prov_err(err, errlen, "gcp: the launcher answered %ld: %.*s", status,
                        b.n > 200 ? 200 : (int)b.n, b.p ? (char *)b.p : "");
  } else {
    while (b.n && (b.p[b.n - 1] == '\n' || b.p[b.n - 1] == '\r' || b.p[b.n - 1] == ' '))
      b.p[--b.n] = 0;
    if (!b.p || !jwt_shaped(b.p, b.n)) {
      sh_attest__prov_err(err, errlen, "gcp: the launcher's answer is not a JWT");
    } else {
      *out = b.p;
      *len = b.n;
      b.p = NULL;
      rc = 0;
    }
  }
  free(b.p);
  curl_slist_free_all(h);
  if (c) curl_easy_cleanup(c);
  free(text);
  return rc;
}
