/*
 * pyshim/native_provider.c — shield_asgi._native.Provider: attest/'s evidence providers (the
 * server's own TEE, attest.h's last section) exposed to Python, so a FastAPI app under uvicorn
 * (or any ASGI server) produces the same evidence as `shield --tee` (docs/protocol.md §4):
 *
 *   Provider(tee="auto", *, root=None, simulated_dir=None, now=None, gcp_socket=None,
 *            gcp_audience=None, gcp_timeout_ms=0, tpm_tcti=None, azure_imds_url=None,
 *            azure_timeout_ms=0, azure_report_wait_ms=0, tdx_qgs=None, tdx_qgs_timeout_ms=0)
 *     .tee      the TEE type of the evidence (docs/protocol.md §0 name; never "auto")
 *     .source   where the evidence comes from ("configfs-tsm", "/dev/nsm", ..., "simulated")
 *     .evidence(D, nonce=None, public_key=None, at=None) -> bytes
 *     .close()
 *
 * Opening refuses a TEE that is not there (RuntimeError with attest's message naming the missing
 * device); "auto" never picks simulated (provider.c).  `now` (simulated: dates a dev root made
 * at open) and `at` (simulated: dates the evidence) default to the current time: attest never
 * reads the clock itself.
 *
 * Threads: evidence() releases the GIL around the device call (it may block on the device or a
 * socket for seconds), and attest allows calls from many threads at once on one provider.  Every
 * call counts itself in `busy` while the GIL is released; close() during calls only marks the
 * provider closed, and the last call to return frees it (the GIL serialises the count), so no
 * call ever runs on a freed provider.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <attest.h>
#include <string.h>
#include <time.h>

#include "native_attest.h"

/* attest.h: nonce and public_key go into nitro and simulated documents, at most 1024 bytes each */
#define PROVIDER_FIELD_MAX 1024
/* attest's messages name the paths looked at, each under `root`: "auto" lists seven of them,
 * so 512 bytes (the CLI's buffer, where root is empty) would cut a test root's message short. */
#define PROVIDER_ERR_MAX 4096

typedef struct {
  PyObject_HEAD sh_attest_provider *p; /* NULL once freed */
  int closed;                          /* close() was called (p may live on while busy) */
  int busy;                            /* evidence() calls running with the GIL released */
} ProviderObject;

/* "O&" converter: None -> NULL, str/bytes/os.PathLike -> a bytes object (file-system encoding),
 * kept in *out until the caller drops it. */
static int opt_path(PyObject *o, void *out) {
  PyObject **r = out;
  if (o == NULL) { /* cleanup call (Py_CLEANUP_SUPPORTED) */
    Py_CLEAR(*r);
    return 1;
  }
  if (o == Py_None) {
    *r = NULL;
    return 1;
  }
  if (!PyUnicode_FSConverter(o, r)) return 0;
  return Py_CLEANUP_SUPPORTED;
}

static const char *path_str(PyObject *b) {
  return b ? PyBytes_AS_STRING(b) : NULL;
}

static int provider_init(PyObject *self_o, PyObject *args, PyObject *kw) {
  ProviderObject *self = (ProviderObject *)self_o;
  static char *kwlist[] = {"tee",
                           "root",
                           "simulated_dir",
                           "now",
                           "gcp_socket",
                           "gcp_audience",
                           "gcp_timeout_ms",
                           "tpm_tcti",
                           "azure_imds_url",
                           "azure_timeout_ms",
                           "azure_report_wait_ms",
                           "tdx_qgs",
                           "tdx_qgs_timeout_ms",
                           NULL};
  const char *tee = "auto", *gcp_audience = NULL, *tpm_tcti = NULL, *imds = NULL, *qgs = NULL;
  PyObject *root = NULL, *sim_dir = NULL, *gcp_socket = NULL, *now_o = Py_None;
  long gcp_to = 0, az_to = 0, az_wait = 0, qgs_to = 0;
  if (self->p) { /* __init__ called again: refuse rather than leak or swap the TEE underfoot */
    PyErr_SetString(PyExc_RuntimeError, "Provider is already open");
    return -1;
  }
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|s$O&O&OO&zlzzllzl", kwlist, &tee, opt_path, &root,
                                   opt_path, &sim_dir, &now_o, opt_path, &gcp_socket, &gcp_audience,
                                   &gcp_to, &tpm_tcti, &imds, &az_to, &az_wait, &qgs, &qgs_to))
    return -1;
  int rc = -1;
  sh_attest_provider_config cfg;
  memset(&cfg, 0, sizeof cfg);
  if (strcmp(tee, "auto") == 0) {
    cfg.tee = SH_ATTEST_TEE_AUTO;
  } else if ((cfg.tee = sh_tee_from_name(tee)) == SH_TEE_UNKNOWN) {
    PyErr_Format(PyExc_ValueError,
                 "Provider: unknown TEE '%s' (auto, nitro, sev-snp, tdx, sgx, gcp, azure-snp, "
                 "azure-tdx, simulated)",
                 tee);
    goto out;
  }
  if (gcp_to < 0 || az_to < 0 || az_wait < 0 || qgs_to < 0) {
    PyErr_SetString(PyExc_ValueError, "Provider: time limits are milliseconds >= 0 (0: default)");
    goto out;
  }
  if (now_o == Py_None) {
    cfg.now = (int64_t)time(NULL);
  } else {
    double now = PyFloat_AsDouble(now_o);
    if (now == -1.0 && PyErr_Occurred()) goto out;
    if (!(now > 0 && now < 9e15)) {
      PyErr_SetString(PyExc_ValueError, "Provider: now is seconds since the epoch (> 0)");
      goto out;
    }
    cfg.now = (int64_t)now;
  }
  cfg.root = path_str(root);
  cfg.simulated_dir = path_str(sim_dir);
  cfg.gcp_socket = path_str(gcp_socket);
  cfg.gcp_audience = gcp_audience;
  cfg.gcp_timeout_ms = gcp_to;
  cfg.tpm_tcti = tpm_tcti;
  cfg.azure_imds_url = imds;
  cfg.azure_timeout_ms = az_to;
  cfg.azure_report_wait_ms = az_wait;
  cfg.tdx_qgs = qgs;
  cfg.tdx_qgs_timeout_ms = qgs_to;
  char err[PROVIDER_ERR_MAX] = "";
  sh_attest_provider *p = NULL;
  int orc;
  /* open may probe devices and sockets (the QGS, the vTPM): off the GIL.  The strings stay
   * alive: the bytes objects and the argument tuple are held by this frame. */
  Py_BEGIN_ALLOW_THREADS orc = sh_attest_provider_open(&cfg, &p, err, sizeof err);
  Py_END_ALLOW_THREADS if (orc < 0) {
    PyErr_SetString(PyExc_RuntimeError, err[0] ? err : "Provider: the TEE could not be opened");
    goto out;
  }
  self->p = p;
  self->closed = 0;
  rc = 0;
