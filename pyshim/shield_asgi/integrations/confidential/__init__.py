"""``shield_asgi.integrations.confidential``: the names this package's ``confidential`` module
had (client attestation: middleware, FastAPI glue, state stores, errors), under the module path
of the Shield library's ``shield.integrations.confidential``, with the providers it exports
there.  Of the Shield library's submodules, ``base`` exists (``TEEType``, ``KeyReleasePolicy``,
``TEEKeyManager``: key release, docs/protocol.md §6, with this package's ``AttestationResult``,
``AttestationError`` and ``AttestationProvider``); the others (``aws_nitro``, ``gcp_sev``,
``azure_maa``, ``intel_sgx``, ``middleware``) come with the Python API work, and nothing here
pretends to be them.

``AttestationRouter`` (the server's own attestation, docs/protocol.md §4; needs FastAPI) and
``MutualAttestationClient`` (``shield_asgi.client.AsyncAttestedClient``; needs httpx) are
imported on first use, so this module imports without either; so are ``base``'s names (its
key derivation needs ``cryptography``).
"""

from shield_asgi.attestation import ERROR_CLASSES, AttestationResult, check_policy, policy_text
from shield_asgi.integrations.errors import AttestationError
from shield_asgi.integrations.fastapi import (
    add_attestation_exception_handler,
    attestation_required,
    attestation_security,
    requires_attestation,
)
from shield_asgi.integrations.middleware import AttestationMiddleware
from shield_asgi.integrations.protocol import (
    ATTEST_PATH,
    MAX_ATTEST_BODY,
    MAX_EVIDENCE_HEADER,
    NONCE_PATH,
    NONCE_TTL,
    PROOF_WINDOW_MS,
    SESSION_GRACE,
    SESSION_INFO,
)
from shield_asgi.integrations.providers import (
    AttestationProvider,
    MAAAttestationProvider,
    NitroAttestationProvider,
    SEVAttestationProvider,
    SGXAttestationProvider,
    SimulatedAttestationProvider,
    TDXAttestationProvider,
    canonical_tee_type,
    provider_for,
)
from shield_asgi.integrations.stores import MemoryStateStore, RedisStateStore

__all__ = [
    "AttestationMiddleware",
    "requires_attestation",
    "attestation_required",
    "AttestationError",
    "attestation_security",
    "add_attestation_exception_handler",
    "MemoryStateStore",
    "RedisStateStore",
    "NONCE_PATH",
    "ATTEST_PATH",
    "AttestationResult",
    "AttestationProvider",
    "NitroAttestationProvider",
    "SEVAttestationProvider",
    "MAAAttestationProvider",
    "SGXAttestationProvider",
    "TDXAttestationProvider",
    "SimulatedAttestationProvider",
    # the §3 table, policy helpers, provider lookup and the protocol's constants
    "ERROR_CLASSES",
    "check_policy",
    "policy_text",
    "canonical_tee_type",
    "provider_for",
    "MAX_ATTEST_BODY",
    "MAX_EVIDENCE_HEADER",
    "NONCE_TTL",
    "PROOF_WINDOW_MS",
    "SESSION_GRACE",
    "SESSION_INFO",
    # docs/protocol.md §4, imported on first use (module __getattr__ below)
    "AttestationRouter",
    "MutualAttestationClient",
    # docs/protocol.md §6 (key release), from .base, imported on first use
    "TEEType",
    "KeyReleasePolicy",
    "TEEKeyManager",
]

_LAZY = {
    "AttestationRouter": ("shield_asgi.integrations.router", "AttestationRouter"),
    "MutualAttestationClient": ("shield_asgi.client", "MutualAttestationClient"),
    "TEEType": ("shield_asgi.integrations.confidential.base", "TEEType"),
    "KeyReleasePolicy": ("shield_asgi.integrations.confidential.base", "KeyReleasePolicy"),
    "TEEKeyManager": ("shield_asgi.integrations.confidential.base", "TEEKeyManager"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
