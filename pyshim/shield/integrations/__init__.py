"""Shield's framework integrations.  ``shield.integrations.confidential``: client attestation
(AttestationMiddleware, requires_attestation, attestation_required) and providers."""

from shield.integrations.confidential import (  # noqa: F401
    ATTEST_PATH, NONCE_PATH, AttestationError, AttestationMiddleware, MemoryStateStore,
    RedisStateStore, add_attestation_exception_handler, attestation_required,
    attestation_security, requires_attestation,
)
from shield.integrations.providers import (  # noqa: F401
    AttestationProvider, MAAAttestationProvider, NitroAttestationProvider,
    SEVAttestationProvider, SGXAttestationProvider, SimulatedAttestationProvider,
    TDXAttestationProvider,
)
