/*
 * pyshim/embed.c — start CPython inside the `shield` binary and run the bridge (module.h).
 *
 * Which environment: `shield` is installed into a virtual environment's bin/ next to its
 * `python`.  CPython's getpath finds a venv by looking for pyvenv.cfg next to (or one level
 * above) the *program name*, so we pass our own executable path: sys.prefix becomes the venv
 * and its site-packages are importable, exactly as if `.venv/bin/python` had been run.
 * A binary outside any venv (a sanitizer build in build/) uses $VIRTUAL_ENV when it is set,
 * by presenting itself as that venv's python.
 */
#include <Python.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge_py.h"
#include "module.h"
#include "pyshim.h"
#ifdef SHIELD_HAVE_GATE
#include "gate.h"
#endif

static int file_exists(const char *dir, const char *rel) {
  char path[PATH_MAX];
  if (snprintf(path, sizeof path, "%s/%s", dir, rel) >= (int)sizeof path) return 0;
  return access(path, F_OK) == 0;
}

/* The program name that makes getpath find the right venv (see the comment at the top). */
static void choose_program_name(char *out, size_t size, const char *argv0) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) {
    snprintf(out, size, "%s", argv0);
    return;
  }
  exe[n] = '\0';
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", exe);
  char *slash = strrchr(dir, '/');
  if (slash != NULL) *slash = '\0';
  const char *venv = getenv("VIRTUAL_ENV");
  if (file_exists(dir, "pyvenv.cfg") || file_exists(dir, "../pyvenv.cfg") || venv == NULL ||
      *venv == '\0') {
    snprintf(out, size, "%s", exe);
    return;
  }
  snprintf(out, size, "%s/bin/python", venv);
}

static int start_python(int argc, char **argv) {
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.parse_argv = 0;
  config.install_signal_handlers = 1;
  char program[PATH_MAX];
  choose_program_name(program, sizeof program, argv[0]);
  PyStatus st = PyConfig_SetBytesString(&config, &config.program_name, program);
  if (!PyStatus_Exception(st)) st = PyConfig_SetBytesArgv(&config, argc, argv);
  if (!PyStatus_Exception(st)) st = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(st)) {
    fprintf(stderr, "shield: cannot start the Python interpreter: %s\n",
            st.err_msg ? st.err_msg : "unknown error");
    return -1;
  }
  return 0;
}

/* The exit status of a call that returned `ret` (NULL: it raised): an int result, 0 for any
 * other; SystemExit(n) is n and SystemExit("text") prints the text (status 1), as `python`
 * does; any other exception is printed with its traceback (status 1).  Consumes `ret`. */
static int exit_status(PyObject *ret) {
  int code = 1;
  if (ret == NULL) {
    if (PyErr_ExceptionMatches(PyExc_SystemExit)) {
      PyObject *type, *exc, *tb;
      PyErr_Fetch(&type, &exc, &tb);
      PyErr_NormalizeException(&type, &exc, &tb);
      PyObject *c = exc ? PyObject_GetAttrString(exc, "code") : NULL;
      if (c != NULL && PyUnicode_Check(c)) fprintf(stderr, "%s\n", PyUnicode_AsUTF8(c));
      code = (c && PyLong_Check(c)) ? (int)PyLong_AsLong(c) : (c && c != Py_None);
      Py_XDECREF(c);
      Py_XDECREF(type);
      Py_XDECREF(exc);
      Py_XDECREF(tb);
      PyErr_Clear();
    } else {
      PyErr_Print();
    }
  } else {
    code = PyLong_Check(ret) ? (int)PyLong_AsLong(ret) : 0;
  }
  Py_XDECREF(ret);
  return code;
}

/* Import the embedded bridge.py as module `_shield_bridge` and call its main(); returns the
 * process exit code (main() raising SystemExit(n) is an ordinary way out). */
static int run_bridge(void) {
  PyObject *bytecode = Py_CompileString(sh_bridge_py, "<shield bridge.py>", Py_file_input);
  PyObject *mod = bytecode ? PyImport_ExecCodeModule("_shield_bridge", bytecode) : NULL;
  int code = exit_status(mod ? PyObject_CallMethod(mod, "main", NULL) : NULL);
  Py_XDECREF(mod);
  Py_XDECREF(bytecode);
  return code;
}

int sh_pyshim_main(sh_config *cfg, const struct sh_gate_config *gate, int argc, char **argv) {
  sh_error err = {0};
  sh_server *srv = NULL;
  cfg->handle_signals = 0; /* Python's main thread owns SIGINT/SIGTERM */
  sh_bridge *bridge = sh_pyshim__bridge_new(cfg, &err);
  if (bridge == NULL) {
    fprintf(stderr, "shield: %s\n", err.message);
    return 1;
  }
  sh_handler *handler = sh_pyshim__bridge_handler(bridge);
#ifdef SHIELD_HAVE_GATE
  /* client attestation verified before the app runs, and the server's own TEE (gate/) */
  sh_gate *g = NULL;
  if (gate && (gate->types || gate->tee) && !(g = sh_gate_new(gate, handler, &err))) {
    fprintf(stderr, "shield: %s\n", err.message);
    sh_pyshim__bridge_free(bridge);
    return 1;
  }
  if (g) handler = sh_gate_handler(g);
#else
  (void)gate;
#endif
  if (sh_server_new(cfg, handler, &srv, &err) < 0) {
    fprintf(stderr, "shield: %s\n", err.message);
#ifdef SHIELD_HAVE_GATE
    sh_gate_free(g);
#endif
    sh_pyshim__bridge_free(bridge);
    return 1;
  }
  int code = 1;
  if (sh_pyshim__bridge_attach(bridge, srv, &err) < 0) {
    fprintf(stderr, "shield: %s\n", err.message);
  } else if (start_python(argc, argv) == 0) {
    code = run_bridge();
    sh_pyshim__bridge_clear(bridge);
    if (Py_FinalizeEx() < 0 && code == 0) code = 120;
  }
#ifdef SHIELD_HAVE_GATE
  sh_gate_free(g); /* its pool posts to the server: joined before the server goes */
#endif
  sh_server_free(srv);
  sh_pyshim__bridge_free(bridge); /* last: the server held its handler until freed */
  return code;
}

int sh_pyshim_call(const char *module, const char *function, const char *arg, int argc,
                   char **argv) {
  if (start_python(argc, argv) < 0) return 1;
  PyObject *mod = PyImport_ImportModule(module); /* an ImportError names what is missing */
  int code = exit_status(mod ? PyObject_CallMethod(mod, function, "s", arg) : NULL);
  Py_XDECREF(mod);
  if (Py_FinalizeEx() < 0 && code == 0) code = 120;
  return code;
}
