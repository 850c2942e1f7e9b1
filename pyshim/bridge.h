/* pyshim/bridge.h — private to pyshim: the I/O-thread handler and the _shield_server module. */
#ifndef SHIELD_PYSHIM_BRIDGE_H
#define SHIELD_PYSHIM_BRIDGE_H

#include "server.h"

/* The handler whose callbacks queue events for the Python thread (I/O thread only). */
sh_handler *sh_bridge_handler(void);

/* Before Py_Initialize: remember the server, create the eventfd, register `_shield_server`. */
int sh_bridge_prepare(sh_server *srv, const sh_config *cfg, sh_error *err);

/* After the bridge has finished (GIL held, before Py_FinalizeEx): drop what it holds. */
void sh_bridge_cleanup(void);

#endif
