"""Shield: an ASGI server in C for confidential computing.

Run an app with the `shield` command (``shield main:app``).  This package holds the parts used
from Python: ``shield._native`` (native attestation verification usable under any ASGI server)
and, as they arrive, the FastAPI integrations.
"""

__version__ = "0.1.0"
