"""``AttestationMiddleware``: client attestation (docs/protocol.md §1–§3) for any ASGI app.

Under the ``shield`` server with ``--attest-*`` flags, the server has already verified the
evidence natively and put the result in ``scope["state"]["attestation"]`` (and marked
``scope["extensions"]["shield.attestation"]``); the middleware then only re-checks its own
policy against that result (never re-verifying the evidence, which would trip
``nonce_replayed``).  Under another ASGI server (uvicorn, granian, hypercorn) the middleware
runs the protocol itself (protocol.py, the same C code through ``shield_asgi._native``): the
nonce endpoint, header mode and session mode (HPKE-sealed session key, proof MAC,
Content-Digest checked as the body streams).  Nonce, replay and session state live
in-process, or in Redis with ``state_url="redis://…"`` (needed, with a shared
``nonce_secret``, for several workers or replicas).
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterable, Optional

from shield_asgi.integrations.errors import AttestationError
from shield_asgi.integrations.protocol import (
    ATTEST_PATH,
    MAX_ATTEST_BODY,
    NONCE_PATH,
    AttestationProtocol,
    DigestCheck,
    RoutePolicy,
)
from shield_asgi.integrations.providers import canonical_tee_type, provider_for

__all__ = ["AttestationMiddleware"]


async def _send_error(send, err: AttestationError) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if err.reason == "overloaded":
        headers.append((b"retry-after", b"1"))
    if err.status_code == 401:
        headers.append((b"www-authenticate", b'Attestation realm="shield"'))
    await send({"type": "http.response.start", "status": err.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send, status: int, obj: dict, allow: Optional[bytes] = None) -> None:
    body = json.dumps(obj).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if allow is not None:  # RFC 9110 §15.5.6: a 405 says which methods the resource allows
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> Optional[str]:
    for k, v in scope.get("headers") or ():
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def _target(scope) -> bytes:
    """The request target as sent (path and query): what a session proof signs."""
    target = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    return target


def _has_body(scope) -> bool:
    return _header(scope, b"transfer-encoding") is not None or (
        _header(scope, b"content-length") or "0"
    ).strip() not in ("", "0")


async def _read_body(receive, limit: int) -> bytes:
    chunks, n = [], 0
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            raise AttestationError("malformed", "the client went away")
        b = msg.get("body", b"")
        n += len(b)
        if n > limit:
            raise AttestationError("malformed", "attestation body too large")
        chunks.append(b)
        if not msg.get("more_body", False):
            return b"".join(chunks)


class AttestationMiddleware:
    """Pure ASGI middleware: client attestation per docs/protocol.md.

    ``require_client_attestation``: requests without evidence get 401 ``missing`` (else they
    pass with no ``attestation`` key; evidence that is presented but fails is always an
    error).  ``exclude_routes``: path prefixes served without attestation.  ``policy``: the
    verifier's policy (dict, JSON or path) and, with ``provider``, what the middleware re-checks
    against a result the shield server verified natively.
    """

    def __init__(
        self,
        app,
        provider=None,
        tee_type: Optional[str] = None,
        require_client_attestation: bool = True,
        policy=None,
        exclude_routes: Iterable[str] = ("/docs", "/redoc", "/openapi.json", "/health"),
        attestation_header: str = "X-Attestation-Token",
        *,
        tee_types: Optional[Iterable[str]] = None,
        nonce_secret=None,
        state_url: Optional[str] = None,
        store=None,
        trust_simulated: bool = False,
        session_ttl: float = 3600,
        clock: Callable[[], float] = time.time,
        max_concurrent: int = 64,
    ) -> None:
        self.app = app
        self.provider = provider_for(provider, tee_type)
        self.required = require_client_attestation
        self.exclude = tuple(exclude_routes or ())
        self.header = attestation_header.lower().encode("latin-1")
        self.policy = policy
        self._policy = RoutePolicy.of(policy)
        types = {canonical_tee_type(t) for t in (tee_types or ())} - {None}
        self._proto_args = dict(
            provider=self.provider,
            tee_types=types,
            policy=policy,
            nonce_secret=nonce_secret,
            state_url=state_url,
            store=store,
            trust_simulated=trust_simulated,
            session_ttl=session_ttl,
            clock=clock,
            max_concurrent=max_concurrent,
        )
        self._proto: Optional[AttestationProtocol] = None

    @property
    def protocol(self) -> AttestationProtocol:
        if self._proto is None:
            self._proto = AttestationProtocol(**self._proto_args)
        return self._proto

    def _excluded(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.exclude)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        try:
            if "shield.attestation" in (scope.get("extensions") or {}):
                return await self._native(scope, receive, send)
            return await self._own(scope, receive, send)
        except AttestationError as e:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _send_error(send, e)

    # -- under shield: the server verified; re-check our own expectations --------------------
    async def _native(self, scope, receive, send):
        state = scope.get("state") or {}
        r = state.get("attestation")
        if r is None:
            if self.required and not self._excluded(scope["path"]):
                raise AttestationError("missing", "client attestation is required")
            return await self._call_app(scope, receive, send)
        if not r.verified:
            raise AttestationError(r.reason or "malformed", r.message or "")
        if self.provider is not None:
            failure = self.provider.check(r)
            if failure:
                raise AttestationError(*failure)
        if self._policy is not None:  # our own policy, whatever the server's was
            self._policy.enforce(r)
        return await self._call_app(scope, receive, send)

    # -- under any other server: the whole protocol -------------------------------------------
    async def _own(self, scope, receive, send):
        path, method = scope["path"], scope.get("method", "GET")
        proto = self.protocol
        if path == NONCE_PATH and scope["type"] == "http":
            if method not in ("GET", "HEAD"):
                return await _send_json(send, 405, {"error": "method_not_allowed"}, b"GET, HEAD")
            return await _send_json(send, 200, proto.nonce_body())
        if path == ATTEST_PATH and scope["type"] == "http":
            if method != "POST":
                return await _send_json(send, 405, {"error": "method_not_allowed"}, b"POST")
            body = await _read_body(receive, MAX_ATTEST_BODY)
            return await _send_json(send, 200, await proto.establish(body))
        excluded = self._excluded(path)
        token = _header(scope, self.header)
        sid = _header(scope, b"x-attestation-session")
        digest = None
        if sid:
            r, digest, _key = await proto.session_mode(
                sid,
                _header(scope, b"x-attestation-proof"),
                scope["method"],
                _target(scope),
                _header(scope, b"content-digest"),
                _has_body(scope),
            )
        elif token:
            r = await proto.header_mode(
                token, _header(scope, b"x-attestation-type"), _header(scope, b"x-attestation-nonce")
            )
        elif self.required and not excluded:
            raise AttestationError("missing", "client attestation is required")
        else:
            return await self._call_app(scope, receive, send)
        scope.setdefault("state", {})["attestation"] = r
        if digest is None:
            return await self._call_app(scope, receive, send)
        return await self._call_with_digest(scope, receive, send, digest)

    async def _call_app(self, scope, receive, send):
        # AttestationError raised inside the app (attestation_required dependency) is answered
        # here with the exact §3 body, if the response has not started yet.
        started = False

        async def send_w(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, receive, send_w)
        except AttestationError as e:
            if started:
                raise
            await _send_error(send, e)

    async def _call_with_digest(self, scope, receive, send, digest_header: str):
        """Checks Content-Digest as the body streams (§1.4): the last chunk is held back until
        the hash matches; on a mismatch the app sees a disconnect and the client a 401."""
        check = DigestCheck(digest_header)
        failed = False
        started = False

        async def receive_w():
            nonlocal failed
            msg = await receive()
            if msg["type"] == "http.request":
                check.update(msg.get("body", b""))
                if not msg.get("more_body", False) and not check.matches():
                    failed = True
                    return {"type": "http.disconnect"}
            return msg

        async def send_w(msg):
            nonlocal started
            if failed:
                return  # the app's answer to a forged body is dropped
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, receive_w, send_w)
        except Exception:
            if not failed:
                raise
        if failed and not started:
            await _send_error(
                send, AttestationError("proof_invalid", "the body does not match Content-Digest")
            )
