/*
 * pyshim/native_client.c — client-attestation primitives for shield_asgi._native, so the Python
 * middleware (under uvicorn, granian, hypercorn) runs the protocol with the same C code as
 * the server (docs/protocol.md §1):
 *
 *   nonce_issue(secret, now) -> 32 bytes               (§1.1)
 *   nonce_check(secret, nonce, now, ttl=60) -> None | reason code
 *   proof_mac(key, t_ms, method, target, digest="") -> 32 bytes   (§1.4 mode 2)
 *   seal_to_spki(spki, plaintext, info) -> (alg, enc | None, sealed)
 *   hpke_open(sk, enc, sealed, info, aad=b"", aead=2) -> bytes (clients, tests)
 *   simulated_evidence(nonce, public_key=None, *, at, debug=False, pcrs=None, data_dir=None)
 *   simulated_root(data_dir=None, create=True) -> DER        (§1.7)
 *
 * All of them release the GIL around the work that can take time (key generation, HPKE).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <attest.h>
#include <crypto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "native_attest.h"

static PyObject *py_nonce_issue(PyObject *self, PyObject *args) {
  (void)self;
  Py_buffer s;
  double now;
  if (!PyArg_ParseTuple(args, "y*d", &s, &now)) return NULL;
  uint8_t n[SH_ATTEST_NONCE_LEN];
  int rc = sh_attest_nonce_issue(s.buf, (size_t)s.len, (int64_t)now, n);
  PyBuffer_Release(&s);
  if (rc < 0) {
    PyErr_SetString(PyExc_ValueError, "nonce secret shorter than 32 bytes, or bad time");
    return NULL;
  }
  return PyBytes_FromStringAndSize((const char *)n, sizeof n);
}

static PyObject *py_nonce_check(PyObject *self, PyObject *args, PyObject *kw) {
  (void)self;
  static char *kwlist[] = {"secret", "nonce", "now", "ttl", NULL};
  Py_buffer s, n;
  double now;
  long long ttl = SH_ATTEST_NONCE_TTL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "y*y*d|L", kwlist, &s, &n, &now, &ttl)) return NULL;
  sh_attest_reason r = sh_attest_nonce_check(s.buf, (size_t)s.len, n.buf, (size_t)n.len,
                                             (int64_t)now, (int64_t)ttl, NULL);
  PyBuffer_Release(&s);
  PyBuffer_Release(&n);
  if (r == SH_ATTEST_OK) Py_RETURN_NONE;
  return PyUnicode_FromString(sh_attest_reason_name(r));
}

static PyObject *py_proof_mac(PyObject *self, PyObject *args) {
  (void)self;
  Py_buffer key;
  long long t;
  const char *m, *tg, *d = "";
  Py_ssize_t ml, tl, dl = 0;
  if (!PyArg_ParseTuple(args, "y*Ls#s#|s#", &key, &t, &m, &ml, &tg, &tl, &d, &dl)) return NULL;
  uint8_t out[32];
  int rc = key.len == 32 ? sh_attest_proof_mac(key.buf, (int64_t)t, m, (size_t)ml, tg, (size_t)tl,
                                               d, (size_t)dl, out)
                         : -1;
  PyBuffer_Release(&key);
  if (rc < 0) {
    PyErr_SetString(PyExc_ValueError, "proof_mac: key must be 32 bytes and t >= 0");
    return NULL;
  }
  return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyObject *py_seal_to_spki(PyObject *self, PyObject *args) {
  (void)self;
  Py_buffer spki, pt, info;
  if (!PyArg_ParseTuple(args, "y*y*y*", &spki, &pt, &info)) return NULL;
  const char *alg = NULL;
  uint8_t enc[SH_HPKE_ENC_LEN], *ct = NULL;
  size_t el = 0, cl = 0;
  int rc;
  Py_BEGIN_ALLOW_THREADS rc =
      sh_crypto_seal_to_spki(spki.buf, (size_t)spki.len, info.buf, (size_t)info.len, pt.buf,
                             (size_t)pt.len, &alg, enc, &el, &ct, &cl);
  Py_END_ALLOW_THREADS PyBuffer_Release(&spki);
  PyBuffer_Release(&pt);
  PyBuffer_Release(&info);
  if (rc < 0) {
    PyErr_SetString(PyExc_ValueError,
                    "public key is not DER SPKI of an X25519 or RSA (>= 2048) key");
    return NULL;
  }
  PyObject *ret = el ? Py_BuildValue("(sy#y#)", alg, enc, (Py_ssize_t)el, ct, (Py_ssize_t)cl)
                     : Py_BuildValue("(sOy#)", alg, Py_None, ct, (Py_ssize_t)cl);
  free(ct);
  return ret;
}

static PyObject *py_hpke_open(PyObject *self, PyObject *args, PyObject *kw) {
  (void)self;
  static char *kwlist[] = {"sk", "enc", "sealed", "info", "aad", "aead", NULL};
  Py_buffer sk, enc, ct, info, aad = {0};
  int aead_id = SH_HPKE_AEAD_AES256GCM;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "y*y*y*y*|y*i", kwlist, &sk, &enc, &ct, &info, &aad,
                                   &aead_id))
    return NULL;
  PyObject *ret = NULL;
  uint8_t *pt = NULL;
  if (sk.len != 32 || enc.len != 32 || ct.len < SH_HPKE_TAG_LEN) {
    PyErr_SetString(PyExc_ValueError, "hpke_open: sk and enc are 32 bytes");
    goto out;
  }
  if (!(pt = malloc((size_t)ct.len))) {
    PyErr_NoMemory();
    goto out;
  }
  if (sh_crypto_hpke_open((uint16_t)aead_id, sk.buf, enc.buf, info.buf, (size_t)info.len, aad.buf,
                          (size_t)aad.len, ct.buf, (size_t)ct.len, pt) < 0) {
    PyErr_SetString(PyExc_ValueError, "hpke_open: authentication failed");
    goto out;
  }
  ret = PyBytes_FromStringAndSize((const char *)pt, ct.len - SH_HPKE_TAG_LEN);
out:
  free(pt);
  PyBuffer_Release(&sk);
  PyBuffer_Release(&enc);
  PyBuffer_Release(&ct);
  PyBuffer_Release(&info);
  if (aad.obj) PyBuffer_Release(&aad);
  return ret;
}

static PyObject *py_simulated_evidence(PyObject *self, PyObject *args, PyObject *kw) {
  (void)self;
  static char *kwlist[] = {"nonce", "public_key", "at",       "debug",
                           "pcrs",  "data_dir",   "lifetime", NULL};
  Py_buffer nonce = {0}, pk = {0};
  PyObject *pk_o = Py_None, *pcrs_o = Py_None, *nonce_o = Py_None;
  double at = 0;
  int debug = 0;
  const char *dir = NULL;
  long long lifetime = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O$dpOzL", kwlist, &nonce_o, &pk_o, &at, &debug,
                                   &pcrs_o, &dir, &lifetime))
    return NULL;
  if (at <= 0) {
    PyErr_SetString(PyExc_TypeError, "simulated_evidence() needs at= (an explicit time)");
    return NULL;
  }
  sh_attest_sim_params p;
  uint8_t pcr[32][48];
  memset(&p, 0, sizeof p);
  PyObject *ret = NULL;
  uint8_t *ev = NULL;
  size_t evl = 0;
  char eb[512] = "";
  if (nonce_o != Py_None && PyObject_GetBuffer(nonce_o, &nonce, PyBUF_SIMPLE) < 0) return NULL;
  if (pk_o != Py_None && PyObject_GetBuffer(pk_o, &pk, PyBUF_SIMPLE) < 0) goto out;
  if (pcrs_o != Py_None) {
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    if (!PyDict_Check(pcrs_o)) {
      PyErr_SetString(PyExc_TypeError, "pcrs must be a dict {index: 48 bytes}");
      goto out;
    }
    while (PyDict_Next(pcrs_o, &pos, &k, &v)) {
      long i = PyLong_AsLong(k);
      char *b;
      Py_ssize_t bl;
      if (i < 0 || i > 31 || PyBytes_AsStringAndSize(v, &b, &bl) < 0 || bl != 48) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "pcrs: index 0..31 -> 48 bytes");
        goto out;
      }
      memcpy(pcr[i], b, 48);
      p.pcrs[i] = pcr[i];
    }
  }
  p.dir = dir;
  p.at = (int64_t)at;
  p.now = (int64_t)time(NULL); /* dates a dev root created on first use (attest never reads it) */
  p.lifetime = (int64_t)lifetime;
  p.debug = debug;
  p.nonce = nonce.obj ? nonce.buf : NULL;
  p.nonce_len = (size_t)nonce.len;
  if (pk.obj) {
    p.public_key = pk.len ? pk.buf : (const uint8_t *)"";
    p.public_key_len = (size_t)pk.len;
  }
  int rc;
  Py_BEGIN_ALLOW_THREADS rc = sh_attest_simulated_evidence(&p, &ev, &evl, eb, sizeof eb);
  Py_END_ALLOW_THREADS if (rc < 0) {
    PyErr_SetString(PyExc_RuntimeError, eb);
    goto out;
  }
  ret = PyBytes_FromStringAndSize((const char *)ev, (Py_ssize_t)evl);
