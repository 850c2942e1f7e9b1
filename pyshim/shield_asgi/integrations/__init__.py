"""Shield's framework integrations.  ``shield_asgi.integrations.confidential``: client attestation
(AttestationMiddleware, requires_attestation, attestation_required) and providers."""

from shield_asgi.integrations.confidential import (  # noqa: F401
    ATTEST_PATH, NONCE_PATH, AttestationError, AttestationMiddleware, MemoryStateStore,
    RedisStateStore, add_attestation_exception_handler, attestation_required,
    attestation_security, requires_attestation,
)
from shield_asgi.integrations.providers import (  # noqa: F401
    AttestationProvider, MAAAttestationProvider, NitroAttestationProvider,
    SEVAttestationProvider, SGXAttestationProvider, SimulatedAttestationProvider,
    TDXAttestationProvider,
)
