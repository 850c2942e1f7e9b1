/* pyshim/pystr.c — the interned-string table (see pystr.h). */
#include "pystr.h"

sh_pystr_table sh_pyshim__str;

int sh_pyshim__str_init(void) {
  if (sh_pyshim__str.session != NULL) return 0; /* the last entry: the table is complete */
#define SH_PYSTR_NAME(text) text,
  static const char *const methods[SH_PYSTR_METHODS] = {SH_PYSTR_METHOD_LIST(SH_PYSTR_NAME)};
#undef SH_PYSTR_NAME
  for (size_t i = 0; i < SH_PYSTR_METHODS; i++)
    if ((sh_pyshim__str.methods[i] = PyUnicode_InternFromString(methods[i])) == NULL) return -1;
#define SH_PYSTR_INTERN(field, text) \
  if ((sh_pyshim__str.field = PyUnicode_InternFromString(text)) == NULL) return -1;
  SH_PYSTR_TABLE(SH_PYSTR_INTERN)
#undef SH_PYSTR_INTERN
  return 0;
}
