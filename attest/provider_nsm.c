/* attest/provider_nsm.c — AWS Nitro Enclaves evidence from the Nitro Secure Module.
 *
 * The request is the NSM API's CBOR {"Attestation": {"user_data": D, "nonce": n,
 * "public_key": k}} (each at most 1024 bytes, null when absent), the answer
 * {"Attestation": {"document": <COSE_Sign1>}} or {"Error": "<ErrorCode>"}
 * (aws-nitro-enclaves-nsm-api, src/api/mod.rs).  The document is what attest/nitro.c reads.
 *
 * Transport: the driver's raw ioctl (Linux include/uapi/linux/nsm.h, 6.8+; Debian 12's
 * linux-libc-dev predates it, hence the definitions below): struct nsm_raw holds two iovecs,
 * request and response; the driver writes the response's length back. */
#include "provider.h"

#include <cbor.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/ioctl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* include/uapi/linux/nsm.h */
#define NSM_MAGIC 0x0A
#define NSM_REQUEST_MAX_SIZE 0x1000
#define NSM_RESPONSE_MAX_SIZE 0x3000
struct nsm_iovec {
  uint64_t addr; /* virtual address of the buffer */
  uint64_t len;  /* its length */
};
struct nsm_raw {
  struct nsm_iovec request;
  struct nsm_iovec response;
};
#define NSM_IOCTL_RAW _IOWR(NSM_MAGIC, 0x0, struct nsm_raw)

static int put(cbor_item_t *m, const char *k, cbor_item_t *v) {
  cbor_item_t *key = cbor_build_string(k);
  int ok = key && v && cbor_map_add(m, (struct cbor_pair){.key = key, .value = v});
  if (key) cbor_decref(&key);
  if (v) cbor_decref(&v);
  return ok;
}

static cbor_item_t *bytes_or_null(const uint8_t *p, size_t n) {
  return p ? cbor_build_bytestring(p, n) : cbor_new_null();
}

/* The request's CBOR into a malloc'd buffer; its length, 0 on failure. */
static size_t encode_request(const uint8_t D[64], const uint8_t *nonce, size_t nonce_len,
                             const uint8_t *pk, size_t pk_len, unsigned char **buf) {
  cbor_item_t *inner = cbor_new_definite_map(3), *outer = cbor_new_definite_map(1);
  size_t cap = 0, n = 0;
  *buf = NULL;
  if (inner && outer && put(inner, "user_data", cbor_build_bytestring(D, 64)) &&
      put(inner, "nonce", bytes_or_null(nonce, nonce_len)) &&
      put(inner, "public_key", bytes_or_null(pk, pk_len)) &&
      put(outer, "Attestation", cbor_incref(inner)))
    n = cbor_serialize_alloc(outer, buf, &cap);
  if (inner) cbor_decref(&inner);
  if (outer) cbor_decref(&outer);
  return n;
}

/* map[key] for a text key, or NULL. */
static cbor_item_t *get(const cbor_item_t *m, const char *key) {
  if (!cbor_isa_map(m)) return NULL;
  struct cbor_pair *p = cbor_map_handle(m);
  size_t kl = strlen(key);
  for (size_t i = 0; i < cbor_map_size(m); i++)
    if (cbor_isa_string(p[i].key) && cbor_string_is_definite(p[i].key) &&
        cbor_string_length(p[i].key) == kl && !memcmp(cbor_string_handle(p[i].key), key, kl))
      return p[i].value;
  return NULL;
}

static int decode_response(const uint8_t *r, size_t n, uint8_t **out, size_t *len, char *err,
                           size_t errlen) {
  sh_cbor_top top;
  struct cbor_load_result res;
  cbor_item_t *it = NULL;
  int rc = -1;
  if (sh_attest__cbor_scan(r, n, &top) < 0 || !(it = cbor_load(r, n, &res)) || res.read != n ||
      !cbor_isa_map(it)) {
    sh_attest__prov_err(err, errlen, "nitro: the NSM's response is not a CBOR map");
    goto out;
  }
  cbor_item_t *e = get(it, "Error");
  if (e) {
    char code[64] = "?";
    if (cbor_isa_string(e) && cbor_string_is_definite(e) && cbor_string_length(e) < sizeof code) {
      memcpy(code, cbor_string_handle(e), cbor_string_length(e));
      code[cbor_string_length(e)] = 0;
    }
    sh_attest__prov_err(err, errlen, "nitro: the NSM refused the attestation request: %s", code);
    goto out;
  }
  cbor_item_t *doc = get(get(it, "Attestation"), "document");
  if (!doc || !cbor_isa_bytestring(doc) || !cbor_bytestring_is_definite(doc) ||
      cbor_bytestring_length(doc) == 0) {
    sh_attest__prov_err(err, errlen, "nitro: the NSM's response has no Attestation.document");
    goto out;
  }
  if (!(*out = malloc(cbor_bytestring_length(doc)))) {
    sh_attest__prov_err(err, errlen, "out of memory");
    goto out;
  }
  memcpy(*out, cbor_bytestring_handle(doc), cbor_bytestring_length(doc));
  *len = cbor_bytestring_length(doc);
  rc = 0;
out:
  if (it) cbor_decref(&it);
  return rc;
}

int sh_attest__nsm_evidence(sh_attest_provider *p, const uint8_t D[64], const uint8_t *nonce,
                            size_t nonce_len, const uint8_t *pk, size_t pk_len, uint8_t **out,
                            size_t *len, char *err, size_t errlen) {
  char path[4096];
  unsigned char *req = NULL;
  uint8_t *resp = malloc(NSM_RESPONSE_MAX_SIZE);
  int rc = -1, fd = -1;
  size_t n = resp ? encode_request(D, nonce, nonce_len, pk, pk_len, &req) : 0;
  if (!n || n > NSM_REQUEST_MAX_SIZE) {
    sh_attest__prov_err(err, errlen, "nitro: cannot encode the NSM request");
    goto out;
  }
  if (sh_attest__prov_path(p, SH_PATH_NSM, path, sizeof path) < 0 ||
      (fd = open(path, O_RDWR | O_CLOEXEC)) < 0) {
    sh_attest__prov_err(err, errlen, "nitro: cannot open %s: %s", path, strerror(errno));
    goto out;
  }
  struct nsm_raw raw = {.request = {(uint64_t)(uintptr_t)req, n},
                        .response = {(uint64_t)(uintptr_t)resp, NSM_RESPONSE_MAX_SIZE}};
  if (sh_attest__prov_ioctl(p, fd, NSM_IOCTL_RAW, &raw) < 0) {
    sh_attest__prov_err(err, errlen, "nitro: NSM_IOCTL_RAW on %s: %s", path, strerror(errno));
    goto out;
  }
  if (raw.response.len == 0 || raw.response.len > NSM_RESPONSE_MAX_SIZE) {
    sh_attest__prov_err(err, errlen, "nitro: the NSM's response length %llu is out of range",
                        (unsigned long long)raw.response.len);
    goto out;
  }
  rc = decode_response(resp, (size_t)raw.response.len, out, len, err, errlen);
out:
  if (fd >= 0) close(fd);
  free(req);
  free(resp);
  return rc;
}