out:
  Py_XDECREF(root);
  Py_XDECREF(sim_dir);
  Py_XDECREF(gcp_socket);
  return rc;
}

/* The provider, or NULL with RuntimeError when closed (or never opened). */
static sh_attest_provider *provider_get(ProviderObject *self) {
  if (!self->p || self->closed) {
    PyErr_SetString(PyExc_RuntimeError, "Provider is closed");
    return NULL;
  }
  return self->p;
}

static PyObject *provider_evidence(PyObject *self_o, PyObject *args, PyObject *kw) {
  ProviderObject *self = (ProviderObject *)self_o;
  static char *kwlist[] = {"D", "nonce", "public_key", "at", NULL};
  Py_buffer D = {0}, n = {0}, k = {0};
  PyObject *n_o = Py_None, *k_o = Py_None, *at_o = Py_None, *ret = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|OOO", kwlist, &D, &n_o, &k_o, &at_o)) return NULL;
  if (!provider_get(self)) goto out; /* closed: say so before judging the arguments */
  if (D.len != 64) {
    PyErr_SetString(PyExc_ValueError, "D must be 64 bytes (the binding digest, protocol.md §1.2)");
    goto out;
  }
  if (n_o != Py_None && PyObject_GetBuffer(n_o, &n, PyBUF_SIMPLE) < 0) goto out;
  if (k_o != Py_None && PyObject_GetBuffer(k_o, &k, PyBUF_SIMPLE) < 0) goto out;
  if (n.len > PROVIDER_FIELD_MAX || k.len > PROVIDER_FIELD_MAX) {
    PyErr_SetString(PyExc_ValueError, "nonce and public_key are at most 1024 bytes each");
    goto out;
  }
  int64_t at;
  if (at_o == Py_None) {
    at = (int64_t)time(NULL);
  } else {
    double a = PyFloat_AsDouble(at_o);
    if (a == -1.0 && PyErr_Occurred()) goto out;
    if (!(a > 0 && a < 9e15)) {
      PyErr_SetString(PyExc_ValueError, "at is seconds since the epoch (> 0)");
      goto out;
    }
    at = (int64_t)a;
  }
  /* An empty public key is a key of length 0, not "no key": keep a non-NULL pointer, as
   * simulated_evidence() does, so D(n, b"") and the document agree. */
  const uint8_t *kp = k.obj ? (k.len ? k.buf : (const uint8_t *)"") : NULL;
  uint8_t *ev = NULL;
  size_t evl = 0;
  char err[PROVIDER_ERR_MAX] = "";
  int rc;
  /* Taken only now: getting the buffers and `at` may run Python code (__buffer__, __float__)
   * that closes the provider; from here to busy++ nothing releases the GIL. */
  sh_attest_provider *p = provider_get(self);
  if (!p) goto out;
  self->busy++;
  Py_BEGIN_ALLOW_THREADS rc =
      sh_attest_provider_evidence(p, D.buf, n.obj ? n.buf : NULL, (size_t)n.len, kp, (size_t)k.len,
                                  at, &ev, &evl, err, sizeof err);
  Py_END_ALLOW_THREADS if (--self->busy == 0 && self->closed && self->p) {
    sh_attest_provider_free(self->p); /* close() ran during the call: the last one frees */
    self->p = NULL;
  }
  if (rc < 0) {
    PyErr_SetString(PyExc_RuntimeError, err[0] ? err : "the TEE produced no evidence");
    goto out;
  }
  ret = PyBytes_FromStringAndSize((const char *)ev, (Py_ssize_t)evl);
  free(ev);
out:
  PyBuffer_Release(&D);
  if (n.obj) PyBuffer_Release(&n);
  if (k.obj) PyBuffer_Release(&k);
  return ret;
}

