"""Client attestation for ASGI and FastAPI apps (docs/protocol.md §1–§3).

Modules: ``errors`` (AttestationError, from the native §3 table), ``stores`` (nonce, replay and
session state: in memory or in Redis), ``protocol`` (the engine, no ASGI in it), ``middleware``
(AttestationMiddleware), ``fastapi`` (security scheme, dependency, decorator, exception
handler) and ``providers`` (per-TEE expectations, the Shield library's class names).
``shield_asgi.integrations.confidential`` re-exports the same names under the Shield library's
module path.
"""

from shield_asgi.integrations.errors import AttestationError
from shield_asgi.integrations.fastapi import (
    add_attestation_exception_handler,
    attestation_required,
    attestation_security,
    requires_attestation,
)
from shield_asgi.integrations.middleware import AttestationMiddleware
from shield_asgi.integrations.protocol import ATTEST_PATH, NONCE_PATH
from shield_asgi.integrations.providers import (
    AttestationProvider,
    MAAAttestationProvider,
    NitroAttestationProvider,
    SEVAttestationProvider,
    SGXAttestationProvider,
    SimulatedAttestationProvider,
    TDXAttestationProvider,
)
from shield_asgi.integrations.stores import MemoryStateStore, RedisStateStore

__all__ = [
    "ATTEST_PATH",
    "NONCE_PATH",
    "AttestationError",
    "AttestationMiddleware",
    "MemoryStateStore",
    "RedisStateStore",
    "add_attestation_exception_handler",
    "attestation_required",
    "attestation_security",
    "requires_attestation",
    "AttestationProvider",
    "MAAAttestationProvider",
    "NitroAttestationProvider",
    "SEVAttestationProvider",
    "SGXAttestationProvider",
    "SimulatedAttestationProvider",
    "TDXAttestationProvider",
]
