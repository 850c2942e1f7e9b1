/* pyshim/state.h — the built-in module `_shield_state` (private to pyshim/). */
#ifndef SHIELD_PYSHIM_STATE_H
#define SHIELD_PYSHIM_STATE_H

#include "server.h"

/* Register `_shield_state` (call before the interpreter starts). */
int sh_state_module_prepare(sh_server *srv, sh_error *err);

#endif
