/* server/error.c — sh_error_set: the one way an sh_error is filled (server.h). */
#include <stdarg.h>
#include <stdio.h>

#include "server.h"

int sh_error_set(sh_error *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
  }
  return code;
}
