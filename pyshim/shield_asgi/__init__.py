"""shield-asgi: an ASGI server in C for confidential computing.

Run an app with the `shield` command (``shield main:app``), installed also as `shield-asgi`
(the Shield library's wheel installs a `shield` script of its own).  This package holds the
parts used from Python: ``shield_asgi._native`` (native attestation verification usable under
any ASGI server) and ``shield_asgi.integrations`` (client attestation for ASGI/FastAPI apps).
Its import name is not ``shield``: that is the Shield library's (shield-crypto), which users
install beside this one.
"""

__version__ = "0.1.0"