out:
  free(ev);
  if (nonce.obj) PyBuffer_Release(&nonce);
  if (pk.obj) PyBuffer_Release(&pk);
  return ret;
}

static PyObject *py_simulated_root(PyObject *self, PyObject *args, PyObject *kw) {
  (void)self;
  static char *kwlist[] = {"data_dir", "create", NULL};
  const char *dir = NULL;
  int create = 1;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|zp", kwlist, &dir, &create)) return NULL;
  uint8_t *der = NULL;
  size_t n = 0;
  char eb[512] = "";
  int rc;
  Py_BEGIN_ALLOW_THREADS rc =
      sh_attest_simulated_root(dir, create, (int64_t)time(NULL), &der, &n, eb, sizeof eb);
  Py_END_ALLOW_THREADS if (rc < 0) {
    PyErr_SetString(PyExc_RuntimeError, eb);
    return NULL;
  }
  PyObject *ret = PyBytes_FromStringAndSize((const char *)der, (Py_ssize_t)n);
  free(der);
  return ret;
}

#define KW (PyCFunction)(void (*)(void))
static PyMethodDef client_methods[] = {
    {"nonce_issue", py_nonce_issue, METH_VARARGS, "nonce_issue(secret, now) -> 32-byte nonce"},
    {"nonce_check", KW py_nonce_check, METH_VARARGS | METH_KEYWORDS,
     "nonce_check(secret, nonce, now, ttl=60) -> None or a reason code"},
    {"proof_mac", py_proof_mac, METH_VARARGS,
     "proof_mac(key, t_ms, method, target, digest='') -> 32-byte HMAC (docs/protocol.md §1.4)"},
    {"seal_to_spki", py_seal_to_spki, METH_VARARGS,
     "seal_to_spki(spki_der, plaintext, info) -> (alg, enc or None, sealed)"},
    {"hpke_open", KW py_hpke_open, METH_VARARGS | METH_KEYWORDS,
     "hpke_open(sk, enc, sealed, info, aad=b'', aead=2) -> plaintext"},
    {"simulated_evidence", KW py_simulated_evidence, METH_VARARGS | METH_KEYWORDS,
     "simulated_evidence(nonce, public_key=None, *, at, debug=False, pcrs=None, data_dir=None, "
     "lifetime=0) -> COSE_Sign1 bytes"},
    {"simulated_root", KW py_simulated_root, METH_VARARGS | METH_KEYWORDS,
     "simulated_root(data_dir=None, create=True) -> DER of the dev root"},
    {NULL, NULL, 0, NULL}};

int sh_pyshim__native_client_add(PyObject *m) {
  return PyModule_AddFunctions(m, client_methods);
}