static PyObject *provider_close(PyObject *self_o, PyObject *unused) {
  (void)unused;
  ProviderObject *self = (ProviderObject *)self_o;
  self->closed = 1;
  if (self->p && self->busy == 0) {
    sh_attest_provider_free(self->p);
    self->p = NULL;
  }
  Py_RETURN_NONE;
}

static PyObject *provider_enter(PyObject *self_o, PyObject *unused) {
  (void)unused;
  if (!provider_get((ProviderObject *)self_o)) return NULL;
  return Py_NewRef(self_o);
}

static PyObject *provider_exit(PyObject *self_o, PyObject *args) {
  (void)args;
  return provider_close(self_o, NULL);
}

static PyObject *provider_tee(PyObject *self_o, void *closure) {
  (void)closure;
  sh_attest_provider *p = provider_get((ProviderObject *)self_o);
  return p ? PyUnicode_FromString(sh_tee_name(sh_attest_provider_tee(p))) : NULL;
}

static PyObject *provider_source(PyObject *self_o, void *closure) {
  (void)closure;
  sh_attest_provider *p = provider_get((ProviderObject *)self_o);
  return p ? PyUnicode_FromString(sh_attest_provider_source(p)) : NULL;
}

static PyObject *provider_repr(PyObject *self_o) {
  ProviderObject *self = (ProviderObject *)self_o;
  if (!self->p || self->closed)
    return PyUnicode_FromString("<shield_asgi._native.Provider closed>");
  return PyUnicode_FromFormat("<shield_asgi._native.Provider tee=%s source=%s>",
                              sh_tee_name(sh_attest_provider_tee(self->p)),
                              sh_attest_provider_source(self->p));
}

static void provider_dealloc(PyObject *self_o) {
  ProviderObject *self = (ProviderObject *)self_o;
  /* busy is 0 here: every evidence() call holds a reference to self */
  if (self->p) sh_attest_provider_free(self->p);
  self->p = NULL;
  PyTypeObject *tp = Py_TYPE(self_o);
  tp->tp_free(self_o);
  Py_DECREF(tp); /* heap type: each instance holds a reference to it */
}

static PyMethodDef provider_methods[] = {
    {"evidence", (PyCFunction)(void (*)(void))provider_evidence, METH_VARARGS | METH_KEYWORDS,
     "evidence(D, nonce=None, public_key=None, at=None) -> bytes: fresh evidence binding the "
     "64-byte D (protocol.md §1.2); nonce and public_key go into nitro and simulated documents; "
     "at dates simulated evidence (default: now).  Blocks on the device, with the GIL released."},
    {"close", provider_close, METH_NOARGS, "close(): release the device (idempotent)"},
    {"__enter__", provider_enter, METH_NOARGS, NULL},
    {"__exit__", provider_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef provider_getset[] = {
    {"tee", provider_tee, NULL, "the TEE type of the evidence (protocol.md §0)", NULL},
    {"source", provider_source, NULL, "where the evidence comes from (device, socket, ...)", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot provider_slots[] = {
    {Py_tp_doc,
     "Provider(tee='auto', *, root=None, simulated_dir=None, now=None, gcp_socket=None, "
     "gcp_audience=None, gcp_timeout_ms=0, tpm_tcti=None, azure_imds_url=None, "
     "azure_timeout_ms=0, azure_report_wait_ms=0, tdx_qgs=None, tdx_qgs_timeout_ms=0): this "
     "machine's TEE as an evidence source (attest.h sh_attest_provider_*).  RuntimeError when "
     "the TEE is absent, naming the missing device; 'auto' never picks simulated."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, provider_init},
    {Py_tp_dealloc, provider_dealloc},
    {Py_tp_repr, provider_repr},
    {Py_tp_methods, provider_methods},
    {Py_tp_getset, provider_getset},
    {0, NULL}};

static PyType_Spec provider_spec = {"shield_asgi._native.Provider", sizeof(ProviderObject), 0,
                                    Py_TPFLAGS_DEFAULT, provider_slots};

int sh_pyshim__native_provider_add(PyObject *m) {
  PyObject *t = PyType_FromSpec(&provider_spec);
  if (!t) return -1;
  int rc = PyModule_AddObjectRef(m, "Provider", t);
  Py_DECREF(t);
  return rc;
}
