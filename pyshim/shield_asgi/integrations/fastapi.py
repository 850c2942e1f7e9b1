"""FastAPI glue for client attestation: the OpenAPI security scheme, the
``Depends(attestation_required(...))`` dependency, the ``@requires_attestation`` decorator and
the exception handler that answers ``AttestationError`` with the exact §3 body.

The evidence is verified by the shield server or by AttestationMiddleware; these only check a
route's own requirements against the request's result (protocol.py's ``check_result``).
FastAPI is imported when these are called, so the package imports without it.  (No
``from __future__ import annotations`` here: FastAPI reads the dependency's annotations at run
time, and ``Request`` is imported inside the function that defines it.)
"""

import functools
import inspect
from typing import Any, Iterable, Mapping, Optional

from shield_asgi.attestation import AttestationResult
from shield_asgi.integrations.errors import AttestationError
from shield_asgi.integrations.protocol import RoutePolicy, check_result
from shield_asgi.integrations.providers import provider_for

__all__ = [
    "attestation_security",
    "attestation_required",
    "requires_attestation",
    "add_attestation_exception_handler",
]


def attestation_security(header_name: str = "X-Attestation-Token"):
    """FastAPI security dependencies so /docs shows the attestation headers."""
    from fastapi.security import APIKeyHeader

    return (
        APIKeyHeader(
            name=header_name,
            scheme_name="ClientAttestation",
            auto_error=False,
            description="TEE evidence (docs/protocol.md §1.4 mode 1); with "
            "X-Attestation-Type and X-Attestation-Nonce",
        ),
        APIKeyHeader(
            name="X-Attestation-Session",
            scheme_name="AttestationSession",
            auto_error=False,
            description="session id from POST /.well-known/shield/attest; with X-Attestation-Proof",
        ),
    )


def _state_result(request) -> Optional[AttestationResult]:
    return (request.scope.get("state") or {}).get("attestation")


def attestation_required(
    provider=None,
    tee_type: Optional[str] = None,
    required_tee_types: Optional[Iterable[str]] = None,
    required_measurements: Optional[Mapping[str, Any]] = None,
    policy=None,
    header_name: str = "X-Attestation-Token",
):
    """``Depends(attestation_required(...))`` -> the verified AttestationResult.

    The evidence is verified by the shield server or by AttestationMiddleware; this checks
    the route's own requirements against that result.  Errors are AttestationError (§3 body
    when the middleware or add_attestation_exception_handler is installed)."""
    from fastapi import Request, Security

    prov = provider_for(provider, tee_type) if (provider or tee_type) else None
    route_policy = RoutePolicy.of(policy)  # a bad policy fails at decoration, not per request
    token_scheme, session_scheme = attestation_security(header_name)

    async def dependency(
        request: Request,
        _t: Optional[str] = Security(token_scheme),
        _s: Optional[str] = Security(session_scheme),
    ) -> AttestationResult:
        _ensure_handler(request)
        return check_result(
            _state_result(request), prov, required_tee_types, required_measurements, route_policy
        )

    return dependency


def requires_attestation(
    provider=None,
    tee_type: Optional[str] = None,
    required_tee_types: Optional[Iterable[str]] = None,
    required_measurements: Optional[Mapping[str, Any]] = None,
    policy=None,
    header_name: str = "X-Attestation-Token",
):
    """Route decorator (put it under ``@app.get(...)``): the endpoint needs no request
    parameter; failures answer with the exact §3 JSON."""
    dep = attestation_required(
        provider, tee_type, required_tee_types, required_measurements, policy, header_name
    )

    def deco(fn):
        from fastapi import Depends
        from fastapi.responses import JSONResponse

        sig = inspect.signature(fn)
        hidden = "__shield_attestation"
        params = list(sig.parameters.values())
        extra = inspect.Parameter(
            hidden, inspect.Parameter.KEYWORD_ONLY, default=Depends(_wrap(dep))
        )
        new_sig = sig.replace(
            parameters=[p for p in params if p.kind != p.VAR_KEYWORD]
            + [extra]
            + [p for p in params if p.kind == p.VAR_KEYWORD]
        )

        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            outcome = kwargs.pop(hidden)
            if isinstance(outcome, AttestationError):
                return JSONResponse(
                    outcome.body(), status_code=outcome.status_code, headers=outcome.headers
                )
            res = fn(*args, **kwargs)
            return await res if inspect.isawaitable(res) else res

        wrapper.__signature__ = new_sig  # type: ignore[attr-defined]
        return wrapper

    return deco


def _wrap(dep):
    """The dependency, returning the error instead of raising it (the decorator answers)."""
    sig = inspect.signature(dep)

    async def inner(**kw):
        try:
            return await dep(**kw)
        except AttestationError as e:
            return e

    inner.__signature__ = sig  # type: ignore[attr-defined]
    return inner


async def _handle(request, exc: AttestationError):
    from fastapi.responses import JSONResponse

    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def _ensure_handler(request) -> None:
    """Registers the §3 handler with the app's running ExceptionMiddleware (Starlette keeps
    its handler dict in the scope), so a failing dependency answers exactly even without
    AttestationMiddleware; if that internal ever changes, the middleware still answers."""
    try:
        handlers = request.scope["starlette.exception_handlers"][0]
        if AttestationError not in handlers:
            handlers[AttestationError] = _handle
    except (KeyError, IndexError, TypeError):
        pass


def add_attestation_exception_handler(app) -> None:
    """FastAPI/Starlette: answer AttestationError with the exact §3 body (for
    Depends(attestation_required()) without AttestationMiddleware)."""
    app.add_exception_handler(AttestationError, _handle)
