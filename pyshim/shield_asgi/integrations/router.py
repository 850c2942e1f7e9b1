"""``AttestationRouter``: the server's own attestation (docs/protocol.md §4) as a FastAPI router,
under the Shield library's name.  It works under any ASGI server (uvicorn: it calls the
evidence provider itself) and under ``shield``.

    from shield_asgi.integrations.confidential import AttestationRouter
    from shield_asgi.server_attestation import SimulatedEvidenceProvider

    router = AttestationRouter(SimulatedEvidenceProvider(), tls_certfile="cert.pem")
    app.include_router(router)                               # GET /attestation, /attestation/health

In a TEE, ``NativeEvidenceProvider()`` (server_attestation) produces this machine's evidence with
the same native providers as ``shield --tee`` (``tee="auto"`` detects it; never simulated).
    app.include_router(router, prefix="/.well-known/shield")   # the paths AttestedClient asks

The router is an ``APIRouter``; ``router.router`` is itself, for code written against the
Shield library (``app.include_router(r.router)``).  TLS binding: ``tls_certfile`` or ``tls_spki``
name the certificate; without them the router binds the certificate of the connection the
request came on when the server reports it (the ASGI TLS extension's ``server_cert``, which
shield sets), else none (``tls_spki_sha256`` null: clients over TLS then refuse it).
"""

from __future__ import annotations

import json
import ssl
from typing import Callable, Optional

from shield_asgi.attestation import _b64url_decode
from shield_asgi.server_attestation import (
    NONCE_LEN,
    EvidenceProvider,
    ProviderUnavailable,
    RateLimited,
    ServerAttestation,
    spki_of_certificate,
)

__all__ = ["AttestationRouter"]


def _error(status: int, error: str, reason: str, message: str, headers=None):
    from fastapi.responses import Response

    # §3's shape; Cache-Control: evidence is single-use, and errors must not be cached either
    h = {"Cache-Control": "no-store", **(headers or {})}
    body = json.dumps({"error": error, "reason": reason, "message": message})
    return Response(body, status_code=status, media_type="application/json", headers=h)


def _client(request) -> str:
    c = request.scope.get("client")
    return str(c[0]) if c else ""


def _connection_spki(request) -> Optional[bytes]:
    tls = (request.scope.get("extensions") or {}).get("tls") or {}
    pem = tls.get("server_cert")
    if not pem:
        return None
    return spki_of_certificate(ssl.PEM_cert_to_DER_cert(pem))


def _router_base():
    from fastapi import APIRouter

    return APIRouter


class AttestationRouter(_router_base()):  # type: ignore[misc]
    """GET ``attestation_path`` (``?nonce=`` base64url of 32 bytes) and GET ``health_path``.

    provider: an EvidenceProvider (``NativeEvidenceProvider()`` in a TEE,
    ``SimulatedEvidenceProvider()`` for development, named explicitly: there is no default).
    Every other keyword but the paths goes to ``ServerAttestation`` (tls_spki, tls_certfile,
    hpke_key_config, rate, burst, max_concurrent, health_ttl, clock); ``attestation`` passes a
    ready one instead.
    """

    def __init__(
        self,
        provider: Optional[EvidenceProvider] = None,
        *,
        attestation: Optional[ServerAttestation] = None,
        attestation_path: str = "/attestation",
        health_path: str = "/attestation/health",
        clock: Optional[Callable[[], float]] = None,
        tags=("attestation",),
        **kw,
    ) -> None:
        if (provider is None) == (attestation is None):
            raise TypeError("AttestationRouter needs an EvidenceProvider (or attestation=)")
        if attestation is None:
            if clock is not None:
                kw["clock"] = clock
            attestation = ServerAttestation(provider, **kw)
        elif kw or clock is not None:
            raise TypeError("give the options to the ServerAttestation passed as attestation=")
        super().__init__(tags=list(tags))
        self.attestation = attestation
        from fastapi import Request

        # closures, not methods: FastAPI reads the endpoint's annotations at run time, and this
        # module's are strings (from __future__ import annotations)
        async def attestation_endpoint(request: Request):
            return await self._attestation(request)

        async def health_endpoint(request: Request):
            return await self._health(request)

        attestation_endpoint.__annotations__["request"] = Request
        health_endpoint.__annotations__["request"] = Request
        self.add_api_route(attestation_path, attestation_endpoint, methods=["GET"])
        self.add_api_route(health_path, health_endpoint, methods=["GET"])

    @property
    def router(self):
        """Itself: the Shield library's router is included as ``include_router(r.router)``."""
        return self

    async def _attestation(self, request):
        nonce_s = request.query_params.get("nonce")
        try:
            nonce = _b64url_decode(nonce_s or "")
        except (ValueError, TypeError):
            nonce = b""
        if len(nonce) != NONCE_LEN:
            return _error(
                400,
                "attestation_invalid",
                "malformed",
                "nonce must be the base64url of 32 random bytes",
            )
        try:
            doc = await self.attestation.document(
                nonce, client=_client(request), tls_spki=_connection_spki(request)
            )
        except RateLimited as e:
            return _error(
                503,
                "attestation_unavailable",
                "overloaded",
                e.message,
                {"Retry-After": str(e.retry_after)},
            )
        except ProviderUnavailable as e:
            return _error(503, "attestation_unavailable", "collateral_missing", str(e))
        return _json(200, doc)

    async def _health(self, request):
        status, body = await self.attestation.health(tls_spki=_connection_spki(request))
        return _json(status, body)


def _json(status: int, obj: dict):
    from fastapi.responses import Response

    return Response(
        json.dumps(obj),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
